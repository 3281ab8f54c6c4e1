import { randomBytes } from 'node:crypto'
import type { OwnCluster } from './own-clusters.js'
import { registerSecret } from './secrets.js'
import { type Engine, queryOnce } from './sql.js'

/** A fresh random password for the app user, registered with the leak watch. */
export function newAppPassword(prefix = 'rot'): string {
  const password = `${prefix}${randomBytes(16).toString('hex')}`
  registerSecret(password)
  return password
}

/**
 * Changes the app user's password on an own cluster's writer, as a rotation would: from then on only
 * `password` is accepted for new logins; sessions already open are untouched. Never on the shared
 * clusters: every other test file running at the same time logs in as `app`.
 */
export async function setAppPassword(engine: Engine, cluster: OwnCluster, password: string): Promise<void> {
  if (engine === 'postgres') {
    await queryOnce(engine, cluster.adminWriterUrl, `ALTER ROLE app PASSWORD '${password}'`)
    return
  }
  for (const host of ['127.0.0.1', 'localhost']) {
    await queryOnce(engine, cluster.adminWriterUrl, `ALTER USER 'app'@'${host}' IDENTIFIED BY '${password}'`)
  }
}
