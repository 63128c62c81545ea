// Named operators on the ops API: every read and every action needs one (Bearer token or the dashboard's session
// cookie), a cookie-carried POST must come from the dashboard's own origin (CSRF), the DLQ history names the
// operator, and without operators everything but health and metrics is 503. ops runs as a real process.
import { createHash, randomBytes } from "node:crypto"
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as assert from "uvu/assert"
import type { DlqEntry } from "../mesh/admin/mod.ts"
import { parseOperators, signToken } from "../mesh/auth.ts"
import { publishDeadLetter } from "../mesh/dlq.ts"
import { publishEvent } from "../mesh/publish.ts"
import { type Proc, spawnWorker } from "./fixtures/chaos.ts"
import { natsSuite, spawnTs, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const test = suite("ops auth")
const procs: Proc[] = []
test.after.each(async () => {
  await Promise.all(procs.splice(0).map((p) => p.stop("SIGKILL")))
})
const f = natsSuite(test)

const tok = () => randomBytes(18).toString("base64url")
const alice = tok()
const bob = tok()
const OPERATORS = `alice:${alice},bob:sha256:${createHash("sha256").update(bob).digest("hex")}`

async function startOps(env: Record<string, string> = { LOGIFLOW_OPERATORS: OPERATORS }) {
  const p = await spawnWorker("ops", { NATS_URL: f.server.url, ...env })
  procs.push(p)
  return p
}

/** n open DLQ entries for consumer invoice, indexed by ops. */
async function deadLetters(ops: Proc, n: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    const r = route(i)
    const ack = await publishEvent(f.js, "RouteCalculated", r, { id: `oa-${i}-${crypto.randomUUID()}`, source: "logiflow/test" })
    const m = (await f.jsm.streams.getMessage("ROUTING", { seq: ack.seq }))!
    await publishDeadLetter(f.js, {
      stream: "ROUTING",
      seq: ack.seq,
      consumer: "invoice",
      subject: m.subject,
      headers: m.header,
      data: m.data,
      deliveries: 1,
      reason: "no-tariff",
    })
    ids.push(`ROUTING.invoice.${ack.seq}`)
  }
  await waitUntil(async () => (await call(ops, "/api/dlq", { headers: bearer(alice) })).body.total === n, { what: `${n} entries indexed` })
  return ids
}

type Call = { status: number; body: any; headers: Headers; text: string }
async function call(p: Proc, path: string, init: RequestInit = {}): Promise<Call> {
  const res = await fetch(p.url + path, { redirect: "manual", ...init })
  const text = await res.text()
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  return { status: res.status, body, headers: res.headers, text }
}
const bearer = (t: string) => ({ authorization: `Bearer ${t}` })
const READS = ["/api/dlq", "/api/dlq/ROUTING.invoice.1", "/api/status", "/api/session", "/asyncapi.json"]

test("reads - every API read needs a named operator: 401 without or with an unknown token; plain and sha256-stored tokens work", async () => {
  const ops = await startOps()
  for (const path of READS) {
    const none = await call(ops, path)
    assert.is(none.status, 401, path)
    assert.equal(none.body, {
      status: 401,
      error: "sign in: open GET /login?token=<your operator token>, or send Authorization: Bearer <token>",
    })
    assert.is(none.headers.get("www-authenticate"), 'Bearer realm="logiflow-ops"')
    const unknown = await call(ops, path, { headers: bearer(tok()) })
    assert.equal([unknown.status, unknown.body.error], [401, "unknown operator token, or the session has expired"], path)
  }
  assert.equal((await call(ops, "/api/session", { headers: bearer(alice) })).body, { operator: "alice" })
  assert.equal((await call(ops, "/api/session", { headers: bearer(bob) })).body, { operator: "bob" }, "bob's token, stored as its digest")
  assert.is(
    (await call(ops, "/api/session", { headers: bearer(createHash("sha256").update(bob).digest("hex")) })).status,
    401,
    "the digest itself is no token",
  )
  assert.is((await call(ops, "/asyncapi.json", { headers: bearer(alice) })).status, 200)
  // open without credentials: the page (a sign-in form until there is a session), health and metrics
  for (const path of ["/", "/healthz", "/readyz", "/metrics"]) assert.is((await call(ops, path)).status, 200, path)
  const metrics = (await call(ops, "/metrics")).text
  assert.not.match(metrics, new RegExp(alice))
})

