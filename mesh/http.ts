// mesh/http.ts — one `serve(fetch)` for Node and Deno, so a worker's itty-router runs unchanged on both,
// plus the body reader every JSON endpoint uses (415, 413, 400 as values, never a crash).
import { StatusError } from "itty-router"
import { isDeno } from "./env.ts"

export type FetchHandler = (request: Request) => Response | Promise<Response>
export type Server = { port: number; close(): Promise<void> }

declare const Deno: {
  serve(
    opts: { port: number; hostname: string; onListen?: (addr: { port: number }) => void },
    handler: (r: Request) => Response | Promise<Response>,
  ): { shutdown(): Promise<void>; finished: Promise<void> }
}

/** Serves `fetch` on `port` (0 = any free port); resolves once listening, with the real port. */
export async function serve(fetch: FetchHandler, { port = 0, hostname = "0.0.0.0" } = {}): Promise<Server> {
  const guarded = async (request: Request) => {
    try {
      return await fetch(request)
    } catch (err) {
      return Response.json({ status: 500, error: (err as Error).message }, { status: 500 })
    }
  }
  if (isDeno) {
    let bound = port
    const listening = new Promise<void>((resolve) => {
      const server = Deno.serve({ port, hostname, onListen: (a) => ((bound = a.port), resolve()) }, guarded)
      close = () => server.shutdown()
    })
    let close: () => Promise<void> = async () => {}
    await listening
    return { port: bound, close: () => close() }
  }
  const http = await import("node:http")
  const server = http.createServer(async (req, res) => {
    const url = `http://${req.headers.host ?? "localhost"}${req.url ?? "/"}`
    const hasBody = req.method !== "GET" && req.method !== "HEAD"
    const headers = new Headers()
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(", ") : v)
    const body = hasBody ? bodyOf(req) : undefined
    const request = new Request(url, {
      method: req.method,
      headers,
      body: body?.stream,
      // @ts-expect-error Node's fetch needs `duplex` for a streamed body
      duplex: "half",
    })
    const response = await guarded(request)
    const head = Object.fromEntries(response.headers)
    // a body the handler did not read to the end (413, 415) is drained first: answering (or closing) while the
    // client is still uploading resets its connection before it reads the answer. Past 5 s, the connection ends.
    if (body && !req.complete && !(body.discard(), await drained(req, 5_000))) head.connection = "close"
    res.writeHead(response.status, head)
    if (!response.body || req.method === "HEAD") return void res.end()
    res.end(Buffer.from(await response.arrayBuffer()))
  })
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, hostname, () => resolve())
  })
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

type NodeRequest = import("node:http").IncomingMessage

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
      req.on("error", (err) => cancelled || controller.error(err))
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
    req.on("data", () => {})
    req.resume()
  })
}

/**
 * Reads a JSON body of at most `maxBytes`: 415 unless `application/json`, 413 past the limit
 * (counted while streaming, so a huge body is never buffered), 400 for malformed JSON.
 */
export async function readJson(request: Request, maxBytes = 256 * 1024): Promise<unknown> {
  const type = request.headers.get("content-type") ?? ""
  if (!/^application\/(.+\+)?json\b/i.test(type)) {
    throw new StatusError(415, `content-type must be application/json, got "${type || "none"}"`)
  }
  const declared = Number(request.headers.get("content-length") ?? "0")
  if (declared > maxBytes) throw new StatusError(413, `body of ${declared} bytes exceeds the ${maxBytes}-byte limit`)
  const chunks: Uint8Array[] = []
  let total = 0
  if (request.body) {
    for await (const chunk of request.body as unknown as AsyncIterable<Uint8Array>) {
      total += chunk.byteLength
      if (total > maxBytes) throw new StatusError(413, `body exceeds the ${maxBytes}-byte limit`)
      chunks.push(chunk)
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
