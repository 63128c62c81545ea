// Hostile clients on raw sockets: every HTTP worker (routing, tracking, portal, ops, invoice, fleet) as its own
// process against this suite's nats-server, and routing and portal under Deno too, get hand-written bytes — broken
// Host headers, every request-target form, bad percent-encoding, oversized and countless headers, contradictory
// framing, TLS and HTTP/2 on the plain port, control bytes, obs-fold, slow heads. Each answer is the right 4xx (or a
// closed connection where HTTP allows no answer), and afterwards the same process (same pid) still answers /healthz.
import * as assert from "uvu/assert"
import { topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { spawnWorker, statusOf } from "./fixtures/chaos.ts"
import { type RawAnswer, raw, refusedOrClosed, slowClients, TLS_CLIENT_HELLO } from "./fixtures/raw.ts"
import { denoBinary } from "./child.ts"
import { type Child, freePort, natsFixture, spawnChild, type TestServer, testAuth, waitUntil, suite } from "./harness.ts"

const test = suite("hostile")
type Target = { name: string; runtime: "node" | "deno"; port: number; child: Child; auth: string }
let server: TestServer
const targets: Target[] = []

// a head must be complete within a second: the slow-client cases answer within a few
const ENV = { HTTP_HEADERS_TIMEOUT_MS: "1000" }

test.before(async () => {
  const f = await natsFixture()
  server = f.server
  await provision(f.nc, topology())
  await f.nc.close()
  const auth = testAuth()
  const acme = await auth.customerToken("acme")
  // each worker's own credential, so a malformed path reaches the route instead of stopping at the check
  const header = (name: string) =>
    `Authorization: Bearer ${name === "portal" ? acme : name === "ops" ? auth.operator.token : auth.keys.both}`
  const nowhere = `http://127.0.0.1:${await freePort()}`
  const env = { NATS_URL: server.url, ROUTING_URL: nowhere, TRACKING_URL: nowhere, ...ENV }
  const names = ["routing", "tracking", "portal", "ops", "invoice", "fleet"] as const
  const node = await Promise.all(names.map((n) => spawnWorker(n, env)))
  for (const p of node) targets.push({ name: p.name, runtime: "node", port: p.port, child: p, auth: header(p.name) })
  for (const name of ["routing", "portal"]) {
    const port = await freePort()
    const child = spawnChild(
      denoBinary(),
      ["run", "-A", `workers/${name}.ts`],
      { ...env, [`${name.toUpperCase()}_PORT`]: String(port), LOG_LEVEL: "info", DENO_NO_UPDATE_CHECK: "1" },
      { name: `deno ${name}` },
    )
    targets.push({ name, runtime: "deno", port, child, auth: header(name) })
    // the first run on a machine also transpiles the import graph into Deno's cache
    await waitUntil(async () => child.proc.exitCode !== null || (await statusOf(`http://127.0.0.1:${port}`, "/readyz")) === 200, {
      timeoutMs: 90_000,
      every: 250,
      what: `${name} under Deno`,
    })
  }
})
test.after(async () => {
  await Promise.all(targets.map((t) => t.child.stop("SIGKILL")))
  await server?.close()
})

type Expect = number | "4xx" | "4xx-or-closed"
type Case = { name: string; bytes: (t: Target) => string | Uint8Array; expect: Expect; deno?: Expect; end?: boolean }
const GET = (target: string, headers = "Host: x\r\n") => `GET ${target} HTTP/1.1\r\n${headers}\r\n`
const post = (headers: string, body = "") => `POST /routes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers}\r\n${body}`

const CASES: Case[] = [
  { name: "Host with a space", bytes: () => GET("/healthz", "Host: a b\r\n"), expect: 400, deno: 400 },
  { name: "Host with userinfo", bytes: () => GET("/healthz", "Host: a@b\r\n"), expect: 400, deno: 400 },
  { name: "no Host", bytes: () => GET("/healthz", ""), expect: 400, deno: 400 },
  { name: "two Hosts", bytes: () => GET("/healthz", "Host: a\r\nHost: b\r\n"), expect: 400, deno: 400 },
  { name: "origin-form", bytes: () => GET("/healthz"), expect: 200 },
  { name: "absolute-form (as proxies send it)", bytes: () => GET("http://x/healthz"), expect: 200 },
  { name: "authority-form CONNECT", bytes: () => "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", expect: 405 },
  { name: "asterisk-form OPTIONS", bytes: () => "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", expect: 400 },
  {
    name: "bad percent-encoding in the path",
    bytes: (t) => GET("/api/trucks/%E0%A4%A", `Host: x\r\n${t.auth}\r\n`),
    expect: "4xx",
    deno: "4xx",
  },
  {
    name: "bad percent-encoding in the query",
    bytes: (t) => GET("/api/invoices?customerId=%ZZ", `Host: x\r\n${t.auth}\r\n`),
    expect: "4xx",
    deno: "4xx",
  },
  { name: "a lone % in the path", bytes: () => GET("/%"), expect: "4xx", deno: "4xx" },
  {
    name: "one header over 16 KiB",
    bytes: () => GET("/healthz", `Host: x\r\nX-Big: ${"a".repeat(17 * 1024)}\r\n`),
    expect: 431,
    deno: 431,
  },
  {
    name: "150 headers",
    bytes: () => GET("/healthz", `Host: x\r\n${Array.from({ length: 150 }, (_, i) => `X-H${i}: v\r\n`).join("")}`),
    expect: 431,
  },
  { name: "two different Content-Lengths", bytes: () => post("Content-Length: 2\r\nContent-Length: 3\r\n", "{}"), expect: 400 },
  { name: "a negative Content-Length", bytes: () => post("Content-Length: -1\r\n", "{}"), expect: 400 },
  { name: "the same Content-Length twice", bytes: () => post("Content-Length: 2\r\nContent-Length: 2\r\n", "{}"), expect: "4xx" },
  {
    name: "Content-Length and Transfer-Encoding",
    bytes: () => post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    expect: 400,
  },
  { name: "a chunk size that is not hex", bytes: () => post("Transfer-Encoding: chunked\r\n", "zz\r\n{}\r\n0\r\n\r\n"), expect: 400 },
  {
    name: "a body shorter than announced, then the client closes",
    bytes: (t) => post(`${t.auth}\r\nContent-Length: 100\r\n`, '{"truckId":'),
    expect: "4xx-or-closed",
    end: true,
  },
  { name: "a TLS ClientHello", bytes: () => TLS_CLIENT_HELLO, expect: "4xx-or-closed", deno: "4xx-or-closed" },
  { name: "an unknown method", bytes: () => "FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n", expect: 400 },
  { name: "TRACE", bytes: () => "TRACE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", expect: 405 },
  { name: "HTTP/2.0 as a request line", bytes: () => "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", expect: 400 },
  { name: "HTTP/9.9", bytes: () => "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", expect: 400 },
  { name: "the HTTP/2 preface", bytes: () => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", expect: "4xx-or-closed" },
  { name: "NUL in the request line", bytes: () => GET("/heal\0thz"), expect: 400 },
  { name: "DEL in the request line", bytes: () => GET("/heal\x7fthz"), expect: 400 },
  { name: "a raw non-ASCII byte in the target", bytes: () => GET("/h\xe9althz"), expect: "4xx" },
  { name: "NUL in a header value", bytes: () => GET("/healthz", "Host: x\r\nX-A: a\0b\r\n"), expect: 400 },
  { name: "a control byte in a header value", bytes: () => GET("/healthz", "Host: x\r\nX-A: a\x01b\r\n"), expect: 400 },
  { name: "a bare CR in a header value", bytes: () => GET("/healthz", "Host: x\r\nX-A: a\rb\r\n"), expect: 400 },
  { name: "a space before the colon", bytes: () => GET("/healthz", "Host: x\r\nX-A : b\r\n"), expect: 400 },
  { name: "obs-fold (a header continued on the next line)", bytes: () => GET("/healthz", "Host: x\r\nX-A: a\r\n b\r\n"), expect: 400 },
]

function check(a: RawAnswer, expect: Expect): boolean {
  if (typeof expect === "number") return a.status === expect
  if (expect === "4xx") return a.status !== undefined && a.status >= 400 && a.status < 500
  return refusedOrClosed(a)
}

/** The same process (same pid, never exited) still answers. */
async function alive(t: Target, after: string) {
  assert.is(t.child.proc.exitCode, null, `${t.runtime} ${t.name} exited after ${after}: ${t.child.lines.slice(-3).join(" | ")}`)
  assert.ok(process.kill(t.child.pid, 0), `pid ${t.child.pid}`)
  assert.is(await statusOf(`http://127.0.0.1:${t.port}`, "/healthz"), 200, `${t.runtime} ${t.name} /healthz after ${after}`)
}

test("every worker - each hostile request gets its 4xx (or a close where no answer is possible), and the worker stays up", async () => {
  const wrong: string[] = []
  for (const t of targets) {
    for (const c of CASES) {
      const expect = t.runtime === "deno" ? c.deno : c.expect
      if (expect === undefined) continue
      const a = await raw(t.port, c.bytes(t), { end: c.end, waitMs: 3000 })
      if (!check(a, expect))
        wrong.push(
          `${t.runtime} ${t.name}, ${c.name}: want ${expect}, got ${a.status ?? (a.closed ? "a close" : "nothing")} (${a.head.split("\r\n")[0]})`,
        )
      await alive(t, c.name)
    }
  }
  assert.equal(wrong, [])
})

test("slow heads - a head trickled a byte at a time gets 408 or a close within a few seconds (HTTP_HEADERS_TIMEOUT_MS=1000)", async () => {
  const head = `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ${"a".repeat(200)}\r\n\r\n`
  const answers = await Promise.all(targets.map((t) => raw(t.port, head, { trickleMs: 50, waitMs: 8000 })))
  answers.forEach((a, i) => {
    const t = targets[i]!
    assert.ok(
      a.status === 408 || (a.status === undefined && a.closed),
      `${t.runtime} ${t.name}: ${a.status ?? "no answer"}, closed ${a.closed}`,
    )
    assert.ok(a.ms < 4000, `${t.runtime} ${t.name}: cut off after ${a.ms} ms`)
  })
  for (const t of targets) await alive(t, "a trickled head")
})

test("slow heads - 200 stalled connections at once: /healthz still answers quickly, and each stalled one is cut off", async () => {
  for (const t of targets) {
    const stalled = await slowClients(t.port, 200, 8000)
    const t0 = performance.now()
    assert.is(await statusOf(`http://127.0.0.1:${t.port}`, "/healthz", 2000), 200, `${t.runtime} ${t.name}`)
    const ms = performance.now() - t0
    assert.ok(ms < 1000, `${t.runtime} ${t.name}: /healthz took ${Math.round(ms)} ms beside 200 stalled connections`)
    const answers = await Promise.all(stalled)
    const notCut = answers.filter((a) => !(a.status === 408 || (a.status === undefined && a.closed)))
    assert.is(notCut.length, 0, `${t.runtime} ${t.name}: ${notCut.length} of 200 still open`)
    await alive(t, "200 stalled connections")
  }
})

test("open and closed - /healthz, /readyz and /metrics need no credential on any worker; the APIs do", async () => {
  for (const t of targets) {
    for (const path of ["/healthz", "/readyz", "/metrics"])
      assert.is(await statusOf(`http://127.0.0.1:${t.port}`, path), 200, `${t.runtime} ${t.name} ${path}`)
  }
  const at = (name: string) => `http://127.0.0.1:${targets.find((t) => t.name === name && t.runtime === "node")!.port}`
  const status = (url: string, init?: RequestInit) => fetch(url, init).then(async (r) => (await r.arrayBuffer(), r.status))
  assert.is(await status(`${at("portal")}/api/trucks`), 401)
  assert.is(await status(`${at("portal")}/`), 401)
  assert.is(await status(`${at("ops")}/api/dlq`), 401)
  assert.is(await status(`${at("ops")}/api/status`), 401)
  assert.is(await status(`${at("routing")}/routes`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }), 401)
  assert.is(
    await status(`${at("tracking")}/positions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }),
    401,
  )
})

test.run()
