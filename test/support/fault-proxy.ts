import { once } from 'node:events'
import { createServer, isIPv4, type Server, Socket } from 'node:net'

/**
 * How the proxy treats traffic. `setMode` applies to existing and new connections alike, except
 * `refuse`, which only turns new connections away (existing ones keep forwarding as in `pass`).
 *
 * - `pass`: forward both ways.
 * - `blackhole`: lost packets. Every byte in either direction is dropped, sockets stay open, no FIN or
 *   RST reaches anyone. New connections are accepted but the upstream is not even dialled, so a client
 *   never sees a server greeting.
 * - `stall`: a frozen network or paused server. Nothing is forwarded but everything is buffered, FINs
 *   and RSTs included; returning to `pass` delivers it all in order.
 * - `refuse`: a server down behind a load balancer. New connections are accepted and immediately reset.
 */
export type FaultMode = 'pass' | 'blackhole' | 'stall' | 'refuse'

export interface FaultProxyOptions {
  readonly targetPort: number
  /** Must be an IPv4 loopback address: tests never send traffic off this machine. */
  readonly targetHost?: string
  /** Defaults to a free port chosen by the kernel. */
  readonly listenPort?: number
}

export interface FaultProxyStats {
  /** Client connections accepted by the listener, refused ones included. */
  readonly accepted: number
  /** Of those, how many were reset at once because the mode was `refuse`. */
  readonly refused: number
  /** Client connections whose socket is still open. */
  readonly live: number
  /** Bytes delivered client → server. */
  readonly bytesUp: number
  /** Bytes delivered server → client. */
  readonly bytesDown: number
  /** Bytes thrown away in either direction by `blackhole` (including buffers it found from `stall`). */
  readonly bytesDropped: number
}

export interface FaultProxyTarget {
  readonly host: string
  readonly port: number
}

/** One direction of a proxied connection: what its source sent that its destination has not got yet. */
interface Flow {
  readonly queue: Buffer[]
  /** The source half-closed (FIN); pass that on once the queue is delivered. */
  ended: boolean
  /** The source vanished abruptly (RST, error, connect failure); mirror it as an RST. */
  reset: boolean
}

interface Link {
  readonly client: Socket
  /** Fixed at accept time, so `retarget` only moves new connections (like a DNS flip would). */
  readonly target: FaultProxyTarget
  /** Undefined until the mode first forwards: blackholed and stalled connections do not dial yet. */
  upstream: Socket | undefined
  upstreamReady: boolean
  upstreamClosed: boolean
  clientClosed: boolean
  /** client → server */
  readonly up: Flow
  /** server → client */
  readonly down: Flow
  /** Torn down by cutAll/resetAll/close: whatever still arrives is ignored. */
  cut: boolean
}

const LISTEN_HOST = '127.0.0.1'

/** After a graceful cut, how long a peer gets to send its own FIN before its socket is destroyed. */
const CUT_GRACE_MS = 2_000

/**
 * A TCP proxy on 127.0.0.1 that can cut, reset, stall and blackhole the traffic between a client and a
 * real database server, to reproduce network failures in integration tests. One process, no root, no
 * iptables: the faults are produced by what this proxy does with its own sockets.
 */
export class FaultProxy {
  readonly #server: Server
  readonly #links = new Set<Link>()
  /** Every socket we own, client and upstream, until its 'close': close() must leave nothing open. */
  readonly #sockets = new Set<Socket>()
  #target: FaultProxyTarget
  #mode: FaultMode = 'pass'
  #port = 0
  #closing: Promise<void> | undefined
  #accepted = 0
  #refused = 0
  #live = 0
  #bytesUp = 0
  #bytesDown = 0
  #bytesDropped = 0

