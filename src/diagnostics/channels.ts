import { type Channel, channel, type TracingChannel, tracingChannel } from 'node:diagnostics_channel'

/**
 * What `kysely-resilient:query` traces: one statement's attempt on one endpoint (a retried statement
 * is traced once per attempt). No SQL text and no parameter values: the operation names the kind of
 * statement.
 *
 * @example
 * ```ts
 * import { tracingChannel } from 'node:diagnostics_channel'
 * import type { QueryTraceContext } from 'kysely-resilient'
 *
 * const query = tracingChannel<unknown, QueryTraceContext>('kysely-resilient:query')
 * query.start.subscribe((ctx) => console.log('query', (ctx as QueryTraceContext).operation))
 * query.error.subscribe((ctx) => console.log('failed on', (ctx as QueryTraceContext).endpoint))
 * ```
 */
export interface QueryTraceContext {
  /** The endpoint's name: `'writer'`, `'reader-0'`, or its configured `name`. */
  readonly endpoint: string
  readonly role: 'writer' | 'reader'
  readonly dialect: 'postgres' | 'mysql'
  /** `host:port/database`, never credentials. */
  readonly address: string
  /** `'SELECT'`, `'INSERT'`, `'UPDATE'`, `'DELETE'`, `'MERGE'`, or a raw statement's first keyword. */
  readonly operation: string
  /** Set by diagnostics_channel on `error`. */
  error?: unknown
  /** Set by diagnostics_channel on `asyncEnd` after success: the driver's result (Kysely's `QueryResult`). */
  result?: unknown
}

/**
 * What `kysely-resilient:connect` traces: opening one connection (TCP, TLS, authentication,
 * `onCreateConnection` excluded) for an endpoint's pool.
 *
 * @example
 * ```ts
 * import { tracingChannel } from 'node:diagnostics_channel'
 * import type { ConnectTraceContext } from 'kysely-resilient'
 *
 * const connect = tracingChannel<unknown, ConnectTraceContext>('kysely-resilient:connect')
 * connect.error.subscribe((ctx) => console.log('connect failed', (ctx as ConnectTraceContext).endpoint))
 * ```
 */
export interface ConnectTraceContext {
  readonly endpoint: string
  error?: unknown
  result?: unknown
}

/**
 * Names of the channels, for subscribers; see the README's "Diagnostics channels".
 *
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel'
 * import { DIAGNOSTICS_CHANNELS } from 'kysely-resilient'
 *
 * subscribe(`${DIAGNOSTICS_CHANNELS.eventPrefix}failover`, (event) => console.log('failover', event))
 * ```
 */
export const DIAGNOSTICS_CHANNELS = Object.freeze({
  /** Tracing channel: every statement attempt. */
  query: 'kysely-resilient:query',
  /** Tracing channel: every connection opened for a pool. */
  connect: 'kysely-resilient:connect',
  /** Plain channels, one per `db.on` event, carrying the same payload: `kysely-resilient:retry`, … */
  eventPrefix: 'kysely-resilient:',
} as const)

export const QUERY_CHANNEL: TracingChannel<unknown, QueryTraceContext> = tracingChannel(
  DIAGNOSTICS_CHANNELS.query,
)
export const CONNECT_CHANNEL: TracingChannel<unknown, ConnectTraceContext> = tracingChannel(
  DIAGNOSTICS_CHANNELS.connect,
)

const eventChannels = new Map<string, Channel>()

/** The plain channel of a `db.on` event: `kysely-resilient:<event>`. */
export function eventChannel(event: string): Channel {
  let found = eventChannels.get(event)
  if (found === undefined) {
    found = channel(`${DIAGNOSTICS_CHANNELS.eventPrefix}${event}`)
    eventChannels.set(event, found)
  }
  return found
}
