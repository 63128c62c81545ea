// mesh/http.ts — one `serve(fetch)` for Node and Deno, so a worker's itty-router runs unchanged on both,
// plus the body reader every JSON endpoint uses (415, 413, 400 as values, never a crash).
//
// Whatever a client sends — a malformed Host, an absolute or authority request target, bad framing, TLS bytes on the
// plain port, a body shorter than announced, headers that never end — gets a 4xx or a closed connection, and the
// worker keeps serving: every failure of one request stays inside that request.
import { StatusError } from "itty-router"
import { isDeno } from "./env.ts"
import { json } from "./lazy-web.ts"
import {
  bodySource,
  type FetchHandler,
  FORBIDDEN_METHOD,
  type HttpLimits,
  hostProblem,
  httpLimits,
  problem,
  type Server,
  type ServeOptions,
} from "./http-rules.ts"

export { type FetchHandler, type HttpLimits, httpLimits, type Server, type ServeOptions }

declare const Deno: {
  serve(
    opts: { port: number; hostname: string; onListen?: (addr: { port: number }) => void; onError?: (err: unknown) => Response },
    handler: (r: Request) => Response | Promise<Response>,
  ): { shutdown(): Promise<void>; finished: Promise<void> }
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
  // imported only on Node: Deno has no node:http to load, and needs none
  return isDeno
    ? serveDeno(guarded, port, hostname, limits, o)
    : (await import("./http-node.ts")).serveNode(guarded, port, hostname, limits, o)
}

async function serveDeno(guarded: FetchHandler, port: number, hostname: string, limits: HttpLimits, o: ServeOptions): Promise<Server> {
  // Deno's own HTTP stack refuses broken framing before a request reaches us; it is more lenient than Node's about
  // the Host header (its URL is built from it), header size and methods, so those are checked here, with the same
  // answers. Slow and endless heads are the front's (mesh/deno-front.ts): Deno.serve has no deadline for them.
  const checked = (request: Request): Response | Promise<Response> => {
    const refuse = (status: number, why: string) => (o.onRefused?.(status, why), problem(status, why))
    if (FORBIDDEN_METHOD.test(request.method)) return refuse(405, `method ${request.method} is not allowed`)
    const host = request.headers.get("host")
    const badHost = hostProblem(host === null ? undefined : [host])
    if (badHost) return refuse(400, badHost)
    try {
      new URL(request.url)
    } catch {
      return refuse(400, "malformed Host header")
    }
    let size = 0
    let count = 0
    for (const [k, v] of request.headers) (size += k.length + v.length + 4), count++
    if (size > limits.maxHeaderBytes) return refuse(431, "request line and headers too large")
    if (count > limits.maxHeaders) return refuse(431, "too many header fields")
    return guarded(request)
  }
  let bound = 0
  let close: () => Promise<void> = async () => {}
  await new Promise<void>((resolve) => {
    const server = Deno.serve(
      {
        // reached through the front only
        port: 0,
        hostname: "127.0.0.1",
        onListen: (a) => ((bound = a.port), resolve()),
        onError: (err) => (o.onError?.(err), problem(500, "internal error")),
      },
      checked,
    )
    close = () => server.shutdown()
  })
  const { denoFront } = await import("./deno-front.ts")
  const front = denoFront({ port, hostname, target: bound, limits, onRefused: o.onRefused })
  return { port: front.port, close: () => (front.close(), close()) }
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
  const source = bodySource(request)
  if (source) {
    const bytes = await source.read(maxBytes).catch((err) => {
      throw unreadable(err)
    })
    if (!bytes) throw overLimit(maxBytes)
    return parseJson(bytes)
  }
  const chunks: Uint8Array[] = []
  let total = 0
  if (request.body) {
    try {
      for await (const chunk of request.body as unknown as AsyncIterable<Uint8Array>) {
        total += chunk.byteLength
        if (total > maxBytes) throw overLimit(maxBytes)
        chunks.push(chunk)
      }
    } catch (err) {
      if (err instanceof StatusError) throw err
      throw unreadable(err)
    }
  }
  const bytes = new Uint8Array(total)
  let at = 0
  for (const c of chunks) bytes.set(c, at), (at += c.byteLength)
  return parseJson(bytes)
}

const overLimit = (maxBytes: number) => new StatusError(413, `body exceeds the ${maxBytes}-byte limit`)
const unreadable = (err: unknown) => new StatusError(400, `the request body could not be read: ${(err as Error)?.message ?? err}`)
const utf8 = new TextDecoder()

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(utf8.decode(bytes))
  } catch (err) {
    throw new StatusError(400, `body is not valid JSON: ${(err as Error).message}`)
  }
}

/** 503 with Retry-After: the request was not taken, nothing was recorded, the same request may be sent again. */
export const retryLater = (error: string, retryAfterSeconds = 2) =>
  json({ status: 503, error }, { status: 503, headers: { "retry-after": String(retryAfterSeconds) } })
