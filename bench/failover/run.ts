/**
 * Failover drill: a steady stream of idempotent writes and reads through `createDb` + `withRetry`
 * while the primary dies (immediate shutdown) and the replica is promoted, on PostgreSQL and
 * MariaDB, with the writer given as a list of candidates (A) or as one endpoint whose address flips
 * to the new primary (B). Prints the time from promotion to the first successful write, the errors
 * the application saw, and whether every acknowledged write is on the new primary. See bench/README.md.
 *
 *   npm run bench:failover
 *   FAILOVER_ENGINES=postgres FAILOVER_TOPOLOGIES=B FAILOVER_VERBOSE=1 npm run bench:failover
 */
import { availableParallelism, loadavg } from 'node:os'
import type { Engine } from '../../test/support/sql.js'
import { table } from '../overhead/stats.js'
import {
  type DrillResult,
  engineAvailable,
  RETRY_OPTIONS,
  type Resources,
  release,
  runDrill,
  TOPOLOGY_LABEL,
  type Topology,
} from './drill.js'

const ENGINES = listFromEnv('FAILOVER_ENGINES', ['postgres', 'mysql'] as const)
const TOPOLOGIES = listFromEnv('FAILOVER_TOPOLOGIES', ['A', 'B'] as const)
const OPTIONS = {
  steadyMs: intFromEnv('FAILOVER_STEADY_MS', 3_000),
  afterMs: intFromEnv('FAILOVER_AFTER_MS', 4_000),
  promoteDelayMs: intFromEnv('FAILOVER_PROMOTE_DELAY_MS', 0),
  syncReplication: process.env.FAILOVER_SYNC !== '0',
  idempotentWrites: process.env.FAILOVER_IDEMPOTENT !== '0',
}
// FAILOVER_VERBOSE=1 prints every target's timeline, not only failing ones'.
const VERBOSE = process.env.FAILOVER_VERBOSE === '1'
/** The targets: first write within this long after promote() resolved, and no error surfaced. */
const FIRST_WRITE_TARGET_MS = 1_000
/** The whole drill is abandoned (servers stopped, exit 1) past this. */
const DEADLINE_MS = intFromEnv('FAILOVER_DEADLINE_MS', 170_000)
/** Timeline printing: this many lines after the crash, then from this long before the promotion. */
const TIMELINE_HEAD = 15
const TIMELINE_BEFORE_PROMOTION_MS = 300
const TIMELINE_MAX_LINES = 70

const ENGINE_NAME: Record<Engine, string> = { postgres: 'PostgreSQL', mysql: 'MariaDB' }

interface Outcome {
  readonly engine: Engine
  readonly topology: Topology
  readonly result?: DrillResult
  readonly error?: unknown
}

