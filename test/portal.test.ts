// The portal against a real nats-server: its read model from RouteCalculated / EtaUpdated / InvoiceGenerated,
// the JSON API, the HTML page (escaping, CSP, the browser script), staleness, and answering with nothing else running.
import { createHash } from "node:crypto"
import { type JetStreamManager, jetstream, type JetStreamClient } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { type EtaUpdated, type EventData, type EventName, type InvoiceGenerated, topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import type { Running } from "../mesh/worker.ts"
import {
  type Child,
  connectTo,
  freePort,
  natsFixture,
  spawnTs,
  startServer,
  type TestServer,
  testAuth,
  waitUntil,
  suite,
} from "./harness.ts"
import { route } from "./fixtures/events.ts"

// read when the worker module loads: the page refreshes every second, so the browser test need not wait long
process.env.PORTAL_REFRESH_SECONDS = "1"
const {
  default: portal,
  applyEta,
  applyRoute,
  invoiceKey,
  escapeHtml,
  formatCents,
  formatTime,
  truckView,
} = await import("../workers/portal.ts")

const test = suite("portal")
let server: TestServer
let nc: NatsConnection
let js: JetStreamClient
let jsm: JetStreamManager
let invoicesKv: KV
let w: Running
const children: Child[] = []

test.before(async () => {
  ;({ server, nc, js, jsm } = await natsFixture())
  await provision(nc, topology(), { consumers: () => false })
  invoicesKv = await new Kvm(nc).open("portal-invoices")
  w = await portal.start({ url: server.url, port: 0, drainTimeoutMs: 2000 })
})
test.after(async () => {
  await Promise.all(children.map((c) => c.stop()))
  await w?.stop()
  await nc?.close()
  await server?.close()
})

/** GET as a signed-in customer (acme unless said otherwise): customers see only their own data. */
const get = async (path: string, port = w.port, customer = "acme") => {
  const authorization = `Bearer ${await testAuth().customerToken(customer)}`
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization }, signal: AbortSignal.timeout(10_000) })
  return { status: res.status, headers: res.headers, text: await res.text() }
}
const getJson = async <T>(path: string, port = w.port, customer = "acme") => {
  const r = await get(path, port, customer)
  return { status: r.status, body: JSON.parse(r.text) as T }
}

let seq = 0
/** Everything published, so a test can replay it. */
const published: { name: EventName; data: unknown; key: string }[] = []
const publish = <N extends EventName>(name: N, data: EventData<N>, key: string) => {
  published.push({ name, data, key })
  return publishEvent(js, name, data, { id: `test-${++seq}`, source: "logiflow/test" })
}

/** Every portal consumer has nothing pending: each event was applied to the KV (the watch follows within ms). */
const settled = () =>
  waitUntil(
    async () => {
      const infos = await Promise.all(["ROUTING", "TRACKING", "INVOICE"].map((s) => jsm.consumers.info(s, "portal")))
      return infos.every((i) => i.num_pending === 0 && i.num_ack_pending === 0)
    },
    { what: "portal consumers idle" },
  )

const ago = (seconds: number) => new Date(Date.now() - seconds * 1000).toISOString()

const invoice = (n: number, customerId: string, totalCents: number, issuedAt: string): InvoiceGenerated => ({
  invoiceId: `inv-${n}`,
  routeId: `route-${n}`,
  truckId: `truck-${n}`,
  customerId,
  lines: [{ description: "Base fee", amountCents: totalCents }],
  totalCents,
  currency: customerId === "globex" ? "USD" : "EUR",
  issuedAt,
})

const eta = (routeId: string, truckId: string, etaAt: string, updatedAt: string): EtaUpdated => ({
  truckId,
  routeId,
  eta: etaAt,
  previousEta: "2026-11-25T12:00:00.000Z",
  nextStopId: "s-next",
  remainingKm: 4.2,
  updatedAt,
})

type Truck = ReturnType<typeof truckView> & {}

