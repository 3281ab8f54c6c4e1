/** Sums the workers' results per measurement and prints the tables and the per-engine summary. */
import type { Engine } from '../../test/support/sql.js'
import { table } from '../overhead/stats.js'
import type { FleetOutcome } from './fleet.js'
import { Histogram } from './histogram.js'
import { ENGINE_NAME, SCENARIO_LABEL, type Scenario, type Variant } from './settings.js'

export interface Measurement {
  readonly engine: Engine
  readonly scenario: Scenario
  readonly variant: Variant
  readonly processes: number
  readonly outcome: FleetOutcome
  /** Client connections on the server before the start, other than the benchmark's own. */
  readonly lingering: number
  /**
   * Connection attempts the server itself counted during the measurement (see servers.ts); through a
   * proxy, the proxy's own logins to the server.
   */
  readonly serverConnects: number | undefined
  /** The proxy scenario: what PgBouncer saw (its pool's peaks and totals), one line. */
  readonly proxy: string | undefined
}

interface Totals {
  readonly ok: number
  readonly failed: number
  readonly failures: Map<string, number>
  readonly samples: Map<string, string>
  readonly connectAttempts: number
  readonly connectsEstablished: number
  readonly retries: Map<string, number> | undefined
  readonly uncaught: Map<string, number>
  readonly latency: Histogram
  readonly okPerProcess: number[]
  readonly elapsedMs: number
  readonly destroyTimeouts: number
}

function totals(outcome: FleetOutcome): Totals {
  const failures = new Map<string, number>()
  const samples = new Map<string, string>()
  const uncaught = new Map<string, number>()
  let retries: Map<string, number> | undefined
  const latency = new Histogram()
  const add = (into: Map<string, number>, from: Record<string, number>) => {
    for (const [key, count] of Object.entries(from)) into.set(key, (into.get(key) ?? 0) + count)
  }
  for (const result of outcome.results) {
    add(failures, result.failures)
    add(uncaught, result.uncaught)
    for (const [label, sample] of Object.entries(result.failureSamples)) {
      if (!samples.has(label)) samples.set(label, sample)
    }
    if (result.retries !== undefined) {
      retries ??= new Map()
      add(retries, result.retries)
    }
    latency.add(result.latency)
  }
  const sum = (pick: (result: FleetOutcome['results'][number]) => number) =>
    outcome.results.reduce((total, result) => total + pick(result), 0)
  return {
    ok: sum((result) => result.ok),
    failed: sum((result) => result.failed),
    failures,
    samples,
    connectAttempts: sum((result) => result.connectAttempts),
    connectsEstablished: sum((result) => result.connectsEstablished),
    retries,
    uncaught,
    latency,
    okPerProcess: outcome.results.map((result) => result.ok),
    elapsedMs: Math.max(0, ...outcome.results.map((result) => result.elapsedMs)),
    destroyTimeouts: outcome.results.filter((result) => result.destroyTimedOut).length,
  }
}

/** `53300 x1234, PoolTimeoutError x5`, most frequent first. */
function byCode(counts: ReadonlyMap<string, number>): string {
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([label, count]) => `${label} x${count}`)
    .join(', ')
}

function ms(value: number): string {
  if (Number.isNaN(value)) return '-'
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0)
}

