// A consumer of the packed kysely-resilient, run by peer-versions.test.ts in a project whose peers are
// pinned to one end of their ranges (lowest or newest). It exercises, against the real servers named
// by PG_WRITER_URL/PG_READER_URL and MYSQL_WRITER_URL/MYSQL_READER_URL, the integration points where
// an older or newer peer could break the library: Kysely's classes and dialects, the drivers' query,
// stream, session-setting and error shapes, pg-cursor, and both AWS SDK packages (offline). Two fake
// servers check security properties the library promises and the drivers only keep in some
// versions: no password in clear on plain TCP (mysql2), and the host name check for an IP-address
// host (pg; PEER_TLS_CA_FILE, PEER_TLS_CERT_FILE, PEER_TLS_KEY_FILE). It prints OK and nothing else.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { createServer as createTcpServer } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { TLSSocket } from 'node:tls'
import { Kysely, sql } from 'kysely'
import { ConfigError, classifyError, createDb, withRetry } from 'kysely-resilient'

const table = process.env.PEER_TABLE
assert.ok(table && /^[a-z_][a-z0-9_]*$/.test(table), `PEER_TABLE is not a table name: ${table}`)

const engines = [
  {
    dialect: 'postgres',
    writer: process.env.PG_WRITER_URL,
    reader: process.env.PG_READER_URL,
    // A real server error with SQLSTATE 40001 (serialization failure): retryable.
    conflict: sql`DO $$ BEGIN RAISE EXCEPTION 'peer check' USING ERRCODE = '40001'; END $$`,
    uniqueCode: '23505',
    // A failed statement aborts a PostgreSQL transaction: its COMMIT answers ROLLBACK.
    abortsTransactions: true,
    // statement_timeout and idle_session_timeout travel as startup parameters (pg's `options`).
    sessionSettings: sql`select current_setting('statement_timeout') as statement, current_setting('idle_session_timeout') as idle`,
    expectedSettings: { statement: '30s', idle: '10min' },
  },
  {
    dialect: 'mysql',
    writer: process.env.MYSQL_WRITER_URL,
    reader: process.env.MYSQL_READER_URL,
    // A real server error with errno 1213 (deadlock, the transaction was rolled back): retryable.
    conflict: sql`SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'peer check'`,
    uniqueCode: '1062',
    abortsTransactions: false,
    // Set after connecting; which variable depends on the server mysql2 reports in its handshake.
    sessionSettings: sql`select cast(@@session.max_statement_time as char) as statement, cast(@@session.wait_timeout as char) as idle`,
    expectedSettings: { statement: '30.000000', idle: '600' },
  },
]

/** Calls `check` until it returns something other than undefined; never a fixed sleep. */
async function pollUntil(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const result = await check()
    if (result !== undefined) return result
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await delay(20)
  }
}

