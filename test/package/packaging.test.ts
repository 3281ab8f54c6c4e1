// Checks the package as a consumer gets it: `npm pack` the built package, install the tarball into
// throwaway consumer projects next to the peers they choose (no network: the peers are symlinked from
// this repository's node_modules), and load it from ESM and from CommonJS with the pinned Node. No
// consumer has the optional @opentelemetry/api; the one with both drivers also queries the shared
// PostgreSQL and MariaDB clusters, so a db opens (and looks for the API) without it.
import { spawnSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { clusterFor } from '../support/database.js'
import {
  assertPackable,
  BUILT_FILES,
  packPackage,
  pinnedNode,
  repositoryRoot as root,
} from '../support/packed-package.js'

type Driver = 'pg' | 'mysql2'
type ModuleKind = 'esm' | 'cjs'

/**
 * A script that loads the package the way a consumer does and checks it. `installed` lists the drivers
 * the consumer has installed: their absence must not matter until a query needs them.
 */
function consumerScript(kind: ModuleKind, installed: readonly Driver[]): string {
  const header =
    kind === 'esm'
      ? `import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Kysely, sql } from 'kysely'
import { ConfigError, MissingDriverError, createDb, getConnection as rootGetConnection } from 'kysely-resilient'
import * as lambda from 'kysely-resilient/lambda'

const entry = fileURLToPath(import.meta.resolve('kysely-resilient'))
const lambdaEntry = fileURLToPath(import.meta.resolve('kysely-resilient/lambda'))
const localRequire = createRequire(import.meta.url)
`
      : `const assert = require('node:assert/strict')
const { sep } = require('node:path')
const { Kysely, sql } = require('kysely')
const { ConfigError, MissingDriverError, createDb, getConnection: rootGetConnection } = require('kysely-resilient')
const lambda = require('kysely-resilient/lambda')

const entry = require.resolve('kysely-resilient')
const lambdaEntry = require.resolve('kysely-resilient/lambda')
const localRequire = require
`
  const body = `
const installed = ${JSON.stringify(installed)}
const expectedEntry = ${JSON.stringify(kind === 'esm' ? 'dist/index.js' : 'dist/index.cjs')}
const expectedLambdaEntry = ${JSON.stringify(kind === 'esm' ? 'dist/lambda/index.js' : 'dist/lambda/index.cjs')}

async function main() {
  assert.equal(entry.split(sep).slice(-2).join('/'), expectedEntry, 'kysely-resilient resolved to ' + entry)
  for (const name of ['pg', 'mysql2']) {
    let found = true
    try {
      localRequire.resolve(name)
    } catch {
      found = false
    }
    assert.equal(found, installed.includes(name), name + (found ? ' is' : ' is not') + ' resolvable here')
  }
  // @opentelemetry/api is an optional peer that no consumer here has: the package loads without it and
  // a db that opens (which is when the library looks for it) works, recording no metrics.
  assert.throws(() => localRequire.resolve('@opentelemetry/api'), { code: 'MODULE_NOT_FOUND' })
  // A CommonJS driver, whether required or imported, lands in the CommonJS module cache.
  const loaded = (name) =>
    Object.keys(localRequire.cache).some((key) => key.includes(sep + 'node_modules' + sep + name + sep))

  // Port 1: nothing listens there, so a query fails at once after the driver loads (with no retries:
  // a refused connection is otherwise retried for retry.maxElapsedMs).
  const pool = { connectTimeoutMs: 2000 }
  const postgres = createDb({ dialect: 'postgres', writer: 'postgres://u:p@127.0.0.1:1/db', pool, retry: false })
  const mysql = createDb({ dialect: 'mysql', writer: 'mysql://u:p@127.0.0.1:1/db', pool, retry: false })
  assert.ok(postgres instanceof Kysely, "the postgres db is not an instance of the consumer's Kysely")
  assert.ok(mysql instanceof Kysely, "the mysql db is not an instance of the consumer's Kysely")
  assert.throws(() => createDb({ dialect: 'nope' }), ConfigError)
  assert.ok(!loaded('pg') && !loaded('mysql2'), 'a driver was loaded before the first query')

  for (const [db, name] of [[postgres, 'pg'], [mysql, 'mysql2']]) {
    const error = await db.selectNoFrom(sql.lit(1).as('one')).execute().then(() => undefined, (e) => e)
    if (installed.includes(name)) {
      assert.ok(!(error instanceof MissingDriverError), name + ' is installed but was not loaded: ' + error)
      assert.ok(loaded(name), name + ' served a query but is not in the module cache')
    } else {
      assert.ok(error instanceof MissingDriverError, 'expected a MissingDriverError for ' + name + ', got ' + error)
      assert.equal(error.packageName, name)
    }
    if (name === 'pg') assert.ok(!loaded('mysql2'), 'a postgres query loaded mysql2')
  }
  await postgres.destroy()
  await mysql.destroy()

  // A real server for each installed driver the test gives one for: queries answer, routing counts.
  const servers = { pg: process.env.PG_WRITER_URL, mysql2: process.env.MYSQL_WRITER_URL }
  for (const name of installed) {
    const url = servers[name]
    if (!url) continue
    const db = createDb({ dialect: name === 'pg' ? 'postgres' : 'mysql', writer: url })
    try {
      const { rows } = await sql\`select 1 + 1 as two\`.execute(db)
      assert.equal(Number(rows[0].two), 2, name + ' answered ' + JSON.stringify(rows))
      assert.equal(db.stats().writer.queries, 1)
    } finally {
      await db.destroy()
    }
  }
  assert.ok(
    !Object.keys(localRequire.cache).some((key) => key.includes('@opentelemetry')),
    'something from @opentelemetry was loaded',
  )

  // The AWS SDK packages behind auth are optional peers too: absent here, named when needed.
  const iam = createDb({
    dialect: 'postgres',
    writer: 'postgres://app_iam@orders.cluster-abc.eu-west-1.rds.amazonaws.com:1/db',
    auth: { type: 'iam' },
    pool,
    retry: false,
  })
  const iamError = await iam.selectNoFrom(sql.lit(1).as('one')).execute().then(() => undefined, (e) => e)
  assert.ok(iamError instanceof MissingDriverError, 'expected a MissingDriverError for IAM, got ' + iamError)
  assert.equal(iamError.packageName, installed.includes('pg') ? '@aws-sdk/rds-signer' : 'pg')
  await iam.destroy()

  // The Lambda entry point: its own subpath, the same classes, and one instance per process.
  assert.equal(
    lambdaEntry.split(sep).slice(-3).join('/'),
    expectedLambdaEntry,
    'kysely-resilient/lambda resolved to ' + lambdaEntry,
  )
  assert.equal(lambda.ConfigError, ConfigError, 'the lambda entry has its own copy of ConfigError')
  assert.equal(lambda.LAMBDA_POOL_DEFAULTS.max, 2)
  const envError = await lambda.getConnection().then(() => undefined, (e) => e)
  assert.ok(envError instanceof ConfigError, 'expected a ConfigError without DB_* variables, got ' + envError)
  assert.equal(envError.setting, 'DB_DIALECT')
  const options = { dialect: 'postgres', writer: 'postgres://u:p@127.0.0.1:1/db' }
  const [first, second] = await Promise.all([lambda.getConnection(options), rootGetConnection(options)])
  assert.ok(first instanceof Kysely, "getConnection's db is not an instance of the consumer's Kysely")
  assert.equal(first, second, 'the root and kysely-resilient/lambda created two instances')
  await lambda.resetConnection()
}
`
  const run =
    kind === 'esm'
      ? `await main()
console.log('OK')
`
      : `main().then(
  () => console.log('OK'),
  (error) => {
    console.error(error)
    process.exitCode = 1
  },
)
`
  return header + body + run
}

describe('the packed package', () => {
  const node = pinnedNode()
  let temp = ''
  let packedFiles: string[] = []
  let unpacked = ''

  /** A consumer project with the packed package and only the given peers in its node_modules. */
  function createConsumer(name: string, peers: readonly string[]): string {
    const dir = join(temp, name)
    mkdirSync(join(dir, 'node_modules'), { recursive: true })
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }))
    cpSync(unpacked, join(dir, 'node_modules', 'kysely-resilient'), { recursive: true })
    for (const peer of peers) {
      symlinkSync(join(root, 'node_modules', peer), join(dir, 'node_modules', peer), 'junction')
    }
    // Runtime dependencies, as `npm install` would add them. Their own dependencies resolve through the
    // symlink's real path, in this repository's node_modules.
    const manifest = JSON.parse(readFileSync(join(unpacked, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>
    }
    for (const dependency of Object.keys(manifest.dependencies ?? {})) {
      symlinkSync(join(root, 'node_modules', dependency), join(dir, 'node_modules', dependency), 'junction')
    }
    return dir
  }

  /**
   * Writes and runs one consumer script; it must print OK and nothing else. `servers` (writer URLs as
   * `PG_WRITER_URL`, `MYSQL_WRITER_URL`) makes it also run a query on each installed driver's server.
   */
  function runConsumer(
    dir: string,
    kind: ModuleKind,
    installed: readonly Driver[],
    servers: Readonly<Record<string, string>> = {},
  ): void {
    const file = kind === 'esm' ? 'check.mjs' : 'check.cjs'
    writeFileSync(join(dir, file), consumerScript(kind, installed))
    // A bare environment: nothing from the test runner (NODE_OPTIONS and the like) reaches the consumer.
    const result = spawnSync(node, [file], {
      cwd: dir,
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', ...servers },
      timeout: 20_000,
    })
    if (result.error) throw result.error
    if (result.status !== 0) {
      throw new Error(
        `${file} in ${dir} exited with ${result.status ?? result.signal}:\n${result.stderr}${result.stdout}`,
      )
    }
    expect({ stdout: result.stdout, stderr: result.stderr }).toEqual({ stdout: 'OK\n', stderr: '' })
  }

  beforeAll(() => {
    assertPackable(node)
    temp = mkdtempSync(join(tmpdir(), 'kysely-resilient-pack-'))
    const packed = packPackage(join(temp, 'pack'))
    packedFiles = [...packed.files]
    unpacked = packed.unpacked
  })

  afterAll(() => {
    if (temp !== '') rmSync(temp, { recursive: true, force: true })
  })

  it('holds the builds, both type files, the README and the changelog, and no sources', () => {
    expect(packedFiles).toEqual(
      expect.arrayContaining([...BUILT_FILES, 'package.json', 'README.md', 'CHANGELOG.md']),
    )
    const unwanted = packedFiles.filter((file) => /^(src|test|bench|examples)\//.test(file))
    expect(unwanted).toEqual([])
    const unexpected = packedFiles.filter(
      (file) => !/^(package\.json|README\.md|CHANGELOG\.md|LICEN[CS]E(\.\w+)?|dist\/.+)$/.test(file),
    )
    expect(unexpected).toEqual([])
  })

  it('loads from ESM and from CommonJS with every peer but @opentelemetry/api, sharing the consumer’s kysely, and queries real servers', () => {
    const dir = createConsumer('all-peers', ['kysely', 'pg', 'mysql2'])
    // The shared clusters of the global setup; a missing engine fails here rather than skipping.
    const servers = {
      PG_WRITER_URL: clusterFor('postgres').writerUrl,
      MYSQL_WRITER_URL: clusterFor('mysql').writerUrl,
    }
    runConsumer(dir, 'esm', ['pg', 'mysql2'], servers)
    runConsumer(dir, 'cjs', ['pg', 'mysql2'], servers)
  })

  it('works for PostgreSQL without mysql2 installed', () => {
    const dir = createConsumer('postgres-only', ['kysely', 'pg'])
    runConsumer(dir, 'esm', ['pg'])
    runConsumer(dir, 'cjs', ['pg'])
  })

  it('imports with no driver installed, and says which one a query needs', () => {
    const dir = createConsumer('kysely-only', ['kysely'])
    runConsumer(dir, 'esm', [])
    runConsumer(dir, 'cjs', [])
  })
})
