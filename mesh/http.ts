// mesh/http.ts — one `serve(fetch)` for Node and Deno, so a worker's itty-router runs unchanged on both,
// plus the body reader every JSON endpoint uses (415, 413, 400 as values, never a crash).
//
// Whatever a client sends — a malformed Host, an absolute or authority request target, bad framing, TLS bytes on the
// plain port, a body shorter than announced, headers that never end — gets a 4xx or a closed connection, and the
// worker keeps serving: every failure of one request stays inside that request.
import { StatusError } from "itty-router"
import { envInt, isDeno } from "./env.ts"

export type FetchHandler = (request: Request) => Response | Promise<Response>
export type Server = { port: number; close(): Promise<void> }

/** What one client may cost a worker; each has an env variable (defaults in brackets). */
export type HttpLimits = {
  /** the request line and headers must arrive within this (HTTP_HEADERS_TIMEOUT_MS, 10 s): a slow client is cut off */
  headersTimeoutMs: number
  /** the whole request, body included (HTTP_REQUEST_TIMEOUT_MS, 30 s) */
  requestTimeoutMs: number
  /** an idle keep-alive connection is closed after this (5 s) */
  keepAliveTimeoutMs: number
  /** request line + headers (HTTP_MAX_HEADER_BYTES, 16 KiB): more is answered 431 */
  maxHeaderBytes: number
  /** connections open at once (HTTP_MAX_CONNECTIONS, 1024); past it new ones are closed at once */
  maxConnections: number
}

export const httpLimits = (): HttpLimits => ({
  headersTimeoutMs: envInt("HTTP_HEADERS_TIMEOUT_MS", 10_000),
  requestTimeoutMs: envInt("HTTP_REQUEST_TIMEOUT_MS", 30_000),
  keepAliveTimeoutMs: 5_000,
  maxHeaderBytes: envInt("HTTP_MAX_HEADER_BYTES", 16 * 1024),
  maxConnections: envInt("HTTP_MAX_CONNECTIONS", 1024),
})

export type ServeOptions = {
  port?: number
  hostname?: string
  limits?: Partial<HttpLimits>
  /** a request refused before it reached the router (status 400/405/408/431…, and why): for logs and metrics */
  onRefused?(status: number, why: string): void
  /** the handler itself failed (a bug): answered 500 */
  onError?(err: unknown): void
}

declare const Deno: {
  serve(
    opts: { port: number; hostname: string; onListen?: (addr: { port: number }) => void; onError?: (err: unknown) => Response },
    handler: (r: Request) => Response | Promise<Response>,
  ): { shutdown(): Promise<void>; finished: Promise<void> }
}

const problem = (status: number, error: string, headers: Record<string, string> = {}) => Response.json({ status, error }, { status, headers })

/**
 * A Host header as RFC 9110 allows it: a registered name, IPv4 or bracketed IPv6 literal, and an optional port.
 * Anything else (`a b`, `a@b`, a second Host) is a 400: such a request may be a smuggling attempt or a confused proxy.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]{2,45}(?:%25[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9._~!$&'()*+,;=-]*(?:%[0-9A-Fa-f]{2}[A-Za-z0-9._~!$&'()*+,;=-]*)*)(?::[0-9]{0,5})?$/

/**
 * The path and query of a request target (RFC 9112 §3.2), or why it is refused: origin-form (`/path?q`) as is,
 * absolute-form (`http://host/path`, what proxies send) reduced to its path; authority-form (`host:443`, CONNECT only)
 * and asterisk-form (`*`, server-wide OPTIONS) name no resource here.
 */
export function requestTarget(target: string): { path: string } | { status: number; error: string } {
  if (target.startsWith("/")) return { path: target }
  if (target === "*") return { status: 400, error: "the asterisk request target (server-wide OPTIONS) is not supported; ask for a path" }
  if (/^https?:\/\//i.test(target)) {
    try {
      const u = new URL(target)
      return { path: `${u.pathname}${u.search}` }
    } catch {
      return { status: 400, error: "malformed absolute request target" }
    }
  }
  return { status: 400, error: "the request target must be a path (origin-form) or an absolute http URL" }
}

