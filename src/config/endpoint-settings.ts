import { inspect } from 'node:util'
import type { SqlDialect } from './create-db-config.js'
import type { ResolvedPoolOptions } from './pool-options.js'

/** Whether an endpoint takes writes or serves reads. */
export type EndpointRole = 'writer' | 'reader'

/**
 * A validated endpoint. The password lives in a private field with no enumerable trace, so
 * neither `util.inspect`, `JSON.stringify`, nor an error that captures this object can show it.
 */
export class EndpointSettings {
  readonly name: string
  readonly role: EndpointRole
  readonly dialect: SqlDialect
  readonly host: string
  readonly port: number
  readonly user: string | undefined
  readonly database: string | undefined
  readonly pool: ResolvedPoolOptions
  readonly #password: string | undefined

  constructor(fields: {
    name: string
    role: EndpointRole
    dialect: SqlDialect
    host: string
    port: number
    user: string | undefined
    password: string | undefined
    database: string | undefined
    pool: ResolvedPoolOptions
  }) {
    this.name = fields.name
    this.role = fields.role
    this.dialect = fields.dialect
    this.host = fields.host
    this.port = fields.port
    this.user = fields.user
    this.database = fields.database
    this.pool = fields.pool
    this.#password = fields.password
  }

  /** The password; read only by the code that opens a connection. */
  password(): string | undefined {
    return this.#password
  }

  /** `host:port/database`, safe to print. */
  get address(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host
    return `${host}:${this.port}${this.database ? `/${this.database}` : ''}`
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      role: this.role,
      dialect: this.dialect,
      host: this.host,
      port: this.port,
      user: this.user,
      database: this.database,
      pool: this.pool,
    }
  }

  [inspect.custom](): string {
    return `EndpointSettings ${inspect(this.toJSON())}`
  }
}
