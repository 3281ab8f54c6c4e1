import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { findMariaDbBinaries, type MariaDbBinaries } from './binaries.js'
import { type InstalledServerTls, installServerTls, type ServerTlsOptions } from './certificates.js'
import { type DatabaseServer, LocalServer } from './local-server.js'
import { pollUntil } from './poll.js'
import { getFreePort } from './ports.js'
import { chownTo, makeServerDirectory, type OsUser, run, serviceUser } from './processes.js'
import { mysqlQuery } from './sql.js'

export interface MariaDbClusterOptions {
  /** Start a GTID replica next to the primary. Default true. */
  readonly replica?: boolean
  /**
   * max_connections on both servers. Default 100. MariaDB silently raises values below 10 to 10, so those
   * are rejected here. `app` holds CONNECTION ADMIN and may open one connection beyond this.
   */
  readonly maxConnections?: number
  /**
   * Serve TLS with this certificate (see certificates.ts). With `require`, the servers run with
   * require_secure_transport, so every plain TCP connection is refused; the admin URLs (and the harness's
   * own connections, replication included) then use TLS without verification. Default: no TLS.
   */
  readonly tls?: ServerTlsOptions
  /**
   * Make the replica apply each transaction this long after the primary ran it (CHANGE MASTER TO
   * MASTER_DELAY, in whole seconds: rounded up). MariaDB counts from the event's timestamp, which has
   * one-second resolution, so a transaction shows up on the replica between delay - 1 s and delay
   * after it committed. Set once the cluster is set up, so setup itself is not delayed. Default: none.
   */
  readonly replicaApplyDelayMs?: number
}

export interface MariaDbCluster {
  readonly engine: 'mysql'
  /** mysql://app:<password>@127.0.0.1:<port>/app */
  readonly writerUrl: string
  /** Same on the replica; equals writerUrl without a replica. */
  readonly readerUrl: string
  /**
   * mysql://admin:<admin password>@127.0.0.1:<port>/app, ALL PRIVILEGES WITH GRANT OPTION. With
   * `tls.require` it carries mysql2's `?ssl=...` option, so queryOnce() can use it as is.
   */
  readonly adminWriterUrl: string
  readonly adminReaderUrl: string
  /** The app user's password, so tests can check it never shows up in logs or errors. */
  readonly password: string
  /** The primary's Unix socket file, in the cluster's own temp directory ('app'@'localhost' there). */
  readonly writerSocket: string
  readonly primary: MariaDbServer
  readonly replica: MariaDbServer | undefined
  /** Kills both servers and removes their files. */
  stop(): Promise<void>
}

export type MariaDbServer = DatabaseServer

/**
 * A throwaway MariaDB primary (+ GTID replica) on free loopback ports, tuned for speed rather than
 * durability.
 *
 * Privileges matter here: in MariaDB 10.11 SUPER and READ_ONLY ADMIN let a user write on a read_only
 * replica, which would hide exactly the failures the library must handle. So `app` gets ALL on `app`.*
 * plus PROCESS, RELOAD and CONNECTION ADMIN (to KILL connections in fault tests) and nothing else.
 */
