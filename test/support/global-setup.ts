import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestProject } from 'vitest/node'
import { type ProvidedClusters, provisionClusters, type RunningCluster } from './clusters.js'
import {
  countByKind,
  findLeaks,
  formatFindings,
  LEAK_WATCH_DIR_ENV,
  type LeakRecord,
  readLeakWatchDir,
  type SecretEntry,
} from './leak-scan.js'
import { PGBOUNCER_AVAILABLE } from './pgbouncer.js'
import { registerSecret } from './secrets.js'

/**
 * Vitest global setup: one writer/reader pair per engine for the whole run (see clusters.ts for where
 * they come from), handed to test files through `inject('clusters')`. Tests that break servers start
 * their own clusters instead.
 *
 * It also runs the suite-wide leak watch (test/support/leak-watch.ts): it makes the directory every
 * worker records into, and at the end searches every record for every registered secret.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const startedAt = performance.now()
  if (!PGBOUNCER_AVAILABLE) {
    const message =
      'PgBouncer not found: the proxy suites will NOT run. Install it (apt-get install -y pgbouncer) or set PGBOUNCER_BIN.'
    // In CI a skipped suite is a failure, as for the database servers.
    if (process.env.CI) throw new Error(message)
    console.warn(`[global-setup] WARNING: ${message}`)
  }
  // Before anything that registers a secret, and before the workers start: they inherit the environment.
  const leakDir = mkdtempSync(join(tmpdir(), 'kr-leak-watch-'))
  process.env[LEAK_WATCH_DIR_ENV] = leakDir
  let running: RunningCluster[]
  try {
    running = await provisionClusters()
  } catch (error) {
    rmSync(leakDir, { recursive: true, force: true })
    throw error
  }
  for (const { info } of running) {
    if (info.password !== undefined) registerSecret(info.password, `cluster password (${info.engine})`)
  }
  const clusters: ProvidedClusters = Object.fromEntries(running.map(({ info }) => [info.engine, info]))
  project.provide('clusters', clusters)
  const summary = running.map(({ info }) => `${info.engine}${info.external ? ' (external)' : ''}`).join(', ')
  console.log(
    `[global-setup] clusters ready in ${Math.round(performance.now() - startedAt)} ms: ${summary || 'none'}`,
  )
  return async () => {
    await Promise.allSettled(running.map((cluster) => cluster.stop()))
    try {
      await checkForLeaks(project, leakDir, running.length > 0)
    } finally {
      if (!process.env.LEAK_WATCH_KEEP) rmSync(leakDir, { recursive: true, force: true })
    }
  }
}

/**
 * Fails the run when any recorded error, event, log line or warning contains a registered secret, or
 * when so little was recorded that the watch cannot have been working. Vitest 4 only logs an error
 * thrown from a global teardown ("error during close") and still exits 0, so the exit code is set here.
 */
async function checkForLeaks(project: TestProject, dir: string, haveServers: boolean): Promise<void> {
  const { records, secrets } = readLeakWatchDir(dir)
  const findings = findLeaks(records, secrets)
  const counts = countByKind(records)
  const checked = new Set(secrets.flatMap((secret) => (secret.value === undefined ? [] : [secret.value])))
  const short = secrets.filter((secret) => secret.value === undefined).length
  const fullRun = await ranEveryTestFile(project, records)
  const problems = implausibilities(counts, secrets, fullRun, haveServers)
  console.log(
    `[leak-watch] searched ${records.length} records (${Object.entries(counts)
      .map(([kind, count]) => `${kind} ${count}`)
      .join(', ')}) for ${checked.size} secrets` +
      (short > 0 ? ` (${short} config passwords under 8 characters not checked)` : '') +
      (fullRun ? '' : '; not every test file ran, so only leaks are checked, not the minimum counts'),
  )
  if (findings.length === 0 && problems.length === 0) return

  const root = project.config.root
  const lines = [
    '',
    '!'.repeat(100),
    findings.length > 0
      ? `[leak-watch] ${findings.length} record(s) contain a secret (secrets are named by fingerprint, never shown):`
      : '[leak-watch] the leak watch did not record enough to be trusted:',
    ...(findings.length > 0 ? [formatFindings(findings, root)] : []),
    ...problems.map((problem) => `- ${problem}`),
    '!'.repeat(100),
    '',
  ]
  console.error(lines.join('\n'))
  process.exitCode = 1
  throw new Error(
    findings.length > 0
      ? `leak watch: ${findings.length} record(s) contain a secret; see the report above`
      : `leak watch: ${problems.join('; ')}`,
  )
}

/** Whether every test file of the project ran under the watch (a filtered run proves less). */
async function ranEveryTestFile(project: TestProject, records: ReadonlyArray<LeakRecord>): Promise<boolean> {
  const watchedFiles = new Set(
    records.filter((record) => record.kind === 'file').map((record) => record.text),
  )
  const { testFiles } = await project.globTestFiles()
  return testFiles.length > 0 && testFiles.every((file) => watchedFiles.has(file))
}

/**
 * Reasons to distrust a clean result. The watch must be able to fail: if nothing reached it (the setup
 * file or the createDb mock stopped applying, the directory was not shared) a clean scan means nothing.
 */
function implausibilities(
  counts: ReturnType<typeof countByKind>,
  secrets: ReadonlyArray<SecretEntry>,
  fullRun: boolean,
  haveServers: boolean,
): string[] {
  const problems: string[] = []
  if (counts.file === 0) problems.push('no test file reported the setup file test/support/leak-watch.ts')
  if (!fullRun) return problems
  const fromConfigs = secrets.filter((secret) => secret.source.startsWith('createDb config')).length
  const expectations: Array<[boolean, string]> = [
    [counts.db > 0, 'no db created through createDb was recorded (is the createDb mock applied?)'],
    [counts['create-error'] > 0, 'no error thrown by createDb was recorded'],
    [fromConfigs > 0, 'no password was found in any createDb config'],
  ]
  if (haveServers) {
    expectations.push(
      [counts.event > 0, 'no db event was recorded'],
      [counts['kysely-error'] > 0, "no error logged through Kysely's log was recorded"],
      [
        secrets.some((secret) => secret.source.startsWith('cluster password')),
        'no cluster password registered',
      ],
    )
  }
  for (const [ok, problem] of expectations) if (!ok) problems.push(`${problem} in a full run`)
  return problems
}
