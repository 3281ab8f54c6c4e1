import { linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { createServer, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { trackDirectory } from './cleanup.js'
import { pollUntil } from './poll.js'

// Why not `listen(0)`: the port it returns is free only until the socket closes. Test files run in
// several worker processes (and a developer may run a second suite beside CI), each starting servers
// concurrently; any of them — or an outgoing client socket, which also takes ports from the kernel's
// ephemeral range — could take the port before our server binds it ("Address already in use").
// So ports come from below the ephemeral range, where the kernel never hands out ports on its own,
// and each one is claimed across processes by a lock file holding the claimant's pid (a lock whose
// process is gone is taken over), then checked to be bindable. The lock files go with the process's
// servers at cleanup (cleanup.ts: on exit, on a signal, or by its watchdog after a SIGKILL), so a
// port is free for others only once the server on it is gone.
const LOCK_DIR = join(tmpdir(), 'kysely-resilient-test-ports')
const claimed = new Set<number>()
const [RANGE_LOW, RANGE_HIGH] = testPortRange()

/** A TCP port on 127.0.0.1 that no other test process has claimed and that is bindable now. */
export async function getFreePort(): Promise<number> {
  mkdirSync(LOCK_DIR, { recursive: true })
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = RANGE_LOW + Math.floor(Math.random() * (RANGE_HIGH - RANGE_LOW))
    if (claimed.has(port) || !claimPort(port)) continue
    if (await isBindable(port)) return port
    // Something outside the test suites holds it: keep the claim (so nobody else tries it) and move on.
  }
  throw new Error(`Could not claim a free TCP port on 127.0.0.1 in ${RANGE_LOW}-${RANGE_HIGH}`)
}

/** Below the kernel's ephemeral port range (Linux: /proc/sys/net/ipv4/ip_local_port_range). */
function testPortRange(): [number, number] {
  let ephemeralLow = 32_768
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)
    if (low !== undefined && Number.isInteger(Number(low))) ephemeralLow = Number(low)
  } catch {
    // Not Linux: the usual default.
  }
  const high = Math.max(ephemeralLow, 12_000)
  return [high - 10_000, high]
}

/**
 * Claims `port` for this process: creates its lock file holding our pid in one step (written aside,
 * then hard-linked into place, which fails if the file exists), so no reader ever sees it empty. A
 * lock whose process is gone (killed past even the cleanup watchdog) is taken over.
 */
export function claimPort(port: number): boolean {
  const file = join(LOCK_DIR, String(port))
  const written = `${file}.${process.pid}.new`
  writeFileSync(written, String(process.pid))
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        linkSync(written, file)
        claimed.add(port)
        trackDirectory(file)
        return true
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        if (!removeIfStale(file)) return false
      }
    }
    return false
  } finally {
    unlinkSync(written)
  }
}

/** Removes a lock whose process is gone; false when its process lives (or it cannot tell). */
function removeIfStale(file: string): boolean {
  let pid: number
  let inode: number
  try {
    inode = statSync(file).ino
    pid = Number(readFileSync(file, 'utf8'))
  } catch {
    return true // removed meanwhile: try again
  }
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') return false
  }
  try {
    // Still the stale file, not one another process just put in its place.
    if (statSync(file).ino === inode) unlinkSync(file)
  } catch {
    // Gone already.
  }
  return true
}

function isBindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.unref()
    server.once('error', () => resolve(false))
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/** Resolves true when something accepts a TCP connection on 127.0.0.1:port, false when refused. */
export function isPortOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket()
    const done = (open: boolean) => {
      socket.destroy()
      resolve(open)
    }
    socket.setTimeout(1_000, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
    socket.connect(port, host)
  })
}

export async function waitForPort(port: number, timeoutMs = 30_000, host = '127.0.0.1'): Promise<void> {
  await pollUntil(async () => ((await isPortOpen(port, host)) ? true : undefined), {
    timeoutMs,
    what: `${host}:${port} to accept TCP connections`,
  })
}

export async function waitForPortClosed(port: number, timeoutMs = 30_000, host = '127.0.0.1'): Promise<void> {
  await pollUntil(async () => ((await isPortOpen(port, host)) ? undefined : true), {
    timeoutMs,
    what: `${host}:${port} to stop accepting TCP connections`,
  })
}
