// mesh/lazy-web.ts — web Request and Response stand-ins for the Node server's hot path: what a route and the server
// read (method, url, headers; status, headers, the JSON text) at hand, every other member from a real web object made
// the first time one is touched. undici's Request and Response cost ~8 and ~16 µs each on Node 20, each with a stream
// or signal that outlives the request (bench/README.md, profile finding 10); Deno's own are cheap and used as they are.
import { isDeno } from "./env.ts"

type Members = Record<string | symbol, unknown>

/**
 * Gives `stand.prototype` every member of `web.prototype` it does not define itself, each taken from the real web
 * object `real(this)` returns (made once per instance).
 */
export function delegateRest<T extends object>(stand: { prototype: T }, web: { prototype: object }, real: (self: T) => object) {
  for (const key of Object.getOwnPropertyNames(web.prototype)) {
    if (key === "constructor" || key in stand.prototype) continue
    const d = Object.getOwnPropertyDescriptor(web.prototype, key)!
    if (typeof d.value === "function") {
      Object.defineProperty(stand.prototype, key, {
        value(this: T, ...args: unknown[]) {
          return ((real(this) as Members)[key] as (...a: unknown[]) => unknown)(...args)
        },
      })
    } else if (d.get) {
      Object.defineProperty(stand.prototype, key, {
        get(this: T) {
          return (real(this) as Members)[key]
        },
      })
    }
  }
}

/**
 * A JSON answer as `json()` makes it on Node: `instanceof Response`, its status and JSON text at hand for the server
 * to write, its headers a real Headers once read; anything else (body, text(), clone(), …) from a real Response.
 */
export class LazyResponse {
  #full: Response | undefined
  #headers: Headers | undefined
  /** the body, JSON text */
  #text: string
  #init: ResponseInit | undefined
  readonly status: number
  constructor(text: string, init: ResponseInit | undefined) {
    this.#text = text
    this.#init = init
    const status = init?.status ?? 200
    // what Response.json refuses, refused alike
    if (!(Number.isInteger(status) && status >= 200 && status <= 599))
      throw new RangeError(`init["status"] must be in the range of 200 to 599, inclusive.`)
    this.status = status
  }
  get headers(): Headers {
    if (!this.#headers) {
      this.#headers = new Headers(this.#init?.headers)
      if (!this.#headers.has("content-type")) this.#headers.set("content-type", "application/json")
    }
    return this.#headers
  }
  /** the real Response, made once: its body the JSON text, its headers the ones read (and maybe changed) here */
  real(): Response {
    this.#full ??= new Response(this.#text, { status: this.status, statusText: this.#init?.statusText, headers: this.headers })
    return this.#full
  }
  /**
   * What the Node server writes: header record and body, while nothing but the status was read; undefined once
   * the headers or the body were touched (the server then reads the real Response like any other).
   */
  wire(): { head: Record<string, string>; body: string } | undefined {
    if (this.#full || this.#headers) return undefined
    const given = this.#init?.headers
    if (given !== undefined && (typeof given !== "object" || Array.isArray(given) || given instanceof Headers)) return undefined
    const head: Record<string, string> = { "content-type": "application/json" }
    for (const [k, v] of Object.entries(given ?? {})) head[k.toLowerCase()] = v
    return { head, body: this.#text }
  }
}
delegateRest(LazyResponse, Response, (r) => r.real())
Object.setPrototypeOf(LazyResponse.prototype, Response.prototype)

/**
 * `Response.json(data, init)` for routes and the front: the same answer, cheaper on Node (a LazyResponse the server
 * writes without a web stream); on Deno the native Response.
 */
export const json = (data: unknown, init?: ResponseInit): Response =>
  isDeno ? Response.json(data, init) : (new LazyResponse(JSON.stringify(data), init) as unknown as Response)
