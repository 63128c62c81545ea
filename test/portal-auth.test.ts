// Customer isolation in the portal: a customer signs in with a token signed by PORTAL_SECRET and sees only its own
// trucks and invoices. Over plain HTTP (401 without or with a bad token, 403 for another customer's query, 404 for
// another customer's truck, the login cookie) and in headless Chromium from acme's one-click link.
import { existsSync } from "node:fs"
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import type { JetStreamClient } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { type EventData, type EventName, type InvoiceGenerated, topology } from "../contracts/mod.ts"
import { base64url, signToken } from "../mesh/auth.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import type { Running } from "../mesh/worker.ts"
import { natsFixture, spawnTs, type TestServer, testAuth, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const { default: portal } = await import("../workers/portal.ts")

const test = suite("portal auth")
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
let server: TestServer
let nc: NatsConnection
let js: JetStreamClient
let w: Running
let base: string
const extra: Running[] = []

const auth = testAuth()
const hour = () => Math.floor(Date.now() / 1000) + 3600
let seq = 0
const publish = <N extends EventName>(name: N, data: EventData<N>, _key?: string) =>
  publishEvent(js, name, data, { id: `pa-${++seq}`, source: "logiflow/test" })
const invoice = (id: string, customerId: string, truckId: string, totalCents: number): InvoiceGenerated => ({
  invoiceId: id,
  routeId: `route-of-${id}`,
  truckId,
  customerId,
  lines: [{ description: "Base fee", amountCents: totalCents }],
  totalCents,
  currency: "EUR",
  issuedAt: new Date().toISOString(),
})

test.before(async () => {
  ;({ server, nc, js } = await natsFixture())
  await provision(nc, topology(), { consumers: () => false })
  w = await portal.start({ url: server.url, port: 0, hostname: "127.0.0.1", drainTimeoutMs: 2000 })
  base = `http://127.0.0.1:${w.port}`
  const now = new Date().toISOString()
  await publish("RouteCalculated", route(1, { truckId: "acme-truck", customerId: "acme", calculatedAt: now }), "acme-truck")
  await publish("RouteCalculated", route(2, { truckId: "globex-truck", customerId: "globex", calculatedAt: now }), "globex-truck")
  await publish("InvoiceGenerated", invoice("inv-acme-1", "acme", "acme-truck", 12_300), "acme-truck")
  await publish("InvoiceGenerated", invoice("inv-acme-2", "acme", "acme-truck", 4_500), "acme-truck")
  await publish("InvoiceGenerated", invoice("inv-globex-1", "globex", "globex-truck", 99_900), "globex-truck")
  const globex = `Bearer ${await auth.customerToken("globex")}`
  await waitUntil(
    async () => {
      const r = await fetch(`${base}/api/invoices`, { headers: { authorization: globex } })
      return r.ok && ((await r.json()) as { invoices: unknown[] }).invoices.length === 1
    },
    { what: "the read model filled" },
  )
  await waitUntil(async () => (await fetch(`${base}/api/trucks/globex-truck`, { headers: { authorization: globex } })).status === 200, {
    what: "globex's truck",
  })
})
test.after(async () => {
  await Promise.all([w, ...extra].map((r) => r?.stop()))
  await nc?.close()
  await server?.close()
})

type Got = { status: number; headers: Headers; text: string; json: () => { status?: number; error?: string } & Record<string, unknown> }
async function get(path: string, headers: Record<string, string> = {}, at = base): Promise<Got> {
  const res = await fetch(at + path, { headers, redirect: "manual" })
  const text = await res.text()
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) }
}
const as = async (customer: string) => ({ authorization: `Bearer ${await auth.customerToken(customer)}` })
const API = ["/api/trucks", "/api/trucks/acme-truck", "/api/invoices", "/api/invoices?customerId=acme"]

