import { type ChildProcess, spawn } from 'node:child_process'
import { chown, mkdtemp, open, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { trackCommand, trackDirectory, trackServer } from './cleanup.js'

/** An OS account to run server binaries as; `undefined` means "as the current user". */
export interface OsUser {
  readonly name: string
  readonly uid: number
  readonly gid: number
}

const isRoot = process.getuid?.() === 0

/**
 * initdb/postgres and mariadbd refuse to run as root, so as root we run them as their packaged service
 * account (`postgres`, `mysql`). Otherwise they run as ourselves and need no ownership changes.
 */
export async function serviceUser(name: string): Promise<OsUser | undefined> {
  if (!isRoot) return undefined
  const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])])
  return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
}

export async function chownTo(path: string, user: OsUser | undefined): Promise<void> {
  if (user !== undefined) await chown(path, user.uid, user.gid)
}

export interface ServerDirectory {
  readonly path: string
  remove(): Promise<void>
}

/**
 * A fresh temp directory owned by the service user, registered for crash cleanup. Unix-socket paths must
 * stay under ~100 bytes, so a long os.tmpdir() (macOS: /var/folders/...) falls back to /tmp.
 */
export async function makeServerDirectory(
  prefix: string,
  user: OsUser | undefined,
): Promise<ServerDirectory> {
  const parent = tmpdir().length <= 40 ? tmpdir() : '/tmp'
  const path = await mkdtemp(join(parent, prefix))
  const untrack = trackDirectory(path)
  await chownTo(path, user)
  return {
    path,
    remove: async () => {
      await rm(path, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 })
      untrack()
    },
  }
}

export interface RunOptions {
  readonly user?: OsUser | undefined
  readonly cwd?: string
  readonly timeoutMs?: number
}

export interface RunResult {
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a command to completion; rejects with its output in the message when it fails. It leads its own
 * process group (so a terminal Ctrl-C reaches us, not initdb) and is registered for crash cleanup.
 */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      ...spawnIdentity(options.user, options.cwd),
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const untrack = child.pid === undefined ? () => {} : trackCommand(child.pid)
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const timeoutMs = options.timeoutMs ?? 60_000
    const timer = setTimeout(() => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
      } catch {
        // Finished in the meantime.
      }
    }, timeoutMs)
    const fail = (reason: string, cause?: Error) => {
      const output = `${stdout}\n${stderr}`.trim()
      reject(new Error(`${command} ${args.join(' ')} ${reason}\n${output}`, { cause }))
    }
    child.once('error', (error) => {
      clearTimeout(timer)
      untrack()
      fail(`could not run: ${error.message}`, error)
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      untrack()
      if (code === 0) {
        resolve({ stdout, stderr })
      } else {
        fail(signal === null ? `failed with exit code ${code}` : `was killed by ${signal} (timeout?)`)
      }
    })
  })
}

export interface ServerProcess {
  readonly pid: number
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<void>
  hasExited(): boolean
  signal(signal: NodeJS.Signals): void
}

export interface SpawnServerOptions {
  readonly user: OsUser | undefined
  readonly cwd: string
  /** stdout and stderr are appended here; read it with `tail()` to explain failures. */
  readonly logFile: string
  /** What the crash-cleanup registry sends if this process outlives us. */
  readonly cleanupSignal: NodeJS.Signals
}

/**
 * Starts a long-running server as a direct child (no runuser/sudo wrapper, so `pid` is the server
 * itself and signals reach it), in its own process group so a terminal Ctrl-C goes to us and our
 * cleanup decides how it dies.
 */
export async function spawnServer(
  command: string,
  args: readonly string[],
  options: SpawnServerOptions,
): Promise<ServerProcess> {
  const log = await open(options.logFile, 'a')
  let child: ChildProcess
  try {
    child = spawn(command, args, {
      ...spawnIdentity(options.user, options.cwd),
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
    })
  } finally {
    await log.close()
  }
  child.unref()
  const pid = child.pid
  if (pid === undefined) {
    const error = await new Promise<Error>((resolve) => child.once('error', resolve))
    throw new Error(`Could not start ${command}: ${error.message}`, { cause: error })
  }
  const untrack = trackServer(pid, options.cleanupSignal)
  let exited = false
  const exitedPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true
      untrack()
      resolve()
    })
  })
  return {
    pid,
    exited: exitedPromise,
    hasExited: () => exited,
    signal: (signal) => {
      if (!exited) child.kill(signal)
    },
  }
}

/** The last lines of a log file, for error messages. */
export async function tail(path: string, lines = 25): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

function spawnIdentity(user: OsUser | undefined, cwd: string | undefined) {
  // A minimal environment: a developer's PGHOST/PGPORT/PGDATA (or MYSQL_*) must not redirect pg_ctl or
  // pg_basebackup to a server that is not ours. HOME points at a directory the service user can read.
  const env: NodeJS.ProcessEnv = { LC_ALL: 'C', PATH: process.env.PATH }
  if (cwd !== undefined) env.HOME = cwd
  return {
    env,
    ...(cwd === undefined ? {} : { cwd }),
    ...(user === undefined ? {} : { uid: user.uid, gid: user.gid }),
  }
}
