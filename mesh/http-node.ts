// mesh/http-node.ts — the Node side of `serve()`: node:http with its parser's refusals, timeouts and limits turned
// into JSON 4xx answers, and each request handed to the worker's fetch handler as a web Request.
import {
  type BodySource,
  withBody,
  type FetchHandler,
  FORBIDDEN_METHOD,
  type HttpLimits,
  hostProblem,
  requestTarget,
  type Server,
  type ServeOptions,
} from "./http-rules.ts"
import { delegateRest, LazyResponse } from "./lazy-web.ts"

type NodeRequest = import("node:http").IncomingMessage
type NodeResponse = import("node:http").ServerResponse
type Socket = import("node:stream").Duplex

const REASONS: Record<number, string> = {
  400: "Bad Request",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
}

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

export async function serveNode(
  guarded: FetchHandler,
  port: number,
  hostname: string,
  limits: HttpLimits,
  o: ServeOptions,
): Promise<Server> {
  const http = await import("node:http")
  const refuse = (res: NodeResponse, status: number, why: string, headers: Record<string, string> = {}) => {
    o.onRefused?.(status, why)
    const body = JSON.stringify({ status, error: why })
    res.writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(body),
      connection: "close",
      ...headers,
    })
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
    // the parser keeps at most maxHeadersCount (limit + 1) fields: one past the limit means the request had too many
    if (req.rawHeaders.length / 2 > limits.maxHeaders) return refuse(res, 431, "too many header fields")
    const hasBody = req.method !== "GET" && req.method !== "HEAD"
    const body = hasBody ? bodyOf(req) : undefined
    // fetch refuses these methods outright: so does the mesh, on both runtimes
    if (FORBIDDEN_METHOD.test(req.method ?? "")) return (body?.discard(), refuse(res, 405, `method ${req.method} is not allowed`))
    let request: Request
    try {
      const headers = new Headers()
      for (const [k, v] of Object.entries(req.headersDistinct)) if (v) for (const x of v) headers.append(k, x)
      // the URL's host is never the client's Host header: routes read paths and queries only
      const url = `http://localhost${target.path}`
      if (!URL.canParse(url)) throw new TypeError(`invalid request target ${JSON.stringify(target.path)}`)
      request = new LazyRequest(url, req.method!, headers, body) as unknown as Request
    } catch (err) {
      body?.discard()
      // Headers refuses some values the HTTP parser let through
      return refuse(res, 400, `request not acceptable: ${(err as Error).message}`)
    }
    const response = await guarded(request)
    // a json() answer nothing read beyond its status is written as it is, without a web Response
    const wire = response instanceof LazyResponse ? response.wire() : undefined
    const head: Record<string, string | string[]> = wire?.head ?? {}
    if (!wire) for (const [k, v] of response.headers) head[k] = k === "set-cookie" ? response.headers.getSetCookie() : v
    // a body the handler did not read to the end (413, 415) is drained first: answering (or closing) while the
    // client is still uploading resets its connection before it reads the answer. Past 5 s, the connection ends.
    if (body && !req.complete && !(body.discard(), await drained(req, 5_000))) head.connection = "close"
    const bytes = wire
      ? Buffer.from(wire.body)
      : response.body && req.method !== "HEAD"
        ? Buffer.from(await response.arrayBuffer())
        : undefined
    if (res.destroyed) return
    // one frame, no chunked encoding: the length is known
    if (bytes && !("content-length" in head)) head["content-length"] = String(bytes.length)
    res.writeHead(response.status, head)
    res.end(req.method !== "HEAD" ? bytes : undefined)
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
  server.maxHeadersCount = limits.maxHeaders + 1
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

/** a client that closes before sending what it announced */
const CUT_SHORT = "the client closed the connection before the body was complete"

/**
 * The request body, read when the handler asks (readJson) and only up to its limit. Nothing flows before that: a
 * handler that answers first (401, 415) leaves it to be drained after the answer. Made per request without a named
 * closure (methods in object literals instead): tsx wraps each named one in a defineProperty for its name
 * (keepNames), and eight of them per request showed in routing's profile.
 */
function bodyOf(req: NodeRequest): BodySource & { discard(): void; stream(): ReadableStream<Uint8Array> } {
  let discarded = false
  return {
    discard() {
      discarded = true
      req.resume()
    },
    read(maxBytes: number) {
      return new Promise<Uint8Array | null>((resolve, reject) => {
        if (discarded) return reject(new Error("the request body was already read"))
        discarded = true
        const chunks: Buffer[] = []
        let total = 0
        const on = {
          off() {
            req.off("data", on.data).off("end", on.end).off("error", on.error).off("aborted", on.aborted)
          },
          data(chunk: Buffer) {
            total += chunk.length
            if (total <= maxBytes) return void chunks.push(chunk)
            // past the limit: the rest flows on unread and the server drains it after the 413
            on.off()
            req.on("data", () => {})
            resolve(null)
          },
          end() {
            on.off()
            const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total)
            resolve(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength))
          },
          error(err: Error) {
            on.off()
            reject(err)
          },
          aborted() {
            on.error(new Error(CUT_SHORT))
          },
        }
        req.on("data", on.data).on("end", on.end).on("error", on.error).on("aborted", on.aborted)
        if (req.complete && req.readableEnded) on.end()
      })
    },
    // the body as a web stream, for a route that reads it itself. Unlike Readable.toWeb, cancelling it (a handler that
    // stops at 413) does not destroy the socket mid-upload: the rest is read and dropped
    stream() {
      if (discarded) throw new TypeError("the request body was already read")
      discarded = true
      let cancelled = false
      return new ReadableStream<Uint8Array>({
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
          req.on("aborted", () => fail(new Error(CUT_SHORT)))
        },
        pull() {
          req.resume()
        },
        cancel() {
          cancelled = true
          req.resume()
        },
      })
    },
  }
}

type NodeBody = ReturnType<typeof bodyOf>

/**
 * The web Request a route is handed on Node: method, url and headers at hand, and readJson reads the body from the
 * socket (withBody). Everything else a Request has (the body as a stream, json(), text(), clone(), signal, …) comes
 * from a real Request, made the first time a route touches any of it. Made for every request, undici's Request
 * outlived it: enough of it survived two scavenges to be promoted, and routing's old space then needed a
 * mark-compact every second at 1,000 requests/s (bench/README.md, profile finding 10).
 * Not `instanceof Request`; `new Request(request)` needs `request.url` and an init.
 */
class LazyRequest {
  #body: NodeBody | undefined
  #full: Request | undefined
  constructor(
    readonly url: string,
    readonly method: string,
    readonly headers: Headers,
    body: NodeBody | undefined,
  ) {
    this.#body = body
    if (body) withBody(this as unknown as Request, body)
  }
  /** the real Request, its body (if any) a stream of what the socket still brings */
  #real(): Request {
    if (this.#full) return this.#full
    // Node's fetch needs `duplex` for a streamed body
    const init: RequestInit & { duplex?: "half" } = { method: this.method, headers: this.headers }
    if (this.#body) (init.body = this.#body.stream()), (init.duplex = "half")
    this.#full = new Request(this.url, init)
    return this.#full
  }
  get bodyUsed(): boolean {
    return this.#full?.bodyUsed ?? false
  }
  static {
    // every other member of Request.prototype, from the real one
    delegateRest(LazyRequest, Request, (r) => r.#real())
  }
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
