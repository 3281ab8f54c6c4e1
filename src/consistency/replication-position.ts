/**
 * How far a server's data goes, as each engine counts it. Positions only ever grow on one history, so
 * "replica position >= the writer's position after a write" proves the replica has the write.
 *
 * - PostgreSQL: a WAL location (LSN). The writer's also carries its timeline, which changes when a
 *   replica is promoted: a position from another timeline is not compared, it is replaced.
 * - MariaDB: a GTID position, the last sequence number per replication domain. The writer's also
 *   carries its `server_id`, which changes when another server becomes the writer.
 */
export type ReplicationPosition = PostgresPosition | MariaDbPosition

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

/** Which writer (and history) a position was read from; undefined for a replica's position. */
export function writerIdentity(position: ReplicationPosition): string | undefined {
  if (position.engine === 'postgres') {
    return position.timeline === undefined ? undefined : `postgres:timeline:${position.timeline}`
  }
  return position.serverId === undefined ? undefined : `mariadb:server:${position.serverId}`
}

/** Whether `replica` has everything up to `required`. */
export function covers(replica: ReplicationPosition, required: ReplicationPosition): boolean {
  if (replica.engine === 'postgres') return required.engine === 'postgres' && replica.lsn >= required.lsn
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
  return b
}
