// The story of a route and of a truck (logiflow trace, ops' /api/story/:id): a real nats-server, real invoice and ops
// processes, the CLI as its own process. An invoiced route with its truck's positions and ETAs, a route dead-lettered
// for want of a tariff and replayed (failing again), and routes waiting behind a stopped invoice worker: each story's
// lines in time order, and what it says is missing, with the exact count.
import * as assert from "uvu/assert"
import type { RouteCalculated } from "../contracts/mod.ts"
import { newId, publishEvent } from "../mesh/publish.ts"
import { type Proc, spawnWorker } from "./fixtures/chaos.ts"
import { jetstream } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import {
  authFixture,
  type Child,
  freePort,
  natsFixture,
  type NatsFixture,
  spawnTs,
  type TestServer,
  testAuth,
  userEnv,
  waitUntil,
  suite,
} from "./harness.ts"
import { provision } from "../mesh/provision.ts"
import { topology } from "../contracts/mod.ts"

const test = suite("story")
let f: NatsFixture
let ops: Proc
let invoice: Proc | undefined
const operator = testAuth().operator

const trace = (n: number) => `00-${String(n).padStart(32, "a")}-${"b".repeat(16)}-01`
const tid = (n: number) => String(n).padStart(32, "a")

test.before(async () => {
  f = await natsFixture()
  await provision(f.nc, topology())
  ops = await spawnWorker("ops", { NATS_URL: f.server.url })
  invoice = await spawnWorker("invoice", { NATS_URL: f.server.url })
})
test.after(async () => {
  await invoice?.stop("SIGKILL")
  await ops?.stop("SIGKILL")
  await f?.nc.close()
  await f?.server.close()
})

function route(truckId: string, customerId: string): RouteCalculated {
  return {
    routeId: newId(),
    truckId,
    customerId,
    stops: [
      { id: "a", lat: 52.52, lon: 13.405 },
      { id: "b", lat: 52.53, lon: 13.41 },
    ],
    distanceKm: 4.2,
    eta: "2026-12-07T10:00:00.000Z",
    calculatedAt: new Date().toISOString(),
  }
}
const sendRoute = (r: RouteCalculated, t?: number) =>
  publishEvent(f.js, "RouteCalculated", r, { id: `routing:${r.routeId}`, source: "logiflow/test", ...(t ? { traceparent: trace(t) } : {}) })

async function api(path: string, headers: Record<string, string> = operator.headers) {
  const r = await fetch(ops.url + path, { headers })
  return { status: r.status, body: (await r.json()) as any }
}
const storyOf = async (id: string) => {
  const r = await api(`/api/story/${encodeURIComponent(id)}`)
  assert.is(r.status, 200, JSON.stringify(r.body))
  return r.body
}
const shape = (s: { lines: { event: string; text: string }[] }) => s.lines.map((l) => `${l.event}: ${l.text}`)

async function logiflow(args: string[]): Promise<{ code: number | null; out: string[] }> {
  const child = spawnTs("mesh/cli/main.ts", { NATS_URL: f.server.url, LOG_LEVEL: "error" }, args)
  const code = await child.exited
  return { code, out: child.lines }
}

const invoiced = (routeId: string) => f.jsm.streams.getMessage("INVOICE", { last_by_subj: `invoice.events.InvoiceGenerated.${routeId}` })

let paid: RouteCalculated
let unpaid: RouteCalculated
let waiting: RouteCalculated[]
let paidSeq = 0
let unpaidSeq = 0

test("story - an invoiced route: planned, invoiced, its truck's positions and ETAs summarised, one trace", async () => {
  paid = route("truck-a", "acme")
  paidSeq = (await sendRoute(paid, 1)).seq
  await waitUntil(() => invoiced(paid.routeId), { what: "the invoice" })
  const ats = [0, 1, 2, 3, 4].map((i) => new Date(Date.now() + i * 1000).toISOString().replace(/\.\d+Z$/, "Z"))
  for (const [i, at] of ats.entries()) {
    await publishEvent(
      f.js,
      "PositionReported",
      { truckId: "truck-a", lat: 52.5 + i / 100, lon: 13.4, at },
      { id: `pos:truck-a:${at}`, source: "logiflow/test", traceparent: trace(2) },
    )
  }
  for (const [i, eta] of ["2026-12-07T10:05:00Z", "2026-12-07T10:09:00Z"].entries()) {
    const eu = {
      truckId: "truck-a",
      routeId: paid.routeId,
      eta,
      previousEta: paid.eta,
      nextStopId: "b",
      remainingKm: 3 - i,
      updatedAt: new Date().toISOString(),
    }
    await publishEvent(f.js, "EtaUpdated", eu, { id: `eta:${paid.routeId}:${i}`, source: "logiflow/test", traceparent: trace(1) })
  }
  const inv = (await invoiced(paid.routeId))!.json<{ invoiceId: string; totalCents: number }>()
  const s = await storyOf(paid.routeId)
  assert.equal(
    { kind: s.kind, truckId: s.truckId, routeId: s.routeId, customerId: s.customerId },
    { kind: "route", truckId: "truck-a", routeId: paid.routeId, customerId: "acme" },
  )
  assert.equal(shape(s), [
    `RouteCalculated: route ${paid.routeId} for truck-a, customer acme: 2 stops, 4.2 km, ETA 2026-12-07T10:00:00.000Z`,
    `InvoiceGenerated: invoice ${inv.invoiceId}: ${(inv.totalCents / 100).toFixed(2)} EUR, 3 lines`,
    `PositionReported: 5 positions from truck-a: first at ${ats[0]}, last at ${ats[4]} (52.5400, 13.4000)`,
    `EtaUpdated: 2 ETA updates, latest ETA 2026-12-07T10:09:00Z (next stop b, 2 km to go, route ${paid.routeId})`,
  ])
  assert.equal(s.lines.map((l: any) => [l.stream, l.seq]).slice(0, 2), [
    ["ROUTING", paidSeq],
    ["INVOICE", 1],
  ])
  assert.equal(s.missing, [])
  assert.equal(s.traceIds, [tid(1), tid(2)])
})

