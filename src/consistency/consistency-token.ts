import type { SqlDialect } from '../config/create-db-config.js'
import { InvalidConsistencyTokenError } from '../errors.js'
import { formatLsn, parseLsn, type ReplicationPosition } from './replication-position.js'

/** Version prefix: a later release that changes the encoding can still tell old tokens apart. */
const PREFIX = 'rw1.'

/** What a token holds, before base64url. Short keys: the token travels in cookies and headers. */
interface TokenBody {
  /** `'pg'` or `'mariadb'`. */
  readonly e: 'pg' | 'mariadb'
  /** PostgreSQL: timeline; MariaDB: the writer's server_id. */
  readonly w: number
  /** PostgreSQL: LSN text; MariaDB: `domain:seq` pairs joined by `_`. */
  readonly p: string
}

/** Encodes a writer position as a token: ASCII letters, digits, `.`, `-` and `_` only. */
export function encodeToken(position: ReplicationPosition): string {
  const body: TokenBody =
    position.engine === 'postgres'
      ? { e: 'pg', w: position.timeline ?? 0, p: formatLsn(position.lsn) }
      : {
          e: 'mariadb',
          w: position.serverId ?? 0,
          p: [...position.domains].map(([domain, seq]) => `${domain}:${seq}`).join('_'),
        }
  return PREFIX + Buffer.from(JSON.stringify(body)).toString('base64url')
}

/**
 * Decodes a token made by `encodeToken`, for a db of `dialect`. Anything else is an
 * `InvalidConsistencyTokenError` that says what was wrong (the token itself is not secret).
 */
export function decodeToken(token: unknown, dialect: SqlDialect): ReplicationPosition {
  if (typeof token !== 'string' || !token.startsWith(PREFIX)) {
    throw new InvalidConsistencyTokenError(
      typeof token === 'string'
        ? `it does not start with '${PREFIX}'`
        : `expected a string, got ${typeof token}`,
    )
  }
  const encoded = token.slice(PREFIX.length)
  if (encoded.length > 4_096 || !/^[A-Za-z0-9_-]+$/.test(encoded)) {
    throw new InvalidConsistencyTokenError('it is not base64url text of a sensible length')
  }
  let body: unknown
  try {
    body = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8'))
  } catch {
    throw new InvalidConsistencyTokenError('its content is not what db.consistencyToken() makes')
  }
  if (typeof body !== 'object' || body === null) {
    throw new InvalidConsistencyTokenError('its content is not what db.consistencyToken() makes')
  }
  const { e, w, p } = body as Partial<TokenBody>
  if (!Number.isSafeInteger(w) || (w as number) < 0 || typeof p !== 'string') {
    throw new InvalidConsistencyTokenError('its content is not what db.consistencyToken() makes')
  }
  const expected = dialect === 'postgres' ? 'pg' : 'mariadb'
  if (e !== expected) {
    throw new InvalidConsistencyTokenError(
      `it was made by a ${e === 'pg' ? 'PostgreSQL' : e === 'mariadb' ? 'MariaDB' : 'different'} database, and this db's dialect is '${dialect}'`,
    )
  }
  if (e === 'pg') {
    const lsn = parseLsn(p)
    if (lsn === undefined) throw new InvalidConsistencyTokenError('its WAL location is malformed')
    return { engine: 'postgres', lsn, timeline: w as number }
  }
  const domains = new Map<number, bigint>()
  for (const pair of p === '' ? [] : p.split('_')) {
    const match = /^(\d{1,10}):(\d{1,20})$/.exec(pair)
    if (match === null) throw new InvalidConsistencyTokenError('its GTID position is malformed')
    domains.set(Number(match[1]), BigInt(match[2] as string))
  }
  return { engine: 'mariadb', domains, serverId: w as number }
}
