import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { withDeadline } from '../../src/retry/deadline.js'

// The library's one deadline: every timeout (connect, validate, role probe, discovery wait, cancel,
// liveness ping, read-your-writes wait) goes through it, so its three outcomes are pinned here.

beforeEach(() => {
  vi.useFakeTimers()
})
afterEach(() => {
  vi.useRealTimers()
})

function deferred<T>() {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

describe('withDeadline', () => {
  it('settles like the work when it finishes first, and clears its timer', async () => {
    const work = deferred<string>()
    const onTimeout = vi.fn(() => 'late')
    const bounded = withDeadline(work.promise, 1_000, onTimeout)
    work.resolve('done')
    await expect(bounded).resolves.toBe('done')
    expect(vi.getTimerCount()).toBe(0)
    expect(onTimeout).not.toHaveBeenCalled()

    const failing = deferred<string>()
    const boundedFailure = withDeadline(failing.promise, 1_000, onTimeout)
    failing.reject(new Error('refused'))
    await expect(boundedFailure).rejects.toThrow('refused')
    expect(vi.getTimerCount()).toBe(0)
  })

  it("past the deadline it settles with onTimeout's value, or rejects with what onTimeout throws", async () => {
    const value = withDeadline(new Promise<string>(() => {}), 1_000, () => 'gave up')
    const thrown = withDeadline(new Promise<string>(() => {}), 1_000, () => {
      throw new Error('timed out')
    })
    const both = Promise.allSettled([value, thrown])
    await vi.advanceTimersByTimeAsync(999)
    let settled = false
    void both.then(() => {
      settled = true
    })
    await Promise.resolve()
    expect(settled).toBe(false)
    await vi.advanceTimersByTimeAsync(1)
    const [first, second] = await both
    expect(first).toEqual({ status: 'fulfilled', value: 'gave up' })
    expect(second.status === 'rejected' && (second.reason as Error).message).toBe('timed out')
  })

  it('hands what the work produced after the deadline to onLate, so it can be closed', async () => {
    const work = deferred<{ close(): void }>()
    const onLate = vi.fn()
    const bounded = withDeadline(work.promise, 100, () => undefined, onLate)
    await vi.advanceTimersByTimeAsync(100)
    await expect(bounded).resolves.toBeUndefined()
    const connection = { close: vi.fn() }
    work.resolve(connection)
    await Promise.resolve()
    await Promise.resolve()
    expect(onLate).toHaveBeenCalledWith(connection)
    // A late failure is nobody's business any more: no unhandled rejection, no second outcome.
    const failing = deferred<string>()
    const quiet = withDeadline(failing.promise, 100, () => 'gave up')
    await vi.advanceTimersByTimeAsync(100)
    failing.reject(new Error('too late'))
    await expect(quiet).resolves.toBe('gave up')
  })
})

describe('withDeadline given a function', () => {
  it('starts its timer first, so a timeout of the same length inside the work fires after it', async () => {
    const bounded = withDeadline(
      () =>
        new Promise<string>((_, reject) => {
          setTimeout(() => reject(new Error("the driver's own timeout")), 500)
        }),
      500,
      () => {
        throw new Error("the library's timeout")
      },
    )
    const outcome = bounded.catch((error: unknown) => error)
    await vi.advanceTimersByTimeAsync(500)
    expect(((await outcome) as Error).message).toBe("the library's timeout")
  })

  it('a function that throws at once rejects, and leaves no timer behind', async () => {
    const bounded = withDeadline(
      () => {
        throw new Error('no such host')
      },
      500,
      () => 'gave up',
    )
    await expect(bounded).rejects.toThrow('no such host')
    expect(vi.getTimerCount()).toBe(0)
  })
})
