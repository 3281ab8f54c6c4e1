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

/** Where and as whom a new connection logs in. */
export interface LoginTarget {
  readonly host: string | undefined
  readonly port: number
  readonly database: string | undefined
  readonly user: string | undefined
}

/**
 * The endpoint's address with the credentials' user. An endpoint without a host (secret auth) takes
 * the secret's host, port and database instead; one with a host keeps its own address (a reader may
 * share the writer's secret). The user always comes with the password: they rotate together.
 */
export function loginTarget(
  endpoint: {
    host: string | undefined
    port: number
    database: string | undefined
    user: string | undefined
  },
  credentials: Credentials,
): LoginTarget {
  const user = credentials.user ?? endpoint.user
  if (endpoint.host !== undefined)
    return { host: endpoint.host, port: endpoint.port, database: endpoint.database, user }
  return {
    host: credentials.host,
    port: credentials.port ?? endpoint.port,
    database: credentials.database ?? endpoint.database,
    user,
  }
}
