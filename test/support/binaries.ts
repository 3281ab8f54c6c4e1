import { accessSync, constants, readdirSync } from 'node:fs'
import { delimiter, join } from 'node:path'

/**
 * Where local server binaries live. Debian/Ubuntu put PostgreSQL's server tools in a versioned directory
 * that is not on PATH, so look there first; `PG_BIN_DIR` / `MARIADB_BIN_DIR` override the search.
 */

export function findPostgresBinDir(): string | undefined {
  const versioned = listDirectory('/usr/lib/postgresql')
    .filter((name) => /^\d+$/.test(name))
    .sort((a, b) => Number(b) - Number(a))
    .map((version) => `/usr/lib/postgresql/${version}/bin`)
  const candidates = [process.env.PG_BIN_DIR, ...versioned, '/usr/local/pgsql/bin', ...pathDirectories()]
  return candidates.find(
    (dir) =>
      dir !== undefined &&
      ['initdb', 'postgres', 'pg_ctl', 'pg_basebackup'].every((b) => isExecutable(join(dir, b))),
  )
}

export interface MariaDbBinaries {
  readonly mariadbd: string
  readonly installDb: string
}

export function findMariaDbBinaries(): MariaDbBinaries | undefined {
  const dirs = [process.env.MARIADB_BIN_DIR, '/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin']
  const candidates = [...dirs, ...pathDirectories()].filter((dir): dir is string => dir !== undefined)
  const mariadbd = candidates.map((dir) => join(dir, 'mariadbd')).find(isExecutable)
  const installDb = candidates.map((dir) => join(dir, 'mariadb-install-db')).find(isExecutable)
  return mariadbd !== undefined && installDb !== undefined ? { mariadbd, installDb } : undefined
}

function pathDirectories(): string[] {
  return (process.env.PATH ?? '').split(delimiter).filter((dir) => dir !== '')
}

function listDirectory(path: string): string[] {
  try {
    return readdirSync(path)
  } catch {
    return []
  }
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** Debian's `pgbouncer` package installs it in /usr/sbin; `PGBOUNCER_BIN` overrides the search. */
export function findPgBouncer(): string | undefined {
  if (process.env.PGBOUNCER_BIN)
    return isExecutable(process.env.PGBOUNCER_BIN) ? process.env.PGBOUNCER_BIN : undefined
  const dirs = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', ...pathDirectories()]
  return dirs.map((dir) => join(dir, 'pgbouncer')).find(isExecutable)
}
