// The peer ranges in package.json are claims: this holds them to both ends. It packs the built
// package and installs it from the npm registry into two consumer projects, `lowest` (every peer at
// exactly the lowest version its range allows) and `newest` (every peer at the newest version its range
// allows, `name@<range>`), then runs peer-consumer.mjs in each with the pinned Node against the real
// PostgreSQL and MariaDB clusters of the global setup. Nothing is skipped: no registry, no server or
// a range this file cannot read fails the test.
import { spawn } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateTestCertificates, type TestCertificates } from '../support/certificates.js'
import { clusterFor } from '../support/database.js'
import { assertPackable, packPackage, pinnedNode, repositoryRoot } from '../support/packed-package.js'

type Consumer = 'lowest' | 'newest'

const manifest = JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as {
  peerDependencies: Record<string, string>
}
const peers = Object.entries(manifest.peerDependencies)

/**
 * The lowest version a peer range allows. Only the two forms this package uses are read (`^x.y.z`,
 * `>=x.y.z`, optionally with an upper bound after it); anything else fails rather than guessing.
 */
function lowestAllowed(range: string): string {
  const match = /^(?:\^|>=)\s*(\d+\.\d+\.\d+)(?:\s+<\S+)?$/.exec(range.trim())
  if (match?.[1] === undefined) throw new Error(`cannot read the lowest version of the peer range '${range}'`)
  return match[1]
}

/** Whether `version` is inside `range` (the forms lowestAllowed reads, with caret semantics for `^`). */
function allows(range: string, version: string): boolean {
  const parse = (text: string): number[] => text.split('.').map(Number)
  const compare = (a: number[], b: number[]): number => {
    for (let index = 0; index < 3; index++) {
      const difference = (a[index] ?? 0) - (b[index] ?? 0)
      if (difference !== 0) return difference
    }
    return 0
  }
  if (!/^\d+\.\d+\.\d+$/.test(version)) return false // a prerelease is never what a range means here
  const low = parse(lowestAllowed(range))
  const actual = parse(version)
  if (compare(actual, low) < 0) return false
  const trimmed = range.trim()
  if (trimmed.startsWith('^')) {
    // ^1.2.3 := <2.0.0; ^0.2.3 := <0.3.0; ^0.0.3 := <0.0.4
    const [major = 0, minor = 0, patch = 0] = low
    const ceiling = major > 0 ? [major + 1, 0, 0] : minor > 0 ? [0, minor + 1, 0] : [0, 0, patch + 1]
    return compare(actual, ceiling) < 0
  }
  const upper = /\s+<(\d+\.\d+\.\d+)$/.exec(trimmed)?.[1]
  return upper === undefined || compare(actual, parse(upper)) < 0
}

/** What each consumer asks npm for: an exact version, or the whole range (npm picks the newest in it). */
function specifiers(consumer: Consumer): string[] {
  return peers.map(([name, range]) => `${name}@${consumer === 'lowest' ? lowestAllowed(range) : range}`)
}

interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a command to its end, without blocking the event loop (so both consumers install at once). */
function run(
  command: string,
  args: readonly string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: 'pipe' })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs)
    child.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

function describeFailure(what: string, finished: Finished): string {
  return `${what} exited with ${finished.code ?? finished.signal}:\n${finished.stderr}${finished.stdout}`
}

/**
 * A TypeScript consumer, compiled (never run) in each project with its own kysely and the package's
 * declaration files checked too (skipLibCheck off: a type the declarations import from a kysely that
 * lacks it, such as `kysely/readonly` before 0.29, would otherwise turn into `any` silently).
 */
