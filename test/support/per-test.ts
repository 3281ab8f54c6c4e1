import { afterEach } from 'vitest'
import { FaultProxy } from './fault-proxy.js'

/**
 * For the `describe` (or file) it is called in: a function that starts a {@link FaultProxy} in front
 * of `targetPort` and closes it after the test that started it. A proxy outliving its test would keep
 * forwarding (or stalling) the next test's connections.
 */
export function proxiesClosedAfterEachTest(): (targetPort: number) => Promise<FaultProxy> {
  const started: FaultProxy[] = []
  afterEach(async () => {
    await Promise.all(started.splice(0).map((proxy) => proxy.close()))
  })
  return async (targetPort) => {
    const proxy = await FaultProxy.start({ targetPort })
    started.push(proxy)
    return proxy
  }
}