/** The reason a Host header is refused, or undefined when it is acceptable. */
export function hostProblem(values: string[] | undefined): string | undefined {
  // HTTP/1.0 made Host optional, but every client of the last 25 years sends it, and Deno cannot tell the versions
  // apart: one rule for both runtimes
  if (!values || values.length === 0) return "missing Host header"
  if (values.length > 1) return "more than one Host header"
  return HOST.test(values[0]!) ? undefined : "malformed Host header"
}

/** Serves `fetch` on `port` (0 = any free port); resolves once listening, with the real port. */
export async function serve(fetch: FetchHandler, o: ServeOptions = {}): Promise<Server> {
  const { port = 0, hostname = "0.0.0.0" } = o
  const limits = { ...httpLimits(), ...o.limits }
  const guarded = async (request: Request) => {
    try {
      return await fetch(request)
    } catch (err) {
      o.onError?.(err)
      return problem(500, "internal error")
    }
  }
  return isDeno ? serveDeno(guarded, port, hostname, limits, o) : serveNode(guarded, port, hostname, limits, o)
}

async function serveDeno(guarded: FetchHandler, port: number, hostname: string, limits: HttpLimits, o: ServeOptions): Promise<Server> {
  // Deno's own HTTP stack refuses broken framing before a request reaches us; it is more lenient than Node's about
  // the Host header (its URL is built from it) and header size, so those are checked here, with the same answers
  const checked = (request: Request): Response | Promise<Response> => {
    const refuse = (status: number, why: string) => (o.onRefused?.(status, why), problem(status, why))
    const host = request.headers.get("host")
    const badHost = hostProblem(host === null ? undefined : [host])
    if (badHost) return refuse(400, badHost)
    try {
      new URL(request.url)
    } catch {
      return refuse(400, "malformed Host header")
    }
    let size = 0
    for (const [k, v] of request.headers) size += k.length + v.length + 4
    if (size > limits.maxHeaderBytes) return refuse(431, "request line and headers too large")
    return guarded(request)
  }
  let bound = port
  let close: () => Promise<void> = async () => {}
  await new Promise<void>((resolve) => {
    const server = Deno.serve(
      {
        port,
        hostname,
        onListen: (a) => ((bound = a.port), resolve()),
        onError: (err) => (o.onError?.(err), problem(500, "internal error")),
      },
      checked,
    )
    close = () => server.shutdown()
  })
  return { port: bound, close: () => close() }
}

type NodeRequest = import("node:http").IncomingMessage
type NodeResponse = import("node:http").ServerResponse
type Socket = import("node:stream").Duplex

