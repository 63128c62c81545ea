// mesh/deno-front.ts — what Deno.serve lacks: a deadline for the request head. Deno's HTTP server has no header
// timeout and no connection limit, so a client sending its headers a byte at a time holds a connection forever, and
// a few hundred of them hold the worker. On Deno each worker's port is therefore this small TCP front: it reads one
// request head within HTTP_HEADERS_TIMEOUT_MS (else 408) and HTTP_MAX_HEADER_BYTES (else 431), then passes the
// connection, head and all, to Deno.serve on a loopback port and relays the bytes both ways. The head is given
// `Connection: close`, so a connection carries one request and no second head can arrive unwatched; the whole
// exchange ends by HTTP_REQUEST_TIMEOUT_MS. Bytes that cannot start an HTTP/1 request (TLS on the plain port) are
// passed on at once, for Deno's own parser to refuse.
import type { HttpLimits } from "./http-rules.ts"

type Conn = {
  read(p: Uint8Array): Promise<number | null>
  write(p: Uint8Array): Promise<number>
  closeWrite(): Promise<void>
  close(): void
}
type Listener = AsyncIterable<Conn> & { addr: { port: number }; close(): void }
declare const Deno: {
  listen(o: { port: number; hostname: string }): Listener
  connect(o: { hostname: string; port: number }): Promise<Conn>
}

export type Front = { port: number; close(): void }

const REASONS: Record<number, string> = { 408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable" }

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)
const text = (b: Uint8Array) => {
  let s = ""
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192))
  return s
}
const concat = (a: Uint8Array, b: Uint8Array) => {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

function answer(status: number, error: string): Uint8Array {
  const body = JSON.stringify({ status, error })
  return bytes(
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Bad Request"}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
  )
}

/** Index just past the blank line ending the head (CRLF CRLF, or a bare LF LF, which RFC 9112 lets a server accept). */
function headEnd(b: Uint8Array, from: number): number {
  for (let i = Math.max(0, from); i < b.length; i++) {
    if (b[i] !== 10) continue
    if (b[i + 1] === 10) return i + 2
    if (b[i + 1] === 13 && b[i + 2] === 10) return i + 3
  }
  return -1
}

// tchar (RFC 9110): the first byte of any method
const TOKEN_START = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/

/** The head with its connection-management headers replaced by `Connection: close`. */
function oneRequest(head: Uint8Array): Uint8Array {
  const lines = text(head)
    .replace(/\r?\n\r?\n$/, "")
    .split(/\r?\n/)
  const kept = lines.filter((l, i) => i === 0 || !/^(connection|keep-alive|proxy-connection|upgrade)[ \t]*:/i.test(l))
  return bytes(`${kept.join("\r\n")}\r\nconnection: close\r\n\r\n`)
}

const closeQuietly = (c: Conn | undefined) => {
  try {
    c?.close()
  } catch {}
}

async function writeAll(c: Conn, b: Uint8Array) {
  for (let at = 0; at < b.length; ) at += await c.write(b.subarray(at))
}

/** Copies until `from` ends; then half-closes `to` (the request is complete) or, with `closeBoth`, ends both. */
async function pipe(from: Conn, to: Conn, closeBoth: boolean, done: () => void) {
  const buf = new Uint8Array(16 * 1024)
  try {
    for (let n = await from.read(buf); n !== null; n = await from.read(buf)) await writeAll(to, buf.subarray(0, n))
    if (!closeBoth) await to.closeWrite()
  } catch {
    // either side went away: the exchange is over
  } finally {
    if (closeBoth) done()
  }
}

/** Listens on `port`/`hostname` and hands each connection's one request to the server on 127.0.0.1:`target`. */
export function denoFront(o: {
  port: number
  hostname: string
  target: number
  limits: HttpLimits
  onRefused?(status: number, why: string): void
}): Front {
  const { limits } = o
  const listener = Deno.listen({ port: o.port, hostname: o.hostname })
  const open = new Set<Conn>()

  async function serveOne(client: Conn) {
    const refuse = async (status: number, why: string) => {
      o.onRefused?.(status, why)
      await writeAll(client, answer(status, why)).catch(() => {})
    }
    let head = new Uint8Array(0)
    let end = -1
    let timer: ReturnType<typeof setTimeout> | undefined
    const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), limits.headersTimeoutMs)))
    try {
      while (end < 0 && !(head.length > 0 && !TOKEN_START.test(String.fromCharCode(head[0]!)))) {
        const chunk = new Uint8Array(8192)
        const n = await Promise.race([client.read(chunk), late])
        if (n === "late") return await refuse(408, "request headers not received in time")
        if (n === null) return
        head = concat(head, chunk.subarray(0, n))
        end = headEnd(head, head.length - n - 2)
        if ((end < 0 ? head.length : end) > limits.maxHeaderBytes) return await refuse(431, "request line and headers too large")
      }
    } finally {
      clearTimeout(timer)
    }
    const first = end < 0 ? head : concat(oneRequest(head.subarray(0, end)), head.subarray(end))
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: o.target }).catch(() => undefined)
    if (!upstream) return await refuse(503, "the worker's HTTP server is not accepting connections")
    const lifetime = setTimeout(() => (closeQuietly(client), closeQuietly(upstream)), limits.requestTimeoutMs)
    const done = () => (closeQuietly(client), closeQuietly(upstream))
    try {
      await writeAll(upstream, first)
      await Promise.all([pipe(client, upstream, false, done), pipe(upstream, client, true, done)])
    } catch {
      done()
    } finally {
      clearTimeout(lifetime)
    }
  }

  ;(async () => {
    for await (const conn of listener) {
      if (open.size >= limits.maxConnections) {
        closeQuietly(conn)
        continue
      }
      open.add(conn)
      serveOne(conn)
        .catch(() => {})
        .finally(() => (open.delete(conn), closeQuietly(conn)))
    }
  })().catch(() => {}) // the listener was closed
  return {
    port: listener.addr.port,
    close() {
      closeQuietly(listener as unknown as Conn)
      for (const c of open) closeQuietly(c)
    },
  }
}
