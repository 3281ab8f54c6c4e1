import { setTimeout as delay } from 'node:timers/promises'
import type { CreateDbConfig } from '../config/create-db-config.js'
import { createDb, type ResilientDb } from '../create-db.js'
import { configFromEnv } from './config-from-env.js'
import { withLambdaDefaults } from './lambda-defaults.js'

/**
 * The container's one database, kept on `globalThis` under a registered symbol rather than in a
 * module variable: a bundle may hold this module twice (the ESM and CommonJS builds, or the package
 * root and `kysely-resilient/lambda`), and every copy must still share one pool per container.
 */
interface LambdaState {
  pending: Promise<ResilientDb<unknown>> | undefined
  sigterm: (() => void) | undefined
}

const STATE_KEY = Symbol.for('kysely-resilient.lambda')
/** Lambda gives the runtime about 500 ms after SIGTERM; stay inside it even if a server hangs. */
const SHUTDOWN_BUDGET_MS = 400

function state(): LambdaState {
  const holder = globalThis as { [STATE_KEY]?: LambdaState }
  holder[STATE_KEY] ??= { pending: undefined, sigterm: undefined }
  return holder[STATE_KEY]
}

/**
 * The database for an AWS Lambda function: created on the first call, then the same instance for
 * every later invocation the container serves (warm starts reuse its connections). Concurrent first
 * calls share one creation; a creation that failed is not kept, so the next call tries again. Opens
 * no connection itself: the first query does. With `iam`, `secret` or `token` auth, credentials that
 * expired while the container was frozen are fetched again before the next new connection opens
 * (by wall-clock time, which keeps running during a freeze); connections already open stay open.
 *
 * Without `options` it reads `DB_DIALECT`, `DB_WRITER_URL`, `DB_READER_URLS`, `DB_AUTH` (`password`,
 * `iam` or `secret`), `DB_SECRET_ID`, `DB_TLS` and `AWS_REGION` from the environment (see
 * `LAMBDA_ENV_VARIABLES`); a missing or wrong variable is a `ConfigError` whose `setting` is the
 * variable's name. With `options`, they are `createDb`'s config. Either way
 * `LAMBDA_POOL_DEFAULTS` apply under your own `pool` settings. Only the first call's options count;
 * later calls get the existing instance whatever they pass.
 *
 * It also listens (once) for SIGTERM, which Lambda sends on shutdown to functions with extensions,
 * and destroys the database so the server is not left holding the sessions. When no other SIGTERM
 * listener exists it then re-raises the signal, so the process ends as Node's default would; when
 * another listener exists, that listener owns the shutdown.
 *
 * @example
 * ```ts
 * import { getConnection } from 'kysely-resilient/lambda'
 *
 * interface Database {
 *   person: { id: number; name: string }
 * }
 *
 * // DB_DIALECT=postgres, DB_AUTH=iam,
 * // DB_WRITER_URL=postgres://app_iam@mydb.cluster-abc.eu-west-1.rds.amazonaws.com/orders
 * export async function handler() {
 *   const db = await getConnection<Database>()
 *   return db.selectFrom('person').selectAll().execute()
 * }
 * ```
 */
export function getConnection<DB>(options?: CreateDbConfig): Promise<ResilientDb<DB>> {
  const current = state()
  if (current.pending === undefined) {
    const creating = create(options)
    current.pending = creating
    creating.catch(() => {
      if (current.pending === creating) current.pending = undefined
    })
  }
  return current.pending as Promise<ResilientDb<unknown>> as Promise<ResilientDb<DB>>
}

/**
 * Destroys the database `getConnection` created (closing its connections) and forgets it, so the
 * next `getConnection` creates a new one. For tests, and for a handler that wants a clean start
 * (e.g. after rotating credentials). Safe to call when there is none.
 *
 * @example
 * ```ts
 * import { getConnection, resetConnection } from 'kysely-resilient/lambda'
 *
 * afterEach(async () => {
 *   await resetConnection()
 * })
 * ```
 */
export async function resetConnection(): Promise<void> {
  const current = state()
  const pending = current.pending
  current.pending = undefined
  if (current.sigterm !== undefined) {
    process.off('SIGTERM', current.sigterm)
    current.sigterm = undefined
  }
  if (pending === undefined) return
  let db: ResilientDb<unknown>
  try {
    db = await pending
  } catch {
    return
  }
  await db.destroy()
}

async function create(options: CreateDbConfig | undefined): Promise<ResilientDb<unknown>> {
  const config = withLambdaDefaults(options ?? configFromEnv(process.env))
  const db = createDb<unknown>(config)
  listenForSigterm()
  return db
}

function listenForSigterm(): void {
  const current = state()
  if (current.sigterm !== undefined) return
  const onSigterm = (): void => {
    current.sigterm = undefined
    // Shutting down: a close that fails or hangs must not turn into an unhandled rejection.
    const closing = Promise.race([
      resetConnection().catch(() => undefined),
      delay(SHUTDOWN_BUDGET_MS, undefined, { ref: false }),
    ])
    // Listening for SIGTERM switched off Node's default (exit). If nobody else handles the signal,
    // restore that default once the connections are closed; otherwise the other listener decides.
    if (process.listenerCount('SIGTERM') === 0) {
      void closing.finally(() => process.kill(process.pid, 'SIGTERM'))
    }
  }
  current.sigterm = onSigterm
  process.once('SIGTERM', onSigterm)
}