test("no credential - 401 with an error for every API path, and a sign-in page (401, no script) for the page", async () => {
  for (const path of API) {
    const r = await get(path)
    assert.is(r.status, 401, path)
    assert.equal(r.json(), { status: 401, error: "sign in first: open your portal link, or send Authorization: Bearer <token>" })
    assert.is(r.headers.get("www-authenticate"), 'Bearer realm="logiflow-portal"')
  }
  const page = await get("/")
  assert.is(page.status, 401)
  assert.match(page.headers.get("content-type")!, /^text\/html/)
  assert.match(page.headers.get("content-security-policy")!, /default-src 'none'/)
  assert.match(page.text, /<h2>Sign in<\/h2>/)
  assert.match(page.text, /<form method="get" action="\/login">/)
  assert.not.match(page.text, /<script/)
  assert.not.match(page.text, /acme-truck|globex-truck|inv-/)
})

test("bad tokens - forged, expired, tampered or garbage: 401, on the API, the page and /login", async () => {
  const acme = await auth.customerToken("acme")
  const [, exp, sig] = acme.split(".")
  const bad: Record<string, string> = {
    forged: await signToken("another-secret-that-is-long-enough-0123456789", "acme", hour()),
    expired: await auth.customerToken("acme", { expiresAt: Math.floor(Date.now() / 1000) - 1 }),
    "another customer's id under acme's signature": `${base64url(new TextEncoder().encode("globex"))}.${exp}.${sig}`,
    "a later expiry under the same signature": `${acme.split(".")[0]}.${Number(exp) + 86_400}.${sig}`,
    "signature cut short": acme.slice(0, -1),
    garbage: "not-a-token",
    empty: "..",
  }
  for (const [what, token] of Object.entries(bad)) {
    const viaBearer = await get("/api/trucks", { authorization: `Bearer ${token}` })
    assert.is(viaBearer.status, 401, what)
    assert.match(viaBearer.json().error!, /invalid or expired sign-in token|sign in first/, what)
    assert.is((await get("/api/invoices", { cookie: `logiflow_portal=${token}` })).status, 401, `${what} as a cookie`)
    assert.is((await get("/", { cookie: `logiflow_portal=${token}` })).status, 401, `${what}: the page`)
    const login = await get(`/login?token=${encodeURIComponent(token)}`)
    assert.is(login.status, 401, `${what}: /login`)
    assert.is(login.headers.get("set-cookie"), null)
    assert.match(login.text, /This sign-in link is not valid, or it has expired/)
  }
  assert.is((await get("/api/trucks", { authorization: `Bearer ${acme}` })).status, 200, "the untouched token works")
})

