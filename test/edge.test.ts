// The edge setup of deploy/edge: a hub (JetStream domain hub) and an edge site (domain edge) linked as a leafnode,
// both from the committed configs. Routing runs at the edge, invoice on the hub. With the hub gone, the edge keeps
// answering 202; when it is back, the hub's ROUTING sources every route exactly once and each is invoiced once.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jetstreamManager, type JetStreamManager, type StoredMsg } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { edgeStream, type InvoiceGenerated, type RouteCalculated, topology } from "../contracts/mod.ts"
import { commands } from "../mesh/cli/main.ts"
import { connect } from "../mesh/connect.ts"
import { type Natsd, startNatsd } from "../mesh/cli/natsd.ts"
import { type Child, connectTo, freePort, ROOT, spawnTs, testAuth, waitUntil, suite } from "./harness.ts"

const EDGE_ROUTING = edgeStream("ROUTING")

/** The committed config with the leafnode port swapped: command-line flags cannot set it, and tests use free ports. */
async function render(name: string, dir: string, leafPort: number): Promise<string> {
  const text = await readFile(join(ROOT, "deploy", "edge", name), "utf8")
  assert.match(text, /:7422"/, `${name} no longer uses leafnode port 7422; update this test's render()`)
  const file = join(dir, name)
  await writeFile(file, text.replaceAll(":7422", `:${leafPort}`))
  return file
}

const test = suite("edge")
let dir: string
let hub: Natsd
let edge: Natsd
let hubNc: NatsConnection
let edgeNc: NatsConnection
let hubJsm: JetStreamManager
let edgeJsm: JetStreamManager
let routing: Child
let invoice: Child
let routingPort: number

const leafnodes = (server: Natsd) =>
  fetch(`http://127.0.0.1:${server.monitorPort}/leafz`).then(
    (r) => r.json() as Promise<{ leafnodes: number }>,
    () => ({ leafnodes: -1 }),
  )

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "logiflow-edge-"))
  const leafPort = await freePort()
  const onLog = process.env.TEST_VERBOSE ? (l: string) => console.log(`[natsd] ${l}`) : undefined
  hub = await startNatsd({
    config: await render("hub.conf", dir, leafPort),
    port: await freePort(),
    monitorPort: await freePort(),
    storeDir: join(dir, "hub"),
    onLog,
  })
  edge = await startNatsd({
    config: await render("edge.conf", dir, leafPort),
    port: await freePort(),
    monitorPort: await freePort(),
    storeDir: join(dir, "edge"),
    onLog,
  })
  await waitUntil(async () => (await leafnodes(edge)).leafnodes === 1, { what: "the edge's leafnode link to the hub" })
  hubNc = await connectTo(hub)
  edgeNc = await connectTo(edge)
  hubJsm = await jetstreamManager(hubNc)
  edgeJsm = await jetstreamManager(edgeNc)
})

test.after(async () => {
  await Promise.allSettled([routing?.stop(), invoice?.stop()])
  await Promise.allSettled([hubNc?.close(), edgeNc?.close()])
  await Promise.allSettled([hub?.stop(), edge?.stop()])
  await rm(dir, { recursive: true, force: true })
})

async function all(jsm: JetStreamManager, stream: string): Promise<StoredMsg[]> {
  const info = await jsm.streams.info(stream)
  const out: StoredMsg[] = []
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null)
    if (m) out.push(m)
  }
  return out
}

const count = async (jsm: JetStreamManager, stream: string) => (await jsm.streams.info(stream)).state.messages

let n = 0
async function postRoute(key?: string, i = n++): Promise<{ status: number; routeId?: string }> {
  const res = await fetch(`http://127.0.0.1:${routingPort}/routes`, {
    method: "POST",
    headers: { "content-type": "application/json", ...testAuth().headers.routes, ...(key ? { "idempotency-key": key } : {}) },
    body: JSON.stringify({
      truckId: `edge-truck-${i % 4}`,
      customerId: ["acme", "globex", "initech"][i % 3],
      depot: { lat: 52.52, lon: 13.405 },
      stops: [{ id: `s${i}`, lat: 52.53 + (i % 7) / 1000, lon: 13.41 }],
    }),
  })
  const body = (await res.json()) as { routeId?: string }
  return { status: res.status, routeId: body.routeId }
}