async function main(): Promise<void> {
  const startedAt = performance.now()
  const resources: Resources = { cluster: undefined, proxy: undefined, db: undefined, stopStream: undefined }
  // Ctrl-C (or the deadline): close the pools and the proxy, stop the servers, exit. The test harness
  // also kills every server it started on SIGINT by itself.
  let aborting = false
  const abort = (why: string, code: number) => {
    if (aborting) return
    aborting = true
    console.error(`\n${why}: cleaning up`)
    setTimeout(() => process.exit(code), 10_000).unref()
    void release(resources).finally(() => process.exit(code))
  }
  process.on('SIGINT', () => abort('interrupted', 130))
  process.on('SIGTERM', () => abort('terminated', 143))
  setTimeout(() => abort(`the drill ran past ${DEADLINE_MS / 1000} s`, 1), DEADLINE_MS).unref()

  console.log('kysely-resilient: failover drill')
  console.log(
    `node ${process.version}, ${availableParallelism()} CPUs, load average ${loadAverage()}; ` +
      `${OPTIONS.steadyMs} ms steady, crash, promote${OPTIONS.promoteDelayMs > 0 ? ` after ${OPTIONS.promoteDelayMs} ms` : ''}, ` +
      `then ${OPTIONS.afterMs} ms; ${OPTIONS.syncReplication ? 'synchronous' : 'asynchronous'} replication`,
  )
  console.log(
    `stream: sequential idempotent INSERTs and point SELECTs through createDb (library defaults), each in ` +
      `withRetry(${JSON.stringify(RETRY_OPTIONS)})` +
      (OPTIONS.idempotentWrites ? '\n' : ', but idempotent: false for the writes\n'),
  )

  const outcomes: Outcome[] = []
  for (const engine of ENGINES) {
    if (!engineAvailable(engine)) {
      console.log(`${ENGINE_NAME[engine]}: server binaries not found, skipped (see test/support/binaries.ts)`)
      continue
    }
    for (const topology of TOPOLOGIES) {
      process.stdout.write(`${ENGINE_NAME[engine]} ${TOPOLOGY_LABEL[topology]} ... `)
      const before = performance.now()
      try {
        const result = await runDrill(engine, topology, OPTIONS, resources)
        outcomes.push({ engine, topology, result })
      } catch (error) {
        outcomes.push({ engine, topology, error })
      } finally {
        await release(resources)
      }
      console.log(`${((performance.now() - before) / 1000).toFixed(1)} s`)
    }
  }

  report(outcomes)
  console.log(
    `\ntotal time ${((performance.now() - startedAt) / 1000).toFixed(0)} s; load average now ${loadAverage()}`,
  )
  if (outcomes.some((outcome) => outcome.error !== undefined)) process.exitCode = 1
}

function report(outcomes: ReadonlyArray<Outcome>): void {
  const rows: string[][] = []
  for (const { engine, topology, result } of outcomes) {
    if (result === undefined) continue
    const { integrity } = result
    rows.push([
      ENGINE_NAME[engine],
      TOPOLOGY_LABEL[topology],
      ms(result.promotedAt - result.promoteStartedAt),
      ms(result.promotedAt),
      ms(result.firstWriteAfterPromotion),
      ms(result.firstReadAfterPromotion),
      ms(result.writeOutage),
      String(result.writesAcked),
      String(result.readsOk),
      `${result.writeErrors} / ${result.readErrors}`,
      `${result.appRetries.write} / ${result.appRetries.read}`,
      `${result.libraryRetries.write} / ${result.libraryRetries.read}`,
      `${integrity.acked - integrity.missing}/${integrity.acked}`,
      String(integrity.missing),
      String(integrity.duplicateKeys + integrity.wrongValue),
      String(integrity.unackedPresent),
      String(result.retriedAlreadyCommitted),
      String(result.readMisses),
    ])
  }
  if (rows.length > 0) {
    console.log(
      `\n${table(
        [
          'engine',
          'topology',
          'promote ms',
          'crash→promoted',
          '1st write',
          '1st read',
          'write gap',
          'writes',
          'reads',
          'errors w / r',
          'withRetry retries w / r',
          'library retries w / r',
          'on new primary',
          'lost',
          'dup/wrong',
          'unacked present',
          'retry found committed',
          'read misses',
        ],
        ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
        rows,
      )}`,
    )
    console.log(
      '\npromote ms: how long promote() took; crash→promoted: from the stop signal to promote() resolved.\n' +
        '1st write / 1st read: first write acknowledged (read answered) by the new primary, i.e. after the old one\n' +
        'exited, in ms after promote() resolved (negative: before it). write gap: last write acknowledged by the old\n' +
        'primary to the first acknowledged by the new one.\n' +
        'errors: withRetry rejections the application saw. withRetry retries: the application-level retries;\n' +
        "library retries: createDb's own statement retries ('retry' events). on new primary: acknowledged writes\n" +
        'found there (exactly once, with their own value); lost: acknowledged but absent; unacked present: rows\n' +
        'whose write the application never saw succeed; retry found committed: a withRetry retry of an ambiguous\n' +
        'write inserted nothing because the first attempt had committed; read misses: point reads of an\n' +
        'acknowledged key that found no row.',
    )
  }

  console.log('')
  for (const { engine, topology, result, error } of outcomes) {
    const name = `${ENGINE_NAME[engine]} ${TOPOLOGY_LABEL[topology]}`
    if (result === undefined) {
      console.log(`FAIL  ${name}: the drill itself failed: ${describe(error)}`)
      continue
    }
    const first = result.firstWriteAfterPromotion
    const fast = first !== undefined && first <= FIRST_WRITE_TARGET_MS
    const errors = result.writeErrors + result.readErrors
    const { integrity } = result
    const intact =
      integrity.missing === 0 &&
      integrity.duplicateKeys === 0 &&
      integrity.wrongValue === 0 &&
      result.readMisses === 0
    const verdict = fast && errors === 0 && intact && !result.hung ? 'PASS' : 'FAIL'
    console.log(
      `${verdict}  ${name}: first write ${first === undefined ? 'never' : `${ms(first)} ms`} after promotion ` +
        `(target <= ${FIRST_WRITE_TARGET_MS}); ${errors} errors surfaced (target 0); ` +
        `${integrity.acked - integrity.missing}/${integrity.acked} acknowledged writes on the new primary exactly once` +
        (result.hung ? '; the stream did not stop in time' : ''),
    )
    for (const sample of result.errorSamples) console.log(`      surfaced: ${sample}`)
    for (const event of result.failoverEvents) console.log(`      failover event: ${event}`)
    if (verdict === 'FAIL' || VERBOSE) printTimeline(result)
  }
}