test("read model - ETA before its route, late older updates, newer routes", () => {
  const r1 = route(1, { calculatedAt: "2026-11-25T10:00:00.000Z" })
  // the tracked ETA arrives first: kept, shown once its route is there
  let doc = applyEta(undefined, eta("route-1", "truck-1", "2026-11-25T11:30:00.000Z", "2026-11-25T10:05:00.000Z"))
  assert.is(truckView(doc), undefined)
  doc = applyRoute(doc, r1)
  const now = Date.parse("2026-11-25T10:06:00.000Z")
  assert.equal(truckView(doc, now, 300), {
    truckId: "truck-1",
    routeId: "route-1",
    customerId: "acme",
    stops: r1.stops,
    nextStopId: "s-next",
    remainingKm: 4.2,
    eta: "2026-11-25T11:30:00.000Z",
    etaSource: "tracked",
    updatedAt: "2026-11-25T10:05:00.000Z",
    stale: false,
  })
  assert.is(truckView(doc, now + 240_000, 300)!.stale, false, "exactly 5 min after its last update")
  assert.is(truckView(doc, now + 240_001, 300)!.stale, true, "just past 5 min")
  // the same or an older update writes nothing; the same route again writes nothing
  assert.is(applyEta(doc, eta("route-1", "truck-1", "2026-11-25T13:00:00.000Z", "2026-11-25T10:05:00.000Z")), doc)
  assert.is(applyEta(doc, eta("route-1", "truck-1", "2026-11-25T13:00:00.000Z", "2026-11-25T10:01:00.000Z")), doc)
  assert.is(applyRoute(doc, r1), doc)
  // a newer route shows its planned ETA until tracking reports on it; an older route never comes back
  const r2 = route(2, { truckId: "truck-1", calculatedAt: "2026-11-25T10:10:00.000Z", eta: "2026-11-25T14:00:00.000Z" })
  const doc2 = applyRoute(doc, r2)
  assert.equal(
    [truckView(doc2)!.routeId, truckView(doc2)!.eta, truckView(doc2)!.etaSource],
    ["route-2", "2026-11-25T14:00:00.000Z", "planned"],
  )
  assert.is(truckView(doc2)!.nextStopId, "s2-1")
  assert.is(applyRoute(doc2, r1), doc2)
})

test("page helpers - escaping, money from integer cents, times", () => {
  assert.is(escapeHtml(`<script>alert("x")</script> & 'y'`), "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;")
  assert.is(escapeHtml(undefined), "")
  assert.is(formatCents(0, "EUR"), "EUR 0.00")
  assert.is(formatCents(5, "EUR"), "EUR 0.05")
  assert.is(formatCents(123456, "USD"), "USD 1,234.56")
  assert.is(formatCents(100000000001, "EUR"), "EUR 1,000,000,000.01")
  assert.is(formatTime("2026-11-25T10:00:00.000Z"), "2026-11-25 10:00:00 UTC")
  assert.is(formatTime("2026-11-25T11:00:00+01:00"), "2026-11-25 10:00:00 UTC")
  assert.is(formatTime(null), "—")
})

