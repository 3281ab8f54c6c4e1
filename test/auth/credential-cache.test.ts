import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CredentialCache, type CredentialCacheHooks } from '../../src/auth/credential-cache.js'
import { Credentials } from '../../src/auth/credentials.js'

// The cache every non-password auth type shares: fetch once, refresh ahead of expiry in the
// background, one fetch in flight at a time. Only Date is faked: the cache reads wall-clock time.

const TIMING = { refreshAfterMs: 600_000, ttlMs: 900_000 }

interface Harness {
  readonly cache: CredentialCache
  readonly fetched: string[]
  readonly failures: unknown[]
  /** Makes the next fetches fail (until `succeed()`). */
  fail(error: unknown): void
  succeed(): void
  /** Resolves the fetch in flight (fetches wait for this when `manual` is set). */
  finish(): void
}

function harness(manual = false): Harness {
  let counter = 0
  let failure: unknown
  const waiting: Array<() => void> = []
  const fetched: string[] = []
  const failures: unknown[] = []
  const hooks: CredentialCacheHooks = {
    onFetched: (reason) => fetched.push(reason),
    onBackgroundFailure: (error) => failures.push(error),
  }
  const cache = new CredentialCache(
    async () => {
      counter++
      if (manual) await new Promise<void>((resolve) => waiting.push(resolve))
      if (failure !== undefined) throw failure
      return new Credentials({ password: `token-${counter}`, user: 'app' })
    },
    TIMING,
    hooks,
  )
  return {
    cache,
    fetched,
    failures,
    fail: (error) => {
      failure = error
    },
    succeed: () => {
      failure = undefined
    },
    finish: () => {
      for (const resolve of waiting.splice(0)) resolve()
    },
  }
}

const passwordOf = async (value: Credentials | Promise<Credentials>) => (await value).password()

describe('CredentialCache', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(new Date('2026-11-22T00:00:00Z'))
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('a burst of callers at a cold start shares one fetch', async () => {
    const h = harness(true)
    const pending = Array.from({ length: 1_000 }, () => h.cache.get())
    h.finish()
    const passwords = await Promise.all(pending.map(passwordOf))
    expect(new Set(passwords)).toEqual(new Set(['token-1']))
    expect(h.fetched).toEqual(['initial'])
  })

  it('hands out a fresh value synchronously: no caller waits for the source', async () => {
    const h = harness()
    await h.cache.get()
    vi.advanceTimersByTime(TIMING.refreshAfterMs - 1)
    const value = h.cache.get()
    expect(value).toBeInstanceOf(Credentials)
    expect(h.fetched).toEqual(['initial'])
  })

  it('refreshes once in the background from refreshAfterMs on, still handing out the current value', async () => {
    const h = harness(true)
    const first = h.cache.get()
    h.finish()
    await first
    vi.setSystemTime(Date.now() + TIMING.refreshAfterMs)
    // 100 callers inside the refresh window: all get the current token at once, one refresh starts.
    const during = Array.from({ length: 100 }, () => h.cache.get())
    expect(during.every((value) => value instanceof Credentials)).toBe(true)
    expect(new Set(await Promise.all(during.map(passwordOf)))).toEqual(new Set(['token-1']))
    h.finish()
    await vi.waitFor(() => expect(h.fetched).toEqual(['initial', 'refresh']))
    expect(await passwordOf(h.cache.get())).toBe('token-2')
  })

  it('after ttlMs callers wait for a fresh value instead of using the expired one', async () => {
    const h = harness()
    await h.cache.get()
    vi.setSystemTime(Date.now() + TIMING.ttlMs)
    const value = h.cache.get()
    expect(value).toBeInstanceOf(Promise)
    expect(await passwordOf(value)).toBe('token-2')
    expect(h.fetched).toEqual(['initial', 'expired'])
  })

  it('a failed background refresh is reported and the current value is used until it expires', async () => {
    const h = harness()
    await h.cache.get()
    const sourceDown = new Error('secrets manager unreachable')
    h.fail(sourceDown)
    vi.setSystemTime(Date.now() + TIMING.refreshAfterMs)
    expect(await passwordOf(h.cache.get())).toBe('token-1')
    await vi.waitFor(() => expect(h.failures).toEqual([sourceDown]))
    // The next caller in the window tries again (the failed fetch is not in flight any more).
    expect(await passwordOf(h.cache.get())).toBe('token-1')
    await vi.waitFor(() => expect(h.failures).toHaveLength(2))
    // Past ttlMs a failing source fails the caller: an expired token would be refused anyway.
    vi.setSystemTime(Date.now() + TIMING.ttlMs)
    await expect(h.cache.get()).rejects.toBe(sourceDown)
    h.succeed()
    expect(await passwordOf(h.cache.get())).toBe('token-5')
  })

  it('invalidate drops only the value it is given, so many rejections of one value cost one fetch', async () => {
    const h = harness(true)
    const first = h.cache.get()
    h.finish()
    const stale = await first
    // 50 connections were rejected with the same stale value.
    for (let i = 0; i < 50; i++) h.cache.invalidate(stale)
    const waiting = Array.from({ length: 50 }, () => h.cache.get())
    h.finish()
    const fresh = await waiting[0]
    expect(new Set(await Promise.all(waiting.map(passwordOf)))).toEqual(new Set(['token-2']))
    // A late rejection of the old value does not throw away the new one.
    h.cache.invalidate(stale)
    expect(h.cache.get()).toBe(fresh)
    expect(h.fetched).toEqual(['initial', 'rejected'])
  })

  it('24 simulated hours of connections cost one fetch per refresh window', async () => {
    const h = harness()
    const start = Date.now()
    const day = 24 * 3_600_000
    let handedOut = 0
    for (let now = start; now < start + day; now += 7_000) {
      vi.setSystemTime(now)
      const value = await h.cache.get()
      handedOut++
      expect(value).toBeInstanceOf(Credentials)
    }
    // One initial fetch, then one refresh every refreshAfterMs: 24 h / 10 min = 144.
    expect(h.fetched.length).toBeLessThanOrEqual(1 + day / TIMING.refreshAfterMs)
    expect(h.fetched.length).toBeGreaterThanOrEqual(day / TIMING.refreshAfterMs - 1)
    expect(h.fetched.filter((reason) => reason === 'expired')).toEqual([])
    expect(handedOut).toBeGreaterThan(12_000)
  })
})
