/**
 * What does the routing layer cost over plain Kysely? Runs the same point SELECT and one-row INSERT
 * through plain Kysely (`pg.Pool`) and through `createDb`, against the same servers, and prints the
 * median per-round overhead. See bench/README.md.
 *
 *   npm run bench
 *   PG_WRITER_URL=postgres://... PG_READER_URL=postgres://... npm run bench
 *   BENCH_ROUNDS=15 BENCH_OPS=2000 BENCH_CONCURRENCY=1,16 BENCH_POOL_MAX=10 npm run bench
 */
import { availableParallelism, loadavg } from 'node:os'
import type { Kysely } from 'kysely'
import type { ResilientDb } from '../../src/index.js'
import { waitForReplica } from '../../test/support/replication.js'
import { pgQuery } from '../../test/support/sql.js'
import { runClassifyMicro } from './classify-micro.js'
import type { BenchDatabase } from './schema.js'
import {
  counters,
  intFromEnv,
  operation,
  POOL_MAX,
  plainKysely,
  randomIds,
  routedKysely,
  runOps,
  servers,
  setUp,
  type Workload,
} from './setup.js'
import { median, percent, quantile, shuffled, signed, table } from './stats.js'

const ROUNDS = intFromEnv('BENCH_ROUNDS', 15)
const OPS = intFromEnv('BENCH_OPS', 2000)
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,16').split(',').map((value) => Number(value.trim()))
const WARM_UP_OPS = 500
// Block size of the interleaving above concurrency 1.
const C_BLOCK_OPS = 64
// Below the pool size: how often per round an untimed burst reorders every pool (see interleavedRound).
const RESHUFFLES_PER_ROUND = 4
const TARGET = 0.03
// BENCH_VERBOSE=1 prints every round's overhead, not only the median.
const VERBOSE = process.env.BENCH_VERBOSE === '1'

type VariantKey = 'plainWriter' | 'plainWriterAA' | 'plainReader' | 'routedWriter' | 'routedSplit'

interface Variant {
  readonly key: VariantKey
  readonly db: Kysely<BenchDatabase>
}

interface Comparison {
  readonly workload: Workload
  readonly variant: VariantKey
  readonly baseline: VariantKey
  readonly label: string
  readonly against: string
  /** The A/A control: plain against plain, the method's noise floor; not part of PASS/FAIL. */
  readonly control?: boolean
}

const COMPARISONS: ReadonlyArray<Comparison> = [
  {
    workload: 'select',
    variant: 'plainWriterAA',
    baseline: 'plainWriter',
    label: 'plain Kysely (A/A control)',
    against: 'plain @ writer',
    control: true,
  },
  {
    workload: 'select',
    variant: 'routedWriter',
    baseline: 'plainWriter',
    label: 'createDb writer only',
    against: 'plain @ writer',
  },
  {
    workload: 'select',
    variant: 'routedSplit',
    baseline: 'plainReader',
    label: 'createDb writer+reader',
    against: 'plain @ replica',
  },
  {
    workload: 'insert',
    variant: 'plainWriterAA',
    baseline: 'plainWriter',
    label: 'plain Kysely (A/A control)',
    against: 'plain @ writer',
    control: true,
  },
  {
    workload: 'insert',
    variant: 'routedWriter',
    baseline: 'plainWriter',
    label: 'createDb writer only',
    against: 'plain @ writer',
  },
  {
    workload: 'insert',
    variant: 'routedSplit',
    baseline: 'plainWriter',
    label: 'createDb writer+reader',
    against: 'plain @ writer',
  },
]

const WORKLOADS: ReadonlyArray<Workload> = ['select', 'insert']

/** Variants each workload runs: every variant and baseline named by a comparison. */
function variantsOf(workload: Workload): VariantKey[] {
  const keys = COMPARISONS.filter((c) => c.workload === workload).flatMap((c) => [c.baseline, c.variant])
  return [...new Set(keys)]
}

