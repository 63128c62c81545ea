// mesh/auth.ts — who may call what, on Node and Deno alike (WebCrypto only): secrets from the environment or files,
// signed tokens (a portal customer's link, an operator's session), named operators, and API keys with scopes and a
// rate limit per key for the ingestion endpoints. Every secret comparison is of SHA-256 digests or HMACs, in
// constant time, so how long a refusal takes says nothing about how close a guess was.
import { hmacSha256, sha256 } from "./digest.ts"
import { env, isDeno } from "./env.ts"
import { problem } from "./http-rules.ts"
import type { Logger } from "./log.ts"
import type { Registry } from "./metrics.ts"
import { rateLimit, type Rate } from "./rate.ts"

declare const Deno: { readTextFileSync(path: string): string }

const readText = (path: string): string =>
  isDeno ? Deno.readTextFileSync(path) : globalThis.process.getBuiltinModule!("node:fs").readFileSync(path, "utf8")

/**
 * A secret setting: `NAME`, else the contents of the file `NAME_FILE` (a mounted Kubernetes or compose secret) without
 * its final newline. Undefined when neither is set; both set is an error, so it is never unclear which one is used.
 */
export function secret(name: string): string | undefined {
  const direct = env(name) || undefined
  const file = env(`${name}_FILE`) || undefined
  if (direct !== undefined && file !== undefined) throw new Error(`set ${name} or ${name}_FILE, not both`)
  if (direct !== undefined || file === undefined) return direct
  try {
    return readText(file).replace(/\r?\n$/, "")
  } catch (err) {
    throw new Error(`${name}_FILE: cannot read ${file}: ${(err as Error).message}`)
  }
}

// --- bytes ----------------------------------------------------------------------------------------------------

const enc = new TextEncoder()

export const base64url = (bytes: Uint8Array): string =>
  btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "")

function fromBase64url(s: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return undefined
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4))
  return Uint8Array.from(bin, (c) => c.charCodeAt(0))
}

/** Equal length and content, looking at every byte whatever the first difference. */
function same(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ (b[i % Math.max(1, b.length)] ?? 0)
  return diff === 0
}

/** A fresh random secret (32 bytes, base64url): tokens, keys, session keys. */
export const randomSecret = (bytes = 32) => base64url(crypto.getRandomValues(new Uint8Array(bytes)))

// --- signed tokens: `<base64url(subject)>.<expiry, unix seconds>.<base64url(HMAC-SHA256)>` --------------------

/** Control characters (C0, DEL, C1) have no place in an id: they break logs, headers and terminals. */
export const CONTROL = /[\x00-\x1f\x7f-\x9f]/

const validSubject = (s: string) => s.length >= 1 && s.length <= 128 && !CONTROL.test(s)

/** A token naming `subject` (a customer id, an operator) until `expiresAt` (unix seconds), signed with `secret`. */
export async function signToken(secret: string, subject: string, expiresAt: number): Promise<string> {
  if (!validSubject(subject)) throw new Error("a token subject is 1–128 characters without control characters")
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0) throw new Error(`expiry must be whole unix seconds, got ${expiresAt}`)
  const body = `${base64url(enc.encode(subject))}.${expiresAt}`
  return `${body}.${base64url(hmacSha256(secret, body))}`
}

/** The subject and expiry of a genuine, unexpired token; undefined for anything else (forged, expired, malformed). */
export async function verifyToken(
  secret: string,
  token: string,
  now = Date.now(),
): Promise<{ subject: string; expiresAt: number } | undefined> {
  if (token.length > 1024) return undefined
  const m = /^([A-Za-z0-9_-]+)\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(token)
  if (!m) return undefined
  // the signature compared as its one canonical text: the last of 43 base64url characters carries 2 spare bits, so
  // decoding what was given would accept four spellings of one signature
  const genuine = same(enc.encode(base64url(hmacSha256(secret, `${m[1]}.${m[2]}`))), enc.encode(m[3]!))
  const expiresAt = Number(m[2])
  if (!genuine || expiresAt * 1000 <= now) return undefined
  const raw = fromBase64url(m[1]!)
  let subject: string
  try {
    subject = new TextDecoder("utf-8", { fatal: true }).decode(raw)
  } catch {
    return undefined
  }
  return validSubject(subject) ? { subject, expiresAt } : undefined
}

// --- lists of named credentials (operators, API keys) ----------------------------------------------------------

const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/
const TOKEN = /^[A-Za-z0-9._~+/=-]{16,512}$/
const DIGEST = /^sha256:([0-9a-fA-F]{64})$/
const FORMAT = "16–512 characters of A–Z a–z 0–9 . _ ~ + / = -, or sha256:<64 hex digits> of the token"

