/**
 * Settles like `work`, unless `timeoutMs` passes first: then it settles with what `onTimeout`
 * returns (or rejects with what it throws), and `work` is left to finish on its own. Should `work`
 * still succeed after that, `onLate` gets its value, so whatever it opened can be closed: nobody else
 * will use it. The timer is cleared as soon as `work` settles.
 *
 * Given a function, the timer starts before the function is called: a driver that sets a timeout of
 * its own for the same length then fires after ours, so the caller gets the library's error.
 *
 * The one deadline of the library: opening and validating connections, role probes, waiting for
 * writer discovery or for a replica, the cancel of an aborted statement, the liveness ping.
 */
export function withDeadline<T, U>(
  work: Promise<T> | (() => Promise<T>),
  timeoutMs: number,
  onTimeout: () => U,
  onLate?: (value: T) => void,
): Promise<T | U> {
  return new Promise<T | U>((resolve, reject) => {
    let expired = false
    const timer = setTimeout(() => {
      expired = true
      try {
        resolve(onTimeout())
      } catch (error) {
        reject(error)
      }
    }, timeoutMs)
    let started: Promise<T>
    try {
      started = typeof work === 'function' ? work() : work
    } catch (error) {
      clearTimeout(timer)
      reject(error)
      return
    }
    started.then(
      (value) => {
        if (expired) {
          onLate?.(value)
          return
        }
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        if (expired) return
        clearTimeout(timer)
        reject(error)
      },
    )
  })
}