async function exercise({
  dialect,
  writer,
  reader,
  conflict,
  uniqueCode,
  abortsTransactions,
  sessionSettings,
  expectedSettings,
}) {
  assert.ok(writer && reader, `no ${dialect} writer/reader URLs in the environment`)
  assert.notEqual(writer, reader, `the ${dialect} reader is the writer: routing would not be checked`)
  const pool = { max: 3, statementTimeoutMs: 30_000, sessionIdleTimeoutMs: 600_000 }
  const db = createDb({ dialect, writer, readers: [reader], pool })
  const errors = []
  db.on('error', (event) => errors.push(event))
  try {
    assert.ok(db instanceof Kysely, `the ${dialect} db is not an instance of the consumer's Kysely`)

    // The pool's session settings reach the server through this driver version.
    const { rows: settings } = await sessionSettings.execute(db)
    assert.deepEqual({ ...settings[0] }, expectedSettings, `${dialect}: the session settings did not apply`)

    await db.schema.dropTable(table).ifExists().execute()
    await db.schema
      .createTable(table)
      .addColumn('id', 'integer', (column) => column.primaryKey())
      .addColumn('name', 'varchar(50)', (column) => column.notNull())
      .execute()
    await db
      .insertInto(table)
      .values([
        { id: 1, name: 'one' },
        { id: 2, name: 'two' },
      ])
      .execute()

    // A read outside a transaction goes to the reader; poll until the replica has replayed the insert.
    const readerServed = () => db.stats().readers[0].queries
    const servedBefore = readerServed()
    const replayed = await pollUntil(`the ${dialect} reader to replay the insert`, async () => {
      const rows = await db.selectFrom(table).select(['id', 'name']).orderBy('id').execute()
      return rows.length === 2 ? rows : undefined
    })
    assert.deepEqual(
      replayed.map((row) => row.name),
      ['one', 'two'],
    )
    assert.ok(readerServed() > servedBefore, `no ${dialect} read was served by the reader`)

    // Read-your-writes: a read right after a write in the scope sees it.
    const mine = await db.withReadYourWrites(async () => {
      await db.insertInto(table).values({ id: 3, name: 'three' }).execute()
      return db.selectFrom(table).select('name').where('id', '=', 3).executeTakeFirst()
    })
    assert.equal(mine?.name, 'three', `${dialect}: withReadYourWrites did not see its own insert`)

    // A controlled transaction with a savepoint rolled back.
    const trx = await db.startTransaction().execute()
    try {
      await trx.insertInto(table).values({ id: 10, name: 'kept' }).execute()
      const savepoint = await trx.savepoint('peer_check').execute()
      await savepoint.insertInto(table).values({ id: 11, name: 'rolled back' }).execute()
      const released = await savepoint.rollbackToSavepoint('peer_check').execute()
      await released.commit().execute()
    } catch (error) {
      await trx.rollback().execute()
      throw error
    }
    const afterTransaction = await db.writer.selectFrom(table).select('id').where('id', '>=', 10).execute()
    assert.deepEqual(
      afterTransaction.map((row) => Number(row.id)),
      [10],
      `${dialect}: the savepoint was not rolled back`,
    )

    // .stream() (pg-cursor for postgres), one row per chunk.
    const streamed = []
    for await (const row of db.writer.selectFrom(table).select('id').orderBy('id').stream(1)) {
      streamed.push(Number(row.id))
    }
    assert.deepEqual(streamed, [1, 2, 3, 10], `${dialect}: .stream() returned other rows`)

    // withRetry around a unit of work whose first attempt fails with a real retryable server error.
    let attempts = 0
    const retried = await withRetry(
      async () => {
        attempts += 1
        if (attempts === 1) await conflict.execute(db)
        return db.transaction().execute(async (inner) => {
          await inner.updateTable(table).set({ name: 'retried' }).where('id', '=', 1).execute()
          return inner.selectFrom(table).select('name').where('id', '=', 1).executeTakeFirstOrThrow()
        })
      },
      { retries: 2, minDelayMs: 1 },
    )
    assert.equal(attempts, 2, `${dialect}: withRetry made ${attempts} attempts, expected 2`)
    assert.equal(retried.name, 'retried')
    const conflictError = await conflict.execute(db).then(
      () => undefined,
      (error) => error,
    )
    assert.equal(classifyError(conflictError).category, 'conflict', `${dialect}: ${conflictError}`)

    // classifyError on the driver's unique violation.
    const duplicate = await db
      .insertInto(table)
      .values({ id: 1, name: 'again' })
      .execute()
      .then(
        () => undefined,
        (error) => error,
      )
    assert.ok(duplicate instanceof Error, `${dialect}: a duplicate key was accepted`)
    const verdict = classifyError(duplicate)
    assert.equal(verdict.code, uniqueCode, `${dialect}: ${JSON.stringify(verdict)}`)
    assert.equal(verdict.category, 'fatal', `${dialect}: ${JSON.stringify(verdict)}`)
    assert.equal(verdict.retryable, false)
    assert.equal(verdict.connectionLost, false)

    if (abortsTransactions) {
      // Kysely's AbortedTransactionError (0.29.8): the error swallowed inside is not lost silently.
      const aborted = await db
        .transaction()
        .execute(async (inner) => {
          await inner
            .insertInto(table)
            .values({ id: 1, name: 'again' })
            .execute()
            .catch(() => undefined)
        })
        .then(
          () => undefined,
          (error) => error,
        )
      assert.ok(aborted instanceof Error, `${dialect}: a transaction whose statement failed committed`)
      assert.match(classifyError(aborted).reason, /COMMIT rolled back/, `${dialect}: ${aborted}`)
    }

    assert.deepEqual(errors, [], `${dialect}: the db emitted error events`)
  } finally {
    await db.schema
      .dropTable(table)
      .ifExists()
      .execute()
      .finally(() => db.destroy())
  }
}

/**
 * IAM: `@aws-sdk/rds-signer` at this version signs a token through the library's own path. Signing is
 * local (SigV4 over static credentials); the endpoint is port 1 on this machine, so the connection
 * that would present the token is refused and nothing reaches AWS or a database.
 */
