/**
 * Where does the routing layer's time go? Profiles (V8 sampling CPU profiler, in process) the same
 * sequential point SELECTs or INSERTs through plain Kysely and through `createDb`, and prints, per
 * operation, the CPU time by package and the heaviest functions of the library (its build in `dist/`, see bench/shipped.ts).
 *
 *   tsx bench/overhead/profile.ts [select|insert] [ops] [postgres|mysql] [writer-only]
 *
 * PROFILE_CONCURRENCY (default 1) sets the number of operations in flight. PROFILE_OPENTELEMETRY=1
 * compares createDb without and with the OpenTelemetry SDK registered (see bench/overhead/telemetry.ts)
 * instead of plain Kysely and createDb: where the recording's time goes. (`npm run build` first: it profiles the build, see bench/shipped.ts.) With `writer-only`, createDb
 * has no reader and plain Kysely runs on the writer too; otherwise SELECTs go to the replica in both.
 *
 * Servers as for run.ts: PG_WRITER_URL (and PG_READER_URL), or a throwaway local cluster.
 */

import type { Profiler } from 'node:inspector'
import { Session } from 'node:inspector/promises'
import type { Kysely } from 'kysely'
import type { Engine } from '../../test/support/sql.js'
import type { BenchDatabase } from './schema.js'
import {
  operation,
  plainKysely,
  randomIds,
  routedKysely,
  runOps,
  servers,
  setUp,
  type Workload,
} from './setup.js'
import { table } from './stats.js'
import { type OpenTelemetrySdk, registerOpenTelemetrySdk } from './telemetry.js'

const workload: Workload = process.argv[2] === 'insert' ? 'insert' : 'select'
const OPS = Number(process.argv[3] ?? 10_000)
const ENGINE: Engine = process.argv[4] === 'mysql' ? 'mysql' : 'postgres'
const WRITER_ONLY = process.argv[5] === 'writer-only'
const CONCURRENCY = Number(process.env.PROFILE_CONCURRENCY ?? 1)
const OPENTELEMETRY = process.env.PROFILE_OPENTELEMETRY === '1'
const BASELINE = OPENTELEMETRY ? 'createDb' : 'plain Kysely'
const CANDIDATE = OPENTELEMETRY ? 'createDb + SDK' : 'createDb'
const ROUNDS = 4

interface Costs {
  /** Self time in µs, by category. */
  readonly categories: Map<string, number>
  /** Self time in µs of every JavaScript function, by function and package. */
  readonly selfTimes: Map<string, number>
  /** Self time in µs of native code and builtins, by builtin and the nearest JavaScript caller. */
  readonly natives: Map<string, number>
  /** Self and inclusive time in µs, by function of `src/`. */
  readonly functions: Map<string, { self: number; total: number }>
}

/** This library's code: its build (dist/), or src/ if run through tsx; never a package's own dist/. */
function isLibrary(url: string): boolean {
  return !url.includes('/node_modules/') && (url.includes('/src/') || url.includes('/dist/'))
}

function category(frame: Profiler.ProfileNode['callFrame']): string {
  const { url, functionName } = frame
  if (url === '') {
    if (functionName === '(garbage collector)' || functionName === '(idle)' || functionName === '(program)') {
      return functionName
    }
    return '(native / builtins)'
  }
  if (isLibrary(url)) return 'kysely-resilient'
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (match !== null) return match[1] as string
  if (url.startsWith('node:')) return 'node: internals'
  return url
}

function summarize(profile: Profiler.Profile, into: Costs): void {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const samples = profile.samples ?? []
  const deltas = profile.timeDeltas ?? []
  for (let i = 0; i < samples.length; i++) {
    const micros = deltas[i + 1] ?? 0
    const node = byId.get(samples[i] as number)
    if (node === undefined) continue
    const name = category(node.callFrame)
    into.categories.set(name, (into.categories.get(name) ?? 0) + micros)
    if (node.callFrame.url !== '') {
      const key = `${node.callFrame.functionName || '(anonymous)'} (${name})`
      into.selfTimes.set(key, (into.selfTimes.get(key) ?? 0) + micros)
    }
    if (name === '(native / builtins)') {
      // Whose work it is: the nearest caller with a source file.
      let caller = parent.get(node.id)
      while (caller !== undefined && (byId.get(caller) as Profiler.ProfileNode).callFrame.url === '') {
        caller = parent.get(caller)
      }
      const frame = caller === undefined ? undefined : (byId.get(caller) as Profiler.ProfileNode).callFrame
      const key = `${node.callFrame.functionName || '(anonymous)'} <- ${
        frame === undefined ? '(root)' : `${frame.functionName || '(anonymous)'} (${category(frame)})`
      }`
      into.natives.set(key, (into.natives.get(key) ?? 0) + micros)
    }
    // Inclusive time of our own functions: every distinct src/ function on the stack.
    const seen = new Set<string>()
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const frame = (byId.get(id) as Profiler.ProfileNode).callFrame
      if (!isLibrary(frame.url)) continue
      const key = `${frame.functionName || '(anonymous)'}  ${frame.url.replace(/^.*\/(src|dist)\//, '$1/')}`
      const entry = into.functions.get(key) ?? { self: 0, total: 0 }
      if (!seen.has(key)) entry.total += micros
      if (id === node.id) entry.self += micros
      seen.add(key)
      into.functions.set(key, entry)
    }
  }
}

