import { EventEmitter } from 'node:events'
import type { CreateDbConfig } from '../../src/config/create-db-config.js'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { createDbOver, type ResilientDb } from '../../src/create-db.js'
import type { LoadedDrivers } from '../../src/dialect/load-driver.js'
import { Cluster } from '../../src/routing/cluster.js'

// A fake `pg` module for the server-free unit tests: each endpoint is a FakeServer whose behaviour the
// test scripts (refuse or hang a connect, fail or hang a statement mid-flight, answer read-only,
// report its role to writer discovery). Everything above the driver is the real code: the library's
// PostgresConnector, ConnectionPool, Endpoint, Kysely's own PostgresDriver, the cluster and the
// routing connection. The fake is handed to the cluster through its `drivers` seam; createDbOver
// turns that cluster into the db createDb returns.
//
// Only PostgreSQL's driver shape is faked. One dialect is enough for the retry and failover decision
// tables: above classifyError nothing depends on the dialect, and classifyError itself is tested for
// both drivers' error shapes in test/retry/classify-error.test.ts. Behaviour only real servers show
// (the drivers' own socket handling, real failovers) stays in the integration tests.
//
// Errors have the fields the real ones have: pg's DatabaseError (`severity` + SQLSTATE `code`), Node's
// system errors (`code`, `errno`, `syscall`), and pg's message-only errors ('Connection terminated
// unexpectedly').

/** How a new connection to a FakeServer ends. */
export type ConnectBehaviour =
  | 'accept'
  /** ECONNREFUSED from connect(): nothing listens there. */
  | 'refuse'
  /** ECONNRESET during the handshake (a load balancer whose backend is gone). */
  | 'reset'
  /** Never answers: the pool's connectTimeoutMs ends the attempt. */
  | 'hang'
  /** FATAL 53300 "sorry, too many clients already": a session refusal. */
  | 'too-many'
  /** FATAL 57P03 "the database system is starting up": a session refusal. */
  | 'starting-up'
  /** FATAL 28P01: wrong password. */
  | 'auth-failed'

/** How one statement fails. */
export type StatementFault =
  /** pg's "Connection terminated unexpectedly": the server closed the session mid-statement. */
  | 'terminate'
  /** FATAL 57P01: an administrator command or a shutdown ended the session mid-statement. */
  | 'admin-shutdown'
  /** ECONNRESET on the socket mid-statement. */
  | 'reset'
  /**
   * pg's "Client has encountered a connection error and is not queryable": the client knew its
   * connection was dead and sent nothing.
   */
  | 'not-queryable'
  /** FATAL 57P05: idle_session_timeout ended the session before the statement ran. */
  | 'idle-session-timeout'
  /** ERROR 25006: the session's server takes no writes. */
  | 'read-only'
  /** ERROR 42601: a syntax error. */
  | 'syntax'
  /** ERROR 23505: a unique violation. */
  | 'unique-violation'
  /** ERROR 40001: a serialization failure. */
  | 'serialization'
  /** ERROR 57014: statement_timeout. */
  | 'statement-timeout'
  /** ERROR 42501: insufficient privilege. */
  | 'permission-denied'
  /** Never answers, until the socket is destroyed (then pg's "Connection terminated"). */
  | 'hang'

/** A pg DatabaseError: the server's SQLSTATE and severity, as pg-protocol builds it. */
export function pgError(severity: 'ERROR' | 'FATAL', code: string, message: string): Error {
  return Object.assign(new Error(message), { name: 'error', severity, code, length: 100 })
}

/** A Node.js system error, as net.Socket reports it. */
export function systemError(code: string, syscall: string, errno: number): Error {
  const target = syscall === 'connect' ? ' 10.0.0.1:5432' : ''
  return Object.assign(new Error(`${syscall} ${code}${target}`), { code, errno, syscall })
}

