/**
 * Whether `host` is a Unix socket: an absolute path, as `pg` and libpq take it (PostgreSQL: the
 * directory that holds the socket; MySQL: the socket file itself).
 */
export function isUnixSocket(host: string | undefined): boolean {
  return host?.startsWith('/') === true
}
