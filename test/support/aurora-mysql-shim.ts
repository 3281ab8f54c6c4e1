import { once } from 'node:events'
import { createServer, type Server, Socket } from 'node:net'
import mysql from 'mysql2/promise'

// A simulated Aurora MySQL instance in front of a real MariaDB server. Aurora MySQL cannot run here,
// and MariaDB cannot get Aurora's names: no table can be created in information_schema, and no
// global variable (aurora_version, aurora_server_id) can be added. The library must send exactly
// what it sends to Aurora, so instead of test seams in src/, this TCP proxy rewrites the SQL of the
// client's COM_QUERY packets on the way in:
//
// - `SHOW [GLOBAL] VARIABLES LIKE 'aurora_version'` (platform detection) becomes a SELECT of the one
//   row Aurora answers (Variable_name, Value);
// - `information_schema.replica_host_status` becomes `aurora_sim.replica_host_status`, a real table
//   the test fills (see {@link SimulatedAuroraMySqlView});
// - `@@aurora_server_id` becomes the quoted instance id this shim stands for.
//
// Everything else, and everything the server sends, passes unchanged. Plain connections only (no TLS,
// no protocol compression), as the harness's MariaDB servers serve them.

/** The simulation schema the shim points `information_schema.replica_host_status` to. */
export const AURORA_SIM_SCHEMA = 'aurora_sim'

export interface AuroraMySqlShimOptions {
  /** The MariaDB server's port on 127.0.0.1. */
  readonly targetPort: number
  /** What `@@aurora_server_id` answers. Default: the shim's own port, so '127.0.0.1:?' reaches it. */
  readonly instanceId?: string
  /** What the global variable `aurora_version` answers. Default '3.05.2' (Aurora MySQL 3, MySQL 8.0). */
  readonly auroraVersion?: string
}

export interface AuroraMySqlShimStats {
  /** COM_QUERY packets whose SQL was rewritten. */
  readonly rewritten: number
  /** COM_QUERY packets seen (rewritten or not). */
  readonly queries: number
  /** Client connections still open. */
  readonly live: number
}

/** What a COM_QUERY's SQL becomes; the parts of Aurora MySQL the library reads. */
export interface AuroraRewrite {
  readonly instanceId: string
  readonly auroraVersion: string
}

const LISTEN_HOST = '127.0.0.1'
const COM_QUERY = 0x03
/** A payload this long continues in the next packet: never rewritten (the library sends nothing that big). */
const MAX_PAYLOAD = 0xff_ff_ff

const SHOW_AURORA_VERSION = /show\s+(?:global\s+|session\s+)?variables\s+like\s+'aurora_version'/gi
const REPLICA_HOST_STATUS = /information_schema\s*\.\s*replica_host_status/gi
const AURORA_SERVER_ID = /@@(?:global\.)?aurora_server_id/gi

/**
 * The SQL a simulated Aurora MySQL instance hands to MariaDB instead of `sql`, or `undefined` when
 * nothing in it is Aurora's. Works on latin1 text: every byte maps to one character, so SQL in any
 * encoding (and binary literals) survives the round trip; the patterns are ASCII.
 */
export function rewriteAuroraSql(sql: string, rewrite: AuroraRewrite): string | undefined {
  const rewritten = sql
    .replace(
      SHOW_AURORA_VERSION,
      () => `select 'aurora_version' as Variable_name, ${quote(rewrite.auroraVersion)} as Value`,
    )
    .replace(REPLICA_HOST_STATUS, `${AURORA_SIM_SCHEMA}.replica_host_status`)
    .replace(AURORA_SERVER_ID, () => quote(rewrite.instanceId))
  return rewritten === sql ? undefined : rewritten
}

/**
 * Splits the client → server byte stream into MySQL packets (3-byte little-endian payload length,
 * 1-byte sequence id, payload), whatever the TCP chunking, and rewrites the SQL of COM_QUERY packets.
 * Only a packet with sequence id 0 starts a command; the handshake response, auth switch data and
 * the continuation of a long packet have ids above 0 and are passed on as they are.
 */