export function report(measurements: ReadonlyArray<Measurement>): void {
  const rows: string[][] = []
  const samples = new Map<string, string>()
  const notes: string[] = []
  const computed = measurements.map((measurement) => ({ measurement, totals: totals(measurement.outcome) }))
  for (const { measurement, totals: t } of computed) {
    const { engine, scenario, variant, outcome } = measurement
    const where = `${ENGINE_NAME[engine]} ${scenario} ${variant}`
    for (const [label, sample] of t.samples) if (!samples.has(label)) samples.set(label, sample)
    const perProcess =
      t.okPerProcess.length > 1 ? `${Math.min(...t.okPerProcess)}..${Math.max(...t.okPerProcess)}` : ''
    rows.push([
      ENGINE_NAME[engine],
      SCENARIO_LABEL[scenario],
      variant,
      String(t.ok),
      t.elapsedMs > 0 ? Math.round(t.ok / (t.elapsedMs / 1000)).toString() : '-',
      String(t.failed),
      String(t.connectAttempts),
      measurement.serverConnects === undefined ? '-' : String(measurement.serverConnects),
      ms(t.latency.quantile(0.5)),
      ms(t.latency.quantile(0.99)),
      t.retries === undefined ? 'n/a' : String([...t.retries.values()].reduce((a, b) => a + b, 0)),
      perProcess,
      byCode(t.failures),
    ])
    if (t.connectsEstablished !== t.connectAttempts) {
      notes.push(
        `${where}: ${t.connectAttempts - t.connectsEstablished} TCP connects never completed their handshake`,
      )
    }
    if (t.retries !== undefined && t.retries.size > 0)
      notes.push(`${where}: retries by code: ${byCode(t.retries)}`)
    if (t.uncaught.size > 0) {
      notes.push(`${where}: errors that reached uncaughtException/unhandledRejection: ${byCode(t.uncaught)}`)
    }
    if (outcome.results.length < measurement.processes) {
      notes.push(
        `${where}: only ${outcome.results.length} of ${measurement.processes} processes reported; ` +
          'their counts are missing from the row',
      )
    }
    if (measurement.proxy !== undefined) notes.push(`${where}: ${measurement.proxy}`)
    for (const problem of outcome.problems) notes.push(`${where}: ${problem}`)
    if (t.destroyTimeouts > 0)
      notes.push(`${where}: db.destroy() timed out in ${t.destroyTimeouts} process(es)`)
    if (measurement.lingering !== 0) {
      notes.push(
        `${where}: started with ${Number.isNaN(measurement.lingering) ? 'an unknown number of' : measurement.lingering} ` +
          'connections of an earlier measurement still on the server',
      )
    }
  }

  console.log(
    table(
      [
        'engine',
        'scenario',
        'variant',
        'ok',
        'ok/s',
        'failed',
        'connects',
        'server saw',
        'p50 ms',
        'p99 ms',
        'retries',
        'ok/process',
        'failed by code',
      ],
      ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
      rows,
    ),
  )
  console.log(
    '\nok / failed: requests (one statement each, SELECT and INSERT alternating) that succeeded / threw, ' +
      'summed over the processes;\n' +
      'ok/s over the run (requests started before the deadline are awaited). connects: TCP connects the ' +
      'processes started, refused or not;\n' +
      'server saw: connection attempts the server counted meanwhile (MariaDB: Connections + Connection_errors_*; ' +
      'PostgreSQL: log_connections lines),\n' +
      'a cross-check of connects. p50 / p99: latency of successful requests, pool wait included. ' +
      "retries: createDb's 'retry' events\n" +
      '(plain Kysely has none). ok/process: fewest..most ok of one process.\n' +
      "Through PgBouncer: connects are the processes' connects to PgBouncer, server saw is PgBouncer's own logins to " +
      "the server (the app pool's, and the auth_query user's that checks client passwords).",
  )
  if (samples.size > 0) {
    console.log('\nerror codes seen (first message of each):')
    for (const [label, sample] of samples) console.log(`  ${label}: ${sample}`)
  }
  if (notes.length > 0) {
    console.log('\nnotes:')
    for (const note of notes) console.log(`  ${note}`)
  }

  console.log('\nsummary, createDb / plain Kysely:')
  const engines = [...new Set(measurements.map((measurement) => measurement.engine))]
  for (const engine of engines) {
    const failed: string[] = []
    const connects: string[] = []
    for (const scenario of new Set(measurements.filter((m) => m.engine === engine).map((m) => m.scenario))) {
      const find = (variant: Variant) =>
        computed.find(
          ({ measurement }) =>
            measurement.engine === engine &&
            measurement.scenario === scenario &&
            measurement.variant === variant,
        )?.totals
      const routed = find('createDb')
      const plain = find('plain')
      if (routed === undefined || plain === undefined) continue
      failed.push(`${scenario} ${routed.failed} / ${plain.failed} (${ratio(routed.failed, plain.failed)})`)
      connects.push(`${scenario} ${routed.connectAttempts} / ${plain.connectAttempts}`)
    }
    console.log(
      failed.length === 0
        ? `  ${ENGINE_NAME[engine]}: no complete pair of variants`
        : `  ${ENGINE_NAME[engine]}: failed requests ${failed.join(', ')}; connects ${connects.join(', ')}`,
    )
  }

  // The same storm straight at the server and through PgBouncer, per variant.
  const find = (scenario: Scenario, variant: Variant) =>
    computed.find(
      ({ measurement }) =>
        measurement.engine === 'postgres' &&
        measurement.scenario === scenario &&
        measurement.variant === variant,
    )?.totals
  const lines: string[] = []
  for (const variant of ['createDb', 'plain'] as const) {
    const direct = find('storm', variant)
    const proxied = find('proxy', variant)
    if (direct === undefined || proxied === undefined) continue
    const quantile = (q: number) => `${ms(direct.latency.quantile(q))} / ${ms(proxied.latency.quantile(q))}`
    lines.push(
      `  ${variant}: ok ${direct.ok} / ${proxied.ok}, failed ${direct.failed} / ${proxied.failed}, ` +
        `p50 ms ${quantile(0.5)}, p99 ms ${quantile(0.99)}`,
    )
  }
  if (lines.length > 0) {
    console.log(`
summary, ${ENGINE_NAME.postgres} storm direct / through PgBouncer:`)
    for (const line of lines) console.log(line)
  }
}

/** createDb's failures as a multiple of plain Kysely's. */
function ratio(routed: number, plain: number): string {
  if (plain === 0) return routed === 0 ? 'both 0' : 'plain 0'
  if (routed === 0) return '0x'
  const value = routed / plain
  return `${value < 0.01 && value > 0 ? value.toExponential(1) : value.toFixed(2)}x`
}