async function signIamToken() {
  const db = createDb({
    dialect: 'postgres',
    writer: 'postgres://app_iam@localhost:1/orders',
    auth: {
      type: 'iam',
      region: 'eu-west-1',
      credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'not-a-secret-peer-check-key' },
    },
    // IAM needs TLS; the connection is refused before any handshake, so no CA is ever consulted. The
    // host is a name: a verifying tls with an IP-address host may be refused up front.
    tls: { ca: 'unused' },
    retry: false,
    pool: { connectTimeoutMs: 2_000 },
  })
  const refreshed = []
  db.on('credentials-refreshed', (event) => refreshed.push(event))
  try {
    const error = await db
      .selectNoFrom(sql.lit(1).as('one'))
      .execute()
      .then(
        () => undefined,
        (failure) => failure,
      )
    assert.ok(error !== undefined, 'a query reached a server on port 1')
    assert.equal(classifyError(error).category, 'unavailable', `IAM: ${error}`)
    assert.deepEqual(
      refreshed.map(({ authType, reason }) => `${authType}/${reason}`),
      ['iam/initial'],
      `no IAM token was signed before connecting: ${error}`,
    )
  } finally {
    await db.destroy()
  }
}

/**
 * Secrets Manager: `@aws-sdk/client-secrets-manager` at this version fetches an RDS-shaped secret
 * through the library's own path, from a local stand-in for the service (the SDK's
 * AWS_ENDPOINT_URL_SECRETS_MANAGER, with static credentials from the environment: nothing reaches
 * AWS), and the PostgreSQL writer accepts the credentials it holds.
 */
