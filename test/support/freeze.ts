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
const SOCKETS_CLOSED = String.raw`
// Gone from the server's session list is not yet closed here: on a busy machine the kernel may
// deliver the loopback FIN (and the error before it) to this process's sockets later. Wait until
// none of the frozen process's sockets to the server is still ESTABLISHED (they are in CLOSE_WAIT:
// everything the server sent is in the receive buffer), so the test sees what a thawed Lambda sees.
const fs = require('fs')
async function socketsClosedByServer() {
  const inodes = new Set()
  for (const fd of fs.readdirSync('/proc/' + process.env.PARENT + '/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync('/proc/' + process.env.PARENT + '/fd/' + fd))
      if (m) inodes.add(m[1])
    } catch {}
  }
  const port = Number(process.env.PORT).toString(16).toUpperCase().padStart(4, '0')
  for (let i = 0; i < 200; i++) {
    let open = 0
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      let text = ''
      try { text = fs.readFileSync(table, 'utf8') } catch { continue }
      for (const line of text.split('\n').slice(1)) {
        const f = line.trim().split(/\s+/)
        if (f.length < 10) continue
        if (f[2].endsWith(':' + port) && f[3] === '01' && inodes.has(f[9])) open++
      }
    }
    if (open === 0) return
    await new Promise((r) => setTimeout(r, 10))
  }
}
`

export function killWhileFrozen(engine: Engine, adminUrl: string, ids: readonly number[]): void {
  const script =
    engine === 'postgres'
      ? `${SOCKETS_CLOSED}const pg = require('pg')
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
  if (fs.existsSync('/proc/net/tcp')) await socketsClosedByServer()
})().catch((e) => { console.error(e); process.exit(1) })`
      : `${SOCKETS_CLOSED}const mysql = require('mysql2/promise')
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
  if (fs.existsSync('/proc/net/tcp')) await socketsClosedByServer()
})().catch((e) => { console.error(e); process.exit(1) })`
  const result = spawnSync(process.execPath, ['-e', script], {
    cwd: root,
    encoding: 'utf8',
    env: {
      PATH: process.env.PATH ?? '',
      URL: adminUrl,
      IDS: JSON.stringify(ids),
      PARENT: String(process.pid),
      PORT: new URL(adminUrl).port,
    },
    timeout: 20_000,
  })
  if (result.status !== 0) throw new Error(`killing sessions failed: ${result.stderr}${result.stdout}`)
}
