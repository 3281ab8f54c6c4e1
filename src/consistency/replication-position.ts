/**
 * How far a server's data goes, as each engine counts it. Positions only ever grow on one history, so
 * "replica position >= the writer's position after a write" proves the replica has the write.
 *
 * - PostgreSQL: a WAL location (LSN). The writer's also carries its timeline, which changes when a
 *   replica is promoted: a position from another timeline is not compared, it is replaced.
 * - MariaDB: a GTID position, the last sequence number per replication domain. The writer's also
 *   carries its `server_id`, which changes when another server becomes the writer.
 * - MySQL: a GTID set (`@@global.gtid_executed`): every transaction, by source UUID (and tag, 8.3+).
 *   The writer's also carries its `server_uuid`.
 */
export type ReplicationPosition = PostgresPosition | MariaDbPosition | MySqlPosition

/** A PostgreSQL WAL location. */
export interface PostgresPosition {
  readonly engine: 'postgres'
  readonly lsn: bigint
  /** The writer's timeline; absent on a position read from a replica. */
  readonly timeline?: number
}

/** A MariaDB GTID position: the highest sequence number per replication domain. */
export interface MariaDbPosition {
  readonly engine: 'mariadb'
  readonly domains: ReadonlyMap<number, bigint>
  /** The writer's `server_id`; absent on a position read from a replica. */
  readonly serverId?: number
}

/** A MySQL GTID set: for each source (`uuid`, or `uuid:tag`), sorted, disjoint, non-adjacent intervals. */
export interface MySqlPosition {
  readonly engine: 'mysql'
  readonly sets: ReadonlyMap<string, ReadonlyArray<GtidInterval>>
  /** The writer's `server_uuid`; absent on a position read from a replica. */
  readonly serverUuid?: string
}

/** An inclusive range of transaction numbers. */
export type GtidInterval = readonly [bigint, bigint]

/** A position read from a server, with the server's own text for `db.stats()`. */
export interface ReadPosition {
  readonly position: ReplicationPosition
  readonly text: string
}

/** The engine keeps no position this library can compare (MySQL's GTID sets, MariaDB without a binlog). */
export class NoPositionError extends Error {
  override name = 'NoPositionError'
}

/** WAL page header sizes (XLogPageHeaderData / XLogLongPageHeaderData, MAXALIGNed on 64-bit builds). */
const SHORT_PAGE_HEADER = 24n
const LONG_PAGE_HEADER = 40n

/** Parses PostgreSQL's text form of an LSN (`'16/B374D848'`); undefined when it is not one. */
export function parseLsn(text: string): bigint | undefined {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text)
  if (match === null) return undefined
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)
}

/** PostgreSQL's text form of an LSN. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}

/**
 * The writer's insert location as a replica can reach it. `pg_current_wal_insert_lsn()` covers every
 * commit (also with `synchronous_commit = off`, where the flush location may not yet), but when the
 * insert point sits exactly at a page boundary it points past the next page's header, a location no
 * replica reports until more WAL is written. A location just past a header is the boundary itself:
 * no record ends inside a header.
 */
export function reachableInsertLsn(lsn: bigint, blockSize: number, segmentSize: number): bigint {
  const inSegment = lsn % BigInt(segmentSize)
  // A segment's first page has the long header; every other page the short one.
  if (inSegment === LONG_PAGE_HEADER) return lsn - LONG_PAGE_HEADER
  if (inSegment > LONG_PAGE_HEADER && lsn % BigInt(blockSize) === SHORT_PAGE_HEADER) {
    return lsn - SHORT_PAGE_HEADER
  }
  return lsn
}

/** The timeline in a WAL file name (its first 8 hex digits), as `pg_walfile_name()` returns it. */
export function timelineOfWalFile(walFile: string): number | undefined {
  const match = /^([0-9A-Fa-f]{8})[0-9A-Fa-f]{16}$/.exec(walFile)
  return match === null ? undefined : Number.parseInt(match[1] as string, 16)
}

/**
 * Parses a MariaDB GTID position (`'0-1-42,1-2-7'`, empty for none) into the highest sequence number
 * of each domain; undefined when it is not one.
 */
export function parseGtidPosition(text: string): Map<number, bigint> | undefined {
  const domains = new Map<number, bigint>()
  if (text.trim() === '') return domains
  for (const part of text.split(',')) {
    const match = /^\s*(\d{1,10})-(\d{1,10})-(\d{1,20})\s*$/.exec(part)
    if (match === null) return undefined
    const domain = Number(match[1])
    const seq = BigInt(match[3] as string)
    const known = domains.get(domain)
    if (known === undefined || seq > known) domains.set(domain, seq)
  }
  return domains
}

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/
const TAG = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/
const INTERVAL = /^(\d{1,19})(?:-(\d{1,19}))?$/

