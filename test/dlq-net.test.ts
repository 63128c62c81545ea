// The DLQ net has no hole: ops' own consumers never file into the queue they serve, a DLQ that refuses writes loses
// nothing (worker path and advisory path), an event too large for the DLQ is filed by reference, a replay that could
// bill twice is refused, and a failure whose effect is stored is not an open failure. Real nats-server, ops and the
// failing worker as child processes.
import { nanos } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { BY_REFERENCE, DLQ, type RouteCalculated } from "../contracts/mod.ts"
import type { DlqEntry } from "../mesh/admin/mod.ts"
import { publishDeadLetter } from "../mesh/dlq.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { topology } from "../contracts/mod.ts"
import { type Child, natsSuite, sleep, startReady, testAuth, waitUntil, suite } from "./harness.ts"
import { maxDeliveries, route } from "./fixtures/events.ts"

const test = suite("dlq net")
const children: Child[] = []
test.after.each(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop("SIGKILL")))
})
const f = natsSuite(test, {
  // two deliveries, 1 s apart at most: the final delivery comes quickly (and the server's backoff, one wait of 1 s)
  reset: ({ jsm }) => jsm.consumers.update("ROUTING", "invoice", { max_deliver: 2, ack_wait: nanos(1000), backoff: [nanos(1000)] }),
})

async function startOps(): Promise<Child & { url: string }> {
  const { child, url } = await startReady("test/fixtures/fast-ops.ts", "OPS_PORT", { NATS_URL: f.server.url }, children)
  return Object.assign(child, { url })
}

const startFailing = async (env: Record<string, string> = {}) =>
  (await startReady("test/fixtures/failing-worker.ts", "INVOICE_PORT", { NATS_URL: f.server.url, ...env }, children)).child

const send = (r: RouteCalculated) =>
  publishEvent(f.js, "RouteCalculated", r, { id: `rc-${r.routeId}-${crypto.randomUUID()}`, source: "logiflow/test" })

async function api(base: string, path: string, method = "GET"): Promise<{ status: number; body: any }> {
  const r = await fetch(base + path, { method, headers: testAuth().operator.headers })
  return { status: r.status, body: await r.json() }
}
const entries = async (base: string): Promise<DlqEntry[]> => (await api(base, "/api/dlq")).body.entries
const untilEntries = (base: string, n: number) =>
  waitUntil(async () => ((await entries(base)).length >= n ? entries(base) : null), { timeoutMs: 30_000, what: `${n} DLQ entries` })

/** Every message of a stream: subject, headers, body. */
async function all(stream: string) {
  const info = await f.jsm.streams.info(stream)
  const out = []
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await f.jsm.streams.getMessage(stream, { seq })
    if (m) out.push(m)
  }
  return out
}

/** A counter's value from a worker's /metrics (0 when the series does not exist yet). */
async function metric(base: string, series: string): Promise<number> {
  const text = await fetch(`${base}/metrics`).then((r) => r.text())
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line ? Number(line.split(" ")[1]) : 0
}

/** The DLQ refuses every write: a filler message (ops refuses to index it) and max_msgs 1, discard new. */
async function refuseDlq() {
  await f.js.publish("dlq.filler.x", "filler")
  await f.jsm.streams.update("DLQ", { max_msgs: 1 })
}
const acceptDlq = () => f.jsm.streams.update("DLQ", { max_msgs: -1 })
const maxDeliveriesAdvisories = async () => (await all("ADVISORIES")).filter((m) => m.subject.includes(".MAX_DELIVERIES.")).length

test("ops' own consumers - indexing that fails is retried past any max deliveries, counted and logged, never filed in the DLQ", async () => {
  const ops = await startOps()
  await startFailing({ NO_TARIFF: "nobody" })
  // the bucket ops indexes into disappears: every attempt to index fails until it is back
  await f.jsm.streams.delete("KV_dlq-entries")
  const ack = await send(route(1, { customerId: "nobody" }))
  await waitUntil(async () => (await metric(ops.url, 'logiflow_ops_failures_total{stream="DLQ"}')) >= 8, {
    timeoutMs: 20_000,
    what: "8 failed attempts",
  })
  await ops.waitFor(/"msg":"could not handle; retrying, never dead-lettered".*"stream":"DLQ"/)
  const dlq = await all("DLQ")
  assert.equal(
    dlq.map((m) => m.subject),
    ["dlq.ROUTING.invoice"],
    "the worker's entry only: nothing on dlq.DLQ.ops or dlq.ADVISORIES.ops",
  )
  assert.is(await maxDeliveriesAdvisories(), 0, "the server never gave up on ops' consumer")
  await provision(f.nc, topology(), { streams: () => false, consumers: () => false, buckets: (b) => b.bucket === "dlq-entries" })
  const [entry] = await untilEntries(ops.url, 1)
  assert.is(entry!.id, `ROUTING.invoice.${ack.seq}`)
  assert.is(entry!.reason, "no-tariff")
  assert.is((await all("DLQ")).length, 1)
})