export class ClientPacketRewriter {
  readonly #rewrite: AuroraRewrite
  #pending: Buffer = Buffer.alloc(0)
  #queries = 0
  #rewritten = 0

  constructor(rewrite: AuroraRewrite) {
    this.#rewrite = rewrite
  }

  get queries(): number {
    return this.#queries
  }

  get rewritten(): number {
    return this.#rewritten
  }

  /** Takes the next chunk from the client; returns the bytes to send on (complete packets only). */
  push(chunk: Buffer): Buffer {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk])
    const out: Buffer[] = []
    let offset = 0
    while (this.#pending.length - offset >= 4) {
      const length = this.#pending.readUIntLE(offset, 3)
      const end = offset + 4 + length
      if (this.#pending.length < end) break
      out.push(this.#packet(this.#pending.subarray(offset, end), length))
      offset = end
    }
    this.#pending = this.#pending.subarray(offset)
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out)
  }

  #packet(packet: Buffer, length: number): Buffer {
    const sequenceId = packet[3]
    if (sequenceId !== 0 || length === 0 || packet[4] !== COM_QUERY) return packet
    this.#queries++
    if (length === MAX_PAYLOAD) return packet
    const sql = rewriteAuroraSql(packet.toString('latin1', 5), this.#rewrite)
    if (sql === undefined) return packet
    this.#rewritten++
    const body = Buffer.from(sql, 'latin1')
    const header = Buffer.alloc(5)
    header.writeUIntLE(body.length + 1, 0, 3)
    header[3] = 0
    header[4] = COM_QUERY
    return Buffer.concat([header, body])
  }
}

/**
 * One simulated Aurora MySQL instance: a TCP proxy on 127.0.0.1 in front of one MariaDB server that
 * rewrites Aurora's SQL (see the file comment). Its instance id defaults to its own port.
 */
export class AuroraMySqlShim {
  readonly #server: Server
  readonly #targetPort: number
  readonly #sockets = new Set<Socket>()
  readonly #rewriters = new Set<ClientPacketRewriter>()
  #instanceId: string | undefined
  readonly #auroraVersion: string
  #port = 0
  #live = 0
  /** Counts of connections already closed, so stats() covers the shim's whole life. */
  #closedQueries = 0
  #closedRewritten = 0
  #closing: Promise<void> | undefined

  private constructor(options: AuroraMySqlShimOptions) {
    this.#targetPort = options.targetPort
    this.#instanceId = options.instanceId
    this.#auroraVersion = options.auroraVersion ?? '3.05.2'
    this.#server = createServer({ noDelay: true }, (client) => this.#accept(client))
    this.#server.on('error', () => {})
  }

