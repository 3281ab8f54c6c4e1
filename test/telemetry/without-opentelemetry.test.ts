import { sql } from 'kysely'
import { expect, it, vi } from 'vitest'
import { createDb } from '../../src/index.js'
import { loadOpenTelemetryMetrics } from '../../src/telemetry/load-opentelemetry.js'
import { clusterFor } from '../support/database.js'

// @opentelemetry/api is an optional peer: an application without it installed gets no metrics and
// everything else as before. Its absence is simulated by making the import fail as Node does for a
// package that is not installed.
vi.mock('@opentelemetry/api', () => {
  throw Object.assign(new Error("Cannot find package '@opentelemetry/api'"), { code: 'ERR_MODULE_NOT_FOUND' })
})

it('without @opentelemetry/api the db works and records no metrics', async () => {
  expect(await loadOpenTelemetryMetrics()).toBeUndefined()
  const info = clusterFor('postgres')
  const db = createDb<Record<string, never>>({ dialect: 'postgres', writer: info.writerUrl })
  try {
    const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
    expect(rows).toEqual([{ one: 1 }])
  } finally {
    await db.destroy()
  }
})
