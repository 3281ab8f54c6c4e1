import { setTimeout as delay } from 'node:timers/promises'

export interface PollOptions {
  readonly timeoutMs: number
  readonly intervalMs?: number
  /** Used in the timeout error; say what we were waiting for. */
  readonly what: string
}

/**
 * Calls `check` until it returns something other than `undefined`, or throws once the deadline passes.
 * The last error thrown by `check` is attached as `cause`, because "timed out" alone rarely explains a
 * server that never came up. Throwing a `PollAbort` from `check` stops polling at once (e.g. the server
 * process already exited, so waiting longer cannot help).
 */
export async function pollUntil<T>(check: () => Promise<T | undefined>, options: PollOptions): Promise<T> {
  const deadline = Date.now() + options.timeoutMs
  const intervalMs = options.intervalMs ?? 25
  let lastError: unknown
  for (;;) {
    try {
      const result = await check()
      if (result !== undefined) return result
    } catch (error) {
      if (error instanceof PollAbort) throw error.cause ?? error
      lastError = error
    }
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? `: ${lastError.message}` : ''
      throw new Error(`Timed out after ${options.timeoutMs} ms waiting for ${options.what}${reason}`, {
        cause: lastError,
      })
    }
    await delay(intervalMs)
  }
}

/** Thrown from a poll check to give up immediately; `cause` is what gets rethrown. */
export class PollAbort extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause })
    this.name = 'PollAbort'
  }
}

/** Rejects if `promise` has not settled within `timeoutMs`. */
export async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  const controller = new AbortController()
  const timeout = delay(timeoutMs, undefined, { signal: controller.signal }).then(() => {
    throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    controller.abort()
    timeout.catch(() => {})
  }
}

/**
 * Milliseconds until `reached()` holds, running `work` before each check (every 20 ms, for at most
 * 10 s): e.g. how long after a topology change reads first land on an added reader.
 */
export async function msUntil(
  work: () => Promise<void>,
  reached: () => boolean,
  what: string,
): Promise<number> {
  const startedAt = performance.now()
  await pollUntil(
    async () => {
      await work()
      return reached() ? true : undefined
    },
    { timeoutMs: 10_000, intervalMs: 20, what },
  )
  return performance.now() - startedAt
}