  static async start(options: AuroraMySqlShimOptions): Promise<AuroraMySqlShim> {
    const shim = new AuroraMySqlShim(options)
    await new Promise<void>((resolve, reject) => {
      shim.#server.once('error', reject)
      shim.#server.listen({ host: LISTEN_HOST, port: 0, exclusive: true }, () => {
        shim.#server.off('error', reject)
        resolve()
      })
    })
    const address = shim.#server.address()
    if (typeof address !== 'object' || address === null) throw new Error('the shim has no TCP address')
    shim.#port = address.port
    shim.#instanceId ??= String(address.port)
    return shim
  }

  get port(): number {
    return this.#port
  }

  /** What `@@aurora_server_id` answers through this shim. */
  get instanceId(): string {
    return this.#instanceId as string
  }

  /** `originalUrl` with its host and port replaced by the shim's; credentials, path and query kept. */
  url(originalUrl: string): string {
    const url = new URL(originalUrl)
    url.hostname = LISTEN_HOST
    url.port = String(this.#port)
    return url.toString()
  }

  stats(): AuroraMySqlShimStats {
    let queries = this.#closedQueries
    let rewritten = this.#closedRewritten
    for (const rewriter of this.#rewriters) {
      queries += rewriter.queries
      rewritten += rewriter.rewritten
    }
    return { queries, rewritten, live: this.#live }
  }

  /** Stops listening and destroys every connection; resolves once all sockets have closed. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const listenerClosed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
      const sockets = [...this.#sockets]
      for (const socket of sockets) socket.destroy()
      await Promise.all([
        listenerClosed,
        ...sockets.map((socket) => (socket.closed ? undefined : once(socket, 'close'))),
      ])
    })()
    return this.#closing
  }

  #track(socket: Socket): void {
    this.#sockets.add(socket)
    // Servers are killed and clients reset all the time in these tests; an unhandled 'error' would
    // kill the worker. The other side learns through 'close'.
    socket.on('error', () => {})
    socket.once('close', () => this.#sockets.delete(socket))
  }

  #accept(client: Socket): void {
    this.#track(client)
    if (this.#closing !== undefined) {
      client.destroy()
      return
    }
    this.#live++
    const rewriter = new ClientPacketRewriter({
      instanceId: this.instanceId,
      auroraVersion: this.#auroraVersion,
    })
    this.#rewriters.add(rewriter)
    const upstream = new Socket()
    this.#track(upstream)
    upstream.setNoDelay(true)
    // Writes before 'connect' are queued by the socket; a refused connect closes the client too.
    upstream.connect({ host: LISTEN_HOST, port: this.#targetPort })
    client.on('data', (chunk: Buffer) => {
      const out = rewriter.push(chunk)
      if (out.length > 0) forward(client, upstream, out)
    })
    upstream.on('data', (chunk: Buffer) => forward(upstream, client, chunk))
    // Either side gone: the other goes too (a server's FIN after COM_QUIT, a client reset, a crash).
    client.once('close', () => {
      this.#live--
      this.#closedQueries += rewriter.queries
      this.#closedRewritten += rewriter.rewritten
      this.#rewriters.delete(rewriter)
      upstream.destroy()
    })
    upstream.once('close', () => client.destroy())
    client.once('end', () => upstream.end())
    upstream.once('end', () => client.end())
  }
}

/** Writes with backpressure: a slow destination pauses its source. */
function forward(source: Socket, destination: Socket, chunk: Buffer): void {
  if (destination.destroyed) return
  if (destination.write(chunk) || source.isPaused()) return
  source.pause()
  destination.once('drain', () => source.resume())
}

function quote(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`
}

/** One row of the simulated `information_schema.replica_host_status`. */
export interface ReplicaHostStatusRow {
  /** The instance identifier (`@@aurora_server_id` of that instance). */
  readonly serverId: string
  readonly writer: boolean
  /** NULL when omitted: Aurora reports no lag for the instance. The writer's is 0. */
  readonly lagMs?: number | null
  /** Seconds since the instance last reported; default 0 (now). */
  readonly ageSeconds?: number
}

/**
 * Aurora's `information_schema.replica_host_status`, simulated on every server of a MariaDB cluster:
 * a table of the same name and columns in {@link AURORA_SIM_SCHEMA}, read through the shims.
 *
 * Followed documentation: "Aurora MySQL–specific information_schema tables", Amazon Aurora User
 * Guide (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/AuroraMySQL.Reference.ISTables.html),
 * and "Replication with Amazon Aurora MySQL"
 * (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/AuroraMySQL.Replication.html): one
 * row per DB instance of the cluster; SERVER_ID is the instance identifier (what `@@aurora_server_id`
 * returns on that instance), SESSION_ID is 'MASTER_SESSION_ID' for the writer and a unique id for
 * each reader, REPLICA_LAG_IN_MILLISECONDS a reader's lag behind the writer, LAST_UPDATE_TIMESTAMP
 * when the instance last reported, CPU its CPU use in percent, IS_CURRENT whether the row is the
 * instance's current one. The columns and their use also match the AWS Advanced NodeJS Wrapper's
 * topology query (aws/aws-advanced-nodejs-wrapper, mysql/lib/dialect/aurora_mysql_database_dialect.ts)
 * and MariaDB MaxScale's Aurora monitor documentation.
 *
 * Aurora's instances share one cluster volume, so each reports the same rows at once. Here the rows
 * are written on every server directly, outside the binary log (sql_log_bin = 0): no replication
 * delay, and no GTID that would move the replication positions the lag check compares. Only the
 * schema (and the `app` user's SELECT on it) is created through replication.
 */
export class SimulatedAuroraMySqlView {
  /** @param adminUrls one admin URL per server (primary first); servers that are down are skipped. */
  constructor(readonly adminUrls: ReadonlyArray<string>) {}

  /** Creates the schema and table on the primary (they replicate), and grants `app` SELECT on them. */
  static async install(adminPrimaryUrl: string, appHosts: ReadonlyArray<string>): Promise<void> {
    await withConnection(adminPrimaryUrl, async (connection) => {
      await connection.query(`create database ${AURORA_SIM_SCHEMA}`)
      await connection.query(
        `create table ${AURORA_SIM_SCHEMA}.replica_host_status (
           SERVER_ID varchar(100) not null primary key,
           SESSION_ID varchar(100) not null,
           IS_CURRENT tinyint(1) not null default 1,
           CPU double,
           LAST_UPDATE_TIMESTAMP datetime(6) not null,
           REPLICA_LAG_IN_MILLISECONDS double
         ) engine = InnoDB`,
      )
      for (const host of appHosts) {
        await connection.query(`grant select on ${AURORA_SIM_SCHEMA}.* to 'app'@'${host}'`)
      }
    })
  }

  /**
   * What every server's `replica_host_status` lists from now on, replaced in one transaction per
   * server (a reader never sees the table without a writer row). Servers that do not answer are
   * skipped; `only` limits the write to some of them.
   */
  async set(rows: ReadonlyArray<ReplicaHostStatusRow>, only?: ReadonlyArray<string>): Promise<void> {
    await Promise.all(
      this.adminUrls
        .filter((url) => only === undefined || only.includes(url))
        .map(async (url) => {
          try {
            await withConnection(url, async (connection) => {
              await connection.query('set session sql_log_bin = 0')
              await connection.query('start transaction')
              await connection.query(`delete from ${AURORA_SIM_SCHEMA}.replica_host_status`)
              for (const row of rows) {
                await connection.query(
                  `insert into ${AURORA_SIM_SCHEMA}.replica_host_status
                     (SERVER_ID, SESSION_ID, CPU, LAST_UPDATE_TIMESTAMP, REPLICA_LAG_IN_MILLISECONDS)
                   values (?, ?, 5, now(6) - interval ? second, ?)`,
                  [
                    row.serverId,
                    row.writer ? 'MASTER_SESSION_ID' : `reader-session-${row.serverId}`,
                    row.ageSeconds ?? 0,
                    row.writer ? 0 : (row.lagMs ?? null),
                  ],
                )
              }
              await connection.query('commit')
            })
          } catch (error) {
            if (only !== undefined) throw error
            // A server the test stopped: it reports nothing, as a failed Aurora instance.
            if (!isConnectionRefused(error)) throw error
          }
        }),
    )
  }
}

async function withConnection<T>(url: string, fn: (connection: mysql.Connection) => Promise<T>): Promise<T> {
  const connection = await mysql.createConnection({ uri: url, connectTimeout: 5_000 })
  connection.on('error', () => {})
  try {
    return await fn(connection)
  } finally {
    await connection.end().catch(() => connection.destroy())
  }
}

function isConnectionRefused(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'ECONNREFUSED'
}