/** What one variant did in one round: wall time and this process's CPU time, over `ops` operations. */
interface Tally {
  wallMs: number
  cpuMicros: number
  ops: number
  /** Wall time of each operation in µs, at concurrency 1 only. */
  readonly latencies: number[]
}

/**
 * One round of one workload at one concurrency, interleaved: the round's operations are cut into
 * blocks (one operation at concurrency 1), and every block runs once per variant in a fresh random
 * order. Slow drifts of the machine (the other processes on the 2 cores, autovacuum, WAL replay, CPU
 * clock) then hit every variant alike instead of whichever variant ran during them.
 *
 * Both pools reuse the most recently released connection, so at concurrency 1 a variant runs on one
 * server backend for as long as nothing reorders its pool, and that backend may happen to be
 * scheduled better or worse than another (same core as this process or not). An untimed burst at
 * the pool's size reorders every pool a few times per round, so this luck is redrawn often.
 */
async function interleavedRound(
  variants: ReadonlyArray<Variant>,
  workload: Workload,
  concurrency: number,
): Promise<Map<VariantKey, Tally>> {
  const ids = randomIds(OPS)
  const blockOps = concurrency === 1 ? 1 : Math.max(concurrency, C_BLOCK_OPS)
  const reshuffleEvery = Math.ceil(OPS / RESHUFFLES_PER_ROUND)
  const runners = variants.map((variant) => ({
    key: variant.key,
    op: operation(variant.db, workload, ids),
    tally: { wallMs: 0, cpuMicros: 0, ops: 0, latencies: [] as number[] },
  }))
  for (let from = 0; from < OPS; from += blockOps) {
    if (concurrency < POOL_MAX && from % reshuffleEvery < blockOps) {
      for (const { op } of runners) await runOps(op, 0, 2 * POOL_MAX, POOL_MAX)
    }
    const count = Math.min(blockOps, OPS - from)
    for (const { op, tally } of shuffled(runners)) {
      const cpuBefore = process.cpuUsage()
      const before = performance.now()
      await runOps(op, from, count, concurrency)
      const wallMs = performance.now() - before
      tally.wallMs += wallMs
      if (concurrency === 1) tally.latencies.push(wallMs * 1000)
      const cpu = process.cpuUsage(cpuBefore)
      tally.cpuMicros += cpu.user + cpu.system
      tally.ops += count
    }
  }
  return new Map(runners.map(({ key, tally }) => [key, tally]))
}

type Samples = Map<string, Tally[]>
const sampleKey = (workload: Workload, concurrency: number, variant: VariantKey) =>
  `${workload}/${concurrency}/${variant}`