export async function startMariaDbCluster(options: MariaDbClusterOptions = {}): Promise<MariaDbCluster> {
  if (options.maxConnections !== undefined && options.maxConnections < 10) {
    throw new Error(`MariaDB's max_connections cannot be below 10 (asked for ${options.maxConnections})`)
  }
  const binaries = findMariaDbBinaries()
  if (binaries === undefined) throw new Error('MariaDB binaries (mariadbd, mariadb-install-db) not found')
  const user = await serviceUser('mysql')
  const dir = await makeServerDirectory('kr-my-', user)
  const password = `pw${randomBytes(16).toString('hex')}`
  const adminPassword = `admin${randomBytes(16).toString('hex')}`
  const replicationPassword = `repl${randomBytes(16).toString('hex')}`
  const servers: LocalServer[] = []
  try {
    // admin must exist before we can connect over TCP (root only has unix-socket auth), so it comes from
    // --init-file on first start. sql_log_bin=0 keeps it out of the binlog: the replica creates its own and
    // replaying the primary's CREATE USER there would break replication.
    const initFile = join(dir.path, 'init.sql')
    await writeFile(
      initFile,
      `SET sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'admin'@'127.0.0.1' IDENTIFIED BY '${adminPassword}';
GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION;
SET sql_log_bin = 1;
`,
    )
    await chownTo(initFile, user)
    const wantReplica = options.replica ?? true
    const [primaryPort, replicaPort] = await Promise.all([getFreePort(), getFreePort()])
    const tls = options.tls === undefined ? undefined : await installServerTls(options.tls, dir.path, user)
    const harness = harnessUrls(options.tls?.require === true)
    const common = { binaries, user, baseDir: dir.path, initFile, adminPassword, options, tls, harness }
    const primary = mariaDbServer({ ...common, role: 'primary', port: primaryPort, serverId: 1 })
    const replica = wantReplica
      ? mariaDbServer({ ...common, role: 'replica', port: replicaPort, serverId: 2 })
      : undefined
    const all = replica === undefined ? [primary] : [primary, replica]
    // Each server gets its own datadir; initialise and boot them in parallel.
    await Promise.all(
      all.map(async (server) => {
        await mkdir(tmpDirOf(server.dataDir))
        await chownTo(tmpDirOf(server.dataDir), user)
        await installDataDir(binaries, user, dir.path, server.dataDir)
        servers.push(server)
        await server.start()
      }),
    )

    // Everything below runs on the primary and reaches the replica through replication.
    const primaryAdmin = harness.admin(primaryPort, adminPassword, '')
    for (const sql of [
      `CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '${replicationPassword}'`,
      "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'",
      'CREATE DATABASE app',
      ...createAppUser(password, ['127.0.0.1', 'localhost']),
    ]) {
      await mysqlQuery(primaryAdmin, sql)
    }

    if (replica !== undefined) {
      const replicaAdmin = harness.admin(replicaPort, adminPassword, '')
      // The replica logs in to the primary over TCP like any client, so it must use TLS as well.
      const masterSsl = tls === undefined ? '' : ', MASTER_SSL=1'
      await mysqlQuery(
        replicaAdmin,
        `CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${primaryPort}, MASTER_USER='repl',
           MASTER_PASSWORD='${replicationPassword}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1${masterSsl}`,
      )
      await mysqlQuery(replicaAdmin, 'START SLAVE')
      await waitForReplicationThreads(replicaAdmin)
      // Everything the primary has written so far (users, database) must be applied before `app` logs in.
      const [position] = await mysqlQuery(primaryAdmin, 'SELECT @@gtid_binlog_pos AS pos')
      const [waited] = await mysqlQuery(replicaAdmin, 'SELECT MASTER_GTID_WAIT(?, 30) AS result', [
        position?.pos,
      ])
      if (Number(waited?.result) !== 0) throw new Error('MariaDB replica did not catch up with the primary')
      await mysqlQuery(harness.app(replicaPort, password), 'SELECT 1')
      if (options.replicaApplyDelayMs !== undefined) {
        // MariaDB changes MASTER_DELAY only with both replication threads stopped.
        await mysqlQuery(replicaAdmin, 'STOP SLAVE')
        await mysqlQuery(
          replicaAdmin,
          `CHANGE MASTER TO MASTER_DELAY = ${Math.ceil(options.replicaApplyDelayMs / 1000)}`,
        )
        await mysqlQuery(replicaAdmin, 'START SLAVE')
        await waitForReplicationThreads(replicaAdmin)
      }
    }

    const readerPort = replica === undefined ? primaryPort : replicaPort
    return {
      engine: 'mysql',
      writerUrl: appUrl(primaryPort, password),
      readerUrl: appUrl(readerPort, password),
      adminWriterUrl: harness.admin(primaryPort, adminPassword, 'app'),
      adminReaderUrl: harness.admin(readerPort, adminPassword, 'app'),
      password,
      writerSocket: socketOf(dir.path, 'primary'),
      primary,
      replica,
      stop: async () => {
        // The data is thrown away, so there is no point in a clean InnoDB shutdown.
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

/**
 * The `app` user, deliberately without SUPER / READ_ONLY ADMIN (either would let it write on a read_only
 * replica). CONNECTION ADMIN lets it KILL other users' connections in fault tests; note it also lets `app`
 * use the one extra connection MariaDB keeps beyond max_connections for administrators.
 */
export function createAppUser(password: string, hosts: readonly string[]): string[] {
  return hosts.flatMap((host) => [
    `CREATE USER 'app'@'${host}' IDENTIFIED BY '${password.replaceAll("'", "''")}'`,
    `GRANT ALL PRIVILEGES ON app.* TO 'app'@'${host}'`,
    `GRANT PROCESS, RELOAD, CONNECTION ADMIN ON *.* TO 'app'@'${host}'`,
  ])
}

function appUrl(port: number, password: string): string {
  return `mysql://app:${encodeURIComponent(password)}@127.0.0.1:${port}/app`
}

function adminUrl(port: number, password: string, database: string): string {
  return `mysql://admin:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`
}

interface HarnessUrls {
  readonly admin: (port: number, password: string, database: string) => string
  readonly app: (port: number, password: string) => string
}

/**
 * URLs for the harness's own connections. Under require_secure_transport even they must use TLS (only
 * the unix socket counts as secure, and `admin` exists for 127.0.0.1 only). Verification is pointless
 * there: the harness talks to a server it has just started on loopback. mysql2 reads JSON options from
 * the query string.
 */
function harnessUrls(tlsRequired: boolean): HarnessUrls {
  const suffix = tlsRequired
    ? `?ssl=${encodeURIComponent(JSON.stringify({ rejectUnauthorized: false }))}`
    : ''
  return {
    admin: (port, password, database) => `${adminUrl(port, password, database)}${suffix}`,
    app: (port, password) => `${appUrl(port, password)}${suffix}`,
  }
}

async function installDataDir(
  binaries: MariaDbBinaries,
  user: OsUser | undefined,
  baseDir: string,
  dataDir: string,
): Promise<void> {
  // --no-defaults everywhere: the system my.cnf names port 3306, the system socket and datadir.
  // Unknown options (--tmpdir) are passed on to the bootstrap mariadbd.
  await run(
    binaries.installDb,
    [
      ...['--no-defaults', `--datadir=${dataDir}`, `--tmpdir=${tmpDirOf(dataDir)}`],
      ...['--skip-test-db', '--auth-root-authentication-method=socket'],
    ],
    { user, cwd: baseDir },
  )
}

function socketOf(baseDir: string, role: 'primary' | 'replica'): string {
  return join(baseDir, `${role}.sock`)
}

/**
 * Each server's own tmpdir: with the shared /tmp, concurrent bootstraps (other clusters starting in
 * parallel test files) failed with "Could not remove temporary table '/tmp/#sql-temptable-...'".
 */
function tmpDirOf(dataDir: string): string {
  return `${dataDir}-tmp`
}

interface MariaDbServerSpec {
  readonly binaries: MariaDbBinaries
  readonly user: OsUser | undefined
  readonly baseDir: string
  readonly initFile: string
  readonly adminPassword: string
  readonly options: MariaDbClusterOptions
  readonly tls: InstalledServerTls | undefined
  readonly harness: HarnessUrls
  readonly role: 'primary' | 'replica'
  readonly port: number
  readonly serverId: number
}

function mariaDbServer(spec: MariaDbServerSpec): LocalServer {
  const { baseDir, role, port } = spec
  const dataDir = join(baseDir, role)
  const admin = spec.harness.admin(port, spec.adminPassword, '')
  const logFile = join(baseDir, `${role}.err`)
  let started = false
  return new LocalServer({
    name: `MariaDB ${role}`,
    port,
    dataDir,
    command: spec.binaries.mariadbd,
    args: () => {
      const args = [
        '--no-defaults',
        // Must precede --log-error: it resets the log file names.
        `--log-basename=${role}`,
        `--datadir=${dataDir}`,
        `--tmpdir=${tmpDirOf(dataDir)}`,
        `--port=${port}`,
        '--bind-address=127.0.0.1',
        `--socket=${socketOf(baseDir, role)}`,
        `--pid-file=${join(baseDir, `${role}.pid`)}`,
        // The same file our stdout/stderr go to, so a failed start can show its tail.
        `--log-error=${logFile}`,
        '--skip-name-resolve',
        `--server-id=${spec.serverId}`,
        '--log-bin',
        '--binlog-format=ROW',
        // The replica logs what it applies, so a promoted replica has the same GTID history.
        ...(role === 'replica' ? ['--read-only=1', '--log-slave-updates'] : []),
        `--max-connections=${spec.options.maxConnections ?? 100}`,
        // The listen backlog defaults to 80 + max_connections / 5: a burst of hundreds of simultaneous
        // connects (the credential rotation test) overflows it and the kernel resets some of them.
        `--back-log=${Math.max(80, (spec.options.maxConnections ?? 100) * 2)}`,
        '--character-set-server=utf8mb4',
        // Test data is disposable: trade durability for speed.
        '--innodb-buffer-pool-size=32M',
        '--innodb-flush-log-at-trx-commit=0',
        '--innodb-doublewrite=0',
        '--sync-binlog=0',
        // Native AIO needs io_setup() slots, which run out with many servers on one machine.
        '--innodb-use-native-aio=0',
        ...tlsArgs(spec.tls, spec.options.tls?.require === true),
      ]
      // Only the first boot creates the admin user; restarts keep the grant tables as tests left them.
      if (!started) args.push(`--init-file=${spec.initFile}`)
      started = true
      return args
    },
    user: spec.user,
    cwd: baseDir,
    logFile,
    // MariaDB has one clean shutdown (SIGTERM); "immediate" is a crash, which InnoDB recovers from.
    stopSignals: { smart: 'SIGTERM', fast: 'SIGTERM', immediate: 'SIGKILL' },
    cleanupSignal: 'SIGKILL',
    isReady: async () => (await mysqlQuery(admin, 'SELECT 1 AS ok')).length === 1,
    promote: async () => {
      for (const sql of ['STOP SLAVE', 'RESET SLAVE ALL', 'SET GLOBAL read_only = 0']) {
        await mysqlQuery(admin, sql)
      }
    },
  })
}

function tlsArgs(tls: InstalledServerTls | undefined, required: boolean): string[] {
  if (tls === undefined) return []
  const args = [`--ssl-cert=${tls.certFile}`, `--ssl-key=${tls.keyFile}`, `--ssl-ca=${tls.caFile}`]
  // MariaDB 10.5.2+: every plain TCP login is refused, for every user. MariaDB 10.11 answers 1045
  // ("Access denied", as for a wrong password), not MySQL 8's dedicated 3159.
  if (required) args.push('--require-secure-transport=ON')
  return args
}

async function waitForReplicationThreads(replicaAdmin: string): Promise<void> {
  await pollUntil(
    async () => {
      const [status] = await mysqlQuery(replicaAdmin, 'SHOW SLAVE STATUS')
      if (status?.Slave_IO_Running === 'Yes' && status.Slave_SQL_Running === 'Yes') return true
      const error = status?.Last_IO_Error || status?.Last_SQL_Error
      throw new Error(`replication threads not running yet${error ? `: ${String(error)}` : ''}`)
    },
    { timeoutMs: 30_000, what: 'the MariaDB replica IO and SQL threads' },
  )
}