/** A list setting's entries: comma- or newline-separated, `#` starts a comment, blank entries skipped. */
const entriesOf = (text: string) =>
  text
    .split(/[\n,]/)
    .map((l) => l.replace(/#.*/, "").trim())
    .filter(Boolean)

/** `name:<token>` where the token is plain or `sha256:<hex>`: the name, and the digest to compare with (computed lazily). */
function credential(setting: string, i: number, name: string, token: string): { name: string; digest: () => Uint8Array } {
  const at = `${setting} entry ${i + 1}`
  if (!NAME.test(name)) throw new Error(`${at}: the name must be 1–64 characters of A–Z a–z 0–9 . _ @ - (got "${name.slice(0, 64)}")`)
  const hex = DIGEST.exec(token)?.[1]
  if (!hex && !TOKEN.test(token)) throw new Error(`${at} ("${name}"): the secret must be ${FORMAT}`)
  let digest: Uint8Array | undefined
  return {
    name,
    digest: () => (digest ??= hex ? Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)) : sha256(token)),
  }
}

/** The entry whose secret is `presented`; every entry is compared, so the answer takes as long whichever matches. */
function match<T extends { digest: () => Uint8Array }>(list: T[], presented: string): T | undefined {
  const d = sha256(presented)
  let found: T | undefined
  for (const e of list) if (same(e.digest(), d)) found ??= e
  return found
}

function unique(setting: string, names: string[]) {
  const dup = names.find((n, i) => names.indexOf(n) !== i)
  if (dup) throw new Error(`${setting}: "${dup}" is listed twice`)
}

// --- operators ---------------------------------------------------------------------------------------------------

export type Operators = {
  readonly names: string[]
  /** the name of the operator whose token this is */
  find(token: string): Promise<string | undefined>
}

/** `name:token` entries (token plain or `sha256:<hex>`), from LOGIFLOW_OPERATORS or the file LOGIFLOW_OPERATORS_FILE. */
export function parseOperators(text: string, setting = "LOGIFLOW_OPERATORS"): Operators {
  const list = entriesOf(text).map((e, i) => {
    const colon = e.indexOf(":")
    if (colon < 0) throw new Error(`${setting} entry ${i + 1}: expected name:token`)
    return credential(setting, i, e.slice(0, colon), e.slice(colon + 1))
  })
  unique(
    setting,
    list.map((o) => o.name),
  )
  return { names: list.map((o) => o.name), find: async (token) => match(list, token)?.name }
}

export const operatorsFromEnv = (): Operators => parseOperators(secret("LOGIFLOW_OPERATORS") ?? "")

// --- API keys ----------------------------------------------------------------------------------------------------

export const SCOPES = ["routes", "positions"] as const
export type Scope = (typeof SCOPES)[number]
export type ApiKey = { name: string; scopes: Scope[]; ratePerSecond: number; digest: () => Uint8Array }

/** `name:key:scopes:ratePerSecond` entries; key plain or `sha256:<hex>`, scopes `routes`, `positions` or `routes+positions`. */
export function parseApiKeys(text: string, setting = "LOGIFLOW_API_KEYS"): ApiKey[] {
  const keys = entriesOf(text).map((e, i) => {
    const parts = e.split(":")
    if (parts.length < 4) throw new Error(`${setting} entry ${i + 1}: expected name:key:scopes:ratePerSecond`)
    const [name, ...rest] = parts
    const rate = Number(rest.pop())
    const scopes = rest.pop()!.split("+")
    const at = `${setting} entry ${i + 1} ("${name}")`
    if (!scopes.every((s): s is Scope => (SCOPES as readonly string[]).includes(s)) || new Set(scopes).size !== scopes.length) {
      throw new Error(`${at}: scopes are routes, positions or routes+positions`)
    }
    if (!(rate > 0) || !Number.isFinite(rate)) throw new Error(`${at}: ratePerSecond must be a positive number`)
    return { ...credential(setting, i, name!, rest.join(":")), scopes, ratePerSecond: rate }
  })
  unique(
    setting,
    keys.map((k) => k.name),
  )
  return keys
}

/** The credential a request presents: `Authorization: Bearer <token>`, or (for API keys) `X-Api-Key`. */
export function presented(request: Request, apiKeyHeader = false): string | undefined {
  const bearer = /^Bearer +(\S+) *$/i.exec(request.headers.get("authorization") ?? "")?.[1]
  return bearer ?? (apiKeyHeader ? request.headers.get("x-api-key")?.trim() || undefined : undefined)
}

export type ApiKeyGate = (request: Request) => Promise<Response | undefined>