async function main(): Promise<void> {
  const startedAt = performance.now()
  let cleanUp: (() => Promise<void>) | undefined
  const dbs: Kysely<BenchDatabase>[] = []
  // Ctrl-C: close the pools and stop the servers (the test harness also kills a local cluster on
  // SIGINT by itself), drop the table from servers given by URL, and exit.
  process.once('SIGINT', () => {
    console.error('\ninterrupted: cleaning up')
    void Promise.allSettled(dbs.map((db) => db.destroy()))
      .then(() => cleanUp?.())
      .catch(() => undefined)
      .finally(() => process.exit(130))
  })

  console.log('kysely-resilient: routing-layer overhead over plain Kysely')
  const micro = runClassifyMicro()

  const server = await servers()
  cleanUp = async () => {
    if (server.external) {
      await pgQuery(server.writerUrl, 'DROP TABLE IF EXISTS bench_item').catch(() => undefined)
    }
    await server.stop()
  }
  try {
    const [version] = await pgQuery(server.adminWriterUrl, 'SHOW server_version')
    await setUp(server)

    const split = routedKysely(server.writerUrl, server.readerUrl)
    const variants: Record<VariantKey, Variant> = {
      plainWriter: { key: 'plainWriter', db: plainKysely(server.writerUrl) },
      plainWriterAA: { key: 'plainWriterAA', db: plainKysely(server.writerUrl) },
      plainReader: { key: 'plainReader', db: plainKysely(server.readerUrl) },
      routedWriter: { key: 'routedWriter', db: routedKysely(server.writerUrl, undefined) },
      routedSplit: { key: 'routedSplit', db: split },
    }
    dbs.push(...Object.values(variants).map((variant) => variant.db))

    console.log(
      `servers: ${server.description}, PostgreSQL ${String(version?.server_version)}; ` +
        `node ${process.version}, ${availableParallelism()} CPUs, load average ${loadAverage()}`,
    )
    console.log(
      `method: ${ROUNDS} rounds x ${OPS} ops per variant, workload and concurrency (${CONCURRENCY.join(', ')}); ` +
        `variants interleaved in random order (blocks of 1 op at concurrency 1, ${C_BLOCK_OPS} ops above); ` +
        `pool max ${POOL_MAX} everywhere\n`,
    )

    // Warm-up: open every pool's connections and let the JIT settle on every code path.
    for (const workload of WORKLOADS) {
      for (const key of variantsOf(workload)) {
        const op = operation(variants[key].db, workload, randomIds(WARM_UP_OPS))
        await runOps(op, 0, WARM_UP_OPS, Math.max(...CONCURRENCY))
        await runOps(op, 0, WARM_UP_OPS, 1)
      }
    }

    const samples: Samples = new Map()
    for (let round = 0; round < ROUNDS; round++) {
      for (const concurrency of CONCURRENCY) {
        for (const workload of WORKLOADS) {
          // Let the replica replay the inserts so far before reading from it.
          if (workload === 'select') {
            await waitForReplica('postgres', server.adminWriterUrl, server.adminReaderUrl)
          }
          const keys = variantsOf(workload)
          const tallies = await interleavedRound(
            keys.map((key) => variants[key]),
            workload,
            concurrency,
          )
          for (const [key, tally] of tallies) {
            const list = samples.get(sampleKey(workload, concurrency, key)) ?? []
            list.push(tally)
            samples.set(sampleKey(workload, concurrency, key), list)
          }
        }
      }
      process.stdout.write(`\rround ${round + 1}/${ROUNDS}`)
    }
    process.stdout.write('\n\n')

    report(samples, micro)
    sanityCheck(split)
  } finally {
    await Promise.allSettled(dbs.map((db) => db.destroy()))
    await cleanUp()
    console.log(
      `\ntotal time ${((performance.now() - startedAt) / 1000).toFixed(0)} s; load average now ${loadAverage()}`,
    )
  }
}