test("login - /login?token= answers 303 to / with an HttpOnly, SameSite=Strict cookie until the expiry; /logout clears it", async () => {
  const expiresAt = Math.floor(Date.now() / 1000) + 7200
  const token = await auth.customerToken("acme", { expiresAt })
  const login = await get(`/login?token=${token}`)
  assert.is(login.status, 303)
  assert.is(login.headers.get("location"), "/")
  assert.is(login.headers.get("cache-control"), "no-store")
  assert.is(login.headers.get("referrer-policy"), "no-referrer")
  const m = /^logiflow_portal=([^;]+); HttpOnly; SameSite=Strict; Path=\/; Max-Age=(\d+)$/.exec(login.headers.get("set-cookie")!)
  assert.ok(m, login.headers.get("set-cookie")!)
  assert.is(m![1], token)
  assert.ok(Math.abs(Number(m![2]) - 7200) <= 3, `Max-Age ${m![2]}`)
  const cookie = { cookie: `theme=dark; logiflow_portal=${token}` }
  const trucks = await get("/api/trucks", cookie)
  assert.is(trucks.status, 200)
  assert.equal(
    (trucks.json().trucks as { truckId: string }[]).map((t) => t.truckId),
    ["acme-truck"],
  )
  const page = await get("/", cookie)
  assert.is(page.status, 200)
  assert.match(page.text, /customer acme/)
  // behind a TLS front the cookie is Secure as well
  assert.match((await get(`/login?token=${token}`, { "x-forwarded-proto": "https" })).headers.get("set-cookie")!, /; Secure$/)
  const logout = await get("/logout", cookie)
  assert.is(logout.status, 303)
  assert.is(logout.headers.get("set-cookie"), "logiflow_portal=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
})

test("isolation - acme sees its own trucks and invoices; ?customerId=globex is 403; globex's truck is 404 like an unknown one", async () => {
  const acme = await as("acme")
  assert.equal(
    ((await get("/api/trucks", acme)).json().trucks as { truckId: string }[]).map((t) => t.truckId),
    ["acme-truck"],
  )
  assert.equal(((await get("/api/invoices", acme)).json().invoices as InvoiceGenerated[]).map((i) => [i.invoiceId, i.customerId]).sort(), [
    ["inv-acme-1", "acme"],
    ["inv-acme-2", "acme"],
  ])
  assert.is((await get("/api/invoices?customerId=acme", acme)).status, 200)
  for (const path of ["/api/invoices?customerId=globex", "/api/trucks?customerId=globex", "/api/invoices?customerId=%ZZ"]) {
    const r = await get(path, acme)
    assert.is(r.status, 403, path)
    assert.match(r.json().error!, /^this sign-in is for customer acme; other customers' data is not available$/)
  }
  const theirs = await get("/api/trucks/globex-truck", acme)
  const unknown = await get("/api/trucks/no-such-truck", acme)
  assert.equal([theirs.status, theirs.json()], [404, { status: 404, error: "no truck globex-truck with a route" }])
  assert.equal([unknown.status, unknown.json()], [404, { status: 404, error: "no truck no-such-truck with a route" }])
  assert.is((await get("/api/trucks/globex-truck", await as("globex"))).status, 200, "globex itself sees it")
  assert.is((await get("/api/trucks/acme%0D%0Atruck", acme)).status, 400)
  const page = await get("/", acme)
  assert.ok(page.text.includes("acme-truck") && page.text.includes("inv-acme-1") && page.text.includes("inv-acme-2"))
  assert.not.ok(page.text.includes("globex-truck") || page.text.includes("inv-globex-1"), "nothing of globex on acme's page")
  assert.not.ok(page.text.includes('name="customerId"'), "no form to pick another customer")
})

test("browser - acme's one-click link shows acme's truck and invoices, not globex's; globex's data from the page is 403/404", async () => {
  if (!existsSync(CHROMIUM)) assert.unreachable(`Chromium not found at ${CHROMIUM} (set CHROMIUM_PATH)`)
  const { chromium } = await import("playwright-core")
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] })
  try {
    const page = await browser.newPage()
    const problems: string[] = []
    page.on("pageerror", (e) => problems.push(e.message))
    await page.goto(`${base}/login?token=${await auth.customerToken("acme")}`)
    assert.is(new URL(page.url()).pathname, "/")
    await page.locator("#trucks tr", { hasText: "acme-truck" }).waitFor()
    assert.is(await page.locator("#trucks tr").count(), 1)
    assert.equal((await page.locator("#invoices tr td:first-child").allTextContents()).sort(), ["inv-acme-1", "inv-acme-2"])
    assert.not.ok((await page.content()).includes("globex"))
    // the page's own origin, with the session cookie: the server still answers for acme only
    // a string, not a function: tsx's name helpers do not exist in the page
    const tried = await page.evaluate(`(async () => {
      const status = (path) => fetch(path).then((r) => r.status)
      const own = await (await fetch("/api/invoices")).json()
      return {
        invoicesOfGlobex: await status("/api/invoices?customerId=globex"),
        trucksOfGlobex: await status("/api/trucks?customerId=globex"),
        globexTruck: await status("/api/trucks/globex-truck"),
        ownCustomers: [...new Set(own.invoices.map((i) => i.customerId))],
        cookieVisibleToScripts: document.cookie,
      }
    })()`)
    assert.equal(tried, {
      invoicesOfGlobex: 403,
      trucksOfGlobex: 403,
      globexTruck: 404,
      ownCustomers: ["acme"],
      cookieVisibleToScripts: "",
    })
    // signing out: the page asks to sign in again
    await page.locator("header a", { hasText: "Sign out" }).click()
    await page.locator("h2", { hasText: "Sign in" }).waitFor()
    assert.equal(problems, [])
  } finally {
    await browser.close()
  }
})