/**
 * The check in front of an ingestion endpoint: undefined when the request carries a key with `scope` and within its
 * rate, else the answer — 401 (no key or an unknown one), 403 (a key without this scope), 429 with Retry-After. Each
 * key has its own token bucket (a burst of 2 s worth), so one client sending too much never slows another down.
 * Keys come from LOGIFLOW_API_KEYS or LOGIFLOW_API_KEYS_FILE; with none configured every request is refused. A request
 * let through carries its key's name as `request.client`.
 */
export function apiKeyGate(
  scope: Scope,
  o: { log: Logger; keys?: ApiKey[]; now?: () => number; counted?(client: string, status: number): void },
): ApiKeyGate {
  const keys = o.keys ?? parseApiKeys(secret("LOGIFLOW_API_KEYS") ?? "")
  if (keys.length === 0)
    o.log.warn(
      `no API keys configured: every POST /${scope} is refused with 401 until LOGIFLOW_API_KEYS (or LOGIFLOW_API_KEYS_FILE) is set`,
    )
  const buckets = new Map<string, Rate>()
  const bucket = (k: ApiKey) => {
    let b = buckets.get(k.name)
    if (!b) buckets.set(k.name, (b = rateLimit(k.ratePerSecond, o.now, Math.max(1, 2 * k.ratePerSecond))))
    return b
  }
  const challenge = { "www-authenticate": 'Bearer realm="logiflow"' }
  return async (request) => {
    if (keys.length === 0)
      return problem(
        401,
        "no API keys are configured on this server: an operator must set LOGIFLOW_API_KEYS (or LOGIFLOW_API_KEYS_FILE)",
        challenge,
      )
    const given = presented(request, true)
    if (!given) return problem(401, "missing API key: send Authorization: Bearer <key> or X-Api-Key: <key>", challenge)
    const key = match(keys, given)
    if (!key) return (o.counted?.("unknown", 401), problem(401, "unknown API key", challenge))
    if (!key.scopes.includes(scope))
      return (o.counted?.(key.name, 403), problem(403, `API key "${key.name}" may not send ${scope} (its scopes: ${key.scopes.join("+")})`))
    const b = bucket(key)
    if (b.available() < 1) {
      const retryAfter = Math.max(1, Math.ceil(b.msUntil(1) / 1000))
      o.counted?.(key.name, 429)
      return problem(429, `API key "${key.name}" is over its rate of ${key.ratePerSecond} requests per second; retry in ${retryAfter} s`, {
        "retry-after": String(retryAfter),
      })
    }
    b.take(1)
    o.counted?.(key.name, 0)
    // the route behind the gate knows its client by name (routing scopes Idempotency-Keys by it)
    ;(request as Request & { client?: string }).client = key.name
    return undefined
  }
}

/** The gate for a worker's ingestion route, its refusals counted in logiflow_api_key_refused_total{client,status}. */
export function requireApiKey(rt: { log: Logger; metrics: Registry }, scope: Scope): ApiKeyGate {
  const refused = rt.metrics.counter(
    "logiflow_api_key_refused_total",
    "Ingestion requests refused by the API key check, by client (key name) and status",
    ["client", "status"],
  )
  return apiKeyGate(scope, { log: rt.log, counted: (client, status) => status && refused.inc({ client, status: String(status) }) })
}

// --- browser sessions --------------------------------------------------------------------------------------------

/** The value of cookie `name`, if the request sends it. */
export function cookie(request: Request, name: string): string | undefined {
  for (const part of (request.headers.get("cookie") ?? "").split(";")) {
    const eq = part.indexOf("=")
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

/**
 * A session cookie the page's scripts cannot read (HttpOnly), sent only to this origin's own pages (SameSite=Strict),
 * and over TLS only when the request came through a TLS front (X-Forwarded-Proto: https). 0 seconds removes it.
 */
export function sessionCookie(request: Request, name: string, value: string, maxAgeSeconds: number): string {
  const secure = /^https$/i.test(request.headers.get("x-forwarded-proto") ?? "") ? "; Secure" : ""
  return `${name}=${value}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}${secure}`
}

/**
 * Whether a request that a cookie authenticates comes from this origin's own page: the browser says so in
 * Sec-Fetch-Site, or its Origin names this host. Another site's form or script is refused (CSRF).
 */
export function sameOrigin(request: Request): boolean {
  const site = request.headers.get("sec-fetch-site")
  if (site) return site === "same-origin"
  const origin = request.headers.get("origin")
  if (!origin || origin === "null") return false
  try {
    return new URL(origin).host === request.headers.get("host")
  } catch {
    return false
  }
}
