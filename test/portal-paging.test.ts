// The portal's invoices a page at a time, against a real nats-server and the portal's HTTP API: every invoice exactly
// once across pages, newest first, while new ones arrive; limit and cursor checked; a customer with ten times the
// others' volume leaves their pages as they were; and no cursor reaches another customer's invoices.
import { type KV, Kvm } from "@nats-io/kv"
import * as assert from "uvu/assert"
import { type InvoiceGenerated, topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import type { Running } from "../mesh/worker.ts"
import { natsFixture, type NatsFixture, testAuth, suite } from "./harness.ts"

const { default: portal, invoiceKey } = await import("../workers/portal.ts")
const { storeInvoice } = await import("../workers/portal-invoices.ts")

const test = suite("portal paging")
const t0 = Date.parse("2026-11-25T08:00:00.000Z")

const invoice = (customerId: string, n: number): InvoiceGenerated => ({
  invoiceId: `${customerId}-inv-${String(n).padStart(5, "0")}`,
  routeId: `${customerId}-route-${n}`,
  truckId: `${customerId}-truck-${n % 7}`,
  customerId,
  lines: [{ description: "Base fee", amountCents: 1000 + n }],
  totalCents: 1000 + n,
  currency: "EUR",
  issuedAt: new Date(t0 + n * 1000).toISOString(),
})

type Body = { invoices: InvoiceGenerated[]; asOf: string | null; limit: number; next: string | null }

/** A server, the portal on it, and its invoice bucket; written in the order given, as the portal's handler writes. */
async function world() {
  const f: NatsFixture = await natsFixture()
  await provision(f.nc, topology(), { consumers: () => false })
  const kv: KV = await new Kvm(f.nc).open("portal-invoices")
  const w: Running = await portal.start({ url: f.server.url, port: 0, drainTimeoutMs: 2000 })
  const get = async (path: string, customer: string) => {
    const res = await fetch(`http://127.0.0.1:${w.port}${path}`, {
      headers: { authorization: `Bearer ${await testAuth().customerToken(customer)}` },
    })
    return { status: res.status, body: (await res.json()) as Body & { error?: string } }
  }
  /** Every page of a customer's invoices, following `next` until there is none. */
  const pages = async (customer: string, limit: number) => {
    const out: Body[] = []
    let cursor: string | null = null
    do {
      const r: { status: number; body: Body } = await get(
        `/api/invoices?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
        customer,
      )
      assert.is(r.status, 200)
      out.push(r.body)
      cursor = r.body.next
    } while (cursor && out.length < 1000)
    return out
  }
  const write = async (list: InvoiceGenerated[]) => {
    for (const inv of list) await storeInvoice(kv, inv)
  }
  return {
    f,
    kv,
    get,
    pages,
    write,
    close: async () => {
      await w.stop()
      await f.nc.close()
      await f.server.close()
    },
  }
}

/** acme's n invoices, each followed by `others` of each neighbour's. */
function interleaved(n: number, neighbours: Record<string, number>) {
  const out: InvoiceGenerated[] = []
  const seq: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    out.push(invoice("acme", i))
    for (const [c, k] of Object.entries(neighbours)) for (let j = 0; j < k; j++) out.push(invoice(c, (seq[c] = (seq[c] ?? 0) + 1)))
  }
  return out
}

const ids = (bodies: Body[]) => bodies.flatMap((b) => b.invoices.map((i) => i.invoiceId))
const newestFirst = (customer: string, n: number, from = 0) =>
  Array.from({ length: n - from }, (_, i) => invoice(customer, n - 1 - i).invoiceId)

test("pages - every invoice exactly once, newest first, while new ones arrive; limit and cursor checked", async () => {
  const w = await world()
  try {
    await w.write(interleaved(150, { globex: 1 }))
    // the first page, then five new invoices, then the rest: the new ones are above the cursor, so never in it
    const first = await w.get("/api/invoices?limit=7", "acme")
    assert.is(first.status, 200)
    assert.is(first.body.limit, 7)
    assert.equal(
      first.body.invoices.map((i) => i.invoiceId),
      newestFirst("acme", 150).slice(0, 7),
    )
    await w.write([150, 151, 152, 153, 154].map((n) => invoice("acme", n)))
    const rest: Body[] = []
    let cursor = first.body.next
    while (cursor) {
      const r = await w.get(`/api/invoices?limit=7&cursor=${encodeURIComponent(cursor)}`, "acme")
      rest.push(r.body)
      cursor = r.body.next
    }
    const all = [...first.body.invoices.map((i) => i.invoiceId), ...ids(rest)]
    assert.equal(all, newestFirst("acme", 150), "each of the 150 once, in order")
    assert.is(rest.length, 21, "150 in pages of 7: 22 pages, the last one short and without next")
    assert.is(rest.at(-1)!.invoices.length, 3)
    assert.ok(rest.every((b) => b.invoices.every((i) => i.customerId === "acme")))
    // from the top again: the five new ones first, then the same 150, each once, in pages of every size
    for (const limit of [1, 50, 155, 200]) assert.equal(ids(await w.pages("acme", limit)), newestFirst("acme", 155), `limit ${limit}`)
    // the default page and the cap; bad input is a 400 that says why
    const dflt = await w.get("/api/invoices", "acme")
    assert.equal([dflt.body.limit, dflt.body.invoices.length, typeof dflt.body.next], [50, 50, "string"])
    assert.is((await w.get("/api/invoices?limit=100000", "acme")).body.limit, 200)
    for (const bad of ["limit=0", "limit=-3", "limit=abc", "limit=2.5", "cursor=nonsense", "cursor="]) {
      const r = await w.get(`/api/invoices?${bad}`, "acme")
      assert.is(r.status, 400, bad)
      assert.match(r.body.error!, /limit must be a whole number|cursor is not one this portal gave out/)
    }
    // a cursor says where, not whose: acme's cursor in globex's hands pages globex's invoices only
    const globex = await w.get(`/api/invoices?limit=5&cursor=${encodeURIComponent(first.body.next!)}`, "globex")
    assert.is(globex.status, 200)
    assert.ok(globex.body.invoices.length > 0)
    assert.ok(globex.body.invoices.every((i) => i.customerId === "globex"))
    // a customer whose id holds a dot cannot reach into another's keys
    await w.write([invoice("acme.eu", 1)])
    assert.is(invoiceKey("acme.eu", "x"), "acme=2Eeu.x")
    assert.equal(ids(await w.pages("acme.eu", 10)), ["acme.eu-inv-00001"])
    assert.equal(ids(await w.pages("acme", 200)), newestFirst("acme", 155))
  } finally {
    await w.close()
  }
})

test("volume - a customer with ten times the others' invoices leaves their pages exactly as they were", async () => {
  const quiet = await world()
  let alone: Body[]
  try {
    await quiet.write(interleaved(120, { globex: 1 }))
    alone = await quiet.pages("acme", 25)
  } finally {
    await quiet.close()
  }
  const busy = await world()
  try {
    // bigco: ten invoices after each of acme's, so acme's are spread over eleven times the sequences
    await busy.write(interleaved(120, { globex: 1, bigco: 10 }))
    const beside = await busy.pages("acme", 25)
    assert.equal(ids(beside), newestFirst("acme", 120))
    assert.equal(
      beside.map((b) => b.invoices),
      alone.map((b) => b.invoices),
      "the same invoices on the same pages",
    )
    assert.equal(
      beside.map((b) => b.next === null),
      alone.map((b) => b.next === null),
    )
    assert.is(ids(await busy.pages("bigco", 200)).length, 1200)
  } finally {
    await busy.close()
  }
})

test.run()
