import type { AliasNode, OperationNode, RootOperationNode, SelectQueryNode, TableNode } from 'kysely'

/**
 * The tables Kysely's `Migrator` keeps its state in (its `DEFAULT_MIGRATION_TABLE` and
 * `DEFAULT_MIGRATION_LOCK_TABLE`): a SELECT from them always reads the writer, see
 * {@link isReadOnlyStatement}.
 */
export const KYSELY_MIGRATION_TABLES: ReadonlySet<string> = new Set([
  'kysely_migration',
  'kysely_migration_lock',
])
// The catalogs Kysely's introspectors (`db.introspection`) read: schema state, which a replica
// shows only once it has replayed the DDL.
const CATALOG_SCHEMAS = new Set(['pg_catalog', 'information_schema'])

/** Tables whose SELECTs go to the writer, with the shortcut that rules them out from the SQL. */
export interface WriterTables {
  readonly names: ReadonlySet<string>
  /**
   * Matches every SQL text that may write, lock, or name one of `names` or a catalog: no match and
   * the statement is certainly a read, found with the one regex scan the router always did.
   */
  readonly maybeNotRead: RegExp
}

const WRITE_NODE_KINDS = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'MergeQueryNode'])
const LOCK_MODIFIERS = new Set(['ForUpdate', 'ForNoKeyUpdate', 'ForShare', 'ForKeyShare'])
// Row locks written by hand with `.modifyEnd(sql`...`)`.
const RAW_LOCK = /\bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b|\block\s+in\s+share\s+mode\b/i
const WRITE_OR_LOCK_WORDS = ['insert', 'update', 'delete', 'merge', 'share', 'lock']
// Node kinds that hold user values, never operation nodes worth walking.
const VALUE_NODE_KINDS = new Set(['ValueNode', 'PrimitiveValueListNode', 'IdentifierNode', 'ColumnNode'])

/** Kysely's migration tables plus `extra`, and the shortcut regex for them. */
export function writerTables(extra: Iterable<string> = []): WriterTables {
  const names: ReadonlySet<string> = new Set([...KYSELY_MIGRATION_TABLES, ...extra])
  // One word-bounded alternation, so the scan stays as cheap as the keywords alone. Case-insensitive:
  // a superset of the exact, case-sensitive check of the table names on the tree.
  const words = [...WRITE_OR_LOCK_WORDS, ...CATALOG_SCHEMAS, ...names].map(escapeRegExp)
  return { names, maybeNotRead: new RegExp(`\\b(?:${words.join('|')})\\b`, 'i') }
}

function escapeRegExp(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&')
}

export const DEFAULT_WRITER_TABLES: WriterTables = writerTables()

/**
 * True when a statement can be served by a replica: a SELECT (with CTEs, set operations,
 * subqueries, or no FROM at all) that takes no row lock and contains no data-modifying CTE.
 * Everything else — INSERT/UPDATE/DELETE/MERGE, schema statements, raw `sql` — needs the writer.
 *
 * A SELECT that reads state a stale replica must not answer also needs the writer: one whose FROM
 * or JOIN names a table of `writerTables` (matched by table name, in any schema; default: Kysely's
 * migration tables, so a `Migrator` never sees migrations as not yet run), or a table of
 * `pg_catalog` or `information_schema` (Kysely's `db.introspection`, which must see DDL just run on
 * the writer). Only the outermost FROM and JOINs are looked at, which is where the `Migrator` and the
 * introspectors name them; a subquery reading those tables goes to a reader.
 *
 * Functions with side effects called inside a SELECT (`nextval`, `pg_advisory_lock`, ...) cannot be
 * seen from the query tree; run those through `db.writer`.
 */
export function isReadOnlyStatement(
  node: RootOperationNode,
  sql?: string,
  tables: WriterTables = DEFAULT_WRITER_TABLES,
): boolean {
  if (node.kind !== 'SelectQueryNode') return false
  // Every write and every lock shows up as a keyword in the SQL Kysely generated (values are bound
  // parameters, never inlined), and a writer table or catalog by its name. None of them: certainly a
  // read, without looking at the tree. A match (which may also be a quoted identifier such as
  // "update"): look at the tree to be exact.
  if (sql !== undefined && !tables.maybeNotRead.test(sql)) return true
  if (readsWriterState(node, tables.names)) return false
  // No cache: Kysely builds a fresh tree for every execution, so a cache would never hit and only
  // cost a WeakMap write per statement (measured in bench/overhead).
  return !containsWriteOrLock(node)
}

/**
 * True when a statement may change data: anything but a SELECT, or a SELECT with a data-modifying
 * CTE or a row lock (usually followed by a write in the same transaction). Unlike
 * {@link isReadOnlyStatement}, SELECTs of migration tables and catalogs are not counted: they read.
 */
export function mayChangeData(node: RootOperationNode): boolean {
  return node.kind !== 'SelectQueryNode' || containsWriteOrLock(node)
}

function readsWriterState(node: SelectQueryNode, writerTables: ReadonlySet<string>): boolean {
  const from = node.from
  if (from !== undefined) {
    const froms = from.froms
    for (let i = 0; i < froms.length; i++) if (isWriterStateTable(froms[i]!, writerTables)) return true
  }
  const joins = node.joins
  if (joins !== undefined) {
    for (let i = 0; i < joins.length; i++) if (isWriterStateTable(joins[i]!.table, writerTables)) return true
  }
  return false
}

function isWriterStateTable(node: OperationNode, writerTables: ReadonlySet<string>): boolean {
  const table = node.kind === 'AliasNode' ? (node as AliasNode).node : node
  if (table.kind !== 'TableNode') return false
  const name = (table as TableNode).table
  if (writerTables.has(name.identifier.name)) return true
  // MySQL accepts INFORMATION_SCHEMA in any case; Kysely's introspectors write it in lower case.
  return name.schema !== undefined && CATALOG_SCHEMAS.has(name.schema.name.toLowerCase())
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
