import { createServer, Socket } from 'node:net'
import { pollUntil } from './poll.js'

// Ports handed out by this process. The kernel may give the same ephemeral port to two back-to-back
// `listen(0)` calls once the first socket is closed, and we start several servers concurrently, so
// refuse to hand the same port out twice.
const handedOut = new Set<number>()

/** A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close). */
export async function getFreePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await bindEphemeralPort()
    if (!handedOut.has(port)) {
      handedOut.add(port)
      return port
    }
  }
  throw new Error('Could not find a free TCP port on 127.0.0.1 that was not already handed out')
}

function bindEphemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : undefined
      server.close(() =>
        port === undefined ? reject(new Error('listen(0) returned no port')) : resolve(port),
      )
    })
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
