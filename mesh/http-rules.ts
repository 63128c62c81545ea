// mesh/http-rules.ts — what both runtimes' servers agree on: the handler and server shapes, the limits one client
// may cost a worker, and which request targets and Host headers are acceptable.
import { json } from "./lazy-web.ts"
import { envInt } from "./env.ts"

export type FetchHandler = (request: Request) => Response | Promise<Response>
export type Server = { port: number; close(): Promise<void> }

/**
 * A request body the server reads for the handler (Node): readJson takes it from here, with its limit, instead of
 * through a web stream (a streamed Request costs four times one without a body). Resolves with the bytes, or null
 * once more than `maxBytes` came (the rest is the server's to drop); rejects when the client breaks off.
 */
export type BodySource = { read(maxBytes: number): Promise<Uint8Array | null> }
// a property, not a WeakMap: a route sees the request through itty-router's Proxy, which passes properties through
const BODY = Symbol("logiflow.body")
export const withBody = (request: Request, source: BodySource) => void ((request as { [BODY]?: BodySource })[BODY] = source)
export const bodySource = (request: Request): BodySource | undefined => (request as { [BODY]?: BodySource })[BODY]

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
  /** header fields (HTTP_MAX_HEADERS, 100): more is answered 431, never silently cut to the first ones */
  maxHeaders: number
  /** connections open at once (HTTP_MAX_CONNECTIONS, 1024); past it new ones are closed at once */
  maxConnections: number
}

export const httpLimits = (): HttpLimits => ({
  headersTimeoutMs: envInt("HTTP_HEADERS_TIMEOUT_MS", 10_000),
  requestTimeoutMs: envInt("HTTP_REQUEST_TIMEOUT_MS", 30_000),
  keepAliveTimeoutMs: 5_000,
  maxHeaderBytes: envInt("HTTP_MAX_HEADER_BYTES", 16 * 1024),
  maxHeaders: envInt("HTTP_MAX_HEADERS", 100),
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

export const problem = (status: number, error: string, headers: Record<string, string> = {}) => json({ status, error }, { status, headers })

/**
 * A Host header as RFC 9110 allows it: a registered name, IPv4 or bracketed IPv6 literal, and an optional port.
 * Anything else (`a b`, `a@b`, a second Host) is a 400: such a request may be a smuggling attempt or a confused proxy.
 */
const HOST =
  /^(?:\[[0-9A-Fa-f:.]{2,45}(?:%25[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9._~!$&'()*+,;=-]*(?:%[0-9A-Fa-f]{2}[A-Za-z0-9._~!$&'()*+,;=-]*)*)(?::[0-9]{0,5})?$/

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

/** Methods fetch refuses outright (Node's Request throws on them); both runtimes answer them 405. */
export const FORBIDDEN_METHOD = /^(CONNECT|TRACE|TRACK)$/i

/** The reason a Host header is refused, or undefined when it is acceptable. */
export function hostProblem(values: string[] | undefined): string | undefined {
  // HTTP/1.0 made Host optional, but every client of the last 25 years sends it, and Deno cannot tell the versions
  // apart: one rule for both runtimes
  if (!values || values.length === 0) return "missing Host header"
  if (values.length > 1) return "more than one Host header"
  return HOST.test(values[0]!) ? undefined : "malformed Host header"
}
