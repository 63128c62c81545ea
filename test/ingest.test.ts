// API keys on the ingestion endpoints (routing POST /routes, tracking POST /positions) as a client sees them: 401
// without or with an unknown key, 403 outside the key's scopes, 429 with Retry-After past its rate (per key: a greedy
// client never slows another), keys from the environment or a file, stored plain or as a SHA-256 digest. Real
// worker processes, real sockets, one nats-server.
import { createHash, randomBytes } from "node:crypto"
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as assert from "uvu/assert"
import { topology } from "../contracts/mod.ts"
import { parseApiKeys } from "../mesh/auth.ts"
import { provision } from "../mesh/provision.ts"
import { type Proc, spawnWorker } from "./fixtures/chaos.ts"
import { natsFixture, spawnTs, type TestServer, waitUntil, suite } from "./harness.ts"

const test = suite("ingest")
const key = () => randomBytes(18).toString("base64url")
const k = { dispatcher: key(), gateway: key(), hashed: key(), fast: key() }
const sha = (s: string) => createHash("sha256").update(s).digest("hex")
const KEYS = [
  `dispatcher:${k.dispatcher}:routes:1`,
  `gateway:${k.gateway}:positions:50`,
  `hashed:sha256:${sha(k.hashed)}:routes+positions:50`,
  `fast:${k.fast}:routes:1000`,
].join(",")

let server: TestServer
let routing: Proc
let tracking: Proc
const extra: Proc[] = []

test.before(async () => {
  const f = await natsFixture()
  server = f.server
  await provision(f.nc, topology(), { consumers: () => false })
  await f.nc.close()
  const env = { NATS_URL: server.url, LOGIFLOW_API_KEYS: KEYS }
  ;[routing, tracking] = await Promise.all([spawnWorker("routing", env), spawnWorker("tracking", env)])
})
test.after(async () => {
  await Promise.all([routing, tracking, ...extra].map((p) => p?.stop("SIGKILL")))
  await server?.close()
})

const routeBody = {
  truckId: "truck-1",
  customerId: "acme",
  depot: { lat: 52.52, lon: 13.405 },
  stops: [{ id: "a", lat: 52.53, lon: 13.41 }],
}
const positionsBody = () => ({ positions: [{ truckId: "truck-1", lat: 52.5, lon: 13.4, at: new Date().toISOString() }] })

type Answer = { status: number; body: { status?: number; error?: string }; headers: Headers }
async function post(
  p: Proc,
  path: string,
  headers: Record<string, string>,
  body: unknown = path === "/routes" ? routeBody : positionsBody(),
): Promise<Answer> {
  const res = await fetch(p.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  })
  return { status: res.status, body: await res.json(), headers: res.headers }
}
const bearer = (t: string) => ({ authorization: `Bearer ${t}` })

test("keys - 401 without a key or with an unknown one, 403 outside its scopes, 202 by Bearer or X-Api-Key", async () => {
  for (const [p, path, own, other] of [
    [routing, "/routes", k.dispatcher, k.gateway],
    [tracking, "/positions", k.gateway, k.dispatcher],
  ] as const) {
    const none = await post(p, path, {})
    assert.equal([none.status, none.body.error], [401, "missing API key: send Authorization: Bearer <key> or X-Api-Key: <key>"], path)
    assert.is(none.headers.get("www-authenticate"), 'Bearer realm="logiflow"')
    const unknown = await post(p, path, bearer(key()))
    assert.equal([unknown.status, unknown.body.error], [401, "unknown API key"])
    assert.equal((await post(p, path, bearer(`${own}x`))).status, 401, "a key with one character more")
    assert.equal((await post(p, path, bearer(own.slice(0, -1)))).status, 401, "a key with one character less")
    assert.equal((await post(p, path, { authorization: `Basic ${own}` })).status, 401)
    const wrongScope = await post(p, path, bearer(other))
    assert.is(wrongScope.status, 403)
    assert.match(
      wrongScope.body.error!,
      new RegExp(`^API key "(gateway|dispatcher)" may not send ${path.slice(1)} \\(its scopes: (positions|routes)\\)$`),
    )
    assert.is((await post(p, path, bearer(own))).status, 202)
    assert.is((await post(p, path, { "x-api-key": own })).status, 202)
    // stored as sha256:<hex>: the plaintext still opens, the digest itself does not
    assert.is((await post(p, path, { authorization: `bearer ${k.hashed}` })).status, 202)
    assert.is((await post(p, path, bearer(sha(k.hashed)))).status, 401)
  }
})

test("rate - past its rate a key gets 429 with Retry-After, other keys are untouched, and it recovers", async () => {
  // dispatcher: 1 request/s, a burst of 2 s worth; wait until its bucket is full again after the previous test
  await new Promise((r) => setTimeout(r, 2100))
  const statuses: number[] = []
  let limited: Answer | undefined
  for (let i = 0; i < 4; i++) {
    const a = await post(routing, "/routes", bearer(k.dispatcher))
    statuses.push(a.status)
    if (a.status === 429) limited ??= a
  }
  assert.equal(statuses.slice(0, 2), [202, 202], `the burst: ${statuses}`)
  assert.ok(statuses.slice(2).includes(429), `then refused: ${statuses}`)
  assert.is(limited!.headers.get("retry-after"), "1")
  assert.match(limited!.body.error!, /^API key "dispatcher" is over its rate of 1 requests per second; retry in 1 s$/)
  assert.is(limited!.body.status, 429)
  // 20 requests of another client at once, while dispatcher is held back: every one accepted
  const fast = await Promise.all(Array.from({ length: 20 }, () => post(routing, "/routes", bearer(k.fast))))
  assert.equal(
    fast.map((a) => a.status),
    Array(20).fill(202),
  )
  assert.is((await post(routing, "/routes", bearer(k.dispatcher))).status, 429)
  await waitUntil(async () => (await post(routing, "/routes", bearer(k.dispatcher))).status === 202, {
    timeoutMs: 3000,
    every: 250,
    what: "dispatcher accepted again",
  })
  const metrics = await (await fetch(`${routing.url}/metrics`)).text()
  assert.match(metrics, /logiflow_api_key_refused_total\{client="dispatcher",status="429"\} [1-9]/)
  assert.match(metrics, /logiflow_api_key_refused_total\{client="unknown",status="401"\} 4\n/)
})