  private constructor(target: FaultProxyTarget) {
    this.#target = target
    // allowHalfOpen: a client's FIN must not close our write side before the server's reply is relayed;
    // FINs are forwarded explicitly instead.
    this.#server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => this.#accept(client))
    // Accept errors (e.g. EMFILE) must not crash the test worker; the client side sees its own failure.
    this.#server.on('error', () => {})
  }

  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(loopbackTarget(options.targetPort, options.targetHost))
    await proxy.#listen(options.listenPort ?? 0)
    return proxy
  }

  /** The port clients connect to. */
  get port(): number {
    return this.#port
  }

  get mode(): FaultMode {
    return this.#mode
  }

  /** Where new connections currently go. */
  get target(): FaultProxyTarget {
    return this.#target
  }

  /** Client connections whose socket is still open. */
  get connections(): number {
    return this.#live
  }

  /** `originalUrl` with its host and port replaced by the proxy's; credentials, path and query kept. */
  url(originalUrl: string): string {
    const url = new URL(originalUrl)
    url.hostname = LISTEN_HOST
    url.port = String(this.#port)
    return url.toString()
  }

  setMode(mode: FaultMode): void {
    this.#mode = mode
    if (mode === 'blackhole') {
      // Bytes held by a stall, or waiting for an upstream to finish connecting, are lost with the rest.
      for (const link of this.#links) {
        this.#drop(link.up)
        this.#drop(link.down)
      }
    }
    for (const link of this.#links) this.#flush(link)
  }

  /** New connections go to `port` from now on; existing ones stay where they are. */
  retarget(port: number, host?: string): void {
    this.#target = loopbackTarget(port, host)
  }

  /** Ends every connection on both sides with a FIN, as a server or middlebox closing politely would. */
  cutAll(): void {
    for (const link of this.#links) {
      this.#sever(link)
      endGracefully(link.client)
      if (link.upstream === undefined) continue
      // An upstream still connecting has no session to say goodbye to.
      if (link.upstreamReady) endGracefully(link.upstream)
      else link.upstream.destroy()
    }
  }

  /** Resets every client connection (TCP RST) and closes the upstream side. */
  resetAll(): void {
    for (const link of this.#links) {
      this.#sever(link)
      reset(link.client)
      link.upstream?.destroy()
    }
  }

  stats(): FaultProxyStats {
    return {
      accepted: this.#accepted,
      refused: this.#refused,
      live: this.#live,
      bytesUp: this.#bytesUp,
      bytesDown: this.#bytesDown,
      bytesDropped: this.#bytesDropped,
    }
  }

  /** Stops listening and destroys every socket; resolves once all of them have closed. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown()
    return this.#closing
  }

  async #shutdown(): Promise<void> {
    const listenerClosed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    for (const link of this.#links) this.#sever(link)
    const sockets = [...this.#sockets]
    for (const socket of sockets) socket.destroy()
    await Promise.all([listenerClosed, ...sockets.map((socket) => closed(socket))])
  }

  async #listen(port: number): Promise<void> {
    const server = this.#server
    await new Promise<void>((resolve, reject) => {
      const fail = (error: Error) => reject(error)
      server.once('error', fail)
      server.listen({ host: LISTEN_HOST, port, exclusive: true }, () => {
        server.off('error', fail)
        resolve()
      })
    })
    const address = server.address()
    if (typeof address !== 'object' || address === null) {
      await this.close()
      throw new Error('The fault proxy listener has no TCP address')
    }
    this.#port = address.port
  }

  #track(socket: Socket): void {
    this.#sockets.add(socket)
    // Peers reset and writes hit dead sockets all the time here; an unhandled 'error' would kill the
    // worker. The consequences are handled through 'end' / 'close' and the flow flags.
    socket.on('error', () => {})
    socket.once('close', () => this.#sockets.delete(socket))
  }

  #accept(client: Socket): void {
    this.#accepted++
    this.#track(client)
    if (this.#closing !== undefined) {
      client.destroy()
      return
    }
    if (this.#mode === 'refuse') {
      this.#refused++
      reset(client)
      return
    }
    this.#live++
    const link: Link = {
      client,
      target: this.#target,
      upstream: undefined,
      upstreamReady: false,
      upstreamClosed: false,
      clientClosed: false,
      up: { queue: [], ended: false, reset: false },
      down: { queue: [], ended: false, reset: false },
      cut: false,
    }
    this.#links.add(link)
    client.on('data', (chunk: Buffer) => this.#receive(link, link.up, chunk))
    client.on('end', () => {
      link.up.ended = true
      this.#flush(link)
    })
    client.on('error', () => {
      link.up.reset = true
    })
    client.once('close', () => {
      this.#live--
      link.clientClosed = true
      // A close that was neither FIN nor error: someone destroyed the socket; the server must learn.
      if (!link.up.ended) link.up.reset = true
      this.#flush(link)
      this.#forgetIfDone(link)
    })
    this.#flush(link)
  }

  #dial(link: Link): void {
    if (link.clientClosed && link.up.queue.length === 0) {
      // The client left before we ever dialled: there is nothing to tell a server.
      this.#forgetIfDone(link)
      return
    }
    const upstream = new Socket({ allowHalfOpen: true })
    link.upstream = upstream
    this.#track(upstream)
    upstream.setNoDelay(true)
    upstream.once('connect', () => {
      link.upstreamReady = true
      this.#flush(link)
    })
    upstream.on('data', (chunk: Buffer) => this.#receive(link, link.down, chunk))
    upstream.on('end', () => {
      link.down.ended = true
      this.#flush(link)
    })
    upstream.on('error', () => {
      // Includes ECONNREFUSED when the target is down: the client, already connected to us, gets an RST.
      link.down.reset = true
    })
    upstream.once('close', () => {
      link.upstreamClosed = true
      if (!link.down.ended) link.down.reset = true
      this.#flush(link)
      this.#forgetIfDone(link)
    })
    upstream.connect({ host: link.target.host, port: link.target.port })
  }

  #receive(link: Link, flow: Flow, chunk: Buffer): void {
    if (link.cut) return
    if (this.#mode === 'blackhole') {
      this.#bytesDropped += chunk.length
      return
    }
    flow.queue.push(chunk)
    this.#flush(link)
  }

  /** Delivers whatever the mode allows; called after every event and every mode change. */
  #flush(link: Link): void {
    if (link.cut || this.#mode === 'stall' || this.#mode === 'blackhole') return
    const { client } = link
    if (link.upstream === undefined) this.#dial(link)
    const upstream = link.upstream
    if (upstream !== undefined && link.upstreamReady && !upstream.destroyed) {
      for (const chunk of link.up.queue.splice(0)) {
        this.#bytesUp += chunk.length
        forward(client, upstream, chunk)
      }
      if (link.up.reset) reset(upstream)
      else if (link.up.ended && !upstream.writableEnded) upstream.end()
    }
    if (client.destroyed) {
      link.down.queue.length = 0
      return
    }
    for (const chunk of link.down.queue.splice(0)) {
      this.#bytesDown += chunk.length
      forward(upstream, client, chunk)
    }
    if (link.down.reset) reset(client)
    else if (link.down.ended && !client.writableEnded) client.end()
  }

  /** Marks a link as torn down by us: queues dropped, later bytes and events ignored. */
  #sever(link: Link): void {
    link.cut = true
    link.up.queue.length = 0
    link.down.queue.length = 0
    // A socket paused for backpressure would never read the peer's FIN and so never close.
    link.client.resume()
    link.upstream?.resume()
  }

  #drop(flow: Flow): void {
    for (const chunk of flow.queue) this.#bytesDropped += chunk.length
    flow.queue.length = 0
  }

  #forgetIfDone(link: Link): void {
    if (link.clientClosed && (link.upstream === undefined || link.upstreamClosed)) this.#links.delete(link)
  }
}

