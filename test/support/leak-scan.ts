import { createHash } from 'node:crypto'
import { appendFileSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

// The suite-wide leak watch, the part that needs no Vitest runtime: the record and secret formats, the
// files they travel in (workers are separate processes), and the scanner. Global setup imports this to
// run the final check in the main process; test/support/leak-watch.ts and secrets.ts write the files.

/**
 * The directory the records and secrets are written to. Global setup sets it before any worker starts,
 * and forked workers inherit the main process's environment, so every process of the run (and any child
 * process a test spawns) finds it.
 */
export const LEAK_WATCH_DIR_ENV = 'KYSELY_RESILIENT_LEAK_WATCH_DIR'

/** Shorter values would turn up by accident in unrelated text (`'secret'` in "secrets"). */
export const MIN_SECRET_LENGTH = 8

/** What produced a record's text. */
export type RecordKind =
  /** A file marker: the setup file ran for this test file (proves the watch is active). */
  | 'file'
  /** A db event payload. */
  | 'event'
  /** An error Kysely's `log` reported for a db created through createDb. */
  | 'kysely-error'
  /** An error createDb threw itself (ConfigError, MissingDriverError...). */
  | 'create-error'
  /** The db as printed or serialised right after createDb returned it. */
  | 'db'
  /** A Node process warning (`process.emitWarning`, e.g. a throwing event listener). */
  | 'warning'
  /** Something written to console.warn or console.error. */
  | 'console'
  /** An OpenTelemetry span or metric point a test's in-memory exporter received (test/telemetry). */
  | 'telemetry'

/** One piece of text the library (or the test around it) produced and that must hold no secret. */
export interface LeakRecord {
  readonly kind: RecordKind
  /** How the text was made, e.g. `'retry: JSON.stringify'` or `'util.inspect'`. */
  readonly view: string
  readonly text: string
  /** The test file and test that were current when the record was made (background work may be later). */
  readonly testPath: string | undefined
  readonly testName: string | undefined
}

/** A registered secret. `value` is absent for one too short to check (only its length is kept). */
export interface SecretEntry {
  readonly value?: string
  readonly length: number
  /** Where it came from, e.g. `'createDb config: writer (url)'`, `'cluster password (postgres)'`. */
  readonly source: string
  readonly testPath: string | undefined
}

/** One secret found in one record. Holds no secret text: only its fingerprint and length. */
export interface LeakFinding {
  readonly kind: RecordKind
  readonly view: string
  readonly testPath: string | undefined
  readonly testName: string | undefined
  /** `'raw'`, `'encodeURIComponent'`, `'URL userinfo'` or `'JSON-escaped'`. */
  readonly form: string
  readonly fingerprint: string
  readonly length: number
  readonly source: string
  /** Text around the hit with every known secret replaced by its fingerprint. */
  readonly excerpt: string
}

/** A stable, non-reversible name for a secret, safe to print. */
export function fingerprint(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex').slice(0, 12)}`
}

/**
 * The ways a secret can show up in text: as is, percent-encoded (it was in a connection URL; WHATWG's
 * userinfo encoding differs slightly from encodeURIComponent's, and lower-case hex is as valid), and
 * escaped inside a JSON or inspected string.
 */
export function secretForms(secret: string): ReadonlyArray<{ readonly form: string; readonly text: string }> {
  const forms = new Map<string, string>()
  const add = (form: string, text: string) => {
    if (text.length > 0 && !forms.has(text)) forms.set(text, form)
  }
  add('raw', secret)
  add('encodeURIComponent', encodeURIComponent(secret))
  add(
    'encodeURIComponent',
    encodeURIComponent(secret).replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()),
  )
  try {
    const url = new URL('x://host')
    url.password = secret
    add('URL userinfo', url.password)
  } catch {
    // A value URL cannot hold has no URL form.
  }
  add('JSON-escaped', JSON.stringify(secret).slice(1, -1))
  return [...forms].map(([text, form]) => ({ form, text }))
}

/**
 * Every (record, secret) pair where the record's text contains the secret in any of its forms. Pure:
 * records and secrets in, findings out. Secrets shorter than MIN_SECRET_LENGTH are ignored.
 */
