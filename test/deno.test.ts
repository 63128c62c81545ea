// Every worker file runs unchanged on Deno 2 (the npm package `deno`): bare imports resolve through package.json +
// node_modules without a deno.json, HTTP is Deno.serve, env is Deno.env, SIGTERM drains through Deno's signal listener.
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import type { InvoiceGenerated } from "../contracts/mod.ts"
import { denoBinary } from "./child.ts"
import { type Child, connectTo, freePort, spawnChild, startServer, type TestServer, testAuth, waitUntil, suite } from "./harness.ts"

type DenoChild = Child & { port: number }

function runDeno(file: string, port: number, env: Record<string, string>): DenoChild {
  const child = spawnChild(
    denoBinary(),
    ["run", "-A", file],
    { LOG_LEVEL: "info", DENO_NO_UPDATE_CHECK: "1", ...env },
    { name: `deno ${file}` },
  )
  return Object.assign(child, { port })
}

const status = (port: number, path: string) =>
  fetch(`http://127.0.0.1:${port}${path}`).then(
    (r) => (r.body?.cancel(), r.status),
    () => 0,
  )

async function startWorker(name: string, extra: Record<string, string> = {}): Promise<DenoChild> {
  const port = await freePort()
  const child = runDeno(`workers/${name}.ts`, port, { NATS_URL: server.url, [`${name.toUpperCase()}_PORT`]: String(port), ...extra })
  children.push(child)
  // the first run on a machine also transpiles the whole import graph into Deno's cache
  await waitUntil(async () => (child.proc.exitCode !== null ? "exited" : (await status(port, "/readyz")) === 200), {
    timeoutMs: 60_000,
    every: 200,
    what: `${name} under Deno to be ready (last lines: ${child.lines.slice(-3).join(" | ")})`,
  })
  assert.is(child.proc.exitCode, null, `${name} exited at start: ${child.lines.slice(-5).join(" | ")}`)
  return child
}

const test = suite("deno")
let server: TestServer
let nc: NatsConnection
let jsm: JetStreamManager
const children: DenoChild[] = []

test.before(async () => {
  server = await startServer()
  nc = await connectTo(server)
  jsm = await jetstreamManager(nc)
})
test.after(async () => {
  await Promise.all(children.map((c) => c.stop()))
  await nc?.close()
  await server?.close()
})

async function invoicesFor(routeId: string): Promise<InvoiceGenerated[]> {
  const info = await jsm.streams.info("INVOICE").catch(() => null)
  if (!info || info.state.messages === 0) return []
  const out: InvoiceGenerated[] = []
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage("INVOICE", { seq }).catch(() => null)
    const inv = m?.json<InvoiceGenerated>()
    if (inv?.routeId === routeId) out.push(inv)
  }
  return out
}

let routing: DenoChild
let invoice: DenoChild

test("routing and invoice under Deno: POST /routes → 202, one InvoiceGenerated for that routeId in INVOICE", async () => {
  // routing first: both create the ROUTING stream when missing, and one at a time keeps that out of the picture
  routing = await startWorker("routing", { SITE_ID: "" })
  invoice = await startWorker("invoice")
  assert.is(await status(routing.port, "/readyz"), 200)
  assert.is(await status(invoice.port, "/readyz"), 200)

  const res = await fetch(`http://127.0.0.1:${routing.port}/routes`, {
    method: "POST",
    headers: { "content-type": "application/json", ...testAuth().headers.routes },
    body: JSON.stringify({
      truckId: "deno-truck",
      customerId: "acme",
      depot: { lat: 52.52, lon: 13.405 },
      stops: [
        { id: "a", lat: 52.53, lon: 13.41 },
        { id: "b", lat: 52.5, lon: 13.39 },
      ],
    }),
  })
  assert.is(res.status, 202)
  const { routeId } = (await res.json()) as { routeId: string }
  assert.match(routeId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)

  const [inv, ...more] = await waitUntil(
    async () => {
      const found = await invoicesFor(routeId)
      return found.length ? found : null
    },
    { timeoutMs: 20_000, what: `an InvoiceGenerated for ${routeId}` },
  )
  assert.equal(more, [])
  assert.is(inv!.routeId, routeId)
  assert.is(inv!.truckId, "deno-truck")
  assert.is(inv!.customerId, "acme")
  assert.ok(Number.isInteger(inv!.totalCents) && inv!.totalCents > 0)

  const metrics = await fetch(`http://127.0.0.1:${routing.port}/metrics`).then((r) => r.text())
  assert.match(metrics, /routing_requests_total\{outcome="accepted"\} 1\n/)
})

test("SIGTERM under Deno drains routing and invoice and exits 0", async () => {
  assert.is(await routing.stop(), 0, routing.lines.slice(-3).join(" | "))
  assert.is(await invoice.stop(), 0, invoice.lines.slice(-3).join(" | "))
  for (const c of [routing, invoice])
    assert.ok(
      c.lines.some((l) => /"msg":"stopped","drained":true/.test(l)),
      c.lines.slice(-3).join(" | "),
    )
})

test("tracking, portal, ops and fleet run under Deno: /healthz and /readyz 200, SIGTERM exits 0", async () => {
  // fleet's routing and tracking are down on purpose: it logs the outage and stays up
  const nowhere = `http://127.0.0.1:${await freePort()}`
  for (const [name, extra] of [
    ["tracking", {}],
    ["portal", {}],
    ["ops", {}],
    ["fleet", { ROUTING_URL: nowhere, TRACKING_URL: nowhere }],
  ] as const) {
    const child = await startWorker(name, extra)
    assert.is(await status(child.port, "/healthz"), 200, name)
    assert.is(await status(child.port, "/readyz"), 200, name)
    assert.is(await child.stop(), 0, `${name}: ${child.lines.slice(-3).join(" | ")}`)
  }
})

test.run()
