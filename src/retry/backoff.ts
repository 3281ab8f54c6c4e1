import { ConfigError } from '../errors.js'
import { numberSetting } from '../validation/number-setting.js'

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
 * Validates a pair of backoff delays (`minDelayMs`, `maxDelayMs`) of `input`, named `${prefix}.key`
 * in errors, with `defaults` for what is unset. `maxDelayMs` defaults to at least `minDelayMs`, and
 * may not be below it. The one check of createDb's `retry` and withRetry's options.
 */
export function backoffDelays(
  input: { readonly minDelayMs?: unknown; readonly maxDelayMs?: unknown },
  prefix: string,
  defaults: { readonly minDelayMs: number; readonly maxDelayMs: number },
  fractions = false,
): { readonly minDelayMs: number; readonly maxDelayMs: number } {
  const ms = (key: 'minDelayMs' | 'maxDelayMs') =>
    numberSetting(input[key], `${prefix}.${key}`, { min: 0, milliseconds: true, fractions })
  const minDelayMs = ms('minDelayMs') ?? defaults.minDelayMs
  const maxDelayMs = ms('maxDelayMs') ?? Math.max(minDelayMs, defaults.maxDelayMs)
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
