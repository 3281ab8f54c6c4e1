import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { findPgBouncer } from './binaries.js'
import { type DatabaseServer, LocalServer } from './local-server.js'
import { getFreePort } from './ports.js'
import { chownTo, makeServerDirectory, serviceUser } from './processes.js'
import { pgQuery, type Row } from './sql.js'

export interface PgBouncerOptions {
  /** Default 'transaction': the mode that multiplexes, and the one that breaks session state. */
  readonly poolMode?: 'transaction' | 'session'
  /** Default 2000, the storm setting. */
  readonly maxClientConn?: number
  /** Server connections per user/database pair. Default 20. */
  readonly defaultPoolSize?: number
  /** Seconds a client may wait for a server connection before PgBouncer fails it. PgBouncer's default 120. */
  readonly queryWaitTimeoutS?: number
  /** Any other `[pgbouncer]` setting, written as is (e.g. `{ server_login_retry: 1 }`). */
  readonly settings?: Readonly<Record<string, string | number>>
}

export interface PgBouncer {
  readonly port: number
  /** The app user's URL through PgBouncer (same password as the server: PgBouncer checks it by auth_query). */
  readonly url: string
  /** The PgBouncer process: kill, SIGSTOP, stop and start it like a database server. */
  readonly process: DatabaseServer
  /** Runs a command on the admin console (`SHOW POOLS`, `PAUSE app`, `RESUME`, `RECONNECT app`, …). */
  admin(command: string): Promise<Row[]>
  /** Points the `app` database at another server port (then RELOAD): a proxy whose backend moved. */
  retarget(backendPort: number): Promise<void>
  /** Stops PgBouncer and removes its files. */
  stop(): Promise<void>
}

/** Whether the machine has a PgBouncer binary (Debian's `pgbouncer` package). */
export const PGBOUNCER_AVAILABLE = findPgBouncer() !== undefined

/**
 * A PgBouncer of its own, on a free loopback port, in front of one test PostgreSQL server (the harness's
 * `app` database). Clients log in as `app` with the server's password: PgBouncer checks it with
 * `auth_query` against the server's pg_shadow and logs in to the server with the client's SCRAM keys, so
 * a password rotated on the server is the one PgBouncer accepts, as with RDS Proxy and Secrets Manager.
 * The admin console (`postgres`, database `pgbouncer`) is for the tests' PAUSE/RESUME/RECONNECT.
 */
export async function startPgBouncer(
  backend: { readonly port: number; readonly appUrl: string },
  options: PgBouncerOptions = {},
): Promise<PgBouncer> {
  const binary = findPgBouncer()
  if (binary === undefined) {
    throw new Error('PgBouncer not found: install it (apt-get install -y pgbouncer) or set PGBOUNCER_BIN')
  }
  // PgBouncer refuses to run as root; the postgres service account is there wherever PostgreSQL is.
  const user = await serviceUser('postgres')
  const dir = await makeServerDirectory('kr-pgb-', user)
  const port = await getFreePort()
  const adminPassword = `adm${randomBytes(12).toString('hex')}`
  const configFile = join(dir.path, 'pgbouncer.ini')
  const userlist = join(dir.path, 'userlist.txt')
  let backendPort = backend.port
  const writeConfig = async () => {
    await writeFile(configFile, config(port, backendPort, userlist, options))
    await chownTo(configFile, user)
  }
  // auth_user (postgres) logs in to the server without a password (the harness's pg_hba trusts it);
  // PgBouncer still wants an entry for it. The admin console checks its own password.
  await writeFile(userlist, `"postgres" "${adminPassword}"\n`)
  await chownTo(userlist, user)
  await writeConfig()
  const adminUrl = `postgres://postgres:${adminPassword}@127.0.0.1:${port}/pgbouncer`
  const server = new LocalServer({
    name: 'PgBouncer proxy',
    port,
    dataDir: dir.path,
    command: binary,
    args: () => [configFile],
    user,
    cwd: dir.path,
    logFile: join(dir.path, 'pgbouncer.log'),
    // SIGINT waits for clients' queries to finish; SIGTERM closes everything at once (1.18 and later).
    stopSignals: { smart: 'SIGINT', fast: 'SIGTERM', immediate: 'SIGTERM' },
    cleanupSignal: 'SIGTERM',
    isReady: async () => (await pgQuery(adminUrl, 'SHOW VERSION')).length === 1,
    promote: async () => {
      throw new Error('PgBouncer has no promote')
    },
  })
  try {
    await server.start()
  } catch (error) {
    await dir.remove()
    throw error
  }
  const url = new URL(backend.appUrl)
  url.port = String(port)
  return {
    port,
    url: url.toString(),
    process: server,
    admin: (command) => pgQuery(adminUrl, command),
    retarget: async (newPort) => {
      backendPort = newPort
      await writeConfig()
      await pgQuery(adminUrl, 'RELOAD')
    },
    stop: async () => {
      await server.stop('fast')
      await dir.remove()
    },
  }
}

function config(port: number, backendPort: number, userlist: string, options: PgBouncerOptions): string {
  const settings: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    // No Unix socket: the cluster's own socket directory stays the server's.
    unix_socket_dir: '',
    auth_type: 'scram-sha-256',
    auth_file: userlist,
    auth_user: 'postgres',
    auth_query: 'SELECT usename, passwd FROM pg_shadow WHERE usename=$1',
    admin_users: 'postgres',
    pool_mode: options.poolMode ?? 'transaction',
    max_client_conn: options.maxClientConn ?? 2000,
    default_pool_size: options.defaultPoolSize ?? 20,
    query_wait_timeout: options.queryWaitTimeoutS ?? 120,
    // Fault tests restart the server under PgBouncer; its default waits 15 s before logging in again.
    server_login_retry: 1,
    // Quiet: the log is read only to explain a failed start.
    log_connections: 0,
    log_disconnections: 0,
    ...options.settings,
  }
  const lines = Object.entries(settings).map(([key, value]) => `${key} = ${value}`)
  return `[databases]
app = host=127.0.0.1 port=${backendPort} dbname=app

[pgbouncer]
${lines.join('\n')}
`
}
