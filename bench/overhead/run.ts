/**
 * What does the routing layer cost over plain Kysely? Runs the same point SELECT, one-row INSERT, point
 * UPDATE and UPDATE-then-SELECT pair through plain Kysely (`pg.Pool` / mysql2's pool) and through
 * `createDb` (also with read-your-writes on, and with the OpenTelemetry SDK registered), and through the
 * nearest peer, kysely-replication, against the same servers, on PostgreSQL and MariaDB one after the other, and prints the median per-round
 * overhead. See bench/README.md.
 *
 *   npm run bench
 *   PG_WRITER_URL=postgres://... PG_READER_URL=postgres://... MYSQL_WRITER_URL=mysql://... npm run bench
 *   BENCH_ROUNDS=15 BENCH_OPS=2000 BENCH_CONCURRENCY=1,16 BENCH_POOL_MAX=10 npm run bench
 *   BENCH_ENGINES=mysql BENCH_WORKLOADS=update,pair npm run bench
 */
import { availableParallelism, loadavg } from 'node:os'
import { setTimeout as pause } from 'node:timers/promises'
import type { Kysely } from 'kysely'
import type { ResilientDb } from '../../src/index.js'
import { waitForReplica } from '../../test/support/replication.js'
import { type Engine, queryOnce } from '../../test/support/sql.js'
import { runClassifyMicro } from './classify-micro.js'
import type { BenchDatabase } from './schema.js'
import {
  counters,
  ENGINE_NAME,
  intFromEnv,
  operation,
  POOL_MAX,
  plainKysely,
  randomIds,
  replicationKysely,
  routedKysely,
  runOps,
  type Scope,
  type Servers,
  servers,
  serversAvailable,
  setUp,
  type Workload,
} from './setup.js'
import { median, percent, quantile, shuffled, signed, table } from './stats.js'
import { type OpenTelemetrySdk, registerOpenTelemetrySdk } from './telemetry.js'

const ROUNDS = intFromEnv('BENCH_ROUNDS', 15)
const OPS = intFromEnv('BENCH_OPS', 2000)
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,16').split(',').map((value) => Number(value.trim()))
const WARM_UP_OPS = 500
// Block size of the interleaving above concurrency 1.
const C_BLOCK_OPS = 64
// Below the pool size: how often per round an untimed burst reorders every pool (see interleavedRound).
const RESHUFFLES_PER_ROUND = 4
/**
 * Issue #15's target for createDb's routing rows: at most +2% at concurrency 1, where the measurement
 * is precise; above it, where the servers and the benchmark share the cores, within the noise of the
 * A/A control (the row's ±95% interval reaches the control's).
 */
const TARGET = 0.02
// BENCH_VERBOSE=1 prints every round's overhead, not only the median.
const VERBOSE = process.env.BENCH_VERBOSE === '1'
const ENGINES = listFromEnv<Engine>('BENCH_ENGINES', ['postgres', 'mysql'])
const WORKLOADS = listFromEnv<Workload>('BENCH_WORKLOADS', ['select', 'insert', 'update', 'pair'])
/**
 * How long, before each SELECT round, the process-mode variant may take to learn that the replica has
 * replayed its writes (see primeProcessReads); the library polls replay positions every 50 ms.
 */
const PRIME_DEADLINE_MS = 2_000

type VariantKey =
  | 'plainWriter'
  | 'plainWriterAA'
  | 'plainReader'
  | 'routedWriter'
  | 'routedSplit'
  | 'routedProcess'
  | 'routedScoped'
  | 'routedOtel'
  | 'replication'

interface Variant {
  readonly key: VariantKey
  readonly db: Kysely<BenchDatabase>
  /** Wraps each pair operation, for the variant that runs it in a read-your-writes scope. */
  readonly scope?: Scope
}