test("login - /login?token= sets a 12 h session cookie (not the token), which then reads; unknown tokens get none; /logout clears it", async () => {
  const ops = await startOps()
  const bad = await call(ops, `/login?token=${tok()}`)
  assert.is(bad.status, 401)
  assert.is(bad.headers.get("set-cookie"), null)
  assert.match(bad.text, /That operator token was not accepted/)
  const login = await call(ops, `/login?token=${bob}`)
  assert.is(login.status, 303)
  assert.is(login.headers.get("location"), "/")
  const m = /^logiflow_ops=([^;]+); HttpOnly; SameSite=Strict; Path=\/; Max-Age=43200$/.exec(login.headers.get("set-cookie")!)
  assert.ok(m, login.headers.get("set-cookie")!)
  assert.not.ok(m![1]!.includes(bob), "the cookie is a session, not the operator's token")
  const session = { cookie: `logiflow_ops=${m![1]}` }
  assert.equal((await call(ops, "/api/session", { headers: session })).body, { operator: "bob" })
  assert.is((await call(ops, "/api/dlq", { headers: session })).status, 200)
  // a session signed by anything but this ops process (another key, a portal token) is no session
  // the signature's last character carries 2 spare bits: the three other spellings that decode to the same bytes are
  // refused as well as a different signature
  const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  const last = B64URL.indexOf(m![1]!.at(-1)!)
  const respelled = [0, 1, 2, 3].map((k) => B64URL[(last & ~3) + k]!).filter((c) => c !== B64URL[last])
  for (const forged of [
    await signToken("some-other-key-0123456789-0123456789", "bob", 4_000_000_000),
    m![1]!.replace(/.$/, (c) => (c === "A" ? "B" : "A")),
    ...respelled.map((c) => m![1]!.slice(0, -1) + c),
  ]) {
    assert.is((await call(ops, "/api/session", { headers: { cookie: `logiflow_ops=${forged}` } })).status, 401)
  }
  const logout = await call(ops, "/logout", { headers: session })
  assert.equal([logout.status, logout.headers.get("set-cookie")], [303, "logiflow_ops=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"])
})

test("CSRF - a POST carried by the session cookie needs this origin (Sec-Fetch-Site or Origin); bearer POSTs do not; history names the operator", async () => {
  const ops = await startOps()
  const [one, two, three] = (await deadLetters(ops, 3)) as [string, string, string]
  const cookie = `logiflow_ops=${/^logiflow_ops=([^;]+)/.exec((await call(ops, `/login?token=${bob}`)).headers.get("set-cookie")!)![1]}`
  const host = new URL(ops.url).host
  const post = (path: string, headers: Record<string, string>) => call(ops, path, { method: "POST", headers })
  const crossSite: Record<string, string>[] = [
    { cookie },
    { cookie, origin: "http://evil.example" },
    { cookie, origin: "null" },
    { cookie, "sec-fetch-site": "cross-site", origin: `http://${host}` },
    { cookie, "sec-fetch-site": "same-site" },
  ]
  for (const headers of crossSite) {
    const r = await post(`/api/dlq/${one}/discard`, headers)
    assert.is(r.status, 403, JSON.stringify(headers))
    assert.match(r.body.error, /^cross-site request refused/)
  }
  const untouched = (await call(ops, `/api/dlq/${one}`, { headers: bearer(alice) })).body.entry as DlqEntry
  assert.is(untouched.state, "open", "the refused requests changed nothing")

  assert.is((await post(`/api/dlq/${one}/discard`, { cookie, origin: `http://${host}` })).status, 200)
  assert.is((await post(`/api/dlq/${two}/discard`, { cookie, "sec-fetch-site": "same-origin" })).status, 200)
  assert.is(
    (await post(`/api/dlq/${three}/discard`, bearer(alice))).status,
    200,
    "a bearer token is no ambient credential: no origin needed",
  )
  const by = async (id: string) =>
    ((await call(ops, `/api/dlq/${id}`, { headers: bearer(alice) })).body.entry as DlqEntry).history.map((h) => [h.action, h.by])
  assert.equal(await by(one), [
    ["dead-lettered", "invoice"],
    ["discarded", "bob"],
  ])
  assert.equal(await by(two), [
    ["dead-lettered", "invoice"],
    ["discarded", "bob"],
  ])
  assert.equal(await by(three), [
    ["dead-lettered", "invoice"],
    ["discarded", "alice"],
  ])
  assert.is((await post(`/api/dlq/${one}/replay`, {})).status, 401)
})