test("story - a dead-lettered route, replayed by an operator and failing again: every step, who did it, and why no invoice", async () => {
  unpaid = route("truck-b", "nobody")
  unpaidSeq = (await sendRoute(unpaid, 3)).seq
  const id = `ROUTING.invoice.${unpaidSeq}`
  await waitUntil(async () => (await api(`/api/dlq/${id}`)).status === 200, { what: "the entry" })
  const replayed = await fetch(`${ops.url}/api/dlq/${id}/replay`, { method: "POST", headers: operator.headers })
  assert.is(replayed.status, 200)
  await waitUntil(async () => (await api("/api/dlq?state=open")).body.total === 1, { what: "the replay's own entry" })
  const again = (await api("/api/dlq?state=open")).body.entries[0].id
  assert.match(again, new RegExp(`^${id.replace(/\./g, "\\.")}\\.r\\d+$`))
  const s = await storyOf(unpaid.routeId)
  assert.equal(shape(s), [
    `RouteCalculated: route ${unpaid.routeId} for truck-b, customer nobody: 2 stops, 4.2 km, ETA 2026-12-07T10:00:00.000Z`,
    `dead-lettered: dead-lettered by invoice: no-tariff (no tariff for customer "nobody"); entry ${id}, replayed`,
    `replayed: replayed by ${operator.name}: entry ${id}`,
    `dead-lettered: its replay failed again at invoice: no-tariff (no tariff for customer "nobody"); entry ${again}, open`,
  ])
  assert.equal(s.missing, ["no invoice: dead-lettered: no-tariff, open", "no position from truck-b since the route was calculated"])
  assert.equal(s.traceIds, [tid(3)])
  // the same story by the event's id and by the entry's id
  assert.equal(shape(await storyOf(`routing:${unpaid.routeId}`)), shape(s))
  assert.equal(shape(await storyOf(id)), shape(s))
})

test("story - routes behind a stopped invoice worker: the consumer's exact lag, and that no instance runs", async () => {
  await invoice!.stop("SIGTERM")
  invoice = undefined
  waiting = [route("truck-c", "acme"), route("truck-c", "acme"), route("truck-c", "acme")]
  for (const r of waiting) await sendRoute(r)
  const s = await storyOf(waiting[1]!.routeId)
  assert.equal(s.missing, [
    "no invoice yet: invoice consumer 3 behind; no invoice instance is running",
    // the truck reports nothing in this test
    "no position from truck-c since the route was calculated",
  ])
  // a truck: its routes in order, each one's invoice or dead letter, and what its newest route lacks
  const t = await storyOf("truck-c")
  assert.equal(t.kind, "truck")
  assert.equal(
    shape(t).map((l) => l.replace(/route \S+ for/, "route for")),
    Array(3).fill("RouteCalculated: route for truck-c, customer acme: 2 stops, 4.2 km, ETA 2026-12-07T10:00:00.000Z"),
  )
  assert.equal(t.missing, [
    `route ${waiting[2]!.routeId}: no invoice yet: invoice consumer 3 behind; no invoice instance is running`,
    "no position from truck-c in POSITIONS",
  ])
})

test("story - a truck's story: routes, invoice, positions and ETAs each summarised once", async () => {
  const s = await storyOf("truck-a")
  assert.equal(
    s.lines.map((l: any) => l.event),
    ["RouteCalculated", "InvoiceGenerated", "PositionReported", "EtaUpdated"],
  )
  assert.match(s.lines[2].text, /^5 positions from truck-a: first at /)
  assert.is(s.lines[3].text, `2 ETA updates, latest ETA 2026-12-07T10:09:00Z (next stop b, 2 km to go, route ${paid.routeId})`)
  assert.equal(s.missing, [])
})