/**
 * Parses a MySQL GTID set as `@@global.gtid_executed` prints it (`'3e11fa47-...:1-5:11-18,2174b383-...:1-77'`,
 * with newlines after the commas, and `uuid:tag:1-3` tags since 8.3); undefined when it is not one.
 */
export function parseGtidSet(text: string): Map<string, GtidInterval[]> | undefined {
  const sets = new Map<string, GtidInterval[]>()
  const trimmed = text.replace(/\s+/g, '')
  if (trimmed === '') return sets
  for (const member of trimmed.split(',')) {
    const [uuid, ...parts] = member.split(':')
    if (uuid === undefined || !UUID.test(uuid) || parts.length === 0) return undefined
    let source = uuid.toLowerCase()
    for (const part of parts) {
      const interval = INTERVAL.exec(part)
      if (interval === null) {
        if (!TAG.test(part)) return undefined
        // A tag applies to the intervals after it (MySQL 8.3+).
        source = `${uuid.toLowerCase()}:${part.toLowerCase()}`
        continue
      }
      const first = BigInt(interval[1] as string)
      const last = interval[2] === undefined ? first : BigInt(interval[2])
      if (last < first) return undefined
      const intervals = sets.get(source) ?? []
      intervals.push([first, last])
      sets.set(source, intervals)
    }
  }
  for (const [source, intervals] of sets) sets.set(source, normalize(intervals))
  return sets
}

/** A GTID set in MySQL's text form (for a token: sources sorted, intervals merged). */
export function formatGtidSet(sets: ReadonlyMap<string, ReadonlyArray<GtidInterval>>): string {
  return [...sets]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(
      ([source, intervals]) =>
        `${source}:${intervals.map(([first, last]) => (first === last ? `${first}` : `${first}-${last}`)).join(':')}`,
    )
    .join(',')
}

/** Sorts intervals and merges overlapping or adjacent ones. */
function normalize(intervals: ReadonlyArray<GtidInterval>): GtidInterval[] {
  const sorted = [...intervals].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  const merged: Array<[bigint, bigint]> = []
  for (const [first, last] of sorted) {
    const previous = merged[merged.length - 1]
    if (previous !== undefined && first <= previous[1] + 1n) {
      if (last > previous[1]) previous[1] = last
    } else merged.push([first, last])
  }
  return merged
}

/** Whether every interval of `required` lies inside `available` (both normalized). */
function containsAll(available: ReadonlyArray<GtidInterval>, required: ReadonlyArray<GtidInterval>): boolean {
  return required.every(([first, last]) => available.some(([from, to]) => from <= first && last <= to))
}

/** Which writer (and history) a position was read from; undefined for a replica's position. */
export function writerIdentity(position: ReplicationPosition): string | undefined {
  if (position.engine === 'postgres') {
    return position.timeline === undefined ? undefined : `postgres:timeline:${position.timeline}`
  }
  if (position.engine === 'mysql') {
    return position.serverUuid === undefined ? undefined : `mysql:server:${position.serverUuid}`
  }
  return position.serverId === undefined ? undefined : `mariadb:server:${position.serverId}`
}

/** Whether `replica` has everything up to `required`. */
export function covers(replica: ReplicationPosition, required: ReplicationPosition): boolean {
  if (replica.engine === 'postgres') return required.engine === 'postgres' && replica.lsn >= required.lsn
  if (replica.engine === 'mysql') {
    if (required.engine !== 'mysql') return false
    // Like WAIT_FOR_EXECUTED_GTID_SET: every required transaction is in the replica's set.
    for (const [source, intervals] of required.sets) {
      if (!containsAll(replica.sets.get(source) ?? [], intervals)) return false
    }
    return true
  }
  if (required.engine !== 'mariadb') return false
  // Like MASTER_GTID_WAIT: compare sequence numbers domain by domain, whatever server wrote them.
  for (const [domain, seq] of required.domains) {
    const reached = replica.domains.get(domain)
    if (reached === undefined || reached < seq) return false
  }
  return true
}

/** The later of two positions of the same writer (the first one's identity is kept). */
export function later(a: ReplicationPosition, b: ReplicationPosition): ReplicationPosition {
  if (a.engine === 'postgres' && b.engine === 'postgres') return b.lsn > a.lsn ? { ...a, lsn: b.lsn } : a
  if (a.engine === 'mariadb' && b.engine === 'mariadb') {
    const domains = new Map(a.domains)
    for (const [domain, seq] of b.domains) {
      const known = domains.get(domain)
      if (known === undefined || seq > known) domains.set(domain, seq)
    }
    return { ...a, domains }
  }
  if (a.engine === 'mysql' && b.engine === 'mysql') {
    const sets = new Map(a.sets)
    for (const [source, intervals] of b.sets)
      sets.set(source, normalize([...(sets.get(source) ?? []), ...intervals]))
    return { ...a, sets }
  }
  return b
}
