import { randomBytes } from 'node:crypto'
import { appendFile, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { findPostgresBinDir } from './binaries.js'
import { type InstalledServerTls, installServerTls, type ServerTlsOptions } from './certificates.js'
import { type DatabaseServer, LocalServer } from './local-server.js'
import { pollUntil } from './poll.js'
import { getFreePort } from './ports.js'
import { makeServerDirectory, type OsUser, run, serviceUser } from './processes.js'
import { pgQuery } from './sql.js'

export interface PostgresClusterOptions {
  /** Start a streaming replica next to the primary. Default true. */
  readonly replica?: boolean
  /**
   * max_connections on both servers. Default 100. Three of them are superuser_reserved_connections, so
   * `app` gets maxConnections - 3 before failing with 53300.
   */
  readonly maxConnections?: number
  /**
   * Serve TLS with this certificate (see certificates.ts). With `require`, the app user is refused
   * unless its connection is encrypted; the postgres superuser (the harness's admin connections,
   * replication) may still connect in plain text. Default: no TLS.
   */
  readonly tls?: ServerTlsOptions
  /**
   * Make the replica apply each commit this long after the primary made it (recovery_min_apply_delay):
   * a replica that is reliably behind. WAL still streams and is flushed at once, only replay waits.
   * Default: no delay.
   */
  readonly replicaApplyDelayMs?: number
}

export interface PostgresCluster {
  readonly engine: 'postgres'
  /** postgres://app:<password>@127.0.0.1:<port>/app, scram-sha-256. */
  readonly writerUrl: string
  /** Same on the replica; equals writerUrl without a replica. */
  readonly readerUrl: string
  /** postgres://postgres@127.0.0.1:<port>/app, trust. */
  readonly adminWriterUrl: string
  readonly adminReaderUrl: string
  /** The app user's password, so tests can check it never shows up in logs or errors. */
  readonly password: string
  /**
   * The directory of both servers' Unix sockets (unix_socket_directories, in the cluster's own temp
   * directory); each server's port picks its socket file. pg_hba trusts every local connection.
   */
  readonly writerSocket: string
  readonly primary: PostgresServer
  readonly replica: PostgresServer | undefined
  /** Stops both servers (immediate shutdown) and removes their files. */
  stop(): Promise<void>
}

export type PostgresServer = DatabaseServer

/**
 * A throwaway PostgreSQL primary (+ streaming replica) on free loopback ports, tuned for speed rather than
 * durability. The `app` role is an ordinary role (not superuser), so read-only errors, permission errors and
 * password failures behave as they would for an application on RDS.
 */
export async function startPostgresCluster(options: PostgresClusterOptions = {}): Promise<PostgresCluster> {
  const binDir = findPostgresBinDir()
  if (binDir === undefined) {
    throw new Error('PostgreSQL server binaries (initdb, postgres) not found; set PG_BIN_DIR')
  }
  const user = await serviceUser('postgres')
  const dir = await makeServerDirectory('kr-pg-', user)
  const password = `pw${randomBytes(16).toString('hex')}`
  const servers: LocalServer[] = []
  try {
    const primaryPort = await getFreePort()
    const primaryDir = join(dir.path, 'primary')
    await run(join(binDir, 'initdb'), ['-D', primaryDir, ...INITDB_OPTIONS], { user, cwd: dir.path })
    // Installed outside the data directory: pg_basebackup copies postgresql.conf, so the replica serves
    // the same files.
    const tls = options.tls === undefined ? undefined : await installServerTls(options.tls, dir.path, user)
    await appendFile(
      join(primaryDir, 'postgresql.conf'),
      serverConfig(primaryPort, dir.path, options) + tlsConfig(tls),
    )
    await writeFile(join(primaryDir, 'pg_hba.conf'), options.tls?.require === true ? HBA_TLS_REQUIRED : HBA)
    const primary = postgresServer('PostgreSQL primary', binDir, user, dir.path, primaryDir, primaryPort)
    servers.push(primary)
    await primary.start()
    for (const sql of [...createAppRole(password), 'CREATE DATABASE app OWNER app']) {
      await pgQuery(adminUrl(primaryPort, 'postgres'), sql)
    }

    let replica: LocalServer | undefined
    if (options.replica ?? true) {
      const replicaPort = await getFreePort()
      const replicaDir = join(dir.path, 'replica')
      // -R writes standby.signal and primary_conninfo; -N skips fsync, like initdb --no-sync.
      await run(
        join(binDir, 'pg_basebackup'),
        [
          ...['-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-D', replicaDir],
          ...['-R', '-X', 'stream', '-c', 'fast', '-N'],
        ],
        { user, cwd: dir.path },
      )
      // The copied postgresql.conf names the primary's port; a later line wins.
      const delay =
        options.replicaApplyDelayMs === undefined
          ? ''
          : `recovery_min_apply_delay = '${options.replicaApplyDelayMs}ms'\n`
      await appendFile(join(replicaDir, 'postgresql.conf'), `port = ${replicaPort}\n${delay}`)
      replica = postgresServer('PostgreSQL replica', binDir, user, dir.path, replicaDir, replicaPort)
      servers.push(replica)
      await replica.start()
      await pollUntil(async () => ((await isInRecovery(adminUrl(replicaPort, 'app'))) ? true : undefined), {
        timeoutMs: 30_000,
        what: 'the PostgreSQL replica to report pg_is_in_recovery()',
      })
    }

    const appUrl = (port: number) => `postgres://app:${encodeURIComponent(password)}@127.0.0.1:${port}/app`
    const readerPort = replica?.port ?? primaryPort
    return {
      engine: 'postgres',
      writerUrl: appUrl(primaryPort),
      readerUrl: appUrl(readerPort),
      adminWriterUrl: adminUrl(primaryPort, 'app'),
      adminReaderUrl: adminUrl(readerPort, 'app'),
      password,
      writerSocket: dir.path,
      primary,
      replica,
      stop: async () => {
        await Promise.all(servers.map((server) => server.stop('immediate')))
        await dir.remove()
      },
    }
  } catch (error) {
    await Promise.all(servers.map((server) => server.stop('immediate').catch(() => {})))
    await dir.remove()
    throw error
  }
}

// --no-sync: nothing initdb writes needs to survive a power cut. C locale: fast, and identical everywhere.
const INITDB_OPTIONS = [
  '--auth=trust',
  '-U',
  'postgres',
  '--no-sync',
  '-E',
  'UTF8',
  '--locale=C',
  '--no-instructions',
]

/** The `app` role: no superuser, so read-only and permission errors are real. */
export function createAppRole(password: string): string[] {
  return [
    `CREATE ROLE app LOGIN CREATEDB PASSWORD '${password.replaceAll("'", "''")}'`,
    // Lets the app role terminate other (non-superuser) backends in fault-injection tests.
    'GRANT pg_signal_backend TO app',
  ]
}

// First matching line wins: the superuser and replication connect without a password, `app` must present
// its real password over TCP (so a wrong one fails with 28P01), anything else is rejected.
const HBA = `local all all trust
local replication all trust
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all app 127.0.0.1/32 scram-sha-256
`

// As HBA, but `app` must use TLS: a plain connection gets 28000 ("pg_hba.conf rejects connection ...
// no encryption"), the SQLSTATE a server that forces TLS (RDS's rds.force_ssl = 1) answers.
const HBA_TLS_REQUIRED = `local all all trust
local replication all trust
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
hostnossl all app 127.0.0.1/32 reject
hostssl all app 127.0.0.1/32 scram-sha-256
`

function tlsConfig(tls: InstalledServerTls | undefined): string {
  if (tls === undefined) return ''
  const quoted = (path: string) => `'${path.replaceAll("'", "''")}'`
  return `ssl = on
ssl_cert_file = ${quoted(tls.certFile)}
ssl_key_file = ${quoted(tls.keyFile)}
ssl_ca_file = ${quoted(tls.caFile)}
`
}

function serverConfig(port: number, socketDir: string, options: PostgresClusterOptions): string {
  return `
listen_addresses = '127.0.0.1'
port = ${port}
unix_socket_directories = '${socketDir}'
max_connections = ${options.maxConnections ?? 100}
shared_buffers = '32MB'
wal_level = replica
max_wal_senders = 10
hot_standby = on
# Test data is disposable: trade durability for speed.
fsync = off
# synchronous_commit stays on (cheap with fsync off) so an acknowledged commit is flushed and streamed
# at once, and waitForReplica() can wait on the flush position. The WAL writer still flushes often.
wal_writer_delay = '10ms'
full_page_writes = off
# After a primary restart the replica retries every 5 s by default; fault tests want it back quickly.
wal_retrieve_retry_interval = '100ms'
`
}

function adminUrl(port: number, database: string): string {
  return `postgres://postgres@127.0.0.1:${port}/${database}`
}

async function isInRecovery(url: string): Promise<boolean> {
  const [row] = await pgQuery(url, 'SELECT pg_is_in_recovery() AS recovering')
  return row?.recovering === true
}

function postgresServer(
  name: string,
  binDir: string,
  user: OsUser | undefined,
  baseDir: string,
  dataDir: string,
  port: number,
): LocalServer {
  return new LocalServer({
    name,
    port,
    dataDir,
    command: join(binDir, 'postgres'),
    args: () => ['-D', dataDir],
    user,
    cwd: baseDir,
    logFile: join(baseDir, `${name.split(' ')[1]}.log`),
    stopSignals: { smart: 'SIGTERM', fast: 'SIGINT', immediate: 'SIGQUIT' },
    cleanupSignal: 'SIGQUIT',
    isReady: async () => (await pgQuery(adminUrl(port, 'postgres'), 'SELECT 1 AS ok')).length === 1,
    afterCrash: () => releaseSharedMemory(dataDir),
    promote: async () => {
      await run(join(binDir, 'pg_ctl'), ['promote', '-D', dataDir, '-w', '-t', '60'], { user, cwd: baseDir })
      await pollUntil(async () => ((await isInRecovery(adminUrl(port, 'app'))) ? undefined : true), {
        timeoutMs: 30_000,
        what: `${name} to leave recovery after promotion`,
      })
    },
  })
}

/**
 * A SIGKILLed postmaster cannot remove its small SysV shared-memory segment. Its orphaned children notice
 * the postmaster's death and detach within milliseconds; once they have, remove the segment so it is not
 * leaked (a restart would also clean it up, but a test may never restart the server). Linux only; elsewhere
 * this is a no-op.
 */
async function releaseSharedMemory(dataDir: string): Promise<void> {
  let shmId: string | undefined
  try {
    // postmaster.pid line 7 is "<key> <shmid>"; the file survives a SIGKILL.
    shmId = (await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[6]?.trim().split(/\s+/)[1]
  } catch {
    return
  }
  if (shmId === undefined || !/^\d+$/.test(shmId)) return
  const id = shmId
  const attachments = async (): Promise<number | undefined> => {
    const table = await readFile('/proc/sysvipc/shm', 'utf8').catch(() => '')
    const row = table
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .find((fields) => fields[1] === id)
    return row === undefined ? undefined : Number(row[6])
  }
  await pollUntil(async () => ((await attachments()) ?? 0) === 0 || undefined, {
    timeoutMs: 10_000,
    what: `the killed postmaster's children to exit (shared memory segment ${id})`,
  })
  if ((await attachments()) !== undefined) await run('ipcrm', ['-m', id]).catch(() => undefined)
}
