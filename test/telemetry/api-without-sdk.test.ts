import * as api from '@opentelemetry/api'
import { sql } from 'kysely'
import { expect, it } from 'vitest'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { createDb } from '../../src/index.js'
import { DbTelemetry, registeredTracer } from '../../src/telemetry/db-telemetry.js'
import { clusterFor } from '../support/database.js'

// @opentelemetry/api installed (a library in the app depends on it) but no SDK registered: the API's
// global providers are its no-op ones, and the db must not trace or time anything, so statements and
// pools are left exactly as without the API.

it('with the API and no SDK, a db records nothing and statements are not observed', async () => {
  expect(registeredTracer(api)).toBeUndefined()
  const info = clusterFor('postgres')
  const config = resolveConfig({ dialect: 'postgres', writer: info.writerUrl })
  const telemetry = DbTelemetry.create(api, {
    dialect: config.dialect,
    endpoints: config.writers,
    statementText: false,
  })
  expect(telemetry).toBeUndefined()
  const db = createDb<Record<string, never>>({ dialect: 'postgres', writer: info.writerUrl })
  try {
    const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
    expect(rows).toEqual([{ one: 1 }])
  } finally {
    await db.destroy()
  }
})
