import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Engine } from './sql.js'

/** The repository root: the child process resolves `pg` / `mysql2` from its node_modules. */
const root = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Kills the sessions from a child process while this process's event loop is blocked, as if the
 * container were frozen: when the next invocation starts, the pool has not yet seen the sockets
 * close, exactly like a thawed Lambda whose server closed its sessions meanwhile.
 */
export function killWhileFrozen(engine: Engine, adminUrl: string, ids: readonly number[]): void {
  const script =
    engine === 'postgres'
      ? `const pg = require('pg')
const c = new pg.Client({ connectionString: process.env.URL })
const ids = JSON.parse(process.env.IDS)
;(async () => {
  await c.connect()
  await c.query('select pg_terminate_backend(pid) from pg_stat_activity where pid = any($1)', [ids])
  for (let i = 0; i < 200; i++) {
    const { rows } = await c.query('select count(*)::int as n from pg_stat_activity where pid = any($1)', [ids])
    if (rows[0].n === 0) break
    await new Promise((r) => setTimeout(r, 25))
  }
  await c.end()
})().catch((e) => { console.error(e); process.exit(1) })`
      : `const mysql = require('mysql2/promise')
const ids = JSON.parse(process.env.IDS)
;(async () => {
  const c = await mysql.createConnection({ uri: process.env.URL })
  for (const id of ids) await c.query('KILL ' + Number(id)).catch(() => {})
  for (let i = 0; i < 200; i++) {
    const [rows] = await c.query('select count(*) as n from information_schema.processlist where id in (?)', [ids])
    if (Number(rows[0].n) === 0) break
    await new Promise((r) => setTimeout(r, 25))
  }
  await c.end()
})().catch((e) => { console.error(e); process.exit(1) })`
  const result = spawnSync(process.execPath, ['-e', script], {
    cwd: root,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', URL: adminUrl, IDS: JSON.stringify(ids) },
    timeout: 20_000,
  })
  if (result.status !== 0) throw new Error(`killing sessions failed: ${result.stderr}${result.stdout}`)
}