test("DLQ refusing on the final delivery - the worker holds its message, files it itself once the DLQ takes writes: one entry, its own reason", async () => {
  const ops = await startOps()
  await refuseDlq()
  const w = await startFailing({ NO_TARIFF: "nobody", DLQ_HOLD_MS: "30000" })
  const ack = await send(route(2, { customerId: "nobody" }))
  await w.waitFor(/"msg":"dead-letter publish refused; holding the message and retrying"/)
  // past ack_wait (1 s) twice over: the held message is neither redelivered nor given up by the server
  await sleep(2500)
  assert.ok(await f.jsm.streams.getMessage("ROUTING", { seq: ack.seq }), "the original is in its stream")
  assert.is(await maxDeliveriesAdvisories(), 0)
  assert.is((await all("DLQ")).length, 1, "the filler only")
  await acceptDlq()
  const [entry] = await untilEntries(ops.url, 1)
  await sleep(500)
  assert.is((await entries(ops.url)).length, 1)
  assert.is(entry!.id, `ROUTING.invoice.${ack.seq}`)
  assert.is(entry!.reason, "no-tariff")
  assert.is(entry!.deliveries, 2)
  assert.equal(
    (await all("DLQ")).map((m) => m.subject),
    ["dlq.filler.x", "dlq.ROUTING.invoice"],
  )
  assert.is(await maxDeliveriesAdvisories(), 0)
})