test("configuration - no PORTAL_SECRET: 503 naming it; a short one stops the start; PORTAL_SECRET_FILE works", async () => {
  const saved = process.env.PORTAL_SECRET
  const startWith = async (env: Record<string, string>) => {
    Object.assign(process.env, env)
    try {
      const r = await portal.start({ url: server.url, port: 0, hostname: "127.0.0.1", drainTimeoutMs: 1000 })
      extra.push(r)
      return `http://127.0.0.1:${r.port}`
    } finally {
      process.env.PORTAL_SECRET = saved
      delete process.env.PORTAL_SECRET_FILE
    }
  }
  const none = await startWith({ PORTAL_SECRET: "" })
  for (const path of ["/api/trucks", "/api/invoices"]) {
    const r = await get(path, await as("acme"), none)
    assert.is(r.status, 503)
    assert.match(r.json().error!, /PORTAL_SECRET/)
  }
  assert.is((await get("/", {}, none)).status, 503)
  assert.is((await get("/healthz", {}, none)).status, 200)

  try {
    await startWith({ PORTAL_SECRET: "too-short" })
    assert.unreachable("started with a 9-character secret")
  } catch (err) {
    assert.match((err as Error).message, /PORTAL_SECRET must be at least 32 characters/)
  }

  const file = join(server.storeDir, "portal-secret")
  const fileSecret = "from-a-file-0123456789-0123456789-0123456789"
  await writeFile(file, `${fileSecret}\n`, { mode: 0o600 })
  const fromFile = await startWith({ PORTAL_SECRET: "", PORTAL_SECRET_FILE: file })
  const token = await signToken(fileSecret, "acme", hour())
  assert.is((await get("/api/trucks", { authorization: `Bearer ${token}` }, fromFile)).status, 200)
  assert.is((await get("/api/trucks", await as("acme"), fromFile)).status, 401, "a token of another secret")
})

test("logiflow token customer - mints a token the portal accepts, for the days asked; errors are one line", async () => {
  const run = async (args: string[], env: Record<string, string> = {}) => {
    const c = spawnTs("mesh/cli/main.ts", env, args)
    return { code: await c.exited, lines: c.lines }
  }
  const minted = await run(["token", "customer", "acme", "--days", "2"])
  assert.is(minted.code, 0, minted.lines.join("\n"))
  assert.is(minted.lines.length, 1)
  const token = minted.lines[0]!
  const expiresAt = Number(token.split(".")[1])
  assert.ok(Math.abs(expiresAt - (Date.now() / 1000 + 2 * 86_400)) < 60, `expires ${expiresAt}`)
  assert.equal(
    ((await get("/api/invoices", { authorization: `Bearer ${token}` })).json().invoices as InvoiceGenerated[]).map((i) => i.customerId),
    ["acme", "acme"],
  )
  const cases: [string[], Record<string, string>, string][] = [
    [["token", "customer"], {}, "logiflow token: usage: logiflow token customer <customerId> [--days N] [--link]"],
    [["token", "customer", "acme", "--days", "0"], {}, 'logiflow token: --days must be a number of days between 0 and 366, got "0"'],
    [["token", "customer", "a\u0001b"], {}, "logiflow token: a token subject is 1–128 characters without control characters"],
    [
      ["token", "customer", "acme"],
      { PORTAL_SECRET: "" },
      "logiflow token: no PORTAL_SECRET: set it (or PORTAL_SECRET_FILE) to the portal's secret, or run this beside a running `npm start`",
    ],
  ]
  for (const [args, env, line] of cases) {
    const r = await run(args, env)
    assert.equal([r.code, r.lines], [1, [line]], args.join(" "))
  }
})

test.run()
