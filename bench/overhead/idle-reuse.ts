/**
 * What does it cost to reuse a connection that sat idle? createDb lets pending socket events land (two
 * event-loop hops) before it hands out a connection idle for 50 ms or more, so a session the server
 * closed while the process was busy is not used (issue 10, item 5). The alternative is a ping before
 * reuse (`pool.validateAfterIdleMs`, HikariCP's default after 500 ms). This measures, on both engines,
 * a `select 1` issued after 60 ms of idleness, interleaved across four variants in one run:
 *
 * - plain Kysely over the driver's own pool (the baseline),
 * - createDb with the defaults (the settle hops),
 * - createDb with `validateAfterIdleMs: 0` (a ping before every reuse after idleness),
 * - createDb with the settle skipped, by reusing the connection within 50 ms (the hot path, for scale).
 *
 * `npx tsx bench/overhead/idle-reuse.ts` (knobs: BENCH_IDLE_ROUNDS, default 300). A measurement, not a
 * test: it always exits 0.
 */
import { setTimeout as pause } from 'node:timers/promises'
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely'
import mysql from 'mysql2'
import pg from 'pg'
import { startMariaDbCluster } from '../../test/support/mariadb-cluster.js'
import { startPostgresCluster } from '../../test/support/postgres-cluster.js'
import { shipped } from '../shipped.js'

const { createDb } = shipped

type Engine = 'postgres' | 'mysql'

const ROUNDS = Number(process.env.BENCH_IDLE_ROUNDS ?? 300)
const IDLE_MS = 60

interface Variant {
  readonly name: string
  readonly db: Kysely<Record<string, never>>
  /** Milliseconds to sit idle before the timed statement; 0: an untimed statement right before it. */
  readonly idleMs: number
  readonly samples: number[]
}

function plain(engine: Engine, url: string): Kysely<Record<string, never>> {
  if (engine === 'postgres') {
    return new Kysely({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }),
    })
  }
  return new Kysely({
    dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 1 }) }),
  })
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

async function measure(engine: Engine, url: string): Promise<string[]> {
  const variants: Variant[] = [
    { name: 'plain Kysely, idle 60 ms', db: plain(engine, url), idleMs: IDLE_MS, samples: [] },
    {
      name: 'createDb defaults (settle), idle 60 ms',
      db: createDb({ dialect: engine, writer: url, pool: { max: 1 } }),
      idleMs: IDLE_MS,
      samples: [],
    },
    {
      name: 'createDb validateAfterIdleMs: 0 (ping), idle 60 ms',
      db: createDb({ dialect: engine, writer: url, pool: { max: 1, validateAfterIdleMs: 0 } }),
      idleMs: IDLE_MS,
      samples: [],
    },
    {
      name: 'createDb defaults, reused at once (hot path)',
      db: createDb({ dialect: engine, writer: url, pool: { max: 1 } }),
      idleMs: 0,
      samples: [],
    },
  ]
  for (const variant of variants) await sql`select 1`.execute(variant.db)
  for (let round = 0; round < ROUNDS; round++) {
    // A fresh random order each round, so drift on the machine hits every variant alike.
    for (const variant of [...variants].sort(() => Math.random() - 0.5)) {
      if (variant.idleMs > 0) await pause(variant.idleMs)
      else await sql`select 1`.execute(variant.db)
      const startedAt = performance.now()
      await sql`select 1`.execute(variant.db)
      variant.samples.push((performance.now() - startedAt) * 1000)
    }
  }
  const base = median(variants[0]?.samples ?? [])
  const lines = variants.map((variant) => {
    const value = median(variant.samples)
    const delta = value - base
    return `${engine.padEnd(9)} ${variant.name.padEnd(52)} ${value.toFixed(0).padStart(6)} µs  ${
      variant === variants[0] ? '(baseline)' : `${delta >= 0 ? '+' : ''}${delta.toFixed(0)} µs`
    }`
  })
  await Promise.all(variants.map((variant) => variant.db.destroy()))
  return lines
}

const output: string[] = []
const postgres = await startPostgresCluster({ replica: false })
try {
  output.push(...(await measure('postgres', postgres.writerUrl)))
} finally {
  await postgres.stop()
}
const mariadb = await startMariaDbCluster({ replica: false })
try {
  output.push(...(await measure('mysql', mariadb.writerUrl)))
} finally {
  await mariadb.stop()
}
console.log(`idle reuse: median latency of one 'select 1' over ${ROUNDS} rounds, variants interleaved`)
console.log(output.join('\n'))
