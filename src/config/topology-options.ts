import { instanceHostPatternOf, isRdsClusterHost } from '../aws/rds-host.js'
import { ConfigError } from '../errors.js'
import { boolean, type Check } from '../validation/check.js'
import { type ConfigSpec, checkObject, unknownOption } from '../validation/config-spec.js'
import { describeValue } from '../validation/describe-value.js'
import { duration } from '../validation/number-setting.js'
import type { TopologyConfig } from './create-db-config.js'
import type { EndpointSettings } from './endpoint-settings.js'

/** `topology` after validation: present only when discovery is on. */
export interface ResolvedTopology {
  /** With `?` for the instance identifier; may end in `:port`. */
  readonly instanceHostPattern: string
  readonly refreshIntervalMs: number
}

const INSTANCE_HOST_PATTERN: Check<string | undefined> = (pattern, setting) => {
  if (pattern === undefined) return undefined
  if (typeof pattern !== 'string' || pattern.split('?').length !== 2) {
    throw new ConfigError(
      setting,
      `expected a host name with one '?' for the instance identifier, optionally ':port', got ${describeValue(pattern)}`,
    )
  }
  const port = /:(\d+)$/.exec(pattern)?.[1]
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65_535)) {
    throw new ConfigError(setting, `has port ${port}: expected 1 to 65535`)
  }
  if (/[/@\s]/.test(pattern)) {
    throw new ConfigError(
      setting,
      `expected a host name (no scheme, user, path or spaces), got ${describeValue(pattern)}`,
    )
  }
  return pattern
}

const TOPOLOGY_SPEC = {
  discovery: boolean,
  instanceHostPattern: INSTANCE_HOST_PATTERN,
  refreshIntervalMs: duration({ min: 100 }),
} satisfies ConfigSpec<TopologyConfig>

/**
 * Validates `topology` against the writer it discovers from; `undefined` when discovery is off
 * (explicitly, or by default for a writer that is not an RDS cluster endpoint).
 */
export function resolveTopology(input: unknown, writer: EndpointSettings): ResolvedTopology | undefined {
  const topology = checkObject(input ?? {}, 'topology', TOPOLOGY_SPEC, { unknownKey: unknownOption })
  const { discovery } = topology
  if (discovery === false || (discovery === undefined && !isRdsClusterHost(writer.host))) return undefined
  // Between settings and the writer: a pattern is needed only when the writer's host gives none.
  const instanceHostPattern = topology.instanceHostPattern ?? instanceHostPatternOf(writer.host)
  if (instanceHostPattern === undefined) {
    throw new ConfigError(
      'topology.instanceHostPattern',
      `is required with topology.discovery on when the writer is not an RDS cluster endpoint (got host ${describeValue(writer.host)}): give how an instance identifier becomes a host, e.g. '?.c9xyz.eu-west-1.rds.amazonaws.com'`,
    )
  }
  return Object.freeze({ instanceHostPattern, refreshIntervalMs: topology.refreshIntervalMs ?? 30_000 })
}

/** The instance's host and port by the pattern: `?` replaced by its identifier, the port from the pattern or `defaultPort`. */
export function instanceAddress(
  pattern: string,
  instanceId: string,
  defaultPort: number,
): { readonly host: string; readonly port: number } {
  const match = /^(.*?)(?::(\d+))?$/.exec(pattern.replace('?', instanceId)) as RegExpExecArray
  return { host: match[1] as string, port: match[2] === undefined ? defaultPort : Number(match[2]) }
}
