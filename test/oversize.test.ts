// Oversized events: the HTTP edge answers 413 over real sockets (routing on Node and on Deno, each its own process)
// and records nothing; inside the mesh, a handler's output larger than its stream stores dead-letters the input with
// reason `too-large` at once, instead of retrying what can never fit.
import { Kvm } from "@nats-io/kv"
import * as assert from "uvu/assert"
import { DLQ, type InvoiceGenerated, MAX_EVENT_BYTES, topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { newId, publishEvent } from "../mesh/publish.ts"
import { worker } from "../mesh/worker.ts"
import { denoBinary } from "./child.ts"
import { route } from "./fixtures/events.ts"
import { type Child, freePort, natsFixture, spawnChild, spawnTs, testAuth, waitUntil, suite } from "./harness.ts"

const test = suite("oversize")
let f: Awaited<ReturnType<typeof natsFixture>>
const children: Child[] = []
test.before(async () => {
  f = await natsFixture()
  await provision(f.nc, topology())
})
test.after(async () => {
  await Promise.all(children.map((c) => c.stop()))
  await f.nc.close()
  await f.server.close()
})

async function routing(runtime: "node" | "deno", env: Record<string, string> = {}): Promise<string> {
  const port = await freePort()
  const vars = { NATS_URL: f.server.url, ROUTING_PORT: String(port), LOG_LEVEL: "warn", DENO_NO_UPDATE_CHECK: "1", ...env }
  const child =
    runtime === "node"
      ? spawnTs("workers/routing.ts", vars)
      : spawnChild(denoBinary(), ["run", "-A", "workers/routing.ts"], vars, { name: "deno routing" })
  children.push(child)
  const base = `http://127.0.0.1:${port}`
  // the first Deno run on a machine also transpiles the import graph
  await waitUntil(
    () =>
      fetch(`${base}/readyz`).then(
        (r) => (r.body?.cancel(), r.status === 200),
        () => false,
      ),
    {
      timeoutMs: 90_000,
      every: 200,
      what: `${runtime} routing ready`,
    },
  )
  return base
}

const post = (base: string, body: string) =>
  fetch(`${base}/routes`, { method: "POST", headers: { "content-type": "application/json", ...testAuth().headers.routes }, body })

// 200 stops (the most a route has), each id 128 three-byte characters: a valid request, a route of ~90 KB
const hugeStops = Array.from({ length: 200 }, (_, i) => ({ id: `${i}`.padEnd(128, "€"), lat: 52.5 + i / 1000, lon: 13.4 }))
const request = (stops: unknown[]) => JSON.stringify({ truckId: "truck-big", customerId: "acme", depot: { lat: 52.5, lon: 13.4 }, stops })

const nothingRecorded = async () => {
  assert.is((await f.jsm.streams.info("ROUTING")).state.messages, 0)
  const keys: string[] = []
  for await (const k of await (await new Kvm(f.nc).open("routing-requests")).keys()) keys.push(k)
  assert.equal(keys, [])
}

for (const runtime of ["node", "deno"] as const) {
  test(`${runtime} - a body past the limit (default: what ROUTING stores) is 413; a route larger than ROUTING stores is 413, nothing recorded`, async () => {
    const byDefault = await routing(runtime)
    const body = request(hugeStops)
    const bytes = new TextEncoder().encode(body).length
    assert.ok(bytes > MAX_EVENT_BYTES.ROUTING)
    const tooBig = await post(byDefault, body)
    assert.is(tooBig.status, 413)
    assert.equal(await tooBig.json(), {
      status: 413,
      error: `body of ${bytes} bytes exceeds the 65536-byte limit`,
    })

    // a larger body limit lets the request through to planning: the route it becomes is what ROUTING cannot store
    const lenient = await routing(runtime, { ROUTING_MAX_BODY_BYTES: String(256 * 1024) })
    const res = await post(lenient, body)
    const answer = (await res.json()) as { status: number; error: string }
    assert.is(res.status, 413, JSON.stringify(answer))
    assert.match(
      answer.error,
      /^RouteCalculated of \d+ bytes is larger than the 65536 bytes ROUTING stores: send fewer stops or shorter ids$/,
    )
    await nothingRecorded()
    // the same request with fewer stops fits, and is recorded
    const fits = await post(lenient, request(hugeStops.slice(0, 100)))
    assert.is(fits.status, 202)
    assert.is((await f.jsm.streams.info("ROUTING")).state.messages, 1)
    await f.jsm.streams.purge("ROUTING")
    await f.jsm.streams.purge("KV_routing-requests")
  })
}

test("inside the mesh - an output event larger than its stream stores dead-letters its input as too-large, first delivery", async () => {
  // 50 lines of 200 three-byte characters and ids of 128: a valid InvoiceGenerated, past INVOICE's 32 KiB
  const huge = (r: { routeId: string; truckId: string; customerId: string }): InvoiceGenerated => ({
    invoiceId: "i".padEnd(128, "€"),
    routeId: r.routeId,
    truckId: r.truckId,
    customerId: r.customerId,
    lines: Array.from({ length: 50 }, () => ({ description: "€".repeat(200), amountCents: 1 })),
    totalCents: 50,
    currency: "EUR",
    issuedAt: new Date().toISOString(),
  })
  const w = await worker({
    name: "invoice",
    consumes: { RouteCalculated: async (r) => [{ name: "InvoiceGenerated" as const, data: huge(r) }] },
  }).start({ url: f.server.url, port: 0, drainTimeoutMs: 2000 })
  try {
    const long = (p: string) => p.padEnd(128, "€")
    const r = route(1, { routeId: long("r"), truckId: long("t"), customerId: long("c") })
    await publishEvent(f.js, "RouteCalculated", r, { id: newId(), source: "logiflow/test" })
    const entry = await waitUntil(() => f.jsm.streams.getMessage("DLQ", { last_by_subj: "dlq.ROUTING.invoice" }).catch(() => null), {
      what: "a DLQ entry",
    })
    assert.is(entry.header.get(DLQ.reason), "too-large")
    assert.is(entry.header.get(DLQ.deliveries), "1")
    assert.match(entry.header.get(DLQ.error), /^InvoiceGenerated of \d+ bytes is larger than the 32768 bytes INVOICE stores$/)
    assert.equal(entry.json(), r)
    assert.is((await f.jsm.streams.info("INVOICE")).state.messages, 0)
  } finally {
    await w.stop()
  }
})

test.run()