const FAULT_ERRORS: Record<Exclude<StatementFault, 'hang'>, () => Error> = {
  terminate: () => new Error('Connection terminated unexpectedly'),
  'admin-shutdown': () => pgError('FATAL', '57P01', 'terminating connection due to administrator command'),
  reset: () => systemError('ECONNRESET', 'read', -104),
  'not-queryable': () => new Error('Client has encountered a connection error and is not queryable'),
  'idle-session-timeout': () =>
    pgError('FATAL', '57P05', 'terminating connection due to idle-session timeout'),
  'read-only': () => pgError('ERROR', '25006', 'cannot execute INSERT in a read-only transaction'),
  syntax: () => pgError('ERROR', '42601', 'syntax error at or near "selec"'),
  'unique-violation': () =>
    pgError('ERROR', '23505', 'duplicate key value violates unique constraint "person_pkey"'),
  serialization: () => pgError('ERROR', '40001', 'could not serialize access due to concurrent update'),
  'statement-timeout': () => pgError('ERROR', '57014', 'canceling statement due to statement timeout'),
  'permission-denied': () =>
    pgError('ERROR', '42501', 'permission denied for function pg_last_wal_replay_lsn'),
}

/** Faults after which the session is gone (the client is broken, as pg's would be). */
const ENDS_SESSION: ReadonlySet<StatementFault> = new Set([
  'terminate',
  'admin-shutdown',
  'reset',
  'not-queryable',
  'idle-session-timeout',
])

const CONNECT_ERRORS: Record<Exclude<ConnectBehaviour, 'accept' | 'hang'>, () => Error> = {
  refuse: () => systemError('ECONNREFUSED', 'connect', -111),
  reset: () => systemError('ECONNRESET', 'read', -104),
  'too-many': () => pgError('FATAL', '53300', 'sorry, too many clients already'),
  'starting-up': () => pgError('FATAL', '57P03', 'the database system is starting up'),
  'auth-failed': () => pgError('FATAL', '28P01', 'password authentication failed for user "app"'),
}

/** The statement writer discovery sends (PostgresConnector.probeRole). */
const ROLE_PROBE = /pg_is_in_recovery\(\) as standby/
/** The lag check (Endpoint.probeLag): first how the server reports lag, then the lag. */
const LAG_SOURCE_PROBE = /to_regproc\('aurora_replica_status'\)/
const LAG_PROBE = /as lag_ms/
/** Topology discovery's read of Aurora's view (dialect/topology-queries.ts). */
const AURORA_TOPOLOGY = /select server_id, session_id = 'MASTER_SESSION_ID' as writer/
const WRITE = /^\s*(insert|update|delete|merge|create|drop|alter|truncate)\b/i
const TRANSACTION = /^\s*(begin|start transaction|commit|rollback|savepoint|release)\b/i

interface ScriptedFault {
  readonly match: RegExp
  readonly fault: StatementFault
  remaining: number
}

/** One endpoint's server. Its name is the host the endpoint connects to. */
export class FakeServer {
  /** 'primary' accepts writes; 'standby' answers them with 25006 and tells discovery it is a replica. */
  role: 'primary' | 'standby'
  /** How every connect ends once the one-shot `connectFaults` are used up. */
  connectBehaviour: ConnectBehaviour = 'accept'
  /** One-shot outcomes for the next connects, in order. */
  readonly connectFaults: ConnectBehaviour[] = []
  /** Replay lag reported to the lag check; `null`: the replica reports none. */
  lagMs: number | null = 0
  /** While true every statement hangs (a frozen server); so do liveness pings. */
  frozen = false
  /** Every statement the server received, in order (including the library's own probes). */
  readonly received: string[] = []
  connectAttempts = 0
  readonly sessions = new Set<FakeClient>()
  readonly #faults: ScriptedFault[] = []

  constructor(
    readonly name: string,
    role: 'primary' | 'standby',
  ) {
    this.role = role
  }

  /** The next `times` statements matching `match` fail with `fault`. */
  failNext(match: RegExp, fault: StatementFault, times = 1): this {
    this.#faults.push({ match, fault, remaining: times })
    return this
  }

  /** The next connect ends as `behaviour` (then `connectBehaviour` again). */
  failNextConnect(behaviour: ConnectBehaviour, times = 1): this {
    for (let i = 0; i < times; i++) this.connectFaults.push(behaviour)
    return this
  }

  /** How many statements received match `pattern`. */
  count(pattern: RegExp): number {
    return this.received.filter((statement) => pattern.test(statement)).length
  }

  /** How many times writer discovery asked this server for its role. */
  get roleProbes(): number {
    return this.count(ROLE_PROBE)
  }

  /** Ends every open session as a crash does: statements in flight get "Connection terminated unexpectedly". */
  crash(): void {
    for (const session of [...this.sessions]) session.breakConnection(FAULT_ERRORS.terminate())
  }

  nextConnect(): ConnectBehaviour {
    this.connectAttempts++
    return this.connectFaults.shift() ?? this.connectBehaviour
  }