test("story - unknown ids are 404 with what was looked at; the API needs an operator", async () => {
  const none = await api(`/api/story/${newId()}`)
  assert.is(none.status, 404)
  assert.match(none.body.error, /^no story for \S+: no RouteCalculated with that route id in ROUTING from /)
  assert.is((await api("/api/story/nothing-here")).status, 404)
  assert.is((await api(`/api/story/${paid.routeId}`, {})).status, 401)
  assert.is((await api("/api/story/truck-a?routes=0")).status, 400)
})

test("trace - the CLI prints the same story, and --json the same data as the API", async () => {
  const { code, out } = await logiflow(["trace", unpaid.routeId])
  assert.is(code, 0, out.join("\n"))
  const id = `ROUTING.invoice.${unpaidSeq}`
  assert.is(out[0], `route ${unpaid.routeId} (truck truck-b, customer nobody)`)
  assert.equal(
    out.slice(1).map((l) => l.replace(/^\S+ {2}/, "")),
    [
      `RouteCalculated  route ${unpaid.routeId} for truck-b, customer nobody: 2 stops, 4.2 km, ETA 2026-12-07T10:00:00.000Z  [ROUTING #${unpaidSeq}, trace ${tid(3)}]`,
      `dead-lettered    dead-lettered by invoice: no-tariff (no tariff for customer "nobody"); entry ${id}, replayed`,
      `replayed         replayed by ${operator.name}: entry ${id}`,
      out[4]!.replace(/^\S+ {2}/, ""),
      "missing: no invoice: dead-lettered: no-tariff, open",
      "missing: no position from truck-b since the route was calculated",
      `trace ids: ${tid(3)}`,
    ],
  )
  assert.match(out[4]!, /dead-lettered {4}its replay failed again at invoice: no-tariff/)
  const json = await logiflow(["trace", waiting[0]!.routeId, "--json"])
  assert.is(json.code, 0)
  assert.equal(JSON.parse(json.out.join("\n")), await storyOf(waiting[0]!.routeId))
  const missing = await logiflow(["trace", "no-such-thing"])
  assert.is(missing.code, 1)
  assert.match(missing.out.join("\n"), /^logiflow trace: no story for no-such-thing: /)
})

test.run()

// As nats.conf's ops user: only direct gets, stream and consumer info and the heartbeats bucket, no consumer of its own
const secure = suite("story, least privilege")
let authServer: TestServer
let admin: NatsConnection
const children: Child[] = []
secure.before(async () => {
  ;({ server: authServer, admin } = await authFixture())
})
secure.after(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop("SIGKILL")))
  await admin?.close()
  await authServer?.close()
})

secure(
  "least privilege - as the ops user: a route's and a truck's story, and the lag samples, without a permissions violation",
  async () => {
    const as = (user: string) => userEnv(authServer, user)
    const port = await freePort()
    const opsChild = spawnTs("workers/ops.ts", { ...as("ops"), OPS_PORT: String(port), OPS_LAG_SAMPLE_MS: "200" })
    const inv = spawnTs("workers/invoice.ts", { ...as("invoice"), INVOICE_PORT: String(await freePort()) })
    children.push(opsChild, inv)
    await Promise.all([opsChild.waitFor(/"msg":"ready"/), inv.waitFor(/"msg":"ready"/)])
    const ajs = jetstream(admin)
    const [good, bad] = [route("truck-s", "acme"), route("truck-s", "nobody")]
    for (const r of [good, bad]) await publishEvent(ajs, "RouteCalculated", r, { id: `routing:${r.routeId}`, source: "logiflow/test" })
    const get = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers: operator.headers })
      return { status: r.status, body: (await r.json()) as any }
    }
    await waitUntil(async () => (await get("/api/dlq")).body.total === 1, { what: "the dead letter" })
    const invoiced = (x: { body: { lines?: { event: string }[] } }) => x.body.lines?.some((l) => l.event === "InvoiceGenerated")
    await waitUntil(async () => invoiced(await get(`/api/story/${good.routeId}`)), { what: "the invoice in the story" })
    // the dead-lettered route has no invoice to name its truck: found near the time in its UUIDv7
    const s = await get(`/api/story/${bad.routeId}`)
    assert.is(s.status, 200, JSON.stringify(s.body))
    assert.equal(s.body.missing[0], "no invoice: dead-lettered: no-tariff, open")
    const t = await get("/api/story/truck-s")
    // the second route may be stored before or after the first one's invoice: the lines are in time order either way
    const lines: { event: string; at: string }[] = t.body.lines
    assert.equal(lines.map((l) => l.event).sort(), ["InvoiceGenerated", "RouteCalculated", "RouteCalculated", "dead-lettered"])
    assert.equal(
      lines.map((l) => l.at),
      lines.map((l) => l.at).sort(),
    )
    await waitUntil(async () => (await get("/api/lag")).body.consumers?.["ROUTING/invoice"]?.length >= 2, { what: "lag samples" })
    assert.equal(
      opsChild.lines.filter((l) => /Permissions Violation|"level":"error"/i.test(l)),
      [],
    )
  },
)

secure.run()