export function findLeaks(
  records: ReadonlyArray<LeakRecord>,
  secrets: ReadonlyArray<SecretEntry>,
): LeakFinding[] {
  const checked = checkableSecrets(secrets)
  if (checked.length === 0 || records.length === 0) return []
  // Many records are identical (every db prints alike): search each distinct text once, and first the
  // whole corpus at once, so a clean run costs one pass per secret form rather than one per record.
  const byText = new Map<string, LeakRecord[]>()
  for (const record of records) {
    const list = byText.get(record.text)
    if (list === undefined) byText.set(record.text, [record])
    else list.push(record)
  }
  const texts = [...byText.keys()]
  const corpus = texts.join('\u0000')
  const allForms = checked.flatMap((secret) => secretForms(secret.value))
  const findings: LeakFinding[] = []
  for (const secret of checked) {
    for (const { form, text: needle } of secretForms(secret.value)) {
      if (!corpus.includes(needle)) continue
      for (const text of texts) {
        const at = text.indexOf(needle)
        if (at === -1) continue
        for (const record of byText.get(text) ?? []) {
          findings.push({
            kind: record.kind,
            view: record.view,
            testPath: record.testPath,
            testName: record.testName,
            form,
            fingerprint: fingerprint(secret.value),
            length: secret.value.length,
            source: secret.source,
            excerpt: redactedExcerpt(text, at, needle.length, allForms, checked),
          })
        }
      }
    }
  }
  return findings
}

/** Secrets worth searching for, each value once (the first source named wins). */
function checkableSecrets(secrets: ReadonlyArray<SecretEntry>): Array<SecretEntry & { value: string }> {
  const unique = new Map<string, SecretEntry & { value: string }>()
  for (const secret of secrets) {
    if (secret.value === undefined || secret.value.length < MIN_SECRET_LENGTH) continue
    if (!unique.has(secret.value)) unique.set(secret.value, { ...secret, value: secret.value })
  }
  return [...unique.values()]
}

/**
 * Up to 60 characters either side of a hit. Every secret form is replaced in the whole text before the
 * window is cut, so no secret (nor a fragment of one at the window's edge) can be printed.
 */
function redactedExcerpt(
  text: string,
  at: number,
  length: number,
  forms: ReadonlyArray<{ readonly text: string }>,
  secrets: ReadonlyArray<{ readonly value: string }>,
): string {
  const marker = '\u0001HIT\u0001'
  let redacted = `${text.slice(0, at)}${marker}${text.slice(at + length)}`
  const fingerprints = new Map(
    secrets.flatMap((secret) =>
      secretForms(secret.value).map(({ text }) => [text, fingerprint(secret.value)]),
    ),
  )
  // Longest first, so a form that contains another is replaced whole.
  for (const { text: form } of [...forms].sort((a, b) => b.text.length - a.text.length)) {
    redacted = redacted.replaceAll(form, `<secret ${fingerprints.get(form) ?? '?'}>`)
  }
  const hit = redacted.indexOf(marker)
  const start = Math.max(0, hit - 60)
  const end = Math.min(redacted.length, hit + marker.length + 60)
  const window = redacted.slice(start, end).replace(marker, '<<LEAK>>')
  // A window edge may cut through a placeholder; that only shortens a fingerprint, never reveals a secret.
  return `${start > 0 ? '...' : ''}${window.replace(/\s+/g, ' ')}${end < redacted.length ? '...' : ''}`
}

/** Appends one JSON line; synchronous so nothing is lost when a worker exits right after. */
export function appendJsonLine(dir: string, file: string, value: unknown): void {
  appendFileSync(join(dir, file), `${JSON.stringify(value)}\n`, { mode: 0o600 })
}

/** Everything every process of the run wrote to the directory. */
export function readLeakWatchDir(dir: string): { records: LeakRecord[]; secrets: SecretEntry[] } {
  const records: LeakRecord[] = []
  const secrets: SecretEntry[] = []
  for (const name of readdirSync(dir).sort()) {
    const target = name.startsWith('records-') ? records : name.startsWith('secrets-') ? secrets : undefined
    if (target === undefined) continue
    for (const line of readFileSync(join(dir, name), 'utf8').split('\n')) {
      // A worker killed mid-write leaves a partial last line; the lines before it still count.
      if (line.length === 0) continue
      try {
        ;(target as unknown[]).push(JSON.parse(line))
      } catch {
        records.push({
          kind: 'console',
          view: `unreadable line in ${name}`,
          text: line,
          testPath: undefined,
          testName: undefined,
        })
      }
    }
  }
  return { records, secrets }
}

/** Counts per record kind, for the summary and the plausibility check. */
export function countByKind(records: ReadonlyArray<LeakRecord>): Record<RecordKind, number> {
  const counts: Record<RecordKind, number> = {
    file: 0,
    event: 0,
    'kysely-error': 0,
    'create-error': 0,
    db: 0,
    warning: 0,
    console: 0,
    telemetry: 0,
  }
  for (const record of records) counts[record.kind] += 1
  return counts
}

