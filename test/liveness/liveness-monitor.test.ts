import { afterEach, describe, expect, test, vi } from 'vitest'
import { ServerUnresponsiveError } from '../../src/errors.js'
import { LivenessMonitor, type LivenessProbe, type Watched } from '../../src/liveness/liveness-monitor.js'

// The monitor's decisions with a scripted probe and a fake clock; the real-server behaviour (SIGSTOP,
// restarts) is in test/topology/unresponsive-server.test.ts.

type Answer = 'ok' | 'hang' | 'refused' | 'too-many' | 'reset'

class ScriptedProbe implements LivenessProbe<number> {
  readonly answers: Answer[] = []
  connects = 0
  pings = 0
  destroyed = 0

  connect(): Promise<number> {
    this.connects++
    return Promise.resolve(this.connects)
  }

  ping(): Promise<void> {
    this.pings++
    const answer = this.answers.shift() ?? 'ok'
    if (answer === 'hang') return new Promise(() => {})
    if (answer === 'refused') {
      return Promise.reject(
        Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED', syscall: 'connect' }),
      )
    }
    if (answer === 'reset') {
      return Promise.reject(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))
    }
    if (answer === 'too-many') {
      return Promise.reject(
        Object.assign(new Error('sorry, too many clients already'), { code: '53300', severity: 'FATAL' }),
      )
    }
    return Promise.resolve()
  }

  destroy(): void {
    this.destroyed++
  }
}

function setup(options = { probeAfterMs: 500, probeTimeoutMs: 1_000 }) {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance'] })
  const probe = new ScriptedProbe()
  const seen: Array<{ kind: 'down'; failed: number } | { kind: 'up'; downForMs: number }> = []
  const monitor = new LivenessMonitor('writer', probe, options, {
    unresponsive: (_error, failed) => seen.push({ kind: 'down', failed }),
    responsive: (downForMs) => seen.push({ kind: 'up', downForMs }),
  })
  const failures: Error[] = []
  const statement = (): Watched => {
    const watched: Watched = { startedAt: performance.now(), fail: (error) => failures.push(error) }
    monitor.start(watched)
    return watched
  }
  return { monitor, probe, seen, failures, statement }
}

afterEach(() => {
  vi.useRealTimers()
})

describe('LivenessMonitor', () => {
  test('does not probe while statements are quicker than probeAfterMs', async () => {
    const { monitor, probe, statement } = setup()
    for (let i = 0; i < 20; i++) {
      const watched = statement()
      await vi.advanceTimersByTimeAsync(100)
      monitor.end(watched)
    }
    expect(probe.pings).toBe(0)
    monitor.close()
  })

  test('a slow statement on a server that answers is never failed, and probes stay at one per probeAfterMs', async () => {
    const { monitor, probe, seen, failures, statement } = setup()
    const slow = statement()
    await vi.advanceTimersByTimeAsync(5_000)
    expect(failures).toEqual([])
    expect(seen).toEqual([])
    expect(probe.pings).toBeGreaterThanOrEqual(8)
    expect(probe.pings).toBeLessThanOrEqual(10)
    // One connection, reused.
    expect(probe.connects).toBe(1)
    monitor.end(slow)
    monitor.close()
  })

  test('a ping unanswered within probeTimeoutMs fails every statement in flight within 1.6 s', async () => {
    const { monitor, probe, seen, failures, statement } = setup()
    statement()
    statement()
    probe.answers.push('hang')
    await vi.advanceTimersByTimeAsync(1_599)
    expect(failures).toHaveLength(2)
    expect(failures[0]).toBeInstanceOf(ServerUnresponsiveError)
    expect(seen).toEqual([{ kind: 'down', failed: 2 }])
    expect(monitor.unresponsive).toBe(true)
    monitor.close()
  })

  test('a statement that completes while the ping waits proves the server alive', async () => {
    const { monitor, probe, seen, failures, statement } = setup()
    const slow = statement()
    probe.answers.push('hang')
    await vi.advanceTimersByTimeAsync(700)
    monitor.end(statement())
    await vi.advanceTimersByTimeAsync(1_000)
    expect(failures).toEqual([])
    expect(seen).toEqual([])
    monitor.end(slow)
    monitor.close()
  })

  test('a server that answers with an error (too many connections) is alive', async () => {
    const { monitor, probe, seen, failures, statement } = setup()
    statement()
    probe.answers.push('too-many', 'too-many')
    await vi.advanceTimersByTimeAsync(3_000)
    expect(failures).toEqual([])
    expect(seen).toEqual([])
    monitor.close()
  })

  test('a refused ping (the server process is gone) declares it down', async () => {
    const { monitor, probe, seen, statement } = setup()
    statement()
    probe.answers.push(...Array<Answer>(20).fill('refused'))
    await vi.advanceTimersByTimeAsync(700)
    expect(seen).toEqual([{ kind: 'down', failed: 1 }])
    monitor.close()
  })

  test('while down it keeps probing and reports the server back once it answers', async () => {
    const { monitor, probe, seen, statement } = setup()
    statement()
    probe.answers.push('hang', 'hang', 'hang')
    await vi.advanceTimersByTimeAsync(1_600)
    expect(monitor.unresponsive).toBe(true)
    await vi.advanceTimersByTimeAsync(2_500)
    expect(monitor.unresponsive).toBe(false)
    expect(seen.map((event) => event.kind)).toEqual(['down', 'up'])
    const up = seen[1] as { kind: 'up'; downForMs: number }
    expect(up.downForMs).toBeGreaterThan(2_000)
    monitor.close()
  })

  test('a kept probe connection that died on its own is replaced, not taken for a dead server', async () => {
    const { monitor, probe, seen, failures, statement } = setup()
    const first = statement()
    await vi.advanceTimersByTimeAsync(700)
    expect(probe.connects).toBe(1)
    monitor.end(first)
    // Later (after a NAT timeout, a thawed container): the kept connection is dead, the server is not.
    statement()
    probe.answers.push('reset', 'ok')
    await vi.advanceTimersByTimeAsync(700)
    expect(probe.connects).toBe(2)
    expect(failures).toEqual([])
    expect(seen).toEqual([])
    monitor.close()
  })

  test('off when probeAfterMs is undefined', async () => {
    const { monitor, probe } = setup({ probeAfterMs: undefined as unknown as number, probeTimeoutMs: 1_000 })
    expect(monitor.enabled).toBe(false)
    expect(probe.pings).toBe(0)
    monitor.close()
  })
})
