import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { formatWithOptions, inspect } from 'node:util'
import { Log, type LogConfig, type LogEvent } from 'kysely'
import { afterAll, expect, vi } from 'vitest'
import type { CreateDbConfig } from '../../src/config/create-db-config.js'
import type { ResilientDb } from '../../src/create-db.js'
import { EVENT_NAMES } from './fault-helpers.js'
import { configSecrets, type LeakRecord, type RecordKind } from './leak-scan.js'
import { registerFoundSecret, requireDirectory } from './secrets.js'

// Setup file (vitest.config.ts `setupFiles`) of the suite-wide leak watch. For every test file it records
// everything the library says to the outside world: each event of each db createDb makes, each error
// Kysely logs for them, each error createDb throws, how each db prints and serialises, every process
// warning and every console.warn/console.error line. Global setup's teardown then searches all of it for
// every registered secret (test/support/leak-scan.ts). Records go to a file per worker process, because
// workers are separate processes and only files outlive them; they are buffered and written in batches.

const INSPECT = { depth: 10 } as const
const recordsFile = `records-${process.pid}.jsonl`
/** Created by global setup; without it the watch cannot report, which must fail loudly. */
const directory = requireDirectory()

// vi.mock in a setup file applies to every test file, and the mocked module replaces the real one for
// every importer in the worker: src/index.ts's re-export, src/lambda/get-connection.ts, the examples.
vi.mock('../../src/create-db.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../../src/create-db.js')>()
  return { ...original, createDb: watchCreateDb(original.createDb) }
})

/** The test file this worker runs, known once the setup file executes within it. */
const fileOfWorker: string | undefined = (() => {
  try {
    return expect.getState().testPath
  } catch {
    return undefined
  }
})()

/**
 * Dbs made through the watched createDb, so a test can check the mock reached a given importer. Kept on
 * a global, so it is the same set whichever module instance (setup file or test import) asks.
 */
const WATCHED = Symbol.for('kysely-resilient.leak-watch.dbs')
const holder = globalThis as { [WATCHED]?: WeakSet<object> }
holder[WATCHED] ??= new WeakSet()
const watched = holder[WATCHED]

/** Whether `db` came from the watched createDb (its events, errors and printing are being recorded). */
export function isWatched(db: object): boolean {
  return watched.has(db)
}

function watchCreateDb(createDb: <DB>(config: CreateDbConfig) => ResilientDb<DB>) {
  return function createDbUnderLeakWatch<DB>(config: CreateDbConfig): ResilientDb<DB> {
    // Before createDb runs, so a ConfigError that echoes a password is caught too.
    registerConfigSecrets(config)
    let db: ResilientDb<DB>
    try {
      db = createDb<DB>(withRecordedErrors(config))
    } catch (error) {
      recordError('create-error', error)
      throw error
    }
    watched.add(db)
    for (const name of EVENT_NAMES) {
      db.on(name, (payload) => {
        record('event', `${name}: JSON.stringify`, () => JSON.stringify(payload), 'lazy')
        record('event', `${name}: util.inspect`, () => inspect(payload, INSPECT), 'lazy')
      })
    }
    record('db', 'util.inspect(db)', () => inspect(db, INSPECT))
    record('db', 'JSON.stringify(db.stats())', () => JSON.stringify(db.stats()))
    record('db', 'JSON.stringify(db)', () => JSON.stringify(db))
    return db
  }
}

/**
 * The config with a `log` that records every error Kysely logs, then does exactly what the caller's
 * `log` would have done: it is handed to a Kysely `Log` of its own, so a function is called with the
 * same event and a level array keeps Kysely's semantics (only the listed levels print, through
 * Kysely's own default logger). Without a `log` nothing is printed, as before.
 *
 * What changes: the library's logging path is always on (Kysely times every statement and awaits the
 * logger), which costs a few microseconds per statement and no output. A `log` that is neither an array
 * nor a function is left alone, so the ConfigError it earns is unchanged; so is a config that is not
 * an object.
 */
function withRecordedErrors(config: CreateDbConfig): CreateDbConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) return config
  const log: unknown = config.log
  if (log !== undefined && !Array.isArray(log) && typeof log !== 'function') return config
  const passThrough = new Log((log as LogConfig | undefined) ?? [])
  const recordingLog = async (event: LogEvent): Promise<void> => {
    if (event.level === 'error') recordError('kysely-error', event.error)
    await (event.level === 'query' ? passThrough.query(() => event) : passThrough.error(() => event))
  }
  return { ...config, log: recordingLog }
}

/** An error as a log line or an error tracker would show it: inspected (message, stack, cause, own
 * properties) and its stack alone (what `console.error(err.stack)` prints). */
