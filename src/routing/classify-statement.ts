import type { OperationNode, RootOperationNode } from 'kysely'

const WRITE_NODE_KINDS = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'MergeQueryNode'])
const LOCK_MODIFIERS = new Set(['ForUpdate', 'ForNoKeyUpdate', 'ForShare', 'ForKeyShare'])
// Row locks written by hand with `.modifyEnd(sql`...`)`.
const RAW_LOCK = /\bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b|\block\s+in\s+share\s+mode\b/i
const MAYBE_WRITE_OR_LOCK = /\b(?:insert|update|delete|merge|share|lock)\b/i
// Node kinds that hold user values, never operation nodes worth walking.
const VALUE_NODE_KINDS = new Set(['ValueNode', 'PrimitiveValueListNode', 'IdentifierNode', 'ColumnNode'])

/**
 * True when a statement can be served by a replica: a SELECT (with CTEs, set operations,
 * subqueries, or no FROM at all) that takes no row lock and contains no data-modifying CTE.
 * Everything else — INSERT/UPDATE/DELETE/MERGE, schema statements, raw `sql` — needs the writer.
 *
 * Functions with side effects called inside a SELECT (`nextval`, `pg_advisory_lock`, ...) cannot be
 * seen from the query tree; run those through `db.writer`.
 */
export function isReadOnlyStatement(node: RootOperationNode, sql?: string): boolean {
  if (node.kind !== 'SelectQueryNode') return false
  // Every write and every lock shows up as a keyword in the SQL Kysely generated (values are bound
  // parameters, never inlined). No such keyword: certainly a read, without walking the tree. A
  // keyword (which may also be a quoted identifier such as "update"): walk the tree to be exact.
  if (sql !== undefined && !MAYBE_WRITE_OR_LOCK.test(sql)) return true
  // No cache: Kysely builds a fresh tree for every execution, so a cache would never hit and only
  // cost a WeakMap write per statement (measured in bench/overhead).
  return !containsWriteOrLock(node)
}

function containsWriteOrLock(root: OperationNode): boolean {
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const current = stack.pop()
    if (Array.isArray(current)) {
      for (const item of current) if (typeof item === 'object' && item !== null) stack.push(item)
      continue
    }
    if (typeof current !== 'object' || current === null) continue
    const node = current as OperationNode & Record<string, unknown>
    const kind = node.kind
    if (typeof kind === 'string') {
      if (WRITE_NODE_KINDS.has(kind)) return true
      if (VALUE_NODE_KINDS.has(kind)) continue
      if (kind === 'SelectModifierNode') {
        if (typeof node.modifier === 'string' && LOCK_MODIFIERS.has(node.modifier)) return true
        if (isRawLock(node.rawModifier)) return true
      }
    }
    for (const key in node) {
      const value = node[key]
      if (typeof value === 'object' && value !== null) stack.push(value)
    }
  }
  return false
}

function isRawLock(raw: unknown): boolean {
  if (typeof raw !== 'object' || raw === null) return false
  return RAW_LOCK.test(rawText(raw))
}

/** The text of a raw fragment, with nested raw fragments (`sql`${lock} nowait``) spliced in. */
function rawText(raw: object): string {
  const { sqlFragments, parameters } = raw as { sqlFragments?: unknown; parameters?: unknown }
  if (!Array.isArray(sqlFragments)) return ''
  const params = Array.isArray(parameters) ? parameters : []
  return sqlFragments
    .map((fragment, index) => {
      const param: unknown = params[index]
      const nested =
        typeof param === 'object' && param !== null && (param as { kind?: unknown }).kind === 'RawNode'
          ? rawText(param)
          : ' '
      return `${String(fragment)}${index < params.length ? nested : ''}`
    })
    .join('')
}
