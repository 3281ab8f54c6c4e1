import { inspect } from 'node:util'
import type { ResolvedAuth } from '../auth/resolve-auth.js'
import { isUnixSocket } from '../host/unix-socket.js'
import type { ResolvedTls } from '../tls/resolve-tls.js'
import type { SqlDialect } from './create-db-config.js'
import type { EndpointDescription } from './db-settings.js'
import type { ConnectionHook, ResolvedDriverOptions } from './driver-options.js'
import type { ResolvedPoolOptions } from './pool-options.js'
import type { ConnectionProxy } from './proxy.js'

/** Kysely's connection hooks of one endpoint (its own, or the top level's). */
export interface ConnectionHooks {
  readonly onCreateConnection: ConnectionHook | undefined
  readonly onReserveConnection: ConnectionHook | undefined
}

/** Whether an endpoint takes writes or serves reads. */
export type EndpointRole = 'writer' | 'reader'

const NO_OPTIONS: ResolvedDriverOptions = Object.freeze({})
const NO_HOOKS: ConnectionHooks = Object.freeze({
  onCreateConnection: undefined,
  onReserveConnection: undefined,
})

/**
 * A validated endpoint. The password lives in a private field with no enumerable trace, so
 * neither `util.inspect`, `JSON.stringify`, nor an error that captures this object can show it.
 */
export class EndpointSettings {
  readonly name: string
  readonly role: EndpointRole
  readonly dialect: SqlDialect
  /**
   * A host name, an IP address or a Unix socket path (see {@link isUnixSocket}). `undefined` only
   * with `auth: { type: 'secret' }`, when the secret supplies the host.
   */
  readonly host: string | undefined
  readonly port: number
  readonly user: string | undefined
  readonly database: string | undefined
  readonly pool: ResolvedPoolOptions
  /** Where new connections get their credentials. May hold AWS credentials: never printed. */
  readonly auth: ResolvedAuth
  readonly tls: ResolvedTls
  /**
   * The validated `pg` or `mysql2` options, merged over the connection options the library sets
   * (which win). May hold secrets (a password in `options`): only their names are ever printed.
   */
  readonly driverOptions: ResolvedDriverOptions
  readonly hooks: ConnectionHooks
  /** The connection proxy in front of this endpoint (set or detected), or `undefined` for none. */
  readonly proxy: ConnectionProxy | undefined
  readonly #password: string | undefined

  constructor(fields: {
    name: string
    role: EndpointRole
    dialect: SqlDialect
    host: string | undefined
    port: number
    user: string | undefined
    password: string | undefined
    database: string | undefined
    pool: ResolvedPoolOptions
    auth: ResolvedAuth
    tls: ResolvedTls
    driverOptions?: ResolvedDriverOptions
    hooks?: ConnectionHooks
    proxy?: ConnectionProxy | undefined
  }) {
    this.name = fields.name
    this.role = fields.role
    this.dialect = fields.dialect
    this.host = fields.host
    this.port = fields.port
    this.user = fields.user
    this.database = fields.database
    this.pool = fields.pool
    this.auth = fields.auth
    this.tls = fields.tls
    this.driverOptions = fields.driverOptions ?? NO_OPTIONS
    this.hooks = fields.hooks ?? NO_HOOKS
    this.proxy = fields.proxy
    this.#password = fields.password
  }

  /**
   * The same endpoint settings for one instance of its cluster (topology discovery): another name,
   * role, host and port; the credentials, pool, TLS and driver options stay. An IAM token is signed
   * for the instance's own host, as RDS requires, because the credential source reads `host`.
   */
  forInstance(fields: { name: string; role: EndpointRole; host: string; port: number }): EndpointSettings {
    return new EndpointSettings({
      ...fields,
      dialect: this.dialect,
      user: this.user,
      password: this.#password,
      database: this.database,
      pool: this.pool,
      auth: this.auth,
      tls: this.tls,
      driverOptions: this.driverOptions,
      hooks: this.hooks,
      proxy: this.proxy,
    })
  }

  /** The password; read only by the code that opens a connection. */
  password(): string | undefined {
    return this.#password
  }

  /**
   * `host:port/database`, safe to print. For a Unix socket, PostgreSQL's socket directory and port
   * (`/var/run/postgresql:5432/orders`: the port names the socket file), MySQL's socket file
   * (`/run/mysqld/mysqld.sock/orders`: the port is not used).
   */
  get address(): string {
    const database = this.database ? `/${this.database}` : ''
    if (this.host === undefined) return `(host from secret)${database}`
    if (isUnixSocket(this.host) && this.dialect === 'mysql') return `${this.host}${database}`
    const host = !isUnixSocket(this.host) && this.host.includes(':') ? `[${this.host}]` : this.host
    return `${host}:${this.port}${database}`
  }

  /**
   * The endpoint without secrets, for `db.settings` and printing: the auth kind only (an IAM config
   * may hold AWS keys, a token config a closure), driver option names only (a value may be a secret).
   */
  describe(): EndpointDescription {
    return {
      name: this.name,
      role: this.role,
      host: this.host,
      port: this.port,
      user: this.user,
      database: this.database,
      pool: { ...this.pool },
      auth: this.auth.type,
      proxy: this.proxy,
      tls: this.tls.mode === 'verify' ? `verify (${this.tls.trust} CA)` : this.tls.mode,
      driverOptions: Object.keys(this.driverOptions),
      hooks: Object.entries(this.hooks)
        .filter(([, hook]) => hook !== undefined)
        .map(([name]) => name),
    }
  }

  toJSON(): Record<string, unknown> {
    const { name, role, ...rest } = this.describe()
    return { name, role, dialect: this.dialect, ...rest, proxy: this.proxy ?? false }
  }

  [inspect.custom](): string {
    return `EndpointSettings ${inspect(this.toJSON())}`
  }
}
