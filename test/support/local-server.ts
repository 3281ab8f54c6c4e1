import { PollAbort, pollUntil, withTimeout } from './poll.js'
import { waitForPortClosed } from './ports.js'
import { type OsUser, type ServerProcess, spawnServer, tail } from './processes.js'

export type StopMode = 'smart' | 'fast' | 'immediate'

/** One database server process that tests can stop, crash, restart and promote. */
export interface DatabaseServer {
  readonly port: number
  readonly dataDir: string
  /** The server's (postmaster's) pid while it runs. */
  readonly pid: number | undefined
  /** Starts it again after stop()/kill() and resolves once it accepts connections. */
  start(): Promise<void>
  stop(mode?: StopMode): Promise<void>
  /**
   * Sends `signal` (SIGKILL by default) and, if the signal ends the process, waits until it has exited and
   * its port is closed. SIGSTOP/SIGCONT (a hung server), SIGHUP and SIGUSR* return right after sending.
   */
  kill(signal?: NodeJS.Signals): Promise<void>
  /** Turns a replica into a writable primary; resolves once it accepts writes. */
  promote(): Promise<void>
}

export interface LocalServerSpec {
  /** For messages, e.g. 'PostgreSQL replica'. */
  readonly name: string
  readonly port: number
  readonly dataDir: string
  readonly command: string
  /** Called before every start: arguments may differ between the first and later starts. */
  readonly args: () => readonly string[]
  readonly user: OsUser | undefined
  readonly cwd: string
  readonly logFile: string
  readonly stopSignals: Readonly<Record<StopMode, NodeJS.Signals>>
  /** Signal for the crash-cleanup registry: fast, but lets the server release what it holds. */
  readonly cleanupSignal: NodeJS.Signals
  /** Resolves true once the server serves queries; may throw while it is still starting. */
  readonly isReady: () => Promise<boolean>
  /** Called after the server died from SIGKILL, to release what it could not (e.g. SysV shared memory). */
  readonly afterCrash?: () => Promise<void>
  readonly promote: () => Promise<void>
}

const STARTUP_TIMEOUT_MS = 60_000
const SHUTDOWN_TIMEOUT_MS = 60_000
// Signals after which the process keeps running, so kill() must not wait for it to exit.
const NON_TERMINATING: ReadonlySet<NodeJS.Signals> = new Set([
  'SIGSTOP',
  'SIGCONT',
  'SIGTSTP',
  'SIGHUP',
  'SIGUSR1',
  'SIGUSR2',
  'SIGWINCH',
])

export class LocalServer implements DatabaseServer {
  readonly #spec: LocalServerSpec
  #process: ServerProcess | undefined

  constructor(spec: LocalServerSpec) {
    this.#spec = spec
  }

  get port(): number {
    return this.#spec.port
  }

  get dataDir(): string {
    return this.#spec.dataDir
  }

  get pid(): number | undefined {
    return this.#running()?.pid
  }

  async start(): Promise<void> {
    if (this.#running() !== undefined) return
    const spec = this.#spec
    const child = await spawnServer(spec.command, spec.args(), {
      user: spec.user,
      cwd: spec.cwd,
      logFile: spec.logFile,
      cleanupSignal: spec.cleanupSignal,
    })
    this.#process = child
    try {
      await pollUntil(
        async () => {
          if (child.hasExited()) throw new PollAbort(new Error(`${spec.name} exited during startup`))
          return (await spec.isReady()) ? true : undefined
        },
        {
          timeoutMs: STARTUP_TIMEOUT_MS,
          what: `${spec.name} on 127.0.0.1:${spec.port} to accept connections`,
        },
      )
    } catch (error) {
      // Never leave a half-started server behind. The cleanup signal lets PostgreSQL release its shared
      // memory; SIGKILL is the fallback for a server too wedged to react. The log usually says what failed.
      child.signal(spec.cleanupSignal)
      child.signal('SIGCONT')
      await withTimeout(child.exited, 10_000, `${spec.name} to exit`).catch(() => child.signal('SIGKILL'))
      await child.exited
      this.#process = undefined
      const message = error instanceof Error ? error.message : String(error)
      throw new Error(`${message}\n--- ${spec.logFile} ---\n${await tail(spec.logFile)}`, { cause: error })
    }
  }

  async stop(mode: StopMode = 'fast'): Promise<void> {
    const child = this.#running()
    this.#process = undefined
    if (child === undefined) return
    child.signal(this.#spec.stopSignals[mode])
    // A server frozen with SIGSTOP only acts on the shutdown signal once it runs again.
    child.signal('SIGCONT')
    await withTimeout(child.exited, SHUTDOWN_TIMEOUT_MS, `${this.#spec.name} to shut down (${mode})`)
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.#running()
    if (child === undefined) return
    child.signal(signal)
    if (NON_TERMINATING.has(signal)) return
    await withTimeout(child.exited, SHUTDOWN_TIMEOUT_MS, `${this.#spec.name} to exit after ${signal}`)
    this.#process = undefined
    await waitForPortClosed(this.#spec.port, 10_000)
    if (signal === 'SIGKILL') await this.#spec.afterCrash?.()
  }

  promote(): Promise<void> {
    return this.#spec.promote()
  }

  #running(): ServerProcess | undefined {
    return this.#process !== undefined && !this.#process.hasExited() ? this.#process : undefined
  }
}