  /** The scripted fault for this statement, if any (consumed). */
  takeFault(sql: string): StatementFault | undefined {
    // Scripted faults are for the statements a test sends. The platform detection every endpoint
    // runs on its first connection is the library's own (a frozen server still never answers it).
    if (LAG_SOURCE_PROBE.test(sql)) return undefined
    const index = this.#faults.findIndex((scripted) => scripted.match.test(sql))
    if (index === -1) return undefined
    const scripted = this.#faults[index] as ScriptedFault
    if (--scripted.remaining === 0) this.#faults.splice(index, 1)
    return scripted.fault
  }
}

interface Result {
  readonly rows: unknown[]
  readonly command: string
  readonly rowCount: number
}

let nextProcessId = 1000

/** Stands in for pg's `Client`: the members PostgresConnector and Kysely's PostgresDriver use. */
class FakeClient extends EventEmitter {
  readonly processID = nextProcessId++
  /** What PostgresConnector.destroy reaches for: the socket. */
  readonly connection = {
    stream: { destroy: () => this.breakConnection(new Error('Connection terminated')) },
  }
  readonly #server: FakeServer | undefined
  readonly #host: string
  readonly #fake: FakePg
  #state: 'new' | 'open' | 'ended' = 'new'
  #readOnlyTransaction = false
  /** Rejects the statement in flight, if any. */
  #inFlight: ((error: Error) => void) | undefined

  constructor(fake: FakePg, config: { host?: string }) {
    super()
    this.#host = config.host ?? 'localhost'
    this.#server = fake.servers.get(this.#host)
    this.#fake = fake
  }

  connect(): Promise<void> {
    const server = this.#server
    if (server === undefined) {
      return Promise.reject(
        Object.assign(new Error(`getaddrinfo ENOTFOUND ${this.#host}`), {
          code: 'ENOTFOUND',
          errno: -3008,
          syscall: 'getaddrinfo',
          hostname: this.#host,
        }),
      )
    }
    const behaviour = server.nextConnect()
    if (behaviour === 'hang') return new Promise(() => {})
    if (behaviour !== 'accept') return Promise.reject(CONNECT_ERRORS[behaviour]())
    return Promise.resolve().then(() => {
      this.#state = 'open'
      server.sessions.add(this)
    })
  }

  query(statement: string | FakeCursor, _parameters?: unknown[]): Promise<Result> | FakeCursor {
    if (statement instanceof FakeCursor) {
      statement.run = () => this.#execute(statement.sql)
      return statement
    }
    return this.#execute(statement)
  }

