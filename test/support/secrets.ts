import { appendJsonLine, LEAK_WATCH_DIR_ENV, MIN_SECRET_LENGTH } from './leak-scan.js'

// The registry of secrets the suite-wide leak watch searches every recorded error, event and log for.
// Works in every process of the run (workers, global setup, children a test spawns): the directory
// comes from the environment, which global setup sets before anything else starts.

/**
 * Read on first use (global setup imports this module before it sets the variable), then kept: a test
 * that rewrites process.env must not make later registrations vanish.
 */
let directory: string | undefined
/** Each value is written once per process, however often it is registered. */
const registered = new Set<string>()

/**
 * Declares `value` a secret: the run fails if any error, event, log line or warning recorded anywhere in
 * the suite contains it (as is, percent-encoded or JSON-escaped). Call it for every secret a test makes
 * at runtime: a new password, a fake token, a secret JSON value. Passwords in configs given to
 * `createDb` and the shared clusters' passwords are registered automatically.
 *
 * Throws for a value shorter than 8 characters, which would match unrelated text by accident: make test
 * secrets long and random. Outside a run of vitest.config.ts (no watch directory) it only validates.
 *
 * @example
 * ```ts
 * const rotated = `rot${randomBytes(12).toString('hex')}`
 * registerSecret(rotated)
 * ```
 */
export function registerSecret(value: string, source = 'registerSecret'): void {
  if (typeof value !== 'string')
    throw new TypeError(`registerSecret: expected a string, got a ${typeof value}`)
  if (value.length < MIN_SECRET_LENGTH) {
    throw new RangeError(
      `registerSecret: a secret must be at least ${MIN_SECRET_LENGTH} characters (got ${value.length}); ` +
        'a shorter one would match unrelated text by accident',
    )
  }
  record(value, value.length, source)
}

/**
 * Registers a secret found in a config. A short one (a test's `'pw'`) is not checked, only counted, so
 * the summary can say how many escaped the check; unlike registerSecret it does not throw, because
 * the test that chose it is not wrong to.
 */
export function registerFoundSecret(value: string, source: string): void {
  if (value.length === 0) return
  if (value.length < MIN_SECRET_LENGTH) {
    record(undefined, value.length, `${source} (too short to check)`)
    return
  }
  record(value, value.length, source)
}

function record(value: string | undefined, length: number, source: string): void {
  const key = value ?? `short:${source}:${length}`
  if (registered.has(key)) return
  registered.add(key)
  // Without the watch's directory (a run under another config) there is no final check to feed; the
  // setup file, not each test, is what fails loudly then.
  const dir = watchDirectory()
  if (dir === undefined) return
  appendJsonLine(dir, `secrets-${process.pid}.jsonl`, {
    ...(value === undefined ? {} : { value }),
    length,
    source,
    testPath: currentTestPath(),
  })
}

/** The leak watch's directory, if this run has one. */
function watchDirectory(): string | undefined {
  directory ??= process.env[LEAK_WATCH_DIR_ENV] || undefined
  return directory
}

/** The leak watch's directory; a run without global setup has none, and that must not pass silently. */
export function requireDirectory(): string {
  const directory = watchDirectory()
  if (directory === undefined) {
    throw new Error(
      `the leak watch has no directory: ${LEAK_WATCH_DIR_ENV} is unset (run the tests through vitest.config.ts, whose global setup creates it)`,
    )
  }
  return directory
}

/** The running test file, when in a Vitest worker (Vitest's `expect` is global state there). */
export function currentTestPath(): string | undefined {
  return testState()?.testPath
}

/** Vitest's per-worker expect state; undefined outside a worker (global setup, spawned children). */
export function testState(): { testPath?: string; currentTestName?: string } | undefined {
  // Read through the global Vitest installs, not an import: this module also runs in global setup,
  // where importing the test runtime is not allowed.
  const state = (globalThis as { [key: symbol]: unknown })[Symbol.for('$$jest-matchers-object')] as
    | { state?: { testPath?: string; currentTestName?: string } }
    | undefined
  return state?.state
}
