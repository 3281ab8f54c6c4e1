import { connect, type Socket } from 'node:net'
import { isUnixSocket } from '../host/unix-socket.js'

/** PostgreSQL's CancelRequest code (protocol 3.0): 1234 in the high 16 bits, 5678 in the low. */
const CANCEL_REQUEST_CODE = 80877102

/**
 * Sends a protocol-level CancelRequest for the session `processId`/`secretKey` (the BackendKeyData
 * the server, or the proxy in front of it, gave that connection) on a fresh socket, and closes it.
 *
 * Behind PgBouncer or RDS Proxy, `select pg_cancel_backend(pid)` cannot work: the pid a client sees
 * is the proxy's own key, not a server process, and a SQL statement runs on whichever server
 * session the proxy lends, so it would at best do nothing and at worst signal an unrelated
 * session. A CancelRequest carries the key the proxy handed out, and the proxy forwards it to the
 * server session that runs this client's statement.
 *
 * The server (or proxy) never answers a CancelRequest; it closes the socket once it has dealt with
 * it. Like libpq's PQcancel, this waits for that close rather than hanging up first: PgBouncer 1.18
 * was seen to abort (FATAL "bad client state") when the cancelling client and then the cancelled
 * one went away while it was still forwarding the request. `timeoutMs` bounds the whole exchange.
 */
export function sendCancelRequest(
  host: string | undefined,
  port: number,
  processId: number,
  secretKey: number,
  timeoutMs: number,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const packet = Buffer.alloc(16)
    packet.writeInt32BE(16, 0)
    packet.writeInt32BE(CANCEL_REQUEST_CODE, 4)
    packet.writeInt32BE(processId, 8)
    packet.writeInt32BE(secretKey, 12)
    const socket: Socket =
      host !== undefined && isUnixSocket(host)
        ? connect(`${host}/.s.PGSQL.${port}`)
        : connect({ host: host ?? 'localhost', port })
    let sent = false
    const timer = setTimeout(() => {
      socket.destroy()
      // Written but not yet acknowledged by a close: the request is out, the peer is slow to hang up.
      if (sent) resolve()
      else reject(new Error(`could not send a cancel request within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once('error', (error) => {
      clearTimeout(timer)
      socket.destroy()
      if (sent) resolve()
      else reject(error)
    })
    socket.once('close', () => {
      clearTimeout(timer)
      resolve()
    })
    // Nothing is ever sent back; reading lets the peer's close arrive as 'end' and then 'close'.
    socket.resume()
    socket.once('connect', () => {
      socket.write(packet, () => {
        sent = true
      })
    })
  })
}

/**
 * Reads Kysely's control statement, `select pg_cancel_backend(<pid>)` or
 * `select pg_terminate_backend(<pid>)`, into the session it names and whether it asks for a kill.
 * The pid is BackendKeyData's signed 32-bit process id: a proxy's random key is negative half the time.
 */
export function parseControlStatement(
  sql: string,
): { readonly processId: number; readonly kill: boolean } | undefined {
  const match = /^select pg_(cancel|terminate)_backend\((-?\d+)\)$/.exec(sql)
  if (match === null) return undefined
  return { processId: Number(match[2]), kill: match[1] === 'terminate' }
}
