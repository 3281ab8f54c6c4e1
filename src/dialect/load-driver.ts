import type * as Mysql2 from 'mysql2'
import type * as Pg from 'pg'
import type PgCursor from 'pg-cursor'
import { MissingDriverError } from '../errors.js'

/** The parts of `pg` this library uses. */
export type PgModule = Pick<typeof Pg, 'Client'>
/** The parts of `mysql2` this library uses (its callback API, which Kysely's MySQL driver expects). */
export type Mysql2Module = Pick<typeof Mysql2, 'createConnection'>
/** `pg-cursor`'s constructor. */
export type PgCursorConstructor = typeof PgCursor

function interop<T>(module: T | { default: T }): T {
  // The drivers are CommonJS: ESM `import()` puts module.exports on `default`.
  const withDefault = module as { default?: T }
  return withDefault.default ?? (module as T)
}

/**
 * Loads `pg` on first use only, so a MySQL user never needs it installed. The specifier is a
 * string literal so bundlers (esbuild for Lambda) still see and include the driver that is used.
 */
export async function loadPg(): Promise<PgModule> {
  try {
    return interop(await import('pg')) as PgModule
  } catch (error) {
    throw new MissingDriverError('pg', "the 'postgres' dialect", error)
  }
}

/** Loads `pg-cursor` if installed; without it, `.stream()` fails with a clear error. */
export async function loadPgCursor(): Promise<PgCursorConstructor | undefined> {
  try {
    return interop(await import('pg-cursor')) as PgCursorConstructor
  } catch {
    return undefined
  }
}

/** Loads `mysql2` on first use only, so a PostgreSQL user never needs it installed. */
export async function loadMysql2(): Promise<Mysql2Module> {
  try {
    return interop(await import('mysql2')) as Mysql2Module
  } catch (error) {
    throw new MissingDriverError('mysql2', "the 'mysql' dialect", error)
  }
}

/** The driver modules for one dialect, loaded once per `createDb`. */
export type LoadedDrivers =
  | {
      readonly dialect: 'postgres'
      readonly pg: Awaited<ReturnType<typeof loadPg>>
      readonly cursor: PgCursorConstructor | undefined
    }
  | { readonly dialect: 'mysql'; readonly mysql2: Mysql2Module }

export async function loadDrivers(dialect: 'postgres' | 'mysql'): Promise<LoadedDrivers> {
  if (dialect === 'postgres') {
    const [pg, cursor] = await Promise.all([loadPg(), loadPgCursor()])
    return { dialect, pg, cursor }
  }
  return { dialect, mysql2: await loadMysql2() }
}

/** Stands in for `pg-cursor` when it is not installed, so `.stream()` says what to install. */
export function missingCursor(): PgCursorConstructor {
  return class MissingCursor {
    constructor() {
      throw new MissingDriverError('pg-cursor', "the 'postgres' dialect's .stream()", undefined)
    }
  } as unknown as PgCursorConstructor
}
