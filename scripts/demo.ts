/**
 * `npm run demo`: the Express example as a user deploys it, against a throwaway database.
 *
 * 1. Without DB_WRITER_URL, starts a PostgreSQL primary + streaming replica on free local ports (needs
 *    the server binaries initdb, postgres, pg_basebackup; PG_BIN_DIR if they are not on the PATH).
 * 2. Runs the migration (examples/express/migrate.ts) as its own process, then the server
 *    (examples/express/server.ts), both configured only by environment variables.
 * 3. Plays the client session (examples/express/demo.ts) against the server.
 * 4. Stops the server (SIGTERM: graceful shutdown) and the cluster.
 *
 * With `--serve` it keeps the server running after the session, until Ctrl-C.
 * Repo tooling, not part of the example: it may use the test support code to start servers.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { type PostgresCluster, startPostgresCluster } from '../test/support/postgres-cluster.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const serve = process.argv.includes('--serve')

/** `node --import tsx <file>` with `env`: how the example's README runs each part. */
function start(file: string, env: NodeJS.ProcessEnv, prefix: string): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', file], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  for (const stream of [child.stdout, child.stderr]) {
    let pending = ''
    stream?.on('data', (chunk: Buffer) => {
      const lines = (pending + chunk.toString()).split('\n')
      pending = lines.pop() ?? ''
      for (const line of lines) console.log(`${prefix}${line}`)
    })
  }
  return child
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)))
}

async function run(file: string, env: NodeJS.ProcessEnv, prefix: string): Promise<void> {
  const code = await exited(start(file, env, prefix))
  if (code !== 0) throw new Error(`${file} exited with ${code}`)
}

/** Starts the server and resolves with its URL, from its `listening` log line. */
function startServer(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; url: string }> {
  const child = start('examples/express/server.ts', env, '[server] ')
  return new Promise((resolve, reject) => {
    let output = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      const url = /"msg":"listening","url":"([^"]+)"/.exec(output)?.[1]
      if (url !== undefined) resolve({ child, url })
    })
    child.once('exit', (code) => reject(new Error(`the server exited with ${code} before listening`)))
  })
}

async function main(): Promise<void> {
  let cluster: PostgresCluster | undefined
  let server: ChildProcess | undefined
  const stop = async () => {
    if (server !== undefined && server.exitCode === null) {
      server.kill('SIGTERM')
      await exited(server)
    }
    await cluster?.stop()
  }
  try {
    const env: NodeJS.ProcessEnv = { ...process.env }
    if (!env.DB_WRITER_URL) {
      console.log('DB_WRITER_URL is not set: starting a throwaway PostgreSQL primary + streaming replica...')
      const startedAt = performance.now()
      cluster = await startPostgresCluster()
      console.log(
        `PostgreSQL primary on 127.0.0.1:${cluster.primary.port}, replica on 127.0.0.1:${cluster.replica?.port}` +
          ` (ready in ${Math.round(performance.now() - startedAt)} ms)`,
      )
      Object.assign(env, {
        DB_DIALECT: 'postgres',
        DB_WRITER_URL: cluster.writerUrl,
        DB_READER_URLS: cluster.readerUrl,
      })
    }
    const adminToken = env.ADMIN_TOKEN || randomBytes(16).toString('hex')

    console.log('\n$ tsx examples/express/migrate.ts')
    await run('examples/express/migrate.ts', env, '[migrate] ')

    console.log('\n$ PORT=0 tsx examples/express/server.ts')
    const started = await startServer({
      ...env,
      PORT: env.PORT ?? '0',
      HOST: '127.0.0.1',
      ADMIN_TOKEN: adminToken,
    })
    server = started.child

    console.log(`\n$ BASE_URL=${started.url} tsx examples/express/demo.ts`)
    await run('examples/express/demo.ts', { ...env, BASE_URL: started.url, ADMIN_TOKEN: adminToken }, '')

    if (serve) {
      console.log(`\nserving on ${started.url}; press Ctrl-C to stop. Try: curl -i ${started.url}/users`)
      console.log(`admin: curl -H 'authorization: Bearer ${adminToken}' ${started.url}/admin/stats`)
      await new Promise<void>((resolve) => process.once('SIGINT', resolve))
    }
  } catch (error) {
    console.error(`demo failed: ${error instanceof Error ? error.message : String(error)}`)
    await stop().catch(() => {})
    process.exit(1)
  }
  await stop()
  console.log(`\nserver and ${cluster === undefined ? 'database pools' : 'PostgreSQL cluster'} stopped`)
}

await main()
