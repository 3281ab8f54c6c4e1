/**
 * Where Kysely notes at which step an operation was aborted: a non-enumerable property on the
 * signal's reason, `'before acquireConnection:acquire'`, `'during query execution'` and so on. Kysely
 * sets it in its own executor and in its `RuntimeDriver`, which `createDb` does not use (the routing
 * executor acquires its connections itself), so the steps that `RuntimeDriver` would tag are tagged
 * here, the same way, and an aborted call through `createDb` rejects exactly as through plain Kysely.
 */
const TIMING = '__kysely_timing__'

/** Notes `timing` on `reason` as Kysely does (objects only, never a frozen one), and returns it. */
export function withAbortTiming(reason: unknown, timing: string): unknown {
  if (reason !== null && typeof reason === 'object' && !Object.isFrozen(reason)) {
    Object.defineProperty(reason, TIMING, {
      configurable: true,
      enumerable: false,
      value: timing,
      writable: false,
    })
  }
  return reason
}

/**
 * `work`, unless `signal` aborts first: then the signal's reason, tagged `before <step>` (already
 * aborted) or `during <step>`, and `onAbort` gets `work` to clean up after it in the background.
 * The step names are Kysely's (`init`, `acquireConnection:acquire`).
 */
export async function waitOrAbort<T>(
  work: Promise<T>,
  signal: AbortSignal | undefined,
  step: string,
  onAbort?: (work: Promise<T>) => void,
): Promise<T> {
  if (signal === undefined) return work
  if (signal.aborted) {
    abandon(work, onAbort)
    throw withAbortTiming(signal.reason, `before ${step}`)
  }
  try {
    return await unlessAborted(work, signal)
  } catch (error) {
    if (!signal.aborted) throw error
    abandon(work, onAbort)
    throw withAbortTiming(signal.reason, `during ${step}`)
  }
}

/** Leaves `work` to finish in the background: its failure is nobody's to handle any more. */
function abandon<T>(work: Promise<T>, onAbort: ((work: Promise<T>) => void) | undefined): void {
  work.catch(() => undefined)
  onAbort?.(work)
}

/**
 * `work`, or the signal's reason as soon as the caller aborts: a read waiting for a replica
 * (`consistency.whenBehind: 'wait'`) or a connection must not outlive its caller's cancellation.
 */
export function unlessAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(error)
      },
    )
  })
}