const TYPES_CHECK = `import { type Generated, Kysely, sql } from 'kysely'
import type { ReadonlyKysely } from 'kysely/readonly'
import { classifyError, createDb, type ErrorClassification, type ResilientDb, withRetry } from 'kysely-resilient'
import { getConnection } from 'kysely-resilient/lambda'

interface Database {
  person: { id: Generated<number>; name: string }
}

export async function typed(): Promise<void> {
  const db: ResilientDb<Database> = createDb<Database>({ dialect: 'postgres', writer: 'postgres://app@db/app' })
  const kysely: Kysely<Database> = db
  const reader: ReadonlyKysely<Database> = db.reader
  const rows: Array<{ id: number; name: string }> = await reader.selectFrom('person').selectAll().execute()
  await db.writer.insertInto('person').values({ name: 'Ada' }).execute()
  // @ts-expect-error db.reader refuses writes at compile time
  await db.reader.insertInto('person').values({ name: 'Ada' }).execute()
  const verdict: ErrorClassification = classifyError(new Error('x'))
  const one = await withRetry(() => sql<{ one: number }>\`select 1 as one\`.execute(kysely))
  const lambda: Kysely<Database> = await getConnection<Database>()
  void [rows, verdict, one, lambda]
}
`

function typesConfig(): string {
  return JSON.stringify({
    compilerOptions: {
      strict: true,
      target: 'es2023',
      lib: ['es2023'],
      module: 'nodenext',
      moduleResolution: 'nodenext',
      // A consumer has @types/node; this repository's copy stands in for it.
      typeRoots: [join(repositoryRoot, 'node_modules', '@types')],
      types: ['node'],
      skipLibCheck: false,
      noEmit: true,
    },
    files: ['types-check.ts'],
  })
}

/** npm settings a user may pass through the environment that the consumers' installs must keep too. */
const KEPT_NPM_SETTINGS = /^npm_config_(registry|cache|userconfig|cafile|strict_ssl|(https_)?proxy|noproxy)$/i

/**
 * The environment for npm: this process's, without the other npm_* variables `npm test` sets (an
 * inherited npm_config_local_prefix names this repository, npm_package_* describe it).
 */
function npmEnvironment(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name) || KEPT_NPM_SETTINGS.test(name)),
  )
}

