import type { CompiledQuery } from 'kysely'

const KINDS: Readonly<Record<string, string>> = {
  SelectQueryNode: 'SELECT',
  InsertQueryNode: 'INSERT',
  UpdateQueryNode: 'UPDATE',
  DeleteQueryNode: 'DELETE',
  MergeQueryNode: 'MERGE',
}

/**
 * The kind of statement, for traces: Kysely's node kind for built queries, the first keyword of a
 * raw statement (letters only, at most 20), never more of its text.
 */
export function operationOf(query: CompiledQuery): string {
  const kind = KINDS[query.query.kind]
  if (kind !== undefined) return kind
  const keyword = /^\s*(?:\/\*[\s\S]*?\*\/\s*)*([A-Za-z]{1,20})/.exec(query.sql)?.[1]
  return keyword === undefined ? 'UNKNOWN' : keyword.toUpperCase()
}