async function fetchSecret() {
  const target = new URL(process.env.PG_WRITER_URL)
  const secret = {
    username: decodeURIComponent(target.username),
    password: decodeURIComponent(target.password),
    host: target.hostname,
    port: Number(target.port),
    dbname: target.pathname.slice(1),
  }
  const requests = []
  const server = createServer((request, response) => {
    let body = ''
    request.on('data', (chunk) => {
      body += chunk
    })
    request.on('end', () => {
      requests.push({ target: request.headers['x-amz-target'], body: JSON.parse(body || '{}') })
      response.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' })
      response.end(JSON.stringify({ Name: 'peer', SecretString: JSON.stringify(secret) }))
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  // Read when the library creates its client, at the first fetch below.
  process.env.AWS_ENDPOINT_URL_SECRETS_MANAGER = `http://127.0.0.1:${server.address().port}`
  process.env.AWS_ACCESS_KEY_ID = 'AKIAIOSFODNN7EXAMPLE'
  process.env.AWS_SECRET_ACCESS_KEY = 'not-a-secret-peer-check-key'
  // No host in the endpoint: the secret supplies host, port, database, user and password.
  const db = createDb({
    dialect: 'postgres',
    writer: {},
    auth: { type: 'secret', secretId: 'peer', region: 'eu-west-1' },
  })
  try {
    const { rows } = await sql`select current_user as user`.execute(db)
    assert.equal(rows[0]?.user, secret.username)
    assert.deepEqual(requests, [{ target: 'secretsmanager.GetSecretValue', body: { SecretId: 'peer' } }])
  } finally {
    await db.destroy()
    server.close()
  }
}

/**
 * mysql2 before 3.22.0 answers a server's request for `mysql_clear_password` on any connection, so a
 * server (or anyone between) could ask for the password in clear over plain TCP; the library enables
 * that plugin on encrypted connections only (for IAM tokens), which needs a mysql2 that honours
 * `enableCleartextPlugin`. A fake server on plain TCP asks for it here, and must not get the password.
 */
async function refuseCleartextPassword() {
  const password = `pw${randomBytes(12).toString('hex')}`
  const received = []
  let switched = false
  const packet = (sequence, payload) => {
    const header = Buffer.alloc(4)
    header.writeUIntLE(payload.length, 0, 3)
    header[3] = sequence
    return Buffer.concat([header, payload])
  }
  // Protocol 41, secure connection, plugin auth (with length-encoded data), connect with database.
  const capabilities = 0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x20000 | 0x80000 | 0x200000
  const flags = Buffer.alloc(4)
  flags.writeUInt32LE(capabilities >>> 0)
  const handshake = Buffer.concat([
    Buffer.from([10]),
    Buffer.from('5.7.99-peer-check\0'),
    Buffer.from([1, 0, 0, 0]), // connection id
    randomBytes(8),
    Buffer.from([0]),
    flags.subarray(0, 2),
    Buffer.from([33, 2, 0]), // utf8_general_ci, autocommit
    flags.subarray(2, 4),
    Buffer.from([21]),
    Buffer.alloc(10),
    randomBytes(12),
    Buffer.from('\0mysql_native_password\0'),
  ])
  const server = createTcpServer((socket) => {
    let pending = Buffer.alloc(0)
    let packets = 0
    socket.on('error', () => {})
    socket.on('data', (chunk) => {
      received.push(chunk)
      pending = Buffer.concat([pending, chunk])
      while (pending.length >= 4 && pending.length >= 4 + pending.readUIntLE(0, 3)) {
        const sequence = pending[3]
        pending = pending.subarray(4 + pending.readUIntLE(0, 3))
        packets += 1
        if (packets === 1) {
          // The handshake response: ask for the password in clear.
          switched = true
          socket.write(packet(sequence + 1, Buffer.from('\xfemysql_clear_password\0', 'latin1')))
        } else {
          socket.end(packet(sequence + 1, Buffer.from('\xff\x15\x04#28000Access denied', 'latin1')))
        }
      }
    })
    socket.write(packet(0, handshake))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const db = createDb({
    dialect: 'mysql',
    writer: `mysql://app:${password}@127.0.0.1:${server.address().port}/app`,
    retry: false,
    pool: { connectTimeoutMs: 2_000 },
  })
  try {
    const error = await db
      .selectNoFrom(sql.lit(1).as('one'))
      .execute()
      .then(
        () => undefined,
        (failure) => failure,
      )
    assert.ok(error !== undefined, 'the fake MySQL server let a query through')
    assert.ok(switched, `mysql2 never got as far as the request for the clear password: ${error}`)
    assert.ok(
      !Buffer.concat(received).includes(password),
      'mysql2 sent the password in clear over an unencrypted connection',
    )
  } finally {
    await db.destroy()
    server.close()
  }
}

/**
 * A verifying `tls` on PostgreSQL checks the certificate against the host connected to, an IP address
 * included. `pg` before 8.23.1 gives Node no name for an IP address, so Node would check 'localhost'
 * instead and a certificate for localhost would pass for any address; the library checks the address
 * itself (postgres-connector.ts). A fake server on 127.0.0.1
 * presents one (signed by the CA the client trusts): the client must refuse it before sending anything.
 */
async function verifyIpAddressHost() {
  const read = (name) => readFileSync(process.env[name] ?? assert.fail(`${name} is not set`), 'utf8')
  const ca = read('PEER_TLS_CA_FILE')
  const cert = read('PEER_TLS_CERT_FILE')
  const key = read('PEER_TLS_KEY_FILE')
  let tlsStarted = false
  let sentOverTls = false
  const server = createTcpServer((socket) => {
    socket.on('error', () => {})
    // The SSLRequest: accept it, then speak TLS with the certificate for localhost.
    socket.once('data', () => {
      tlsStarted = true
      socket.write('S')
      const secure = new TLSSocket(socket, { isServer: true, cert, key })
      secure.on('error', () => {})
      secure.on('data', () => {
        sentOverTls = true
        secure.destroy()
      })
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  let db
  try {
    db = createDb({
      dialect: 'postgres',
      writer: { url: `postgres://app:not-a-password@127.0.0.1:${server.address().port}/app`, tls: { ca } },
      retry: false,
      pool: { connectTimeoutMs: 2_000 },
    })
  } catch (error) {
    // Refusing the combination up front (as for mysql2) keeps the promise too.
    server.close()
    if (error instanceof ConfigError && error.setting === 'writer.tls') return
    throw error
  }
  try {
    const error = await db
      .selectNoFrom(sql.lit(1).as('one'))
      .execute()
      .then(
        () => undefined,
        (failure) => failure,
      )
    assert.ok(error !== undefined, 'the fake PostgreSQL server let a query through')
    assert.ok(tlsStarted, `pg never asked the fake server for TLS: ${error}`)
    assert.ok(
      !sentOverTls,
      'pg accepted a certificate for localhost from 127.0.0.1 and sent its startup message',
    )
    assert.equal(classifyError(error).category, 'fatal', `${error}`)
  } finally {
    await db.destroy()
    server.close()
  }
}

// Every check runs to its end (each drops what it created), and every failure is reported.
const results = await Promise.allSettled([
  ...engines.map(exercise),
  signIamToken(),
  fetchSecret(),
  refuseCleartextPassword(),
  verifyIpAddressHost(),
])
const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []))
for (const failure of failures) console.error(failure)
if (failures.length === 0) console.log('OK')
else process.exitCode = 1