const REASONS: Record<number, string> = { 400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large" }

/** A whole answer written straight to the socket, for requests the HTTP parser refused (no response object exists). */
function rawAnswer(socket: Socket, status: number, error: string) {
  const body = JSON.stringify({ status, error })
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Bad Request"}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  )
}

/** What the parser's error codes mean for the client. */
function clientErrorStatus(code: string | undefined): { status: number; why: string } {
  if (code === "HPE_HEADER_OVERFLOW") return { status: 431, why: "request line and headers too large" }
  if (code === "ERR_HTTP_REQUEST_TIMEOUT" || code === "HPE_HEADERS_TIMEOUT") return { status: 408, why: "request not received in time" }
  if (code === "HPE_INVALID_METHOD") return { status: 400, why: "unknown method" }
  if (code === "HPE_INVALID_VERSION") return { status: 400, why: "unsupported HTTP version" }
  if (code === "HPE_UNEXPECTED_CONTENT_LENGTH" || code === "HPE_INVALID_CONTENT_LENGTH" || code === "HPE_INVALID_TRANSFER_ENCODING") {
    return { status: 400, why: "conflicting or invalid Content-Length / Transfer-Encoding" }
  }
  return { status: 400, why: `malformed request (${code ?? "parse error"})` }
}

async function serveNode(guarded: FetchHandler, port: number, hostname: string, limits: HttpLimits, o: ServeOptions): Promise<Server> {
  const http = await import("node:http")
  const refuse = (res: NodeResponse, status: number, why: string, headers: Record<string, string> = {}) => {
    o.onRefused?.(status, why)
    const body = JSON.stringify({ status, error: why })
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body), connection: "close", ...headers })
    res.end(body)
  }

  const handle = async (req: NodeRequest, res: NodeResponse) => {
    // a request or response stream that errors (the client went away mid-body) must not become an uncaught 'error'
    req.on("error", () => {})
    res.on("error", () => {})
    // the parser takes any 1.x and also a textual "HTTP/2.0": HTTP/2 proper starts with a binary preface instead
    if (req.httpVersionMajor !== 1) return refuse(res, 400, `unsupported HTTP version ${req.httpVersion}`)
    const target = requestTarget(req.url ?? "")
    if ("status" in target) return refuse(res, target.status, target.error)
    const badHost = hostProblem(req.headersDistinct.host)
    if (badHost) return refuse(res, 400, badHost)
    const hasBody = req.method !== "GET" && req.method !== "HEAD"
    const body = hasBody ? bodyOf(req) : undefined
    let request: Request
    try {
      const headers = new Headers()
      for (const [k, v] of Object.entries(req.headersDistinct)) if (v) for (const x of v) headers.append(k, x)
      // the URL's host is never the client's Host header: routes read paths and queries only
      request = new Request(`http://localhost${target.path}`, {
        method: req.method,
        headers,
        body: body?.stream,
        // @ts-expect-error Node's fetch needs `duplex` for a streamed body
        duplex: "half",
      })
    } catch (err) {
      body?.discard()
      // fetch refuses some methods outright (TRACE, TRACK) and some header values the HTTP parser let through
      const forbidden = /method/i.test((err as Error).message)
      return refuse(res, forbidden ? 405 : 400, forbidden ? `method ${req.method} is not allowed` : `request not acceptable: ${(err as Error).message}`)
    }
    const response = await guarded(request)
    const head: Record<string, string | string[]> = {}
    for (const [k, v] of response.headers) head[k] = k === "set-cookie" ? response.headers.getSetCookie() : v
    // a body the handler did not read to the end (413, 415) is drained first: answering (or closing) while the
    // client is still uploading resets its connection before it reads the answer. Past 5 s, the connection ends.
    if (body && !req.complete && !(body.discard(), await drained(req, 5_000))) head.connection = "close"
    const bytes = response.body && req.method !== "HEAD" ? Buffer.from(await response.arrayBuffer()) : undefined
    if (res.destroyed) return
    res.writeHead(response.status, head)
    res.end(bytes)
  }

  const server = http.createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      maxHeaderSize: limits.maxHeaderBytes,
      // the timeouts above are enforced by this periodic check (Node's default: every 30 s)
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
      requireHostHeader: false, // checked above, with a JSON answer
    },
    (req, res) =>
      void handle(req, res).catch((err) => {
        o.onError?.(err)
        try {
          if (!res.headersSent) refuse(res, 500, "internal error")
          else res.destroy()
        } catch {
          res.destroy()
        }
      }),
  )
  server.maxHeadersCount = 200
  server.maxConnections = limits.maxConnections
  // requests the parser refused (bad framing, unknown method or version, TLS on the plain port, header overflow,
  // timeouts): answered here, since no response object exists for them
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    const { status, why } = clientErrorStatus(err.code)
    o.onRefused?.(status, why)
    const msg = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage
    if (err.code !== "ECONNRESET" && socket.writable && !msg?.headersSent) rawAnswer(socket, status, why)
    socket.destroy()
  })
  // CONNECT (authority-form) and Upgrade requests bypass the request handler: answer them too, never leave them hanging
  server.on("connect", (_req: NodeRequest, socket: Socket) => {
    socket.on("error", () => {})
    o.onRefused?.(405, "CONNECT is not supported")
    rawAnswer(socket, 405, "CONNECT is not supported: this is not a proxy")
  })
  server.on("upgrade", (_req: NodeRequest, socket: Socket) => {
    socket.on("error", () => {})
    o.onRefused?.(400, "protocol upgrade is not supported")
    rawAnswer(socket, 400, "protocol upgrade is not supported")
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, hostname, () => (server.off("error", reject), resolve()))
  })
  // after listening, a server error (EMFILE on accept, say) is logged by the caller's guard, never thrown
  server.on("error", (err) => o.onError?.(err))
  const addr = server.address()
  return {
    port: typeof addr === "object" && addr ? addr.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/**
 * The request body as a web stream. Unlike Readable.toWeb, cancelling it (a handler that stops at 413) does not
 * destroy the socket mid-upload: the rest is read and dropped.
 */
function bodyOf(req: NodeRequest): { stream: ReadableStream<Uint8Array>; discard(): void } {
  let cancelled = false
  const discard = () => void ((cancelled = true), req.resume())
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      req.on("data", (chunk: Buffer) => {
        if (cancelled) return
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
        if ((controller.desiredSize ?? 1) <= 0) req.pause()
      })
      req.on("end", () => cancelled || controller.close())
      // a client that closes before sending what it announced ends the body with an error, once
      const fail = (err: Error) => {
        if (cancelled) return
        cancelled = true
        controller.error(err)
      }
      req.on("error", fail)
      req.on("aborted", () => fail(new Error("the client closed the connection before the body was complete")))
    },
    pull: () => void req.resume(),
    cancel: discard,
  })
  return { stream, discard }
}