test("events → API - the truck with its tracked ETA, exactly one customer's invoices with exact totals", async () => {
  const t0 = ago(60)
  await publish("RouteCalculated", route(1, { calculatedAt: t0 }), "truck-1")
  await publish("EtaUpdated", eta("route-1", "truck-1", "2026-11-25T21:30:00.000Z", ago(30)), "truck-1")
  const issued = [ago(50), ago(40), ago(20)]
  await publish("InvoiceGenerated", invoice(1, "acme", 12_345, issued[0]!), "truck-1")
  await publish("InvoiceGenerated", invoice(2, "globex", 99_999, issued[1]!), "truck-2")
  await publish("InvoiceGenerated", invoice(3, "acme", 678, issued[2]!), "truck-3")
  await settled()
  const truck = await waitUntil(
    async () => {
      const r = await getJson<Truck>("/api/trucks/truck-1")
      return r.status === 200 && r.body.etaSource === "tracked" ? r.body : null
    },
    { what: "truck-1 with its tracked ETA" },
  )
  assert.is(truck.routeId, "route-1")
  assert.is(truck.customerId, "acme")
  assert.equal(
    truck.stops.map((s) => s.id),
    ["s1-1", "s1-2"],
  )
  assert.is(truck.eta, "2026-11-25T21:30:00.000Z")
  assert.is(truck.nextStopId, "s-next")
  assert.is(truck.stale, false)

  const inv = await waitUntil(
    async () => {
      const r = await getJson<{ invoices: (InvoiceGenerated & { stale: boolean; updatedAt: string })[]; asOf: string }>(
        "/api/invoices?customerId=acme",
      )
      return r.body.invoices.length === 2 ? r.body : null
    },
    { what: "acme's two invoices" },
  )
  // newest first
  assert.equal(
    inv.invoices.map((i) => [i.invoiceId, i.totalCents, i.currency, i.customerId]),
    [
      ["inv-3", 678, "EUR", "acme"],
      ["inv-1", 12_345, "EUR", "acme"],
    ],
  )
  assert.equal(
    inv.invoices.map((i) => i.updatedAt),
    [issued[2], issued[0]],
  )
  assert.equal(
    inv.invoices.map((i) => i.stale),
    [false, false],
  )
  assert.is(inv.asOf, issued[2])

  const trucks = await getJson<{ trucks: Truck[]; asOf: string }>("/api/trucks")
  assert.equal(
    trucks.body.trucks.map((t) => t.truckId),
    ["truck-1"],
  )
  assert.is(trucks.body.asOf, truck.updatedAt)
  // without ?customerId= the signed-in customer's own; globex sees only its one invoice, nobody none
  assert.equal((await getJson("/api/invoices")).body, inv)
  assert.equal(
    (await getJson<{ invoices: InvoiceGenerated[] }>("/api/invoices", w.port, "globex")).body.invoices.map((i) => i.invoiceId),
    ["inv-2"],
  )
  assert.equal((await getJson("/api/invoices", w.port, "nobody")).body, { invoices: [], asOf: issued[2], limit: 50, next: null })
  assert.equal((await getJson("/api/trucks", w.port, "globex")).body, { trucks: [], asOf: truck.updatedAt })
  assert.is((await getJson("/api/trucks/no-such-truck")).status, 404)
  assert.is((await getJson("/api/trucks/%E0%A4%A")).status, 400)
  // any id the contract allows is addressable: the path segment is decoded, the KV key encoded
  const odd = "Lkw 7/ä.."
  await publish("RouteCalculated", route(5, { truckId: odd, calculatedAt: ago(1) }), odd)
  await settled()
  const found = await waitUntil(
    async () => {
      const r = await getJson<Truck>(`/api/trucks/${encodeURIComponent(odd)}`)
      return r.status === 200 ? r.body : null
    },
    { what: "the truck with an odd id" },
  )
  assert.is(found.truckId, odd)
})

test("replay - the same events again (new ce-ids, so the stream keeps them) change nothing, an older ETA included", async () => {
  const before = await getJson<Truck>("/api/trucks/truck-1")
  const revisions = async () =>
    Promise.all(
      [
        ["acme", "inv-1"],
        ["globex", "inv-2"],
        ["acme", "inv-3"],
      ].map(async ([c, i]) => (await invoicesKv.get(invoiceKey(c!, i!)))!.revision),
    )
  const revs = await revisions()
  const acme = (await getJson<{ invoices: unknown[] }>("/api/invoices?customerId=acme")).body.invoices
  const count = published.length
  for (const e of published.slice(0, count)) await publish(e.name, e.data as never, e.key)
  await publish("EtaUpdated", eta("route-1", "truck-1", "2026-11-25T23:59:00.000Z", ago(45)), "truck-1")
  await settled()
  assert.equal(await revisions(), revs, "no invoice rewritten")
  assert.equal((await getJson<{ invoices: unknown[] }>("/api/invoices?customerId=acme")).body.invoices, acme)
  const after = await getJson<Truck>("/api/trucks/truck-1")
  assert.equal({ ...after.body, stale: false }, { ...before.body, stale: false })
})

