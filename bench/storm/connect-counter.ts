/**
 * Counts the TCP connects this process makes, refused or not, by wrapping net.Socket#connect. Both
 * drivers end up there for every connection (pg calls `socket.connect(port, host)`, mysql2
 * `net.connect()`, which calls the same method), so plain Kysely and createDb are counted by the same
 * code, with no proxy in the path to add latency or hide the server's own refusals.
 */
import net from 'node:net'

export interface ConnectCounts {
  /** connect() calls to a TCP port (IPC paths are not counted). */
  attempts: number
  /** Of those, sockets whose TCP handshake completed. */
  established: number
}

export const connectCounts: ConnectCounts = { attempts: 0, established: 0 }

let installed = false

/** Must run before the first connection is opened. */
export function countTcpConnects(): void {
  if (installed) return
  installed = true
  const original = net.Socket.prototype.connect
  const counted = function (this: net.Socket, ...args: unknown[]) {
    if (isTcp(args)) {
      connectCounts.attempts++
      this.once('connect', () => {
        connectCounts.established++
      })
    }
    return Reflect.apply(original, this, args) as net.Socket
  }
  net.Socket.prototype.connect = counted as typeof original
}

/**
 * net.connect() passes its already-normalised arguments as one array; otherwise the first argument is
 * an options object, a port, or an IPC path (a string that is not a number).
 */
function isTcp(args: unknown[]): boolean {
  const first = Array.isArray(args[0]) ? args[0][0] : args[0]
  if (typeof first === 'object' && first !== null) return !('path' in first) || first.path == null
  if (typeof first === 'string') return first.trim() !== '' && !Number.isNaN(Number(first))
  return typeof first === 'number'
}