/** Until the invoice consumer on the hub has delivered and acked everything: it has published what it will. */
const invoiceSettled = () =>
  waitUntil(
    async () => {
      const c = await hubJsm.consumers.info("ROUTING", "invoice").catch(() => null)
      return c && c.num_pending === 0 && c.num_ack_pending === 0 ? c : null
    },
    { timeoutMs: 30_000, what: "the hub's invoice consumer to settle" },
  )

const posted: string[] = []

/** `logiflow provision --edge <role>` against `server`, as documented in deploy/edge/README.md; its output lines. */
async function provisionCli(role: string, server: Natsd): Promise<string[]> {
  const out: string[] = []
  await commands.provision!.run(["--edge", role], {
    out: (l) => out.push(l),
    connect: () => connect({ name: "admin", url: server.url }),
    debug: false,
  })
  return out
}

test("topology - edge: EDGE_ROUTING, routing's bucket and heartbeats, no consumers; hub: as without edge, ROUTING also sourcing EDGE_ROUTING", () => {
  const plain = topology()
  const atEdge = topology({ edge: { role: "edge" } })
  assert.equal(
    atEdge.streams.map((s) => [s.name, s.subjects]),
    [[EDGE_ROUTING, ["routing.events.RouteCalculated.*"]]],
  )
  assert.equal(atEdge.consumers, [])
  assert.equal(
    atEdge.buckets.map((b) => b.bucket),
    ["routing-requests", "heartbeats"],
  )
  const hubSide = topology({ edge: { role: "hub" } })
  assert.equal(hubSide.streams.find((s) => s.name === "ROUTING")!.sources, [{ name: EDGE_ROUTING, domain: "edge" }])
  assert.equal(
    hubSide.streams.map(({ sources: _, ...s }) => s),
    plain.streams,
  )
  assert.equal([hubSide.consumers, hubSide.buckets], [plain.consumers, plain.buckets])
  assert.equal(topology({ edge: { role: "hub", domain: "depot7" } }).streams[0]!.sources, [{ name: EDGE_ROUTING, domain: "depot7" }])
})

test("provisioning: the edge holds EDGE_ROUTING and routing's bucket only; the hub's ROUTING sources it from domain edge", async () => {
  assert.equal(await provisionCli("edge", edge), [
    "created   stream   EDGE_ROUTING",
    "created   bucket   routing-requests",
    "created   bucket   heartbeats",
    "3 resources, 3 changed",
  ])
  const hubOut = await provisionCli("hub", hub)
  assert.ok(hubOut.includes("created   stream   ROUTING"), hubOut.join("\n"))
  const routingConfig = (await hubJsm.streams.info("ROUTING")).config
  assert.equal(routingConfig.subjects, ["routing.events.RouteCalculated.*"])
  assert.equal(routingConfig.sources, [{ name: EDGE_ROUTING, external: { api: "$JS.edge.API", deliver: "" } }])
  // idempotent on both sides, sources included
  assert.equal((await provisionCli("edge", edge)).at(-1), "3 resources, 0 changed")
  assert.match((await provisionCli("hub", hub)).at(-1)!, / 0 changed$/)
  try {
    await provisionCli("moon", edge)
    assert.unreachable("--edge moon was accepted")
  } catch (err) {
    assert.is((err as Error).message, '--edge is hub or edge, got "moon"')
  }

  routingPort = await freePort()
  routing = spawnTs("workers/routing.ts", { NATS_URL: edge.url, SITE_ID: "edge1", ROUTING_PORT: String(routingPort) })
  invoice = spawnTs("workers/invoice.ts", { NATS_URL: hub.url, INVOICE_PORT: String(await freePort()) })
  await Promise.all([routing.waitFor(/"msg":"ready"/), invoice.waitFor(/"msg":"ready"/)])
  // routing's own start-up provisioning found routing.events.> stored by EDGE_ROUTING and created no ROUTING here
  const names = await edgeJsm.streams.names().next()
  assert.ok(names.includes(EDGE_ROUTING) && !names.includes("ROUTING"), names.join(", "))
})

