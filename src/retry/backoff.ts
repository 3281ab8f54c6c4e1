import { ConfigError } from '../errors.js'

/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * a uniform delay between 0 and min(maxDelayMs, minDelayMs * 2^(attempt - 1)). Full jitter spreads
 * the retries of many clients that failed together, so they do not reconnect in lockstep.
 */
export function fullJitterDelay(attempt: number, minDelayMs: number, maxDelayMs: number): number {
  const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(Math.random() * ceiling)
}

/**
 * The backoff delays of checked settings (createDb's `retry`, withRetry's options), with `defaults`
 * for what is unset. A rule between the two fields, so after their table: `maxDelayMs` defaults to at
 * least `minDelayMs`, and may not be below it.
 */
export function backoffDelays(
  checked: { readonly minDelayMs: number | undefined; readonly maxDelayMs: number | undefined },
  prefix: string,
  defaults: { readonly minDelayMs: number; readonly maxDelayMs: number },
): { readonly minDelayMs: number; readonly maxDelayMs: number } {
  const minDelayMs = checked.minDelayMs ?? defaults.minDelayMs
  const maxDelayMs = checked.maxDelayMs ?? Math.max(minDelayMs, defaults.maxDelayMs)
  if (maxDelayMs < minDelayMs) {
    throw new ConfigError(
      `${prefix}.maxDelayMs`,
      `must be at least ${prefix}.minDelayMs (${minDelayMs}), got ${maxDelayMs}`,
    )
  }
  return { minDelayMs, maxDelayMs }
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason)
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