test("DLQ refusing, worker gives up - ops files from the advisory, retrying while the DLQ refuses; one entry once it accepts, the original kept", async () => {
  const ops = await startOps()
  await refuseDlq()
  const w = await startFailing({ NO_TARIFF: "nobody", DLQ_HOLD_MS: "300" })
  const ack = await send(route(3, { customerId: "nobody" }))
  await w.waitFor(/"msg":"dead-letter publish failed; message handed back to the server".*"deliveries"|"msg":"dead-letter publish failed/)
  await waitUntil(async () => (await maxDeliveriesAdvisories()) === 1, { what: "the MAX_DELIVERIES advisory" })
  await waitUntil(async () => (await metric(ops.url, 'logiflow_ops_failures_total{stream="ADVISORIES"}')) >= 5, {
    timeoutMs: 20_000,
    what: "ops retrying the advisory",
  })
  await ops.waitFor(/"msg":"could not handle; retrying, never dead-lettered".*"stream":"ADVISORIES"/)
  assert.ok(await f.jsm.streams.getMessage("ROUTING", { seq: ack.seq }), "the original is in its stream while nothing could be filed")
  assert.is((await all("DLQ")).length, 1, "the filler only")
  await acceptDlq()
  const [entry] = await untilEntries(ops.url, 1)
  await sleep(500)
  assert.is((await entries(ops.url)).length, 1)
  assert.is(entry!.id, `ROUTING.invoice.${ack.seq}`)
  assert.is(entry!.reason, "max-deliveries")
  assert.match(entry!.error, /the DLQ refused its own entry/)
  assert.equal(
    (await all("DLQ")).map((m) => m.subject),
    ["dlq.filler.x", "dlq.ROUTING.invoice"],
    "never an entry of ops itself",
  )
  assert.ok(await f.jsm.streams.getMessage("ROUTING", { seq: ack.seq }))
})

test("too large for the DLQ - filed by reference with its reason; show and replay read the original from its stream", async () => {
  // ROUTING and the DLQ take 8 KiB each: a route just under it fits its stream, not the DLQ with the entry's headers
  await f.jsm.streams.update("ROUTING", { max_msg_size: 8192 })
  await f.jsm.streams.update("DLQ", { max_msg_size: 8192 })
  const stops = Array.from({ length: 158 }, (_, i) => ({ id: `stop-${i}`, lat: 52.5 + i / 10_000, lon: 13.4 + i / 10_000 }))
  const big = route(4, { customerId: "nobody", stops })
  const size = JSON.stringify(big).length
  assert.ok(size > 7550 && size < 7800, `the route is ${size} bytes`)
  const ops = await startOps()
  const w = await startFailing({ NO_TARIFF: "nobody" })
  const ack = await send(big)
  const [entry] = await untilEntries(ops.url, 1)
  assert.is(entry!.id, `ROUTING.invoice.${ack.seq}`)
  assert.is(entry!.reason, "no-tariff")
  assert.is(entry!.byReference, true)
  const [m] = await all("DLQ")
  assert.is(m!.data.length, 0, "no body")
  assert.is(m!.header.get(DLQ.payload), BY_REFERENCE)
  assert.is(m!.header.get(DLQ.seq), String(ack.seq))
  assert.is(m!.header.get("ce-subject"), big.truckId)
  const shown = await api(ops.url, `/api/dlq/${entry!.id}`)
  assert.equal(JSON.parse(shown.body.payload), big, "show reads the original")
  // the fix ships; the replay carries the original from ROUTING
  await w.stop()
  const fixed = await startFailing()
  assert.is((await api(ops.url, `/api/dlq/${entry!.id}/replay`, "POST")).status, 200)
  await fixed.waitFor(/"msg":"invoiced".*"route-4"/)
  const [replayed] = await all("REPLAY")
  assert.equal(JSON.parse(new TextDecoder().decode(replayed!.data)), big)
})

test("replay horizon - an entry older than INVOICE keeps invoices is refused, saying why; within it, it replays", async () => {
  const ops = await startOps()
  const w = await startFailing({ NO_TARIFF: "nobody" })
  await send(route(5, { customerId: "nobody" }))
  const [entry] = await untilEntries(ops.url, 1)
  const info = await f.jsm.streams.info("INVOICE")
  await f.jsm.streams.update("INVOICE", { max_age: nanos(1000), duplicate_window: nanos(500) })
  await sleep(1200)
  const refused = await api(ops.url, `/api/dlq/${entry!.id}/replay`, "POST")
  assert.is(refused.status, 409)
  assert.match(refused.body.error, /longer ago than INVOICE keeps InvoiceGenerated \(max_age 0 h\)/)
  assert.match(refused.body.error, /could store a second \(bill it twice\)/)
  assert.is((await api(ops.url, `/api/dlq/${entry!.id}`)).body.entry.state, "open", "nothing changed")
  assert.is((await f.jsm.streams.info("REPLAY")).state.messages, 0)
  await f.jsm.streams.update("INVOICE", { max_age: info.config.max_age, duplicate_window: info.config.duplicate_window })
  await w.stop()
  const fixed = await startFailing()
  const ok = await api(ops.url, `/api/dlq/${entry!.id}/replay`, "POST")
  assert.is(ok.status, 200, JSON.stringify(ok.body))
  await fixed.waitFor(/"msg":"invoiced".*"route-5"/)
})

test("effect stored - an advisory for a route already invoiced files nothing; a dead letter for one is indexed as resolved", async () => {
  const ops = await startOps()
  const w = await startFailing()
  const r = route(6)
  const ack = await send(r)
  await w.waitFor(/"msg":"invoiced".*"route-6"/)
  await waitUntil(async () => (await f.jsm.streams.info("INVOICE")).state.messages === 1, { what: "the invoice" })
  // a crash between the invoice's publish and the ack, on the final delivery: the server advises, ops finds the invoice
  await f.js.publish(...maxDeliveries("ROUTING", "invoice", ack.seq, 2))
  await waitUntil(async () => (await metric(ops.url, 'logiflow_ops_advisories_total{outcome="effect-stored"}')) === 1, {
    what: "the advisory handled",
  })
  assert.is((await f.jsm.streams.info("DLQ")).state.messages, 0, "nothing filed")
  // the worker's own dead letter after a lost publish ack: the invoice is there, so the failure is resolved
  const original = (await f.jsm.streams.getMessage("ROUTING", { seq: ack.seq }))!
  await publishDeadLetter(f.js, {
    stream: "ROUTING",
    seq: ack.seq,
    consumer: "invoice",
    subject: original.subject,
    headers: original.header,
    data: original.data,
    deliveries: 2,
    reason: "max-deliveries",
    error: "publish ack lost",
  })
  const [entry] = await untilEntries(ops.url, 1)
  assert.is(entry!.state, "resolved")
  assert.equal(
    entry!.history.map((h) => [h.action, h.by]),
    [
      ["dead-lettered", "invoice"],
      ["resolved", "ops"],
    ],
  )
  assert.match(entry!.history[1]!.note!, /invoice\.events\.InvoiceGenerated\.route-6 holds it \(INVOICE seq 1\)/)
  assert.is((await api(ops.url, "/api/status")).body.dlq.open, 0)
  const replay = await api(ops.url, `/api/dlq/${entry!.id}/replay`, "POST")
  assert.is(replay.status, 409)
  assert.match(replay.body.error, /resolved: its effect is stored/)
})

test.run()