/**
 * The drill's timeline, with runs of the same line collapsed: the first lines after the crash, then
 * everything from shortly before the promotion on (a long outage repeats itself in between).
 */
function printTimeline(result: DrillResult): void {
  const runs: { first: number; last: number; what: string; count: number }[] = []
  for (const entry of result.timeline.filter((item) => item.t >= -100)) {
    const previous = runs.at(-1)
    if (previous !== undefined && previous.what === entry.what) {
      previous.last = entry.t
      previous.count++
    } else {
      runs.push({ first: entry.t, last: entry.t, what: entry.what, count: 1 })
    }
  }
  const aroundPromotion = runs.findIndex(
    (run) => run.first >= result.promoteStartedAt - TIMELINE_BEFORE_PROMOTION_MS,
  )
  const shown = runs
    .map((run, index) => ({ run, index }))
    .filter(({ index }) => index < TIMELINE_HEAD || (aroundPromotion !== -1 && index >= aroundPromotion))
    .slice(0, TIMELINE_MAX_LINES)
  console.log('      timeline (ms since the crash):')
  let next = 0
  for (const { run, index } of shown) {
    if (index > next) console.log(`      ${'...'.padStart(13)}  (${index - next} more lines)`)
    next = index + 1
    const when = run.count === 1 ? ms(run.first) : `${ms(run.first)}..${ms(run.last)}`
    console.log(`      ${when.padStart(13)}  ${run.what}${run.count > 1 ? ` (x${run.count})` : ''}`)
  }
  if (runs.length > next) console.log(`      ${'...'.padStart(13)}  (${runs.length - next} more lines)`)
}

function ms(value: number | undefined): string {
  return value === undefined ? '-' : Math.round(value).toString()
}

function describe(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error)
}

function loadAverage(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')
}

function intFromEnv(name: string, fallback: number): number {
  const value = Number(process.env[name])
  return process.env[name] !== undefined && Number.isInteger(value) && value >= 0 ? value : fallback
}

function listFromEnv<T extends string>(name: string, allowed: ReadonlyArray<T>): T[] {
  const given = process.env[name]
  if (given === undefined || given.trim() === '') return [...allowed]
  const values = given.split(',').map((value) => value.trim())
  const unknown = values.filter((value) => !(allowed as ReadonlyArray<string>).includes(value))
  if (unknown.length > 0)
    throw new Error(`${name}: unknown ${unknown.join(', ')}; expected ${allowed.join(', ')}`)
  return values as T[]
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
