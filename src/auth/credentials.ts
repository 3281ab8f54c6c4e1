import { inspect } from 'node:util'

/**
 * Credentials for new connections, from an `auth` source. The password lives in a private field,
 * so neither `util.inspect`, `JSON.stringify` nor an error that captures this object can show it.
 * `host`, `port` and `database` are set only when the source supplies them (a Secrets Manager secret).
 */
export class Credentials {
  readonly user: string | undefined
  readonly host: string | undefined
  readonly port: number | undefined
  readonly database: string | undefined
  readonly #password: string

  constructor(fields: {
    readonly password: string
    readonly user?: string | undefined
    readonly host?: string | undefined
    readonly port?: number | undefined
    readonly database?: string | undefined
  }) {
    this.#password = fields.password
    this.user = fields.user
    this.host = fields.host
    this.port = fields.port
    this.database = fields.database
  }

  /** The password or token; read only by the code that opens a connection. */
  password(): string {
    return this.#password
  }

  toJSON(): Record<string, unknown> {
    return { user: this.user, host: this.host, port: this.port, database: this.database }
  }

  [inspect.custom](): string {
    return `Credentials ${inspect(this.toJSON())}`
  }
}