test("GET / - the page lists the truck, escapes markup in ids, allows only its own script, and that script never parses data as HTML", async () => {
  const evil = `<script>alert("pwned")</script>`
  await publish(
    "RouteCalculated",
    route(7, {
      truckId: "truck-xss",
      customerId: evil,
      stops: [{ id: `<img src=x onerror=alert(1)>`, lat: 1, lon: 1 }],
      calculatedAt: ago(10),
    }),
    "truck-xss",
  )
  await publish("InvoiceGenerated", invoice(7, evil, 4_200, ago(5)), "truck-xss")
  await settled()
  const page = await waitUntil(
    async () => {
      const r = await get("/", w.port, evil)
      return r.text.includes("truck-xss") && r.text.includes("inv-7") ? r : null
    },
    { what: "the page with truck-xss" },
  )
  assert.is(page.status, 200)
  assert.match(page.headers.get("content-type")!, /^text\/html; charset=utf-8/)
  assert.ok(page.text.includes("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"))
  assert.not.ok(page.text.includes(evil), "the raw customer id never reaches the page")
  assert.not.ok(page.text.includes("<img"), "nor the stop id's markup")
  assert.ok(page.text.includes("EUR 42.00"))
  assert.not.ok(page.text.includes("truck-1"), "trucks of other customers are not listed")
  assert.ok((await get("/")).text.includes("truck-1"))

  const scripts = [...page.text.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]!)
  assert.is(scripts.length, 1, "one script: the page's own")
  const script = scripts[0]!
  assert.not.match(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/)
  const hash = createHash("sha256").update(script).digest("base64")
  assert.match(page.headers.get("content-security-policy")!, new RegExp(`script-src 'sha256-${hash.replace(/[+/]/g, "\\$&")}'`))
  assert.match(page.headers.get("content-security-policy")!, /default-src 'none'/)

  // the browser script against a stand-in DOM: data lands in textContent only, and formats like the server does
  const created: Record<string, unknown>[] = []
  const document = {
    getElementById: () => null,
    createElement: (tag: string) => {
      const node: Record<string, unknown> = {
        tag,
        children: [] as unknown[],
        appendChild: (c: unknown) => (node.children as unknown[]).push(c),
        setAttribute: (k: string, v: unknown) => (node[`@${k}`] = v),
      }
      created.push(node)
      return new Proxy(node, {
        set(t, k, v) {
          if (k === "innerHTML" || k === "outerHTML") throw new Error(`${String(k)} set`)
          t[k as string] = v
          return true
        },
      })
    },
  }
  const client = new Function("document", `${script}; return { money, when, truckRow, invoiceRow }`)(document) as {
    money(c: number, cur: string): string
    when(iso: string | null): string
    truckRow(t: unknown): { children: { textContent: string }[] }
    invoiceRow(i: unknown): { children: { textContent: string }[] }
  }
  for (const [c, cur] of [
    [0, "EUR"],
    [5, "EUR"],
    [123456, "USD"],
    [100000000001, "EUR"],
  ] as const)
    assert.is(client.money(c, cur), formatCents(c, cur))
  assert.is(client.when("2026-11-25T11:00:00+01:00"), formatTime("2026-11-25T11:00:00+01:00"))
  const truck = (await getJson<Truck>("/api/trucks/truck-xss", w.port, evil)).body
  const cells = client.truckRow(truck).children.map((c) => c.textContent)
  assert.equal(cells.slice(0, 4), ["truck-xss", evil, "route-7", "<img src=x onerror=alert(1)>"])
  const inv = (await getJson<{ invoices: unknown[] }>(`/api/invoices?customerId=${encodeURIComponent(evil)}`, w.port, evil)).body
    .invoices[0]
  assert.equal(
    client
      .invoiceRow(inv)
      .children.map((c) => c.textContent)
      .slice(0, 4),
    ["inv-7", "route-7", "truck-7", "EUR 42.00"],
  )
})

