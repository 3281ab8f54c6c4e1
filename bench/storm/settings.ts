/** The connection-storm benchmark's knobs (BENCH_STORM_* environment variables) and fixed parameters. */
import type { Engine } from '../../test/support/sql.js'

export type Scenario = 'storm' | 'single' | 'proxy'
export type Variant = 'createDb' | 'plain'

export const ENGINES = listFromEnv('BENCH_STORM_ENGINES', ['postgres', 'mysql'] as const)
/** `proxy` runs on PostgreSQL only (PgBouncer speaks only its protocol); other engines skip it. */
export const SCENARIOS = listFromEnv('BENCH_STORM_SCENARIOS', ['storm', 'single', 'proxy'] as const)
export const SECONDS = intFromEnv('BENCH_STORM_SECONDS', 15)
/** Worker processes in the storm scenario (the single scenario always has one). */
export const PROCESSES = intFromEnv('BENCH_STORM_PROCESSES', 10)
/** Concurrent request loops per process. */
export const LOOPS = intFromEnv('BENCH_STORM_LOOPS', 100)

/** Both variants run in this order, one after the other, on the same server. */
export const VARIANTS: ReadonlyArray<Variant> = ['createDb', 'plain']

/** Pool size of every process's one db, for both variants: 10 of them ask for twice what a server allows. */
export const POOL_MAX = intFromEnv('BENCH_STORM_POOL_MAX', 20)

/** The servers' max_connections, as the issue has them: RDS-sized small instances. */
export const MAX_CONNECTIONS: Record<Engine, number> = { postgres: 100, mysql: 50 }

/** The single scenario leaves this many connection slots to the app user. */
export const FREE_SLOTS = 7

/** Rows of the table the point SELECTs read. */
export const ROWS = 100

export const ENGINE_NAME: Record<Engine, string> = { postgres: 'PostgreSQL', mysql: 'MariaDB' }

/**
 * The proxy scenario's PgBouncer, with the numbers: transaction mode, up to 2000 client
 * connections, 20 server connections for the app's user/database pair (in front of a server with
 * max_connections 100). query_wait_timeout stays at PgBouncer's default.
 */
export const PGBOUNCER = {
  poolMode: 'transaction',
  maxClientConn: 2000,
  defaultPoolSize: 20,
  queryWaitTimeoutS: 120,
} as const

export const SCENARIO_LABEL: Record<Scenario, string> = {
  storm: `storm (${PROCESSES} processes)`,
  single: `single process, ${FREE_SLOTS} free slots`,
  proxy: `storm via PgBouncer (${PROCESSES} processes)`,
}

export function processesOf(scenario: Scenario): number {
  return scenario === 'single' ? 1 : PROCESSES
}

/** Whether a scenario runs on an engine: the proxy one needs PostgreSQL. */
export function scenarioRunsOn(scenario: Scenario, engine: Engine): boolean {
  return scenario !== 'proxy' || engine === 'postgres'
}

function intFromEnv(name: string, fallback: number): number {
  const given = process.env[name]
  if (given === undefined || given.trim() === '') return fallback
  const value = Number(given)
  if (!Number.isInteger(value) || value <= 0)
    throw new Error(`${name}: expected a positive integer, got ${given}`)
  return value
}

function listFromEnv<T extends string>(name: string, allowed: ReadonlyArray<T>): T[] {
  const given = process.env[name]
  if (given === undefined || given.trim() === '') return [...allowed]
  const values = given.split(',').map((value) => value.trim())
  const unknown = values.filter((value) => !(allowed as ReadonlyArray<string>).includes(value))
  if (unknown.length > 0) {
    throw new Error(`${name}: unknown ${unknown.join(', ')}; expected ${allowed.join(', ')}`)
  }
  return values as T[]
}