test("open endpoints - /healthz, /readyz and /metrics need no key; the ingestion route does", async () => {
  for (const p of [routing, tracking]) {
    for (const path of ["/healthz", "/readyz", "/metrics"]) assert.is((await fetch(p.url + path)).status, 200, `${p.name} ${path}`)
  }
})

test("no keys configured - a warning at start naming LOGIFLOW_API_KEYS, and 401 for everyone saying so", async () => {
  const p = await spawnWorker("routing", { NATS_URL: server.url, LOGIFLOW_API_KEYS: "" })
  extra.push(p)
  assert.ok(
    p.lines.some((l) => /"level":"warn".*no API keys configured.*LOGIFLOW_API_KEYS/.test(l)),
    p.lines.join("\n"),
  )
  for (const h of [{}, bearer(k.dispatcher)]) {
    const a = await post(p, "/routes", h)
    assert.is(a.status, 401)
    assert.match(a.body.error!, /no API keys are configured.*LOGIFLOW_API_KEYS/)
  }
  assert.is((await fetch(`${p.url}/healthz`)).status, 200)
})

test("keys from a file - LOGIFLOW_API_KEYS_FILE, one per line with # comments; both variables set is a start error", async () => {
  const file = join(server.storeDir, "api-keys")
  await writeFile(
    file,
    `# gateways\ngateway-a:${k.gateway}:positions:10   # depot A\n\n# digest only\nhashed:sha256:${sha(k.hashed)}:routes+positions:5\n`,
    { mode: 0o600 },
  )
  const p = await spawnWorker("tracking", { NATS_URL: server.url, LOGIFLOW_API_KEYS: "", LOGIFLOW_API_KEYS_FILE: file })
  extra.push(p)
  assert.is((await post(p, "/positions", bearer(k.gateway))).status, 202)
  assert.is((await post(p, "/positions", bearer(k.hashed))).status, 202)
  assert.is((await post(p, "/positions", bearer(k.fast))).status, 401)

  const both = spawnTs("workers/tracking.ts", {
    NATS_URL: server.url,
    LOGIFLOW_API_KEYS: KEYS,
    LOGIFLOW_API_KEYS_FILE: file,
    TRACKING_PORT: "0",
  })
  assert.is(await both.exited, 1)
  assert.ok(
    both.lines.some((l) => l.includes("set LOGIFLOW_API_KEYS or LOGIFLOW_API_KEYS_FILE, not both")),
    both.lines.join("\n"),
  )
  const secretKey = key()
  const broken = spawnTs("workers/routing.ts", {
    NATS_URL: server.url,
    LOGIFLOW_API_KEYS: `ok:${key()}:routes:1,bad:${secretKey}:routes:fast`,
    ROUTING_PORT: "0",
  })
  assert.is(await broken.exited, 1)
  assert.ok(
    broken.lines.some((l) => l.includes('LOGIFLOW_API_KEYS entry 2 ("bad"): ratePerSecond must be a positive number')),
    broken.lines.join("\n"),
  )
  assert.not.ok(
    broken.lines.some((l) => l.includes(secretKey)),
    "the error never shows the key",
  )
})

test("parseApiKeys - every malformed entry is refused with its position, never echoing the key", () => {
  const secretKey = key()
  const cases: [string, string][] = [
    [`a:${secretKey}:routes`, "LOGIFLOW_API_KEYS entry 1: expected name:key:scopes:ratePerSecond"],
    [`a:${secretKey}:routes:1,b:short:routes:1`, 'LOGIFLOW_API_KEYS entry 2 ("b"): the secret must be'],
    [`a:${secretKey}:tracking:1`, 'LOGIFLOW_API_KEYS entry 1 ("a"): scopes are routes, positions or routes+positions'],
    [`a:${secretKey}:routes+routes:1`, "scopes are routes, positions or routes+positions"],
    [`a:${secretKey}:routes:0`, "ratePerSecond must be a positive number"],
    [`a:${secretKey}:routes:-5`, "ratePerSecond must be a positive number"],
    [`a b:${secretKey}:routes:1`, "LOGIFLOW_API_KEYS entry 1: the name must be"],
    [`a:sha256:abc:routes:1`, "the secret must be"],
    [`a:${secretKey}:routes:1,a:${key()}:positions:1`, 'LOGIFLOW_API_KEYS: "a" is listed twice'],
  ]
  for (const [text, message] of cases) {
    try {
      parseApiKeys(text)
      assert.unreachable(text)
    } catch (err) {
      assert.ok(
        (err as Error).message.startsWith(message) || (err as Error).message.includes(message),
        `${text}: ${(err as Error).message}`,
      )
      assert.not.ok((err as Error).message.includes(secretKey))
    }
  }
  assert.equal(
    parseApiKeys(`x:${secretKey}:routes+positions:0.5`).map((a) => [a.name, a.scopes, a.ratePerSecond]),
    [["x", ["routes", "positions"], 0.5]],
  )
})

test.run()
