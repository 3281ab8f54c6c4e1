import { instanceHostPatternOf, isRdsClusterHost } from '../aws/rds-host.js'
import { ConfigError } from '../errors.js'
import { describeValue } from '../validation/describe-value.js'
import { numberSetting } from '../validation/number-setting.js'
import { settingKeys } from '../validation/setting-keys.js'
import type { TopologyConfig } from './create-db-config.js'
import type { EndpointSettings } from './endpoint-settings.js'

/** `topology` after validation: present only when discovery is on. */
export interface ResolvedTopology {
  /** With `?` for the instance identifier; may end in `:port`. */
  readonly instanceHostPattern: string
  readonly refreshIntervalMs: number
}

const TOPOLOGY_KEYS = settingKeys<TopologyConfig>()('discovery', 'instanceHostPattern', 'refreshIntervalMs')

/**
 * Validates `topology` against the writer it discovers from; `undefined` when discovery is off
 * (explicitly, or by default for a writer that is not an RDS cluster endpoint).
 */
export function resolveTopology(input: unknown, writer: EndpointSettings): ResolvedTopology | undefined {
  if (input !== undefined && (typeof input !== 'object' || input === null || Array.isArray(input))) {
    throw new ConfigError('topology', `expected an object, got ${describeValue(input)}`)
  }
  const config = (input ?? {}) as Record<string, unknown>
  for (const key of Object.keys(config)) {
    if (!(TOPOLOGY_KEYS as ReadonlyArray<string>).includes(key)) {
      throw new ConfigError(`topology.${key}`, `unknown option (known: ${TOPOLOGY_KEYS.join(', ')})`)
    }
  }
  const { discovery } = config
  if (discovery !== undefined && typeof discovery !== 'boolean') {
    throw new ConfigError('topology.discovery', `expected true or false, got ${describeValue(discovery)}`)
  }
  const refreshIntervalMs =
    numberSetting(config.refreshIntervalMs, 'topology.refreshIntervalMs', { min: 100, milliseconds: true }) ??
    30_000
  const pattern = config.instanceHostPattern
  if (pattern !== undefined) checkPattern(pattern)
  if (discovery === false || (discovery === undefined && !isRdsClusterHost(writer.host))) return undefined
  const instanceHostPattern = (pattern as string | undefined) ?? instanceHostPatternOf(writer.host)
  if (instanceHostPattern === undefined) {
    throw new ConfigError(
      'topology.instanceHostPattern',
      `is required with topology.discovery on when the writer is not an RDS cluster endpoint (got host ${describeValue(writer.host)}): give how an instance identifier becomes a host, e.g. '?.c9xyz.eu-west-1.rds.amazonaws.com'`,
    )
  }
  return Object.freeze({ instanceHostPattern, refreshIntervalMs })
}

function checkPattern(pattern: unknown): void {
  if (typeof pattern !== 'string' || pattern.split('?').length !== 2) {
    throw new ConfigError(
      'topology.instanceHostPattern',
      `expected a host name with one '?' for the instance identifier, optionally ':port', got ${describeValue(pattern)}`,
    )
  }
  const port = /:(\d+)$/.exec(pattern)?.[1]
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65_535)) {
    throw new ConfigError('topology.instanceHostPattern', `has port ${port}: expected 1 to 65535`)
  }
  if (/[/@\s]/.test(pattern)) {
    throw new ConfigError(
      'topology.instanceHostPattern',
      `expected a host name (no scheme, user, path or spaces), got ${describeValue(pattern)}`,
    )
  }
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
