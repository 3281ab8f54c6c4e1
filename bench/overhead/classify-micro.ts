import {
  type CompiledQuery,
  DummyDriver,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
} from 'kysely'
import { isReadOnlyStatement } from '../../src/routing/classify-statement.js'
import type { BenchDatabase } from './schema.js'
import { median } from './stats.js'

/** One line of the CPU-side micro-benchmark: the median over batches, in nanoseconds per operation. */
export interface MicroResult {
  readonly name: string
  readonly nsPerOp: number
}

const BATCH = 20_000
const BATCHES = 9

/**
 * The pure CPU cost of the routing decision (`isReadOnlyStatement`) on compiled statements like the
 * ones the server benchmark runs, next to what Kysely itself spends building and compiling them.
 * No server involved. Each query built by Kysely is a new tree, so the realistic case is a first
 * look at a fresh tree (a tree walk, a WeakMap miss, then a set); the cached case is a second look
 * at the same tree.
 */
export function runClassifyMicro(): MicroResult[] {
  const db = new Kysely<BenchDatabase>({
    dialect: {
      createAdapter: () => new PostgresAdapter(),
      createDriver: () => new DummyDriver(),
      createIntrospector: (kysely) => new PostgresIntrospector(kysely),
      createQueryCompiler: () => new PostgresQueryCompiler(),
    },
  })
  const select = (i: number) =>
    db
      .selectFrom('bench_item')
      .select(['id', 'name', 'payload'])
      .where('id', '=', (i % 1000) + 1)
      .compile()
  const insert = (i: number) =>
    db
      .insertInto('bench_item')
      .values({ name: `item-${i}`, payload: i })
      .compile()

  let sink = 0
  // Times only the classification of each query, right after Kysely built it (as in a real call,
  // where the tree is fresh and hot in cache); the cost of the clock itself is subtracted.
  const timeClassify = (make: (i: number) => CompiledQuery, twice: boolean): number => {
    let total = 0n
    let clock = 0n
    for (let i = 0; i < BATCH; i++) {
      const query = make(i).query
      if (twice && isReadOnlyStatement(query)) sink++
      const start = process.hrtime.bigint()
      if (isReadOnlyStatement(query)) sink++
      const middle = process.hrtime.bigint()
      const end = process.hrtime.bigint()
      total += middle - start
      clock += end - middle
    }
    return Number(total - clock) / BATCH
  }
  const timeBatch = (work: (i: number) => void): number => {
    const start = process.hrtime.bigint()
    for (let i = 0; i < BATCH; i++) work(i)
    return Number(process.hrtime.bigint() - start) / BATCH
  }
  const measure = (name: string, batch: () => number): MicroResult => {
    batch() // warm-up
    const samples: number[] = []
    for (let b = 0; b < BATCHES; b++) samples.push(batch())
    return { name, nsPerOp: median(samples) }
  }

  const results = [
    measure('isReadOnlyStatement(SELECT by pk), fresh tree', () => timeClassify(select, false)),
    measure('isReadOnlyStatement(SELECT by pk), cached verdict', () => timeClassify(select, true)),
    measure('isReadOnlyStatement(INSERT one row)', () => timeClassify(insert, false)),
    measure('for scale: Kysely build + compile SELECT by pk', () =>
      timeBatch((i) => {
        sink += select(i).parameters.length
      }),
    ),
    measure('for scale: Kysely build + compile INSERT one row', () =>
      timeBatch((i) => {
        sink += insert(i).parameters.length
      }),
    ),
  ]
  if (sink === -1) console.log('unreachable')
  return results
}