describe('the peer ranges, at their lowest and newest versions', () => {
  const node = pinnedNode()
  let temp = ''
  /** The consumer projects, installed; rejected when an install failed (reported by its own test). */
  const installed = new Map<Consumer, Promise<string>>()
  /** tsc over each project's types-check.ts, started when its install is done. */
  const typeChecks = new Map<Consumer, Promise<Finished>>()
  /** A CA and a certificate for localhost it signed, for the consumer's fake TLS server. */
  let certificates: Promise<TestCertificates>

  async function install(consumer: Consumer, tarball: string): Promise<string> {
    const dir = join(temp, consumer)
    mkdirSync(dir)
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ name: `peer-check-${consumer}`, private: true, type: 'module' }),
    )
    // The default npm cache (~/.npm) is shared by both installs and every run: warm, this needs the
    // registry only to revalidate the peers' metadata, so `newest` still finds a release made today.
    const finished = await run(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--ignore-scripts',
        '--loglevel=error',
        ...specifiers(consumer),
        tarball,
      ],
      { cwd: dir, env: npmEnvironment(), timeoutMs: 75_000 },
    )
    if (finished.code !== 0) throw new Error(describeFailure(`npm install in ${dir}`, finished))
    copyFileSync(join(repositoryRoot, 'test', 'package', 'peer-consumer.mjs'), join(dir, 'check.mjs'))
    writeFileSync(join(dir, 'types-check.ts'), TYPES_CHECK)
    writeFileSync(join(dir, 'tsconfig.json'), typesConfig())
    return dir
  }

  beforeAll(() => {
    assertPackable(node)
    temp = mkdtempSync(join(tmpdir(), 'kysely-resilient-peers-'))
    const { tarball } = packPackage(join(temp, 'pack'))
    const certificateDir = join(temp, 'certificates')
    mkdirSync(certificateDir)
    certificates = generateTestCertificates(certificateDir)
    certificates.catch(() => {}) // awaited by the tests
    for (const consumer of ['lowest', 'newest'] as const) {
      const pending = install(consumer, tarball)
      pending.catch(() => {}) // awaited by the consumer's test; not an unhandled rejection meanwhile
      installed.set(consumer, pending)
      // Compiled as soon as installed, while the other project may still be installing.
      const compiled = pending.then((dir) =>
        run(node, [join(repositoryRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], {
          cwd: dir,
          env: { PATH: process.env.PATH ?? '' },
          timeoutMs: 60_000,
        }),
      )
      compiled.catch(() => {})
      typeChecks.set(consumer, compiled)
    }
  })

  afterAll(async () => {
    // An install still running (its test failed first) must not write into a deleted directory.
    await Promise.allSettled([...installed.values(), ...typeChecks.values(), certificates])
    if (temp !== '') rmSync(temp, { recursive: true, force: true })
  })

  /** The peer versions npm put into the consumer's node_modules. */
  function installedVersions(dir: string): Record<string, string> {
    return Object.fromEntries(
      peers.map(([name]) => {
        const file = join(dir, 'node_modules', ...name.split('/'), 'package.json')
        return [name, (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version]
      }),
    )
  }

  async function check(consumer: Consumer): Promise<void> {
    const dir = await (installed.get(consumer) as Promise<string>)
    const versions = installedVersions(dir)
    if (consumer === 'lowest') {
      expect(versions).toEqual(Object.fromEntries(peers.map(([name, range]) => [name, lowestAllowed(range)])))
    } else {
      const outside = peers.filter(([name, range]) => !allows(range, versions[name] as string))
      expect(outside, `newest peers outside their ranges: ${JSON.stringify(versions)}`).toEqual([])
    }

    const { caFile, serverCertFile, serverKeyFile } = await certificates
    const postgres = clusterFor('postgres')
    const mysql = clusterFor('mysql')
    // A bare environment: nothing from the test runner (NODE_OPTIONS, AWS_*) reaches the consumer.
    const finished = await run(node, ['check.mjs'], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? '',
        PEER_TABLE: `peer_check_${consumer}_${process.pid}`,
        PG_WRITER_URL: postgres.writerUrl,
        PG_READER_URL: postgres.readerUrl,
        MYSQL_WRITER_URL: mysql.writerUrl,
        MYSQL_READER_URL: mysql.readerUrl,
        PEER_TLS_CA_FILE: caFile,
        PEER_TLS_CERT_FILE: serverCertFile,
        PEER_TLS_KEY_FILE: serverKeyFile,
      },
      timeoutMs: 30_000,
    })
    const label = `check.mjs with ${Object.entries(versions)
      .map(([name, version]) => `${name}@${version}`)
      .join(', ')}`
    const types = await (typeChecks.get(consumer) as Promise<Finished>)
    if (finished.code !== 0) throw new Error(describeFailure(label, finished))
    expect({ stdout: finished.stdout, stderr: finished.stderr }, label).toEqual({
      stdout: 'OK\n',
      stderr: '',
    })
    if (types.code !== 0) throw new Error(describeFailure(`tsc on types-check.ts, ${label}`, types))
  }

  it('works with every peer at the lowest version its range allows', () => check('lowest'), 90_000)

  it('works with every peer at the newest version its range allows', () => check('newest'), 90_000)
})

describe('reading the peer ranges', () => {
  it('takes the lowest version from ^ and >= ranges, and refuses others', () => {
    expect(lowestAllowed('^0.29.8')).toBe('0.29.8')
    expect(lowestAllowed('>=3.0.0 <4.0.0')).toBe('3.0.0')
    expect(() => lowestAllowed('~1.2.3')).toThrow(/cannot read/)
    expect(() => lowestAllowed('^3.x')).toThrow(/cannot read/)
  })

  it('applies caret semantics, 0.x included', () => {
    expect(allows('^0.29.8', '0.29.9')).toBe(true)
    expect(allows('^0.29.8', '0.29.7')).toBe(false)
    expect(allows('^0.29.8', '0.30.0')).toBe(false)
    expect(allows('^8.3.0', '8.23.1')).toBe(true)
    expect(allows('^8.3.0', '9.0.0')).toBe(false)
    expect(allows('^3.0.0', '3.1.0-canary.1')).toBe(false)
    expect(allows('>=2.3.3 <4.0.0', '3.25.0')).toBe(true)
    expect(allows('>=2.3.3 <4.0.0', '4.0.0')).toBe(false)
  })
})
