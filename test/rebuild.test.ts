// `logiflow rebuild <worker>`: a damaged read model is rebuilt from the streams under the same consumer names, and the
// worker never serves part of it as the whole. Real nats-server with nats.conf users, the portal and tracking as
// their own processes, the CLI as a child process running as admin.
import { jetstream, type JetStreamManager } from "@nats-io/jetstream"
import { Kvm } from "@nats-io/kv"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import type { EtaUpdated, EventName, PositionReported, RouteCalculated } from "../contracts/mod.ts"
import { supports } from "../mesh/features.ts"
import { publishEvent } from "../mesh/publish.ts"
import { authFixture, type Child, freePort, sleep, spawnTs, type TestServer, testAuth, userEnv, waitUntil, suite } from "./harness.ts"
import { invoice, route } from "./fixtures/events.ts"
import { invoiceKey } from "../workers/portal-invoices.ts"

const test = suite("rebuild")
let server: TestServer
let admin: NatsConnection
let jsm: JetStreamManager
const children: Child[] = []

const as = (user: string) => userEnv(server, user)

test.before(async () => {
  ;({ server, admin, jsm } = await authFixture())
})
test.after(async () => {
  await Promise.all(children.map((c) => c.stop("SIGKILL")))
  await admin.close()
  await server.close()
})

let n = 0
const publish = <N extends EventName>(name: N, data: Parameters<typeof publishEvent<N>>[2]) =>
  publishEvent(jetstream(admin), name, data, { id: `test-${++n}`, source: "logiflow/test" })

/** The CLI as its own process, as admin; resolves with its exit code and output once it ends. */
async function rebuild(worker: string): Promise<{ code: number | null; lines: string[] }> {
  const cli = spawnTs("mesh/cli/main.ts", as("admin"), ["rebuild", worker, "--timeout", "90"])
  children.push(cli)
  const code = await cli.exited
  return { code, lines: cli.lines }
}

async function settled(stream: string, consumer: string) {
  await waitUntil(
    async () => {
      const c = await jsm.consumers.info(stream, consumer)
      return c.num_pending === 0 && c.num_ack_pending === 0
    },
    { timeoutMs: 30_000, what: `${stream}/${consumer} settled` },
  )
}

/** Every consumer by name; with its creation time where the server resets consumers in place (2.14+). */
const consumersNow = async () => {
  const out: string[] = []
  const inPlace = supports(admin, "consumerReset")
  for (const s of ["ROUTING", "TRACKING", "INVOICE", "POSITIONS", "REPLAY"])
    for await (const c of jsm.consumers.list(s)) out.push(`${s}/${c.name}${inPlace ? ` ${c.created}` : ""}`)
  return out.sort()
}

test("portal - a corrupted read model is rebuilt to the same answers; meanwhile it says rebuilding, never a partial list as whole", async () => {
  const port = await freePort()
  // a slow pull, so the replay takes long enough to be watched
  const portal = spawnTs("workers/portal.ts", { ...as("portal"), PORTAL_PORT: String(port), MAX_RATE: "150" })
  children.push(portal)
  await portal.waitFor(/"msg":"ready"/)
  const base = `http://127.0.0.1:${port}`
  const customers = ["acme", "globex", "initech"]
  const t0 = Date.parse("2026-11-25T08:00:00.000Z")
  for (let i = 0; i < 120; i++) {
    // two routes per truck: the newer one is shown
    const r = route(i, {
      routeId: `rb-${i}`,
      truckId: `truck-${i % 60}`,
      customerId: customers[i % 3]!,
      calculatedAt: new Date(t0 + i * 60_000).toISOString(),
    })
    await publish("RouteCalculated", r)
    await publish(
      "InvoiceGenerated",
      invoice({
        invoiceId: `inv-rb-${i}`,
        routeId: r.routeId,
        truckId: r.truckId,
        customerId: r.customerId,
        issuedAt: new Date(t0 + i * 60_000 + 1000).toISOString(),
      }),
    )
    if (i >= 60) {
      const eta: EtaUpdated = {
        truckId: r.truckId,
        routeId: r.routeId,
        eta: "2026-11-25T15:00:00.000Z",
        previousEta: r.eta,
        remainingKm: 3.5,
        updatedAt: new Date(t0 + i * 60_000 + 2000).toISOString(),
      }
      await publish("EtaUpdated", eta)
    }
  }
  for (const s of ["ROUTING", "TRACKING", "INVOICE"]) await settled(s, "portal")
  const headers = Object.fromEntries(
    await Promise.all(customers.map(async (c) => [c, { authorization: `Bearer ${await testAuth().customerToken(c)}` }] as const)),
  )
  const get = async (c: string, path: string) => {
    const r = await fetch(base + path, { headers: headers[c] })
    return { status: r.status, body: (await r.json()) as any }
  }
  const answers = async () =>
    Object.fromEntries(
      await Promise.all(
        customers.flatMap((c) => ["/api/trucks", "/api/invoices"].map(async (p) => [`${c} ${p}`, (await get(c, p)).body] as const)),
      ),
    )
  // the stale flag depends on the clock only, and every item here is older than PORTAL_STALE_SECONDS either way
  const before = await waitUntil(
    async () => {
      const a = await answers()
      return a["acme /api/trucks"].trucks.length === 20 && a["acme /api/invoices"].invoices.length === 40 ? a : null
    },
    { what: "the full model served" },
  )
  const truck7 = await get("globex", "/api/trucks/truck-7")
  assert.is(truck7.status, 200)
  const consumers = await consumersNow()

  // damage: a truck shown with another customer's route, invoices gone
  const kvm = new Kvm(admin)
  const trucks = await kvm.open("portal-trucks")
  const invoices = await kvm.open("portal-invoices")
  await trucks.put("truck-1", JSON.stringify({ truckId: "truck-1", route: { ...route(999, { customerId: "acme" }), routeId: "bogus" } }))
  for (let i = 0; i < 30; i++) await invoices.delete(invoiceKey(customers[i % 3]!, `inv-rb-${i}`))
  await waitUntil(
    async () => {
      const a = await answers()
      return JSON.stringify(a) !== JSON.stringify(before) && a["acme /api/invoices"].invoices.length === 30 ? a : null
    },
    { what: "the damage served: acme's ten invoices gone too" },
  )

  // watch one customer's list through the whole rebuild
  const seen: { status: number; body: any }[] = []
  let watching = true
  const watcher = (async () => {
    while (watching) {
      seen.push(await get("acme", "/api/trucks"))
      await sleep(20)
    }
  })()
  const run = await rebuild("portal")
  await sleep(300)
  watching = false
  await watcher
  assert.is(run.code, 0, run.lines.join("\n"))
  assert.ok(
    run.lines.some((l) => /^rebuilt portal: \d+ events replayed/.test(l)),
    run.lines.join("\n"),
  )

  assert.equal(await answers(), before, "the same answers as before the damage")
  assert.equal(await get("globex", "/api/trucks/truck-7"), truck7)
  assert.equal(await consumersNow(), consumers, "the same consumers: not one renamed (nor recreated, where the server resets in place)")
  const first = seen.findIndex((s) => s.status === 503)
  assert.ok(first >= 0, "the rebuild was seen")
  const during = seen.slice(first)
  const rebuilding = during.filter((s) => s.status === 503)
  assert.ok(
    rebuilding.every((s) => s.body.rebuilding === true && typeof s.body.progress === "number"),
    JSON.stringify(rebuilding.slice(0, 3)),
  )
  assert.ok(rebuilding.length >= 5, `${rebuilding.length} answers said rebuilding`)
  for (const s of during.filter((x) => x.status !== 503))
    assert.equal(s, { status: 200, body: before["acme /api/trucks"] }, "after the first 503, only the whole list")
  assert.is(during.at(-1)!.status, 200)
  if (process.env.TEST_VERBOSE)
    console.log(
      `  · ${seen.length} answers, ${rebuilding.length} said rebuilding; ${run.lines.filter((l) => !l.startsWith("{")).join(" | ")}`,
    )
  for (const c of await Promise.all(["ROUTING", "TRACKING", "INVOICE", "REPLAY"].map((s) => jsm.consumers.info(s, "portal"))))
    assert.is(c.config.description ?? "", "")
  assert.is((await jsm.streams.info("DLQ")).state.messages, 0)
})

