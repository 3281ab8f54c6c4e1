import { readdirSync, readFileSync } from 'node:fs'
import type { DatabaseServer } from './local-server.js'

/**
 * Freezes (`SIGSTOP`) or thaws (`SIGCONT`) a server and every process under it, as a frozen VM or
 * stuck storage would: the kernel still accepts connections and acknowledges packets, but nothing
 * answers. A PostgreSQL server is a postmaster plus one process per session, so stopping only the
 * postmaster would leave open sessions working; MariaDB is one process.
 */
export function freezeServer(server: DatabaseServer, signal: 'SIGSTOP' | 'SIGCONT'): void {
  const pid = server.pid
  if (pid === undefined) throw new Error('the server is not running')
  // Parent first when stopping, so it forks no new session meanwhile; children first when resuming.
  const tree = [pid, ...descendants(pid)]
  for (const target of signal === 'SIGSTOP' ? tree : tree.reverse()) {
    try {
      process.kill(target, signal)
    } catch {
      // A session process that exited meanwhile.
    }
  }
}

function descendants(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue
    }
    // "pid (comm) state ppid ...": comm may contain spaces, so parse after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    const list = children.get(ppid) ?? []
    list.push(Number(entry))
    children.set(ppid, list)
  }
  const found: number[] = []
  const queue = [root]
  while (queue.length > 0) {
    const next = children.get(queue.shift() as number) ?? []
    found.push(...next)
    queue.push(...next)
  }
  return found
}