  end(): Promise<void> {
    if (this.#state === 'open') this.breakConnection(new Error('Connection terminated'))
    this.#state = 'ended'
    return Promise.resolve()
  }

  /** The socket is gone: the statement in flight fails with `error`, and the client emits 'end'. */
  breakConnection(error: Error): void {
    if (this.#state !== 'open') return
    this.#state = 'ended'
    this.#server?.sessions.delete(this)
    const inFlight = this.#inFlight
    this.#inFlight = undefined
    inFlight?.(error)
    this.emit('end')
  }

  #execute(sql: string): Promise<Result> {
    const server = this.#server
    if (this.#state !== 'open' || server === undefined) {
      return Promise.reject(new Error('Client was closed and is not queryable'))
    }
    const fault = server.takeFault(sql) ?? (server.frozen ? 'hang' : undefined)
    // pg rejects a statement on a client it knows is dead without sending it.
    if (fault !== 'not-queryable') server.received.push(sql)
    if (fault === 'hang') {
      return new Promise<Result>((_resolve, reject) => {
        this.#inFlight = reject
      })
    }
    if (fault !== undefined) {
      const error = FAULT_ERRORS[fault]()
      if (ENDS_SESSION.has(fault)) {
        // Answered first, then the socket closes: the statement gets this error, not the close's.
        return Promise.resolve().then(() => {
          this.breakConnection(new Error('Connection terminated'))
          throw error
        })
      }
      return Promise.reject(error)
    }
    if (WRITE.test(sql) && (server.role === 'standby' || this.#readOnlyTransaction)) {
      return Promise.reject(FAULT_ERRORS['read-only']())
    }
    return Promise.resolve(this.#answer(server, sql))
  }

  #answer(server: FakeServer, sql: string): Result {
    if (ROLE_PROBE.test(sql)) return rows('SELECT', [{ standby: server.role === 'standby' }])
    const aurora = this.#fake.auroraTopology
    if (LAG_SOURCE_PROBE.test(sql)) return rows('SELECT', [{ aurora: aurora !== undefined, multi_az: false }])
    if (AURORA_TOPOLOGY.test(sql)) {
      if (aurora === undefined)
        throw pgError('ERROR', '42883', 'function aurora_replica_status() does not exist')
      if (aurora instanceof Error) throw aurora
      return rows(
        'SELECT',
        aurora.map((instance) => ({ server_id: instance.id, writer: instance.writer })),
      )
    }
    // A streaming replica that has not replayed all it received, behind by lagMs (null: unknown).
    if (LAG_PROBE.test(sql))
      return rows('SELECT', [{ replica: true, caught_up: false, lag_ms: server.lagMs }])
    const transaction = TRANSACTION.exec(sql)?.[1]?.toLowerCase()
    if (transaction !== undefined) {
      if (transaction === 'start transaction') this.#readOnlyTransaction = /read only/i.test(sql)
      if (transaction === 'commit' || transaction === 'rollback') this.#readOnlyTransaction = false
      return rows(transaction === 'start transaction' ? 'START' : transaction.toUpperCase(), [])
    }
    const write = WRITE.exec(sql)?.[1]
    if (write !== undefined) return { rows: [], command: write.toUpperCase(), rowCount: 1 }
    // Every read names the server that answered it, so a test can see where it was routed.
    return rows('SELECT', [{ server: server.name }])
  }
}

function rows(command: string, list: unknown[]): Result {
  return { rows: list, command, rowCount: list.length }
}

/** Stands in for `pg-cursor`: one chunk of one row (naming the server), then the end. */
class FakeCursor {
  run: (() => Promise<Result>) | undefined
  #done = false

  constructor(readonly sql: string) {}

  async read(_rowCount: number): Promise<unknown[]> {
    if (this.#done) return []
    this.#done = true
    if (this.run === undefined) throw new Error('cursor not submitted')
    return (await this.run()).rows
  }

  async close(): Promise<void> {}
}

/** A set of fake servers, and the `pg` module that connects to them by host name. */
export class FakePg {
  readonly servers = new Map<string, FakeServer>()
  /**
   * Makes every server an Aurora PostgreSQL instance sharing one cluster volume: what each one's
   * `aurora_replica_status()` lists (instance ids are server names, so the host pattern `'?'` maps
   * them back), or an Error the view fails with. Undefined: plain PostgreSQL.
   */
  auroraTopology: ReadonlyArray<{ id: string; writer: boolean }> | Error | undefined

  /** Points another host name (a cluster endpoint: "DNS") at an existing server. */
  alias(name: string, server: FakeServer): void {
    this.servers.set(name, server)
  }

  /** Adds a server; an endpoint whose host is `name` connects to it. */
  server(name: string, role: 'primary' | 'standby' = 'primary'): FakeServer {
    const server = new FakeServer(name, role)
    this.servers.set(name, server)
    return server
  }

  /** Sessions still open on any server: 0 once every db over them is destroyed. */
  openSessions(): number {
    let open = 0
    for (const server of this.servers.values()) open += server.sessions.size
    return open
  }

  /** The driver modules to open endpoints with (Cluster's `drivers` seam). */
  drivers(): LoadedDrivers {
    const fake = this
    class Client extends FakeClient {
      constructor(config: { host?: string }) {
        super(fake, config)
      }
    }
    return { dialect: 'postgres', pg: { Client } as never, cursor: FakeCursor as never }
  }
}

/** An endpoint of a fake cluster: the host is the FakeServer's name, and so is the endpoint's name. */
export function endpoint(name: string): {
  host: string
  name: string
  user: string
  password: string
  database: string
} {
  return { host: name, name, user: 'app', password: 'fake-password', database: 'app' }
}

/** What createDb returns, over `fake`'s servers, plus the cluster behind it for the tests that need it. */
export function fakeDb<DB>(
  fake: FakePg,
  config: Omit<CreateDbConfig, 'dialect'>,
): { readonly db: ResilientDb<DB>; readonly cluster: Cluster } {
  const cluster = new Cluster(resolveConfig({ dialect: 'postgres', ...config }), fake.drivers())
  return { db: createDbOver<DB>(cluster), cluster }
}
