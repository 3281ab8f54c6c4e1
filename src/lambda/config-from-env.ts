import type { CreateDbConfig, SqlDialect } from '../config/create-db-config.js'
import { resolveConfig } from '../config/resolve-config.js'
import { ConfigError } from '../errors.js'

/**
 * The environment variables `getConnection()` reads when it is called without options.
 *
 * - `DB_DIALECT`: `postgres` or `mysql`. Required.
 * - `DB_WRITER_URL`: the writer's connection URL, e.g. `postgres://app:secret@host:5432/orders`. Required.
 * - `DB_READER_URLS`: reader URLs separated by commas. Optional; absent or empty means no readers.
 * - `DB_AUTH`: `password` (the default; credentials come from the URLs). `iam` and `secret` are
 *   reserved for IAM authentication and Secrets Manager, which are not supported yet.
 * - `DB_SECRET_ID`, `AWS_REGION`: reserved for `DB_AUTH=secret` and `DB_AUTH=iam`; ignored with `password`.
 *
 * @example
 * ```ts
 * import { LAMBDA_ENV_VARIABLES } from 'kysely-resilient/lambda'
 *
 * for (const name of LAMBDA_ENV_VARIABLES) console.log(name, name in process.env)
 * ```
 */
export const LAMBDA_ENV_VARIABLES: ReadonlyArray<string> = Object.freeze([
  'DB_DIALECT',
  'DB_WRITER_URL',
  'DB_READER_URLS',
  'DB_AUTH',
  'DB_SECRET_ID',
  'AWS_REGION',
])

const DIALECTS: ReadonlyArray<SqlDialect> = ['postgres', 'mysql']
const CONFIG_PREFIX = 'Invalid kysely-resilient config: '

/**
 * Builds `createDb`'s config from environment variables. Every problem is a `ConfigError` whose
 * `setting` is the variable's name; a URL is never part of a message (it may hold a password).
 *
 * @example
 * ```ts
 * configFromEnv({ DB_DIALECT: 'mysql', DB_WRITER_URL: 'mysql://app:pw@writer/orders' })
 * // { dialect: 'mysql', writer: 'mysql://app:pw@writer/orders', readers: [] }
 * ```
 */
export function configFromEnv(env: Readonly<Record<string, string | undefined>>): CreateDbConfig {
  const auth = env.DB_AUTH?.trim() || 'password'
  if (auth === 'iam' || auth === 'secret') {
    throw new ConfigError(
      'DB_AUTH',
      `'${auth}' is not supported yet: IAM authentication and Secrets Manager arrive with credentials support; ` +
        "use 'password' and put the credentials in DB_WRITER_URL and DB_READER_URLS",
    )
  }
  if (auth !== 'password') {
    throw new ConfigError('DB_AUTH', `expected 'password' (or unset), got '${auth.slice(0, 20)}'`)
  }

  const dialect = env.DB_DIALECT?.trim()
  if (dialect === undefined || dialect === '') {
    throw new ConfigError('DB_DIALECT', "is not set: expected 'postgres' or 'mysql'")
  }
  if (!DIALECTS.includes(dialect as SqlDialect)) {
    throw new ConfigError('DB_DIALECT', `expected 'postgres' or 'mysql', got '${dialect.slice(0, 20)}'`)
  }

  const writer = env.DB_WRITER_URL?.trim()
  if (writer === undefined || writer === '') {
    throw new ConfigError(
      'DB_WRITER_URL',
      'is not set: expected a connection URL such as postgres://user:password@host/db',
    )
  }
  const readers = (env.DB_READER_URLS ?? '')
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url.length > 0)

  const config: CreateDbConfig = { dialect: dialect as SqlDialect, writer, readers }
  try {
    // Validate here, so a bad URL is reported under the variable that holds it.
    resolveConfig(config)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    const variable = error.setting.startsWith('readers') ? 'DB_READER_URLS' : 'DB_WRITER_URL'
    const index = /^readers\[(\d+)\]/.exec(error.setting)?.[1]
    // resolveConfig never puts a URL in a message; keep its explanation, name the variable instead.
    const detail = error.message.slice(CONFIG_PREFIX.length + error.setting.length + 2)
    throw new ConfigError(variable, index === undefined ? detail : `URL #${Number(index) + 1}: ${detail}`)
  }
  return config
}
