import { sql } from 'kysely'
import { afterEach, expect, it } from 'vitest'
import { classifyError, createDb } from '../../src/index.js'
import { describeEngines } from '../support/database.js'
import { FaultProxy, portOf } from '../support/fault-proxy.js'

describeEngines('errors from opening a connection', (engine, info) => {
  let proxy: FaultProxy | undefined

  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
  })

  it('a reset during the handshake reaches the caller as unavailable, without any context', async () => {
    // A load balancer or proxy whose backend is down accepts TCP and then resets it: nothing was sent.
    proxy = await FaultProxy.start({ targetPort: portOf(info.writerUrl) })
    proxy.setMode('refuse')
    const db = createDb({ dialect: engine, writer: proxy.url(info.writerUrl), retry: false })
    try {
      const error = await db
        .selectNoFrom(sql<number>`1`.as('one'))
        .execute()
        .catch((e: unknown) => e)
      expect((error as { code?: string }).code).toBe('ECONNRESET')
      // The application's own classifyError (and withRetry's) must not mistake it for a lost statement.
      expect(classifyError(error)).toMatchObject({ category: 'unavailable', retryable: true })
    } finally {
      await db.destroy()
    }
  })
})