test("tracking - a deleted projection is rebuilt from ROUTING then POSITIONS to the same state, without publishing an EtaUpdated again", async () => {
  const tracking = spawnTs("workers/tracking.ts", { ...as("tracking"), TRACKING_PORT: String(await freePort()) })
  children.push(tracking)
  await tracking.waitFor(/"msg":"ready"/)
  const t0 = Date.now() - 3600_000
  for (let i = 0; i < 10; i++) {
    const r: RouteCalculated = route(i, {
      routeId: `tr-${i}`,
      truckId: `tt-${i}`,
      stops: [
        { id: `a${i}`, lat: 52.5, lon: 13.4 },
        { id: `b${i}`, lat: 52.6, lon: 13.5 },
      ],
      calculatedAt: new Date(t0).toISOString(),
      eta: new Date(t0 + 3600_000).toISOString(),
    })
    await publish("RouteCalculated", r)
  }
  await settled("ROUTING", "tracking")
  for (let k = 0; k < 6; k++) {
    for (let i = 0; i < 10; i++) {
      // standing still, then jumping: the ETA moves past the threshold now and then
      const p: PositionReported = {
        truckId: `tt-${i}`,
        lat: 52.5 + (k % 3) * 0.03,
        lon: 13.4 + i * 0.001,
        speedKmh: 10 + k * 8,
        at: new Date(t0 + (k + 1) * 300_000).toISOString(),
      }
      await publish("PositionReported", p)
    }
  }
  await settled("POSITIONS", "tracking")
  const kv = await new Kvm(admin).open("tracking-trucks")
  const snapshot = async () => {
    const out: Record<string, unknown> = {}
    for await (const k of await kv.keys()) out[k] = (await kv.get(k))!.json()
    return out
  }
  const before = await snapshot()
  // the portal test's 60 trucks too: tracking's consumer started at the beginning of ROUTING
  assert.is(Object.keys(before).length, 70)
  const etas = (await jsm.streams.info("TRACKING")).state.messages
  assert.ok(etas > 0, "some ETA moved past the threshold")
  const consumers = await consumersNow()

  await jsm.streams.purge("KV_tracking-trucks")
  assert.equal(await snapshot(), {})
  const run = await rebuild("tracking")
  assert.is(run.code, 0, run.lines.join("\n"))
  assert.equal(await snapshot(), before)
  await sleep(500)
  assert.is((await jsm.streams.info("TRACKING")).state.messages, etas, "no EtaUpdated published again")
  if (process.env.TEST_VERBOSE)
    console.log(
      `  · ${Object.keys(before).length} records, ${etas} EtaUpdated; ${run.lines.filter((l) => l.startsWith("rebuilt")).join("")}`,
    )
  assert.equal(await consumersNow(), consumers)
})

test("errors - a worker without a read model is refused, naming those that have one", async () => {
  const run = await rebuild("invoice")
  assert.is(run.code, 1)
  assert.ok(
    run.lines.some((l) => l === "logiflow rebuild: invoice has no read model built from the streams; these have: portal, tracking"),
    run.lines.join("\n"),
  )
})

test.run()
