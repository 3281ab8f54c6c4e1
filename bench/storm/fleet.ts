/**
 * Starts the worker processes of one measurement, lets them all loose at the same moment (a storm is
 * every process connecting at once, as after a deploy or a failover), and collects their results.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import {
  type ParentMessage,
  WORKER_SPEC_ENV,
  type WorkerMessage,
  type WorkerResult,
  type WorkerSpec,
} from './protocol.js'

const WORKER_PATH = fileURLToPath(new URL('./worker.ts', import.meta.url))
/** Ten processes loading TypeScript through tsx at once, on 2 busy cores, take a while. */
const READY_TIMEOUT_MS = 120_000
/**
 * After the run: requests still waiting for a connection (createDb's acquireTimeoutMs is 10 s), then
 * db.destroy() (bounded at 15 s in the worker). A worker not done by then is killed.
 */
const FINISH_GRACE_MS = 60_000
/** Lines of a worker's stderr kept to explain its failure. */
const STDERR_TAIL = 20

export interface FleetOutcome {
  /** One per worker that reported. */
  readonly results: ReadonlyArray<WorkerResult>
  /** Workers that crashed, failed or hung after 'go', with what they said. */
  readonly problems: ReadonlyArray<string>
  /** From 'go' sent to the last worker done. */
  readonly wallMs: number
}

/** Workers of the measurement under way, so an interrupted run can kill them. */
const live = new Set<ChildProcess>()

export function killWorkers(): void {
  for (const child of live) child.kill('SIGKILL')
  live.clear()
}

interface Handle {
  readonly child: ChildProcess
  readonly ready: Promise<void>
  readonly done: Promise<WorkerResult>
  stderr(): string
}

function start(spec: WorkerSpec, index: number): Handle {
  const child = fork(WORKER_PATH, [], {
    // The workers are TypeScript like the rest of the benchmark; tsx's loader, resolved from here.
    execArgv: ['--import', import.meta.resolve('tsx')],
    env: { ...process.env, [WORKER_SPEC_ENV]: JSON.stringify(spec) },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  })
  live.add(child)
  const lines: string[] = []
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    lines.push(...chunk.split('\n').filter((line) => line.trim() !== ''))
    lines.splice(0, Math.max(0, lines.length - STDERR_TAIL))
  })
  const stderr = () => (lines.length > 0 ? `\n      ${lines.join('\n      ')}` : '')
  let markReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    markReady = resolve
  })
  const done = new Promise<WorkerResult>((resolve, reject) => {
    let result: WorkerResult | undefined
    let failure: string | undefined
    child.on('message', (message: WorkerMessage) => {
      if (message.type === 'ready') markReady()
      else if (message.type === 'result') result = message.result
      else failure = message.error
    })
    child.once('exit', (code, signal) => {
      live.delete(child)
      if (result !== undefined) resolve(result)
      else
        reject(
          new Error(
            `worker ${index} ${failure !== undefined ? `failed: ${failure}` : `exited (${signal ?? code}) without a result`}${stderr()}`,
          ),
        )
    })
  })
  // Reported through `ready` (before 'go') or `done` (after); never unhandled.
  done.catch(() => undefined)
  return { child, ready: Promise.race([ready, done.then(() => undefined)]), done, stderr }
}

/**
 * Runs `processes` workers with the same spec. Throws if they cannot all get ready (a set-up failure);
 * failures after 'go' are part of the measurement and come back as `problems`.
 */
export async function runFleet(spec: WorkerSpec, processes: number): Promise<FleetOutcome> {
  const handles = Array.from({ length: processes }, (_, index) => start(spec, index))
  try {
    await withTimeout(
      Promise.all(handles.map((handle) => handle.ready)),
      READY_TIMEOUT_MS,
      'workers to start',
    )
  } catch (error) {
    for (const { child } of handles) child.kill('SIGKILL')
    throw error
  }

  const goAt = performance.now()
  const go: ParentMessage = { type: 'go' }
  for (const { child } of handles) child.send(go)

  const deadline = setTimeout(() => {
    for (const { child } of handles) child.kill('SIGKILL')
  }, spec.durationMs + FINISH_GRACE_MS)
  const settled = await Promise.allSettled(handles.map((handle) => handle.done))
  clearTimeout(deadline)
  const wallMs = performance.now() - goAt

  const results: WorkerResult[] = []
  const problems: string[] = []
  for (const outcome of settled) {
    if (outcome.status === 'fulfilled') results.push(outcome.value)
    else problems.push(outcome.reason instanceof Error ? outcome.reason.message : String(outcome.reason))
  }
  return { results, problems, wallMs }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