/** A human-readable report of the findings, one block per distinct (secret, record kind, test). */
export function formatFindings(findings: ReadonlyArray<LeakFinding>, root: string): string {
  const seen = new Set<string>()
  const blocks: string[] = []
  for (const finding of findings) {
    const file = finding.testPath?.startsWith(root)
      ? finding.testPath.slice(root.length + 1)
      : finding.testPath
    const key = `${finding.fingerprint}|${finding.kind}|${finding.view}|${file}|${finding.testName}|${finding.form}`
    if (seen.has(key)) continue
    seen.add(key)
    blocks.push(
      [
        `- ${finding.kind} (${finding.view}) contains secret ${finding.fingerprint} (length ${finding.length}, ${finding.form} form; from ${finding.source})`,
        `  test file: ${file ?? '(unknown)'}`,
        `  test:      ${finding.testName ?? '(none current)'}`,
        `  excerpt:   ${finding.excerpt}`,
      ].join('\n'),
    )
  }
  return blocks.join('\n')
}

/**
 * Every secret a createDb config carries, wherever it sits: endpoint `password` fields and passwords
 * inside connection URLs (userinfo or a `password` query parameter), for a single writer, a writer
 * list and readers, and fixed AWS keys in an `auth` (top-level or per endpoint). Anything malformed is
 * searched as far as it goes; validating is createDb's job. Secrets an auth source returns at runtime
 * (tokens, Secrets Manager values) are not in the config: tests register those themselves.
 */
export function configSecrets(config: unknown): Array<{ readonly value: string; readonly setting: string }> {
  if (typeof config !== 'object' || config === null) return []
  const { writer, readers } = config as { writer?: unknown; readers?: unknown }
  const endpoints = (value: unknown, setting: string): Array<[unknown, string]> =>
    Array.isArray(value) ? value.map((item, index) => [item, `${setting}[${index}]`]) : [[value, setting]]
  const found: Array<{ value: string; setting: string }> = [
    ...authSecrets((config as { auth?: unknown }).auth, 'auth'),
  ]
  for (const [endpoint, setting] of [...endpoints(writer, 'writer'), ...endpoints(readers, 'readers')]) {
    if (typeof endpoint === 'string') {
      for (const value of urlSecrets(endpoint)) found.push({ value, setting })
    } else if (typeof endpoint === 'object' && endpoint !== null) {
      const { url, password, auth } = endpoint as { url?: unknown; password?: unknown; auth?: unknown }
      found.push(...authSecrets(auth, `${setting}.auth`))
      if (typeof password === 'string' && password !== '')
        found.push({ value: password, setting: `${setting}.password` })
      if (typeof url === 'string') {
        for (const value of urlSecrets(url)) found.push({ value, setting: `${setting}.url` })
      }
    }
  }
  return found
}

/** Fixed AWS credentials given to IAM auth (a credentials function is opaque until called). */
function authSecrets(auth: unknown, setting: string): Array<{ value: string; setting: string }> {
  const credentials = (auth as { credentials?: unknown } | undefined)?.credentials
  if (typeof credentials !== 'object' || credentials === null) return []
  const found: Array<{ value: string; setting: string }> = []
  for (const key of ['secretAccessKey', 'sessionToken'] as const) {
    const value = (credentials as Record<string, unknown>)[key]
    if (typeof value === 'string' && value !== '')
      found.push({ value, setting: `${setting}.credentials.${key}` })
  }
  return found
}

/** Passwords in a connection URL, percent-decoded; found by hand when the URL does not parse. */
export function urlSecrets(text: string): string[] {
  const found: string[] = []
  try {
    const url = new URL(text)
    if (url.password !== '') found.push(percentDecoded(url.password))
    for (const value of url.searchParams.getAll('password')) if (value !== '') found.push(value)
  } catch {
    // e.g. a password with spaces, which WHATWG URL rejects: scheme://user:password@host..., where the
    // last '@' before the path ends the user info.
    const authority = /^[^:/?#\s]+:\/\/([^/?#]*)/.exec(text)?.[1] ?? ''
    const userinfo = authority.includes('@') ? authority.slice(0, authority.lastIndexOf('@')) : ''
    const colon = userinfo.indexOf(':')
    if (colon !== -1 && colon < userinfo.length - 1) found.push(percentDecoded(userinfo.slice(colon + 1)))
    const query = /[?&]password=([^&#]*)/.exec(text)?.[1]
    if (query !== undefined && query !== '') found.push(percentDecoded(query.replaceAll('+', ' ')))
  }
  return found
}

function percentDecoded(value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    // A stray '%': the text as written is what would leak.
    return value
  }
}