function report(samples: Samples, micro: ReturnType<typeof runClassifyMicro>): void {
  const rows: string[][] = []
  let worst: { overhead: number; uncertainty: number; where: string } | undefined
  const opsPerSecond = (tally: Tally) => tally.ops / (tally.wallMs / 1000)
  const wallMicros = (tally: Tally) => (tally.wallMs * 1000) / tally.ops
  const cpuMicros = (tally: Tally) => tally.cpuMicros / tally.ops
  for (const concurrency of CONCURRENCY) {
    for (const comparison of COMPARISONS) {
      const { workload } = comparison
      const variant = samples.get(sampleKey(workload, concurrency, comparison.variant)) ?? []
      const baseline = samples.get(sampleKey(workload, concurrency, comparison.baseline)) ?? []
      const paired = variant.map((tally, round) => [tally, baseline[round] as Tally] as const)
      // Wall time per op of the variant over that of its baseline, round by round.
      const ratios = paired.map(([v, b]) => wallMicros(v) / wallMicros(b))
      const overhead = median(ratios)
      const uncertainty = medianUncertainty(ratios)
      const p50Ratios = paired.map(([v, b]) => median(v.latencies) / median(b.latencies))
      if (VERBOSE) {
        console.log(
          `${workload} c${concurrency} ${comparison.label} vs ${comparison.against}: ${ratios.map(percent).join(' ')}`,
        )
      }
      rows.push([
        workload,
        String(concurrency),
        comparison.label,
        comparison.against,
        Math.round(median(variant.map(opsPerSecond))).toString(),
        Math.round(median(baseline.map(opsPerSecond))).toString(),
        percent(overhead),
        `±${(uncertainty * 100).toFixed(1)}%`,
        `${percent(quantile(ratios, 0.25))} .. ${percent(quantile(ratios, 0.75))}`,
        signed(median(paired.map(([v, b]) => wallMicros(v) - wallMicros(b)))),
        concurrency === 1 ? percent(median(p50Ratios)) : '',
        `${median(variant.map(cpuMicros)).toFixed(1)} / ${median(baseline.map(cpuMicros)).toFixed(1)}`,
        signed(median(paired.map(([v, b]) => cpuMicros(v) - cpuMicros(b)))),
      ])
      if (!comparison.control && (worst === undefined || overhead > worst.overhead)) {
        worst = {
          overhead,
          uncertainty,
          where: `${workload}, concurrency ${concurrency}, ${comparison.label}`,
        }
      }
    }
  }
  console.log(
    table(
      [
        'workload',
        'conc',
        'variant',
        'vs',
        'ops/s',
        'base ops/s',
        'overhead',
        '±95%',
        'rounds p25 .. p75',
        'Δ wall µs/op',
        'p50 overhead',
        'CPU µs/op var / base',
        'Δ CPU µs/op',
      ],
      ['l', 'r', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      rows,
    ),
  )
  console.log(
    '\noverhead: median over rounds of (variant mean wall time per op / baseline mean wall time per op) - 1;\n' +
      '±95%: approximate 95% interval of that median, from the spread of the rounds (p25 .. p75). The A/A ' +
      'control rows show what the method reads when nothing differs.\n' +
      'p50 overhead: the same with the median latency of single operations (concurrency 1 only): the typical ' +
      'call, without the tail.\n' +
      'CPU: this process only (user + system), per op; the servers are not counted. Δ columns are medians ' +
      'of per-round differences.',
  )

  console.log('\nCPU only, no server (median of batches):')
  console.log(
    table(
      ['micro-benchmark', 'ns/op'],
      ['l', 'r'],
      micro.map((result) => [result.name, result.nsPerOp < 20 ? '< 20' : result.nsPerOp.toFixed(0)]),
    ),
  )

  if (worst !== undefined) {
    const excess = worst.overhead - 1
    const verdict = excess <= TARGET ? 'PASS' : 'FAIL'
    const margin = `±${(worst.uncertainty * 100).toFixed(1)}%`
    console.log(
      `\n${verdict}: worst median overhead ${percent(worst.overhead)} ${margin} (${worst.where}); ` +
        `target <= +${(TARGET * 100).toFixed(0)}%`,
    )
    if (Math.abs(excess - TARGET) <= worst.uncertainty) {
      console.log(
        '      (the target lies within the uncertainty of this measurement: rerun, or raise BENCH_ROUNDS)',
      )
    }
  }
}

/** The writer+reader variant really read from the reader, and the replica had every row. */
function sanityCheck(split: ResilientDb<BenchDatabase>): void {
  const stats = split.stats()
  const readerQueries = stats.readers.reduce((sum, reader) => sum + reader.queries, 0)
  console.log(
    `check: createDb writer+reader ran ${readerQueries} statements on the reader and ` +
      `${stats.writer.queries} on the writer; ${counters.missingRows} point SELECTs found no row`,
  )
}

/**
 * Approximate half-width of a 95% interval for the median of `values`: the standard error of a
 * median (1.2533 sigma / sqrt(n)), with sigma estimated robustly from the interquartile range.
 */
function medianUncertainty(values: ReadonlyArray<number>): number {
  if (values.length < 2) return Number.NaN
  const sigma = (quantile(values, 0.75) - quantile(values, 0.25)) / 1.349
  return (1.96 * 1.2533 * sigma) / Math.sqrt(values.length)
}

function loadAverage(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