test("routes posted at the edge reach the hub's ROUTING through the source only, and are invoiced there", async () => {
  for (let i = 0; i < 4; i++) {
    const r = await postRoute()
    assert.is(r.status, 202)
    posted.push(r.routeId!)
  }
  const first = await postRoute("order-42", 99)
  const retry = await postRoute("order-42", 99)
  assert.equal([first.status, retry.status], [202, 202])
  assert.is(retry.routeId, first.routeId)
  posted.push(first.routeId!)
  for (const id of posted) assert.match(id, /^edge1-[0-9a-f]{8}-/)

  await waitUntil(async () => (await count(hubJsm, "ROUTING")) >= posted.length, {
    timeoutMs: 30_000,
    what: "the hub's ROUTING to source 5 routes",
  })
  await invoiceSettled()
  const hubRoutes = await all(hubJsm, "ROUTING")
  assert.equal(
    hubRoutes.map((m) => m.json<RouteCalculated>().routeId),
    posted,
  )
  // every copy on the hub came through the source: the deny lists kept the hub from capturing edge publishes live
  for (const m of hubRoutes) assert.match(m.header.get("Nats-Stream-Source"), new RegExp(`^${EDGE_ROUTING}\\b`))
  assert.equal((await all(hubJsm, "INVOICE")).map((m) => m.json<InvoiceGenerated>().routeId).sort(), [...posted].sort())
  assert.is(await count(hubJsm, "INVOICE"), posted.length)
  // the idempotency records stayed at the edge (2.9 keeps $KV.> within a JetStream domain), one per request (routing
  // makes a key for a request that came without one); the hub's bucket is empty
  assert.is(await count(edgeJsm, "KV_routing-requests"), posted.length)
  assert.is(await count(hubJsm, "KV_routing-requests"), 0)
  // the edge site has its own heartbeats bucket: its routing shows up there (and logged no heartbeat warning)
  assert.ok((await count(edgeJsm, "KV_heartbeats")) >= 1, "routing's heartbeat at the edge")
  assert.not.ok(
    routing.lines.some((l) => l.includes("cannot write heartbeats")),
    "no heartbeat warning",
  )
})

test("link cut: the hub stopped, the edge answers 202 to every route; back on the same ports and store, the hub gets each once", async () => {
  await hub.stop()
  await waitUntil(async () => (await leafnodes(edge)).leafnodes === 0, { what: "the edge to notice the hub is gone" })
  const N = 40
  for (let i = 0; i < N; i++) {
    const r = await postRoute()
    assert.is(r.status, 202, `route ${i} during the outage`)
    posted.push(r.routeId!)
  }
  assert.is(await fetch(`http://127.0.0.1:${routingPort}/readyz`).then((r) => r.status), 200)
  assert.is(await count(edgeJsm, EDGE_ROUTING), posted.length)

  await hub.restart()
  await waitUntil(async () => (await leafnodes(edge)).leafnodes === 1, { what: "the leafnode link to come back" })
  // the source retries on the server's own timer, not configurable: ~5 s after the link returns on 2.9, ~40 s from 2.11
  // on (the restarted hub asks the edge before the link is back, waits 30 s for the answer, then backs off 10 s)
  await waitUntil(async () => (await count(hubJsm, "ROUTING").catch(() => 0)) >= posted.length, {
    timeoutMs: 90_000,
    every: 250,
    what: `the hub's ROUTING to catch up to ${posted.length} routes`,
  })
  await waitUntil(async () => (await count(hubJsm, "INVOICE").catch(() => 0)) >= posted.length, {
    timeoutMs: 30_000,
    what: `${posted.length} invoices`,
  })
  await invoiceSettled()

  // no dup, no gap, in the edge's order
  assert.equal(
    (await all(hubJsm, "ROUTING")).map((m) => m.json<RouteCalculated>().routeId),
    posted,
  )
  const invoices = (await all(hubJsm, "INVOICE")).map((m) => m.json<InvoiceGenerated>())
  assert.is(invoices.length, posted.length)
  assert.equal(invoices.map((i) => i.routeId).sort(), [...posted].sort())
  assert.is(await count(hubJsm, "DLQ"), 0)
})

test.run()