test("configuration - no operators: reads and actions 503 naming LOGIFLOW_OPERATORS (health stays); a file works; bad lists stop the start", async () => {
  const none = await startOps({ LOGIFLOW_OPERATORS: "" })
  assert.ok(none.lines.some((l) => /"level":"warn".*no operators configured.*LOGIFLOW_OPERATORS/.test(l)))
  for (const [path, method] of [
    ...READS.map((p) => [p, "GET"]),
    ["/api/dlq/ROUTING.invoice.1/replay", "POST"],
    ["/login?token=x", "GET"],
  ]) {
    const r = await call(none, path!, { method, headers: bearer(alice) })
    assert.is(r.status, 503, path)
    assert.match(r.body.error, /no operators are configured; set LOGIFLOW_OPERATORS \(or LOGIFLOW_OPERATORS_FILE\)/)
  }
  assert.is((await call(none, "/healthz")).status, 200)

  const file = join(f.server.storeDir, "operators")
  await writeFile(
    file,
    `# the on-call rota\ncarol:${alice}\n\ndave:sha256:${createHash("sha256").update(bob).digest("hex")}  # since May\n`,
    { mode: 0o600 },
  )
  const fromFile = await startOps({ LOGIFLOW_OPERATORS: "", LOGIFLOW_OPERATORS_FILE: file })
  assert.equal((await call(fromFile, "/api/session", { headers: bearer(alice) })).body, { operator: "carol" })
  assert.equal((await call(fromFile, "/api/session", { headers: bearer(bob) })).body, { operator: "dave" })

  const secretToken = tok()
  for (const [env, message] of [
    [{ LOGIFLOW_OPERATORS: OPERATORS, LOGIFLOW_OPERATORS_FILE: file }, "set LOGIFLOW_OPERATORS or LOGIFLOW_OPERATORS_FILE, not both"],
    [{ LOGIFLOW_OPERATORS: `alice:${secretToken},eve:short` }, 'LOGIFLOW_OPERATORS entry 2 ("eve"): the secret must be'],
    [{ LOGIFLOW_OPERATORS: `alice:${secretToken},alice:${tok()}` }, 'LOGIFLOW_OPERATORS: "alice" is listed twice'],
  ] as const) {
    const c = spawnTs("workers/ops.ts", { NATS_URL: f.server.url, OPS_PORT: "0", ...env })
    assert.is(await c.exited, 1)
    assert.ok(
      c.lines.some((l) => l.includes(message)),
      c.lines.join("\n"),
    )
    assert.not.ok(
      c.lines.some((l) => l.includes(secretToken)),
      "never the token",
    )
  }
  assert.equal(parseOperators(" # nobody yet\n").names, [])
  assert.equal(parseOperators(`x@example.com:${secretToken}`).names, ["x@example.com"])
})

test.run()
