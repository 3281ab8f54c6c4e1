import type { Generated } from 'kysely'

/** The one table the overhead benchmark reads and writes. */
export interface BenchDatabase {
  bench_item: {
    id: Generated<number>
    name: string
    payload: number
  }
}