/** Starts a proxy in front of `targetPort`, runs `fn`, and always closes the proxy afterwards. */
export async function withProxy<T>(
  targetPort: number,
  fn: (proxy: FaultProxy) => Promise<T> | T,
): Promise<T> {
  const proxy = await FaultProxy.start({ targetPort })
  try {
    return await fn(proxy)
  } finally {
    await proxy.close()
  }
}

/** The port of a `postgres://` / `mysql://` URL, for `FaultProxy.start({ targetPort })`. */
export function portOf(url: string): number {
  const port = Number(new URL(url).port)
  if (!Number.isInteger(port) || port <= 0) throw new Error(`No explicit port in ${url}`)
  return port
}

function loopbackTarget(port: number, host = LISTEN_HOST): FaultProxyTarget {
  if (!isIPv4(host) || !host.startsWith('127.')) {
    throw new Error(`FaultProxy only proxies to IPv4 loopback addresses, not ${host}`)
  }
  if (!Number.isInteger(port) || port <= 0 || port > 65_535) throw new Error(`Invalid target port ${port}`)
  return { host, port }
}

/** Writes with backpressure: a slow destination pauses its source instead of growing our buffers. */
function forward(source: Socket | undefined, destination: Socket, chunk: Buffer): void {
  if (destination.write(chunk) || source === undefined || source.isPaused()) return
  source.pause()
  destination.once('drain', () => source.resume())
}

function reset(socket: Socket): void {
  // resetAndDestroy on an already destroyed socket would emit ERR_SOCKET_CLOSED instead of doing nothing.
  if (!socket.destroyed) socket.resetAndDestroy()
}

function endGracefully(socket: Socket): void {
  if (socket.destroyed) return
  socket.end()
  // The peer normally answers our FIN with its own and the socket closes; one that never does must not
  // keep the connection open until close().
  const timer = setTimeout(() => socket.destroy(), CUT_GRACE_MS).unref()
  socket.once('close', () => clearTimeout(timer))
}

function closed(socket: Socket): Promise<unknown> {
  return socket.closed ? Promise.resolve() : once(socket, 'close')
}