test("browser - the page runs under its CSP, shows markup as text, and refreshes itself from the JSON API", async () => {
  const { chromium } = await import("playwright-core")
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] })
  try {
    const page = await browser.newPage()
    const problems: string[] = []
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`))
    page.on("dialog", (d) => (problems.push(`dialog: ${d.message()}`), void d.dismiss()))
    page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`))
    const evil = `<script>alert("pwned")</script>`
    // the one-click link: /login sets the session cookie and sends the browser on to the page
    await page.goto(`http://127.0.0.1:${w.port}/login?token=${await testAuth().customerToken(evil)}`)
    const customerCell = page.locator("#trucks tr", { hasText: "truck-xss" }).locator("td").nth(1)
    assert.is(await customerCell.textContent(), evil)
    // a new tracked ETA reaches the open page without a reload
    await publish("EtaUpdated", eta("route-7", "truck-xss", "2026-11-26T08:15:00.000Z", new Date().toISOString()), "truck-xss")
    await waitUntil(
      async () => (await page.locator("#trucks tr", { hasText: "truck-xss" }).textContent())?.includes("2026-11-26 08:15:00 UTC"),
      {
        what: "the refreshed ETA on the page",
        timeoutMs: 10_000,
      },
    )
    assert.is(await page.locator("#trucks tr", { hasText: "truck-xss" }).locator(".badge.tracked").count(), 1)
    assert.is(await customerCell.textContent(), evil)
    assert.is(await page.locator("#invoices td.num").first().textContent(), "EUR 42.00")
    assert.match((await page.locator("#status").textContent())!, /^updated /)
    assert.equal(problems, [])
  } finally {
    await browser.close()
  }
})