async function main(): Promise<void> {
  const server = await servers(ENGINE)
  const session = new Session()
  const dbs: Kysely<BenchDatabase>[] = []
  let sdk: OpenTelemetrySdk | undefined
  try {
    await setUp(server)
    const readerUrl = WRITER_ONLY ? undefined : server.readerUrl
    // A db takes its tracer and meter from the global providers when it opens (see telemetry.ts).
    const baseline = OPENTELEMETRY
      ? routedKysely(ENGINE, server.writerUrl, readerUrl)
      : plainKysely(ENGINE, workload === 'select' && !WRITER_ONLY ? server.readerUrl : server.writerUrl)
    // Its first statement waits for the db to open (the API is loaded asynchronously): only then register.
    if (OPENTELEMETRY) await runOps(operation(baseline, workload, randomIds(10)), 0, 10, 1)
    sdk = OPENTELEMETRY ? registerOpenTelemetrySdk() : undefined
    const variants = {
      plain: baseline,
      createDb: routedKysely(ENGINE, server.writerUrl, readerUrl),
    }
    dbs.push(variants.plain, variants.createDb)
    for (const db of dbs) await runOps(operation(db, workload, randomIds(2000)), 0, 2000, 1)

    session.connect()
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: 50 })
    const costs = new Map<string, Costs>()
    // Alternate the variants in several rounds so that drifts of the machine hit both alike.
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, db] of Object.entries(variants)) {
        const op = operation(db, workload, randomIds(OPS))
        await session.post('Profiler.start')
        await runOps(op, 0, OPS, CONCURRENCY)
        const { profile } = await session.post('Profiler.stop')
        const entry = costs.get(name) ?? {
          categories: new Map(),
          selfTimes: new Map(),
          natives: new Map(),
          functions: new Map(),
        }
        summarize(profile, entry)
        costs.set(name, entry)
      }
    }

    const perOp = (micros: number | undefined) => ((micros ?? 0) / (OPS * ROUNDS)).toFixed(2)
    const plain = costs.get('plain') as Costs
    const routed = costs.get('createDb') as Costs
    const names = [...new Set([...plain.categories.keys(), ...routed.categories.keys()])].sort(
      (a, b) => (routed.categories.get(b) ?? 0) - (routed.categories.get(a) ?? 0),
    )
    console.log(
      `\n${ENGINE} ${workload}${WRITER_ONLY ? ' writer only' : ''}, concurrency ${CONCURRENCY}, ${BASELINE} vs ${CANDIDATE}, ${OPS * ROUNDS} ops per variant: self time per op (µs)`,
    )
    console.log(
      table(
        ['category', BASELINE, CANDIDATE, 'Δ'],
        ['l', 'r', 'r', 'r'],
        names.map((name) => {
          const a = (plain.categories.get(name) ?? 0) / (OPS * ROUNDS)
          const b = (routed.categories.get(name) ?? 0) / (OPS * ROUNDS)
          return [name, a.toFixed(2), b.toFixed(2), `${b - a >= 0 ? '+' : ''}${(b - a).toFixed(2)}`]
        }),
      ),
    )
    for (const [name, costsOf] of [
      [BASELINE, plain],
      [CANDIDATE, routed],
    ] as const) {
      console.log(`\n${name}: native code and builtins by nearest JavaScript caller, self time per op (µs)`)
      const natives = [...costsOf.natives.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10)
      console.log(
        table(
          ['builtin <- caller', 'self'],
          ['l', 'r'],
          natives.map(([key, micros]) => [key, perOp(micros)]),
        ),
      )
    }
    console.log('\nJavaScript functions whose self time differs most, per op (µs)')
    const keys = [...new Set([...plain.selfTimes.keys(), ...routed.selfTimes.keys()])]
    const delta = (key: string) => (routed.selfTimes.get(key) ?? 0) - (plain.selfTimes.get(key) ?? 0)
    console.log(
      table(
        ['function (package)', BASELINE, CANDIDATE, 'Δ'],
        ['l', 'r', 'r', 'r'],
        keys
          .sort((a, b) => Math.abs(delta(b)) - Math.abs(delta(a)))
          .slice(0, 25)
          .map((key) => [
            key,
            perOp(plain.selfTimes.get(key)),
            perOp(routed.selfTimes.get(key)),
            `${delta(key) >= 0 ? '+' : ''}${perOp(delta(key))}`,
          ]),
      ),
    )
    console.log(`\n${CANDIDATE}: functions of the library by inclusive time per op (µs)`)
    const functions = [...routed.functions.entries()].sort((a, b) => b[1].total - a[1].total).slice(0, 20)
    console.log(
      table(
        ['function', 'inclusive', 'self'],
        ['l', 'r', 'r'],
        functions.map(([key, { self, total }]) => [key, perOp(total), perOp(self)]),
      ),
    )
  } finally {
    session.disconnect()
    await Promise.allSettled(dbs.map((db) => db.destroy()))
    await sdk?.shutdown()
    await server.stop()
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