/** Reads and drops what is left of a request body; false if it did not end within `ms`. */
function drained(req: NodeRequest, ms: number): Promise<boolean> {
  if (req.complete) return Promise.resolve(true)
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms)
    req.once("end", () => (clearTimeout(t), resolve(true)))
    req.once("error", () => (clearTimeout(t), resolve(false)))
    req.once("close", () => (clearTimeout(t), resolve(req.complete)))
    req.on("data", () => {})
    req.resume()
  })
}

/**
 * Reads a JSON body of at most `maxBytes`: 415 unless `application/json`, 413 past the limit
 * (counted while streaming, so a huge body is never buffered), 400 for malformed JSON or a body cut short.
 */
export async function readJson(request: Request, maxBytes = 256 * 1024): Promise<unknown> {
  const type = request.headers.get("content-type") ?? ""
  if (!/^application\/(.+\+)?json\b/i.test(type)) {
    throw new StatusError(415, `content-type must be application/json, got "${type.slice(0, 100) || "none"}"`)
  }
  const declared = Number(request.headers.get("content-length") ?? "0")
  if (declared > maxBytes) throw new StatusError(413, `body of ${declared} bytes exceeds the ${maxBytes}-byte limit`)
  const chunks: Uint8Array[] = []
  let total = 0
  if (request.body) {
    try {
      for await (const chunk of request.body as unknown as AsyncIterable<Uint8Array>) {
        total += chunk.byteLength
        if (total > maxBytes) throw new StatusError(413, `body exceeds the ${maxBytes}-byte limit`)
        chunks.push(chunk)
      }
    } catch (err) {
      if (err instanceof StatusError) throw err
      throw new StatusError(400, `the request body could not be read: ${(err as Error)?.message ?? err}`)
    }
  }
  const bytes = new Uint8Array(total)
  let at = 0
  for (const c of chunks) (bytes.set(c, at), (at += c.byteLength))
  try {
    return JSON.parse(new TextDecoder().decode(bytes))
  } catch (err) {
    throw new StatusError(400, `body is not valid JSON: ${(err as Error).message}`)
  }
}

/** 503 with Retry-After: the request was not taken, nothing was recorded, the same request may be sent again. */
export const retryLater = (error: string, retryAfterSeconds = 2) =>
  Response.json({ status: 503, error }, { status: 503, headers: { "retry-after": String(retryAfterSeconds) } })