interface Comparison {
  readonly workload: Workload
  readonly variant: VariantKey
  readonly baseline: VariantKey
  readonly label: string
  readonly against: string
  /** The A/A control: plain against plain, the method's noise floor; not part of PASS/FAIL. */
  readonly control?: boolean
  /**
   * A read-your-writes row: what the consistency mode adds. Reported apart from the routing layer's
   * PASS/FAIL, whose +3% target is about createDb's default routing.
   */
  readonly consistency?: boolean
  /** The peer, kysely-replication: shown beside createDb in the same run, not part of PASS/FAIL. */
  readonly peer?: boolean
  /**
   * An OpenTelemetry row: createDb with the SDK's meter and tracer providers registered, which is
   * instrumentation on top of the routing layer; reported apart from its PASS/FAIL.
   */
  readonly telemetry?: boolean
}

const OTEL_LABEL = 'createDb writer only + OpenTelemetry SDK'

/** The OpenTelemetry rows of one workload: against plain Kysely, and against createDb without the SDK. */
function telemetryComparisons(workload: Workload): Comparison[] {
  return [
    {
      workload,
      variant: 'routedOtel',
      baseline: 'plainWriter',
      label: OTEL_LABEL,
      against: 'plain @ writer',
      telemetry: true,
    },
    {
      workload,
      variant: 'routedOtel',
      baseline: 'routedWriter',
      label: OTEL_LABEL,
      against: 'createDb writer only',
      telemetry: true,
    },
  ]
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
    workload: 'select',
    variant: 'replication',
    baseline: 'plainReader',
    label: 'kysely-replication writer+reader',
    against: 'plain @ replica',
    peer: true,
  },
  ...telemetryComparisons('select'),
  {
    workload: 'select',
    variant: 'routedProcess',
    baseline: 'plainReader',
    label: "createDb readYourWrites 'process', no pending write",
    against: 'plain @ replica',
    consistency: true,
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
  {
    workload: 'insert',
    variant: 'replication',
    baseline: 'plainWriter',
    label: 'kysely-replication writer+reader',
    against: 'plain @ writer',
    peer: true,
  },
  ...telemetryComparisons('insert'),
  {
    workload: 'insert',
    variant: 'routedProcess',
    baseline: 'plainWriter',
    label: "createDb readYourWrites 'process'",
    against: 'plain @ writer',
    consistency: true,
  },
  {
    workload: 'update',
    variant: 'plainWriterAA',
    baseline: 'plainWriter',
    label: 'plain Kysely (A/A control)',
    against: 'plain @ writer',
    control: true,
  },
  {
    workload: 'update',
    variant: 'routedSplit',
    baseline: 'plainWriter',
    label: 'createDb writer+reader',
    against: 'plain @ writer',
  },
  {
    workload: 'update',
    variant: 'replication',
    baseline: 'plainWriter',
    label: 'kysely-replication writer+reader',
    against: 'plain @ writer',
    peer: true,
  },
  {
    workload: 'update',
    variant: 'routedProcess',
    baseline: 'plainWriter',
    label: "createDb readYourWrites 'process'",
    against: 'plain @ writer',
    consistency: true,
  },
  {
    workload: 'pair',
    variant: 'plainWriterAA',
    baseline: 'plainWriter',
    label: 'plain Kysely (A/A control)',
    against: 'plain @ writer',
    control: true,
  },
  {
    workload: 'pair',
    variant: 'routedScoped',
    baseline: 'plainWriter',
    label: 'createDb in withReadYourWrites',
    against: 'plain @ writer',
    consistency: true,
  },
]

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
  /** Spans the OpenTelemetry SDK was given while this variant's operations ran. */
  spans: number
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
  spansStarted: () => number,
): Promise<Map<VariantKey, Tally>> {
  const ids = randomIds(OPS)
  const blockOps = concurrency === 1 ? 1 : Math.max(concurrency, C_BLOCK_OPS)
  const reshuffleEvery = Math.ceil(OPS / RESHUFFLES_PER_ROUND)
  const runners = variants.map((variant) => ({
    key: variant.key,
    op: operation(variant.db, workload, ids, variant.scope),
    tally: { wallMs: 0, cpuMicros: 0, ops: 0, latencies: [] as number[], spans: 0 },
  }))
  for (let from = 0; from < OPS; from += blockOps) {
    if (concurrency < POOL_MAX && from % reshuffleEvery < blockOps) {
      for (const { op } of runners) await runOps(op, 0, 2 * POOL_MAX, POOL_MAX)
    }
    const count = Math.min(blockOps, OPS - from)
    for (const { op, tally } of shuffled(runners)) {
      const spansBefore = spansStarted()
      const cpuBefore = process.cpuUsage()
      const before = performance.now()
      await runOps(op, from, count, concurrency)
      const wallMs = performance.now() - before
      // Blocks of different variants never overlap, so the spans started meanwhile are this variant's.
      tally.spans += spansStarted() - spansBefore
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

/** The pools of the engine being measured, and how to remove its servers or table: for Ctrl-C. */
const current: {
  dbs: Kysely<BenchDatabase>[]
  cleanUp: (() => Promise<void>) | undefined
  otel: OpenTelemetrySdk | undefined
} = {
  dbs: [],
  cleanUp: undefined,
  otel: undefined,
}

async function main(): Promise<void> {
  const startedAt = performance.now()
  // Ctrl-C: close the pools and stop the servers (the test harness also kills a local cluster on
  // SIGINT by itself), drop the table from servers given by URL, and exit.
  process.once('SIGINT', () => {
    console.error('\ninterrupted: cleaning up')
    void Promise.allSettled(current.dbs.map((db) => db.destroy()))
      .then(() => current.cleanUp?.())
      .catch(() => undefined)
      .finally(() => process.exit(130))
  })

  console.log('kysely-resilient: routing-layer overhead over plain Kysely')
  const micro = runClassifyMicro()
  console.log(
    `method: ${ROUNDS} rounds x ${OPS} ops per variant, workload and concurrency (${CONCURRENCY.join(', ')}); ` +
      `variants interleaved in random order (blocks of 1 op at concurrency 1, ${C_BLOCK_OPS} ops above); ` +
      `pool max ${POOL_MAX} everywhere; node ${process.version}, ${availableParallelism()} CPUs`,
  )

  // One engine after the other, never both at once: they would share the cores.
  for (const engine of ENGINES) {
    if (!serversAvailable(engine)) {
      console.log(`\n!!! ${ENGINE_NAME[engine]} skipped: no local server binaries and no URL given !!!`)
      continue
    }
    await benchEngine(engine)
  }

  console.log(
    '\noverhead: median over rounds of (variant mean wall time per op / baseline mean wall time per op) - 1;\n' +
      '±95%: approximate 95% interval of that median, from the spread of the rounds (p25 .. p75). The A/A ' +
      'control rows show what the method reads when nothing differs.\n' +
      'p50 overhead: the same with the median latency of single operations (concurrency 1 only): the typical ' +
      'call, without the tail.\n' +
      'CPU: this process only (user + system), per op; the servers are not counted. Δ columns are medians ' +
      'of per-round differences.\n' +
      'A pair op is an UPDATE and a SELECT of the same row, so its µs are for both statements.',
  )

  console.log('\nCPU only, no server (median of batches):')
  console.log(
    table(
      ['micro-benchmark', 'ns/op'],
      ['l', 'r'],
      micro.map((result) => [result.name, result.nsPerOp < 20 ? '< 20' : result.nsPerOp.toFixed(0)]),
    ),
  )
  console.log(
    `\ntotal time ${((performance.now() - startedAt) / 1000).toFixed(0)} s; load average now ${loadAverage()}`,
  )
}

/** Every round of every workload on one engine's servers, then that engine's table and checks. */
async function benchEngine(engine: Engine): Promise<void> {
  counters.missingRows = 0
  counters.staleReads = 0
  const server = await servers(engine)
  current.cleanUp = async () => {
    if (server.external) {
      await queryOnce(engine, server.writerUrl, 'DROP TABLE IF EXISTS bench_item').catch(() => undefined)
    }
    await server.stop()
  }
  try {
    const [version] = await queryOnce(
      engine,
      server.adminWriterUrl,
      engine === 'postgres'
        ? "SELECT current_setting('server_version') AS version"
        : 'SELECT VERSION() AS version',
    )
    await setUp(server)

    const split = routedKysely(engine, server.writerUrl, server.readerUrl)
    const processMode = routedKysely(engine, server.writerUrl, server.readerUrl, {
      readYourWrites: 'process',
    })
    // Its own db (default, scoped mode), so the other variants' statement counts stay their own.
    const scoped = routedKysely(engine, server.writerUrl, server.readerUrl)
    const replication = replicationKysely(engine, server.writerUrl, server.readerUrl)
    const variants: Record<VariantKey, Variant> = {
      plainWriter: { key: 'plainWriter', db: plainKysely(engine, server.writerUrl) },
      plainWriterAA: { key: 'plainWriterAA', db: plainKysely(engine, server.writerUrl) },
      plainReader: { key: 'plainReader', db: plainKysely(engine, server.readerUrl) },
      routedWriter: { key: 'routedWriter', db: routedKysely(engine, server.writerUrl, undefined) },
      routedSplit: { key: 'routedSplit', db: split },
      routedProcess: { key: 'routedProcess', db: processMode },
      routedScoped: { key: 'routedScoped', db: scoped, scope: (fn) => scoped.withReadYourWrites(fn) },
      // The same as routedWriter, opened only once the SDK is registered (see the warm-up).
      routedOtel: { key: 'routedOtel', db: routedKysely(engine, server.writerUrl, undefined) },
      replication: { key: 'replication', db: replication.db },
    }
    current.dbs = Object.values(variants).map((variant) => variant.db)

    console.log(
      `\n${ENGINE_NAME[engine]} ${String(version?.version)}: ${server.description}; ` +
        `load average ${loadAverage()}`,
    )

    // Warm-up: open every pool's connections and let the JIT settle on every code path. A db takes
    // its meter from the global provider when it opens: every db but routedOtel opens before the
    // OpenTelemetry SDK is registered (so it records nothing, as an application with the API installed
    // and no SDK), routedOtel after.
    const warmUp = async (keys: (key: VariantKey) => boolean) => {
      for (const workload of WORKLOADS) {
        for (const key of variantsOf(workload).filter(keys)) {
          const op = operation(variants[key].db, workload, randomIds(WARM_UP_OPS), variants[key].scope)
          await runOps(op, 0, WARM_UP_OPS, Math.max(...CONCURRENCY))
          await runOps(op, 0, WARM_UP_OPS, 1)
        }
      }
    }
    await warmUp((key) => key !== 'routedOtel')
    const otel = registerOpenTelemetrySdk()
    current.otel = otel
    await warmUp((key) => key === 'routedOtel')

    const samples: Samples = new Map()
    // Where the process-mode variant's timed SELECTs ran: on the reader, if nothing was pending.
    const processSelects = { reader: 0, writer: 0 }
    for (let round = 0; round < ROUNDS; round++) {
      for (const concurrency of CONCURRENCY) {
        for (const workload of WORKLOADS) {
          const keys = variantsOf(workload)
          // Let the replica replay the writes so far before reading from it.
          if (workload === 'select') {
            await waitForReplica(engine, server.adminWriterUrl, server.adminReaderUrl)
            if (keys.includes('routedProcess')) await primeProcessReads(processMode, server)
          }
          const before = processMode.stats()
          const tallies = await interleavedRound(
            keys.map((key) => variants[key]),
            workload,
            concurrency,
            otel.spansStarted,
          )
          if (workload === 'select') {
            const after = processMode.stats()
            processSelects.reader += readerQueries(after) - readerQueries(before)
            processSelects.writer += after.writer.queries - before.writer.queries
          }
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

    report(samples)
    sanityCheck(split, processSelects, scoped, replication.statements())
    await telemetryCheck(samples, otel)
  } finally {
    await Promise.allSettled(current.dbs.map((db) => db.destroy()))
    current.dbs = []
    await current.otel?.shutdown()
    current.otel = undefined
    await current.cleanUp()
    current.cleanUp = undefined
  }
}

/**
 * The process-mode variant's SELECT rows are meant to measure the common read: no write of its own
 * pending. Its writes of the previous round are on the replica by now (waitForReplica), but the library
 * learns that only from its next poll of the replica's replay position, and until then sends its reads
 * to the writer. Untimed reads, a few ms apart, until the reader serves one close that gap; the check
 * line at the end says whether the timed ones then ran on the reader.
 */
async function primeProcessReads(db: ResilientDb<BenchDatabase>, server: Servers): Promise<void> {
  if (server.readerUrl === server.writerUrl) return
  const op = operation(db, 'select', randomIds(1))
  const before = readerQueries(db.stats())
  const deadline = performance.now() + PRIME_DEADLINE_MS
  while (readerQueries(db.stats()) === before && performance.now() < deadline) {
    await op(0)
    await pause(5)
  }
}

function readerQueries(stats: ReturnType<ResilientDb<BenchDatabase>['stats']>): number {
  return stats.readers.reduce((sum, reader) => sum + reader.queries, 0)
}

function report(samples: Samples): void {
  const rows: string[][] = []
  // The worst row of the routing layer, of the read-your-writes rows, and of the OpenTelemetry rows.
  const worst: Record<'routing' | 'consistency' | 'telemetry', Worst | undefined> = {
    routing: undefined,
    consistency: undefined,
    telemetry: undefined,
  }
  // Above concurrency 1: the A/A control of each workload, and the routing rows to hold against it.
  const controls = new Map<string, { overhead: number; uncertainty: number }>()
  const concurrentRows: Array<Worst & { readonly key: string }> = []
  const opsPerSecond = (tally: Tally) => tally.ops / (tally.wallMs / 1000)
  const wallMicros = (tally: Tally) => (tally.wallMs * 1000) / tally.ops
  const cpuMicros = (tally: Tally) => tally.cpuMicros / tally.ops
  for (const concurrency of CONCURRENCY) {
    for (const comparison of COMPARISONS) {
      const { workload } = comparison
      const variant = samples.get(sampleKey(workload, concurrency, comparison.variant)) ?? []
      const baseline = samples.get(sampleKey(workload, concurrency, comparison.baseline)) ?? []
      // A workload left out with BENCH_WORKLOADS has no samples: no row, rather than a row of NaN.
      if (variant.length === 0 || baseline.length === 0) continue
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
      const group =
        comparison.consistency === true
          ? 'consistency'
          : comparison.telemetry === true
            ? 'telemetry'
            : 'routing'
      const where = `${workload}, concurrency ${concurrency}, ${comparison.label}`
      if (concurrency > 1 && comparison.control) {
        controls.set(`${workload}/${concurrency}`, { overhead, uncertainty })
      } else if (concurrency > 1 && group === 'routing' && !comparison.peer) {
        concurrentRows.push({ key: `${workload}/${concurrency}`, overhead, uncertainty, where })
      }
      const worstSoFar = worst[group]
      if (
        (group !== 'routing' || concurrency === 1) &&
        !comparison.control &&
        !comparison.peer &&
        (worstSoFar === undefined || overhead > worstSoFar.overhead)
      ) {
        worst[group] = { overhead, uncertainty, where }
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
  const routing = worst.routing
  if (routing !== undefined) {
    const excess = routing.overhead - 1
    const verdict = excess <= TARGET ? 'PASS' : 'FAIL'
    console.log(
      `\n${verdict}: worst median overhead at concurrency 1 ${describeWorst(routing)}; ` +
        `target <= +${(TARGET * 100).toFixed(0)}%`,
    )
    if (Math.abs(excess - TARGET) <= routing.uncertainty) {
      console.log(
        '      (the target lies within the uncertainty of this measurement: rerun, or raise BENCH_ROUNDS)',
      )
    }
  }
  for (const row of concurrentRows) {
    const control = controls.get(row.key)
    if (control === undefined) continue
    const within = row.overhead - row.uncertainty <= control.overhead + control.uncertainty
    console.log(
      `${within ? 'PASS' : 'FAIL'}: ${describeWorst(row)} ${within ? 'reaches' : 'lies above'} the A/A control's ` +
        `${percent(control.overhead)} ±${(control.uncertainty * 100).toFixed(1)}%`,
    )
  }
  if (worst.consistency !== undefined) {
    console.log(`read-your-writes rows (no target of their own): worst ${describeWorst(worst.consistency)}`)
  }
  if (worst.telemetry !== undefined) {
    console.log(`OpenTelemetry rows (no target of their own): worst ${describeWorst(worst.telemetry)}`)
  }
}

/**
 * What the OpenTelemetry variant really did: the spans the SDK was given per statement, by it and by
 * the createDb variants opened before the SDK was registered (0 unless the library takes a tracer
 * that follows the global provider after the fact: then their rows include tracing too), and the
 * data points its metrics hold when collected once, after the rounds.
 */
async function telemetryCheck(samples: Samples, otel: OpenTelemetrySdk): Promise<void> {
  const totals = (keys: ReadonlyArray<VariantKey>) => {
    let spans = 0
    let ops = 0
    for (const [key, tallies] of samples) {
      if (!keys.some((variant) => key.endsWith(`/${variant}`))) continue
      for (const tally of tallies) {
        spans += tally.spans
        ops += tally.ops
      }
    }
    return { spans, ops }
  }
  const instrumented = totals(['routedOtel'])
  if (instrumented.ops === 0) return
  const others = totals(['routedWriter', 'routedSplit', 'routedProcess', 'routedScoped'])
  const perStatement = (total: { spans: number; ops: number }) =>
    total.ops === 0 ? '0' : (total.spans / total.ops).toFixed(2)
  console.log(
    `check: OpenTelemetry SDK: ${OTEL_LABEL} started ${instrumented.spans} spans ` +
      `(${perStatement(instrumented)} per statement); the createDb variants without it ` +
      `${others.spans} (${perStatement(others)} per operation); the library's metrics hold ` +
      `${await otel.libraryDataPoints()} data points (collected once, after the rounds)`,
  )
}

interface Worst {
  readonly overhead: number
  readonly uncertainty: number
  readonly where: string
}

function describeWorst(worst: Worst): string {
  return `${percent(worst.overhead)} ±${(worst.uncertainty * 100).toFixed(1)}% (${worst.where})`
}

/**
 * The writer+reader variants (createDb's and kysely-replication's) really read from the reader, and the
 * replica had every row; the process mode's timed SELECTs ran where no pending write sends them (the
 * reader); no pair read missed its own UPDATE.
 */
function sanityCheck(
  split: ResilientDb<BenchDatabase>,
  processSelects: { readonly reader: number; readonly writer: number },
  scoped: ResilientDb<BenchDatabase>,
  replication: { readonly reader: number; readonly writer: number },
): void {
  const stats = split.stats()
  const scopedStats = scoped.stats()
  console.log(
    `check: createDb writer+reader ran ${readerQueries(stats)} statements on the reader and ` +
      `${stats.writer.queries} on the writer; ${counters.missingRows} point SELECTs found no row`,
  )
  console.log(
    `check: kysely-replication writer+reader ran ${replication.reader} statements on the reader and ` +
      `${replication.writer} on the writer`,
  )
  console.log(
    `check: readYourWrites 'process' ran ${processSelects.reader} of its SELECT rounds' statements on the ` +
      `reader and ${processSelects.writer} on the writer`,
  )
  console.log(
    `check: withReadYourWrites pairs ran ${readerQueries(scopedStats)} statements on the reader and ` +
      `${scopedStats.writer.queries} on the writer; ${counters.staleReads} pair reads missed their own UPDATE`,
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

/** A comma-separated list from the environment, each item one of `allowed`; `allowed` when unset. */
function listFromEnv<T extends string>(name: string, allowed: ReadonlyArray<T>): T[] {
  const given = process.env[name]
  if (given === undefined || given.trim() === '') return [...allowed]
  return given.split(',').map((item) => {
    const value = item.trim()
    if (!allowed.includes(value as T))
      throw new Error(`${name}: expected some of ${allowed.join(',')}, got ${value}`)
    return value as T
  })
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