test("least privilege - tracking and portal as their nats.conf users: a ping's EtaUpdated reaches the portal's page", async () => {
  const secured = await startServer({ auth: true })
  const admin = await connectTo(secured, { user: "admin", pass: secured.env.ADMIN_PASSWORD! })
  const started: Running[] = []
  try {
    await provision(admin, topology())
    const { default: tracking } = await import("../workers/tracking.ts")
    const t = await tracking.start({
      url: secured.url,
      port: 0,
      user: "tracking",
      pass: secured.env.TRACKING_PASSWORD,
      drainTimeoutMs: 2000,
    })
    started.push(t)
    const p = await portal.start({ url: secured.url, port: 0, user: "portal", pass: secured.env.PORTAL_PASSWORD, drainTimeoutMs: 2000 })
    started.push(p)
    const now = new Date().toISOString()
    await publishEvent(jetstream(admin), "RouteCalculated", route(1, { calculatedAt: now, eta: "2026-11-30T00:00:00.000Z" }), {
      id: "rc-auth",
      source: "logiflow/test",
    })
    await waitUntil(async () => (await getJson("/api/trucks/truck-1", p.port)).status === 200, { what: "route in the portal" })
    const ping = { truckId: "truck-1", lat: 52.52, lon: 13.405, at: now }
    const posted = await fetch(`http://127.0.0.1:${t.port}/positions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...testAuth().headers.positions },
      body: JSON.stringify({ positions: [ping] }),
    })
    assert.is(posted.status, 202)
    const truck = await waitUntil(
      async () => {
        const r = await getJson<Truck>("/api/trucks/truck-1", p.port)
        return r.body.etaSource === "tracked" ? r.body : null
      },
      { what: "tracked ETA in the portal" },
    )
    assert.is(truck.nextStopId, "s1-2", "at the first stop: next is the second")
    assert.is(truck.updatedAt, now)
    assert.ok((await get("/", p.port)).text.includes("tracked"))
    // the map's position, read from POSITIONS as the portal user
    const mapped = await waitUntil(
      async () => {
        const r = await getJson<{ trucks: { truckId: string; position: unknown; positionAge: string }[] }>("/api/trucks", p.port)
        return r.body.trucks[0]?.position ? r.body.trucks[0] : null
      },
      { what: "truck-1's position" },
    )
    assert.equal(mapped.position, { lat: 52.52, lon: 13.405, at: now })
    assert.is(mapped.positionAge, "fresh")
    // invoices a page at a time as the portal user: the first page (cached) and the one its cursor names
    type Page = { invoices: InvoiceGenerated[]; next: string | null }
    // one after the other, so the order they are stored in is known
    for (const n of [1, 2]) {
      await publishEvent(jetstream(admin), "InvoiceGenerated", invoice(n, "acme", n * 100, ago(10 - n)), {
        id: `inv-auth-${n}`,
        source: "logiflow/test",
      })
      await waitUntil(async () => (await getJson<Page>("/api/invoices?limit=200", p.port)).body.invoices.length === n, {
        what: `invoice ${n} stored`,
      })
    }
    const first = await waitUntil(
      async () => {
        const r = await getJson<Page>("/api/invoices?limit=1", p.port)
        return r.status === 200 && r.body.next ? r.body : null
      },
      { what: "acme's first page of one" },
    )
    const second = (await getJson<Page>(`/api/invoices?limit=1&cursor=${encodeURIComponent(first.next!)}`, p.port)).body
    assert.equal(
      [...first.invoices, ...second.invoices].map((i) => i.invoiceId),
      ["inv-2", "inv-1"],
    )
    assert.is(second.next, null)
    assert.equal(
      (await getJson<Page>("/api/invoices?limit=200", p.port)).body.invoices.map((i) => i.invoiceId),
      ["inv-2", "inv-1"],
    )
  } finally {
    await Promise.all(started.map((r) => r.stop()))
    await admin.close()
    await secured.close()
  }
})

test("stale - a second portal process (PORTAL_STALE_SECONDS=2) marks data stale as it ages, and keeps answering with nothing else running", async () => {
  const port = await freePort()
  const child = spawnTs("workers/portal.ts", {
    NATS_URL: server.url,
    PORTAL_PORT: String(port),
    PORTAL_STALE_SECONDS: "2",
    LOG_LEVEL: "info",
  })
  children.push(child)
  await child.waitFor(/"msg":"ready"/)
  // rebuilt from the KV at start: it knows what the first instance applied
  assert.is((await getJson<Truck>("/api/trucks/truck-1", port)).body.routeId, "route-1")
  const fresh = new Date().toISOString()
  await publish("RouteCalculated", route(8, { truckId: "truck-fresh", calculatedAt: fresh }), "truck-fresh")
  const seen = await waitUntil(
    async () => {
      const r = await getJson<Truck>("/api/trucks/truck-fresh", port)
      return r.status === 200 ? r.body : null
    },
    { what: "truck-fresh in the second portal" },
  )
  assert.is(seen.updatedAt, fresh)
  const aged = await waitUntil(
    async () => {
      const r = await getJson<Truck>("/api/trucks/truck-fresh", port)
      return r.body.stale ? r.body : null
    },
    { what: "truck-fresh stale", timeoutMs: 10_000 },
  )
  assert.ok(Date.now() - Date.parse(aged.updatedAt) > 2000)
  assert.is(aged.updatedAt, fresh)
  // the in-process portal keeps the default 300 s: the same truck is not stale there
  assert.is((await getJson<Truck>("/api/trucks/truck-fresh")).body.stale, false)

  // NATS itself gone: the read model still answers; readiness says what is wrong
  await server.stop()
  try {
    assert.is((await get("/api/trucks", port)).status, 200)
    assert.is((await getJson<Truck>("/api/trucks/truck-1", port)).body.routeId, "route-1")
    const page = await get("/", port)
    assert.is(page.status, 200)
    assert.ok(page.text.includes("truck-fresh"))
    assert.ok(page.text.includes('<span class="badge stale">stale</span>'))
    await waitUntil(async () => (await get("/readyz", port)).status === 503, { what: "readyz 503 while NATS is down" })
  } finally {
    await server.restart()
  }
  // the KV watch resumes after the outage: a new event shows up in the second portal
  await waitUntil(
    () =>
      jsm.streams.info("ROUTING").then(
        () => true,
        () => false,
      ),
    { what: "JetStream back" },
  )
  await publish("RouteCalculated", route(9, { truckId: "truck-after", calculatedAt: new Date().toISOString() }), "truck-after")
  await waitUntil(async () => (await getJson("/api/trucks/truck-after", port)).status === 200, { what: "truck-after", timeoutMs: 30_000 })
})

test.run()