function recordError(kind: RecordKind, error: unknown): void {
  record(kind, 'util.inspect', () => inspect(error, INSPECT))
  record(kind, 'String(error.stack)', () =>
    String(
      error instanceof Error || (typeof error === 'object' && error !== null)
        ? (error as Error).stack
        : error,
    ),
  )
}

/** A record whose text may still be rendered at the next flush. */
interface PendingRecord extends Omit<LeakRecord, 'text'> {
  readonly text: string | undefined | (() => string | undefined)
}

/**
 * Records wait in memory and are written in batches, so an event listener costs an array push: some
 * tests under watch are timing-sensitive (a burst of 500 new connections), and a listener that
 * rendered and wrote a file per event would add its own latency to theirs. Kept on a global so a test
 * importing this module flushes the same buffer as the setup file.
 */
const BUFFER = Symbol.for('kysely-resilient.leak-watch.buffer')
const buffers = globalThis as { [BUFFER]?: PendingRecord[] }
buffers[BUFFER] ??= []
const pending = buffers[BUFFER]
const FLUSH_AT = 500

/**
 * `text` is called at once (`eager`, for what can still change, such as an error or the db's stats) or
 * at the next flush (event payloads, which are frozen copies).
 */
function record(
  kind: RecordKind,
  view: string,
  text: () => string | undefined,
  when: 'eager' | 'lazy' = 'eager',
): void {
  let testPath: string | undefined
  let testName: string | undefined
  try {
    const state = expect.getState()
    testPath = state.testPath
    testName = state.currentTestName
  } catch {
    // Outside a test's lifetime (a late background event): the file is still known from the worker.
  }
  pending.push({
    kind,
    view,
    text: when === 'eager' ? render(text) : text,
    testPath: testPath ?? fileOfWorker,
    testName,
  })
  if (pending.length >= FLUSH_AT) flushLeakRecords()
}

function render(text: () => string | undefined): string | undefined {
  try {
    return text()
  } catch (error) {
    // A db that cannot be serialised is not a leak; note why, in case the reason itself tells one.
    return `(could not be recorded: ${String(error)})`
  }
}

/**
 * Records what an OpenTelemetry exporter received (a span with its attributes and events, a metric
 * point), for the final search: telemetry is output to the outside world like events and errors.
 */
export function recordTelemetry(view: string, text: () => string): void {
  record('telemetry', view, text, 'lazy')
}

/** Writes every waiting record to this process's file (synchronously, so it also works at exit). */
export function flushLeakRecords(): void {
  if (pending.length === 0) return
  const lines: string[] = []
  for (const entry of pending.splice(0)) {
    const text = typeof entry.text === 'function' ? render(entry.text) : entry.text
    if (text !== undefined) lines.push(JSON.stringify({ ...entry, text } satisfies LeakRecord))
  }
  try {
    appendFileSync(join(directory, recordsFile), `${lines.join('\n')}\n`, { mode: 0o600 })
  } catch (error) {
    // Never break the code under test; the missing records show up in the counts.
    process.stderr.write(`leak watch: could not write ${lines.length} records: ${String(error)}\n`)
  }
}

/** Registers every password in the config (see configSecrets); short ones are only counted. */
function registerConfigSecrets(config: unknown): void {
  for (const { value, setting } of configSecrets(config))
    registerFoundSecret(value, `createDb config: ${setting}`)
}

// Hooks on shared objects, installed once per process and console (the setup file runs again for each
// test file when isolation is off), so a line is never recorded twice.
const HOOKED = Symbol.for('kysely-resilient.leak-watch.hooked')
const processHooks = process as { [HOOKED]?: true }
if (processHooks[HOOKED] === undefined) {
  processHooks[HOOKED] = true
  // Adding a listener does not silence Node's own printing of the warning.
  process.on('warning', (warning) => record('warning', 'util.inspect', () => inspect(warning, INSPECT)))
  // Whatever a late background task recorded after the last hook; 'exit' listeners may only be synchronous.
  process.on('exit', () => flushLeakRecords())
  // And now and then, so a worker that is killed loses at most a second.
  setInterval(() => flushLeakRecords(), 1_000).unref()
}
const consoleHooks = console as Console & { [HOOKED]?: true }
if (consoleHooks[HOOKED] === undefined) {
  consoleHooks[HOOKED] = true
  for (const method of ['warn', 'error'] as const) {
    const forward = console[method]
    // A plain function, so `this` stays whatever the caller used, and the original still prints.
    console[method] = function recordedConsole(this: Console, ...args: unknown[]) {
      record('console', `console.${method}`, () => formatWithOptions(INSPECT, ...args))
      return forward.apply(this, args)
    }
  }
}

record('file', 'setup file ran', () => fileOfWorker ?? '(unknown test file)')
// After each test file's own afterAll hooks, so what they recorded (a db destroyed there) is written.
afterAll(() => flushLeakRecords())
