// A worker files dead letters only under its own name (nats.conf: dlq.*.<itself>), and ops believes no more than that:
// the stream and consumer come from the subject, the headers and body must be the original's, a replay reaches only the
// filing worker, and a replayed event is checked against the subject it was first stored under. Every process runs
// as its own nats.conf user on a real server.
import { jetstream, type JetStreamManager } from "@nats-io/jetstream"
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { DLQ, REPLAY, type RouteCalculated, subjectOf } from "../contracts/mod.ts"
import type { DlqEntry } from "../mesh/admin/mod.ts"
import { connect } from "../mesh/connect.ts"
import { deadLetter } from "../mesh/dlq.ts"
import { publishEvent } from "../mesh/publish.ts"
import { authFixture, type Child, freePort, sleep, spawnTs, type TestServer, testAuth, userEnv, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const test = suite("dlq forged")
let server: TestServer
let admin: NatsConnection
let jsm: JetStreamManager
let ops: Child & { url: string }
let invoice: Child
const children: Child[] = []

const as = (user: string) => userEnv(server, user)

test.before(async () => {
  ;({ server, admin, jsm } = await authFixture())
  const port = await freePort()
  ops = Object.assign(spawnTs("workers/ops.ts", { ...as("ops"), OPS_PORT: String(port) }), { url: `http://127.0.0.1:${port}` })
  invoice = spawnTs("workers/invoice.ts", { ...as("invoice"), INVOICE_PORT: String(await freePort()) })
  children.push(ops, invoice)
  await Promise.all([ops.waitFor(/"msg":"ready"/), invoice.waitFor(/"msg":"ready"/)])
})
test.after(async () => {
  await Promise.all(children.map((c) => c.stop("SIGKILL")))
  await admin.close()
  await server.close()
})

const send = (r: RouteCalculated) =>
  publishEvent(jetstream(admin), "RouteCalculated", r, { id: `routing:${r.routeId}`, source: "logiflow/routing" })
const api = async (path: string, method = "GET") => {
  const r = await fetch(ops.url + path, { method, headers: testAuth().operator.headers })
  return { status: r.status, body: (await r.json()) as any }
}
const entries = async (): Promise<DlqEntry[]> => (await api("/api/dlq")).body.entries
const refusedCount = async () =>
  Number(/^logiflow_ops_dlq_refused_total (\d+)/m.exec(await fetch(`${ops.url}/metrics`).then((r) => r.text()))?.[1] ?? 0)
const invoicesOf = async (routeId: string) => {
  const m = await jsm.streams.getMessage("INVOICE", { last_by_subj: subjectOf("InvoiceGenerated", routeId) })
  return m ? 1 : 0
}

function copy(h: MsgHdrs, change: Record<string, string>): MsgHdrs {
  const out = natsHeaders()
  for (const [k, vs] of h) for (const v of vs) out.append(k, v)
  for (const [k, v] of Object.entries(change)) out.set(k, v)
  return out
}

test("forged - headers naming another consumer, a body unlike its original, a stream it does not read: refused; its genuine entry is indexed under itself", async () => {
  const nobody = route(1, { routeId: "forge-nobody", customerId: "nobody" })
  const acme = route(2, { routeId: "forge-acme" })
  const a1 = await send(nobody)
  const a2 = await send(acme)
  // invoice files the no-tariff route itself; the acme route is invoiced
  const [genuine] = await waitUntil(async () => ((await entries()).length === 1 ? entries() : null), { what: "invoice's own entry" })
  assert.is(genuine!.id, `ROUTING.invoice.${a1.seq}`)
  await waitUntil(async () => (await invoicesOf("forge-acme")) === 1, { what: "the acme invoice" })

  // the invoice worker's own NATS user, as a compromised invoice process would have it
  const rogue = await connect({ name: "invoice", url: server.url, user: "invoice", pass: server.env.INVOICE_PASSWORD! })
  const rjs = jetstream(rogue)
  try {
    const original = (await jsm.streams.getMessage("ROUTING", { seq: a2.seq }))!
    const entry = deadLetter({
      stream: "ROUTING",
      seq: a2.seq,
      consumer: "invoice",
      subject: original.subject,
      headers: original.header,
      data: original.data,
      deliveries: 5,
      reason: "forged",
    })
    // 1. headers that claim the tracking consumer, on invoice's own subject
    await rjs.publish(entry.subject, entry.data, { msgID: "forge-1", headers: copy(entry.headers, { [DLQ.consumer]: "tracking" }) })
    // 2. the right headers, another body: a route nobody ever recorded
    const fake = new TextEncoder().encode(JSON.stringify({ ...acme, routeId: "forge-fake", customerId: "initech" }))
    await rjs.publish(entry.subject, fake, { msgID: "forge-2", headers: entry.headers })
    // 3. a stream invoice does not read
    await rjs.publish("dlq.TRACKING.invoice", entry.data, { msgID: "forge-3", headers: copy(entry.headers, { [DLQ.stream]: "TRACKING" }) })
    // and another worker's subject is denied by the server outright
    const denied = await rjs.publish("dlq.ROUTING.tracking", entry.data, { msgID: "forge-4", headers: entry.headers }).then(
      () => "stored",
      (e: Error) => e.constructor.name,
    )
    assert.is.not(denied, "stored")
    await waitUntil(async () => (await refusedCount()) === 3, { what: "three refusals" })
    assert.ok(
      ops.lines.some((l) => l.includes('"msg":"dead letter refused; not indexed"') && l.includes("headers naming ROUTING/tracking")),
    )
    assert.ok(ops.lines.some((l) => l.includes("its body differs from the original's")))
    assert.ok(ops.lines.some((l) => l.includes("no worker consumes TRACKING as invoice")))
    // 4. a genuine copy of a real route it reads: an entry, under invoice, whatever it was filed for
    await rjs.publish(entry.subject, entry.data, { msgID: "forge-5", headers: entry.headers })
    const all = await waitUntil(async () => ((await entries()).length === 2 ? entries() : null), { what: "the genuine copy indexed" })
    assert.equal(all.map((e) => `${e.id} ${e.consumer}`).sort(), [`ROUTING.invoice.${a1.seq} invoice`, `ROUTING.invoice.${a2.seq} invoice`])
    assert.is(all.find((e) => e.seq === a2.seq)!.state, "resolved", "the acme route's invoice is stored")
    assert.is(await refusedCount(), 3)
  } finally {
    await rogue.close()
  }
})

test("replay - what a worker filed reaches only its REPLAY consumer; a replayed event is checked against its original subject", async () => {
  const r = route(3, { routeId: "replay-nobody", customerId: "nobody", truckId: "truck-3" })
  const ack = await send(r)
  const id = `ROUTING.invoice.${ack.seq}`
  await waitUntil(async () => (await entries()).some((e) => e.id === id), { what: "the entry" })
  const replayed = await api(`/api/dlq/${id}/replay`, "POST")
  assert.is(replayed.status, 200, JSON.stringify(replayed.body))
  // no tariff still: the replay fails again, as a new entry under the original stream and sequence
  await waitUntil(async () => (await entries()).some((e) => e.replayOf === id), { what: "the replay's own entry" })
  const replays = await jsm.streams.info("REPLAY")
  assert.is(replays.state.messages, 1)
  assert.is((await jsm.streams.getMessage("REPLAY", { seq: replays.state.last_seq }))!.subject, "replay.invoice.ROUTING")
  for (const other of ["tracking", "portal"]) {
    const c = await jsm.consumers.info("REPLAY", other)
    assert.is(c.delivered.stream_seq, 0, `REPLAY/${other} saw nothing`)
    assert.is(c.num_pending, 0)
  }

  // replays as ops would send them, but naming a subject the event does not belong to, or none
  const ajs = jetstream(admin)
  const body = new TextEncoder().encode(JSON.stringify(route(4, { routeId: "replay-wrong", truckId: "truck-4" })))
  const h = (subject?: string) => {
    const x = natsHeaders()
    for (const [k, v] of Object.entries({
      "ce-specversion": "1.0",
      "ce-id": "routing:replay-wrong",
      "ce-source": "logiflow/routing",
      "ce-type": "logiflow.routing.RouteCalculated.v1",
      "ce-time": new Date().toISOString(),
      "ce-subject": "truck-4",
      "content-type": "application/json",
    }))
      x.set(k, v)
    x.set(REPLAY.of, "ROUTING.invoice.1")
    x.set(REPLAY.stream, "ROUTING")
    x.set(REPLAY.seq, String(ack.seq))
    if (subject) x.set(REPLAY.subject, subject)
    return x
  }
  const before = (await jsm.streams.info("DLQ")).state.messages
  await ajs.publish("replay.invoice.ROUTING", body, { msgID: "wrong-1", headers: h(subjectOf("RouteCalculated", "truck-2")) })
  await ajs.publish("replay.invoice.ROUTING", body, { msgID: "wrong-2", headers: h() })
  await ajs.publish("replay.invoice.TRACKING", body, { msgID: "wrong-3", headers: h(subjectOf("RouteCalculated", "truck-4")) })
  await waitUntil(async () => (await jsm.streams.info("DLQ")).state.messages === before + 3, { what: "three wrong-subject dead letters" })
  const info = await jsm.streams.info("DLQ")
  const reasons = []
  for (let seq = before + 1; seq <= info.state.last_seq; seq++)
    reasons.push((await jsm.streams.getMessage("DLQ", { seq }))!.header.get(DLQ.reason))
  assert.equal(reasons, ["wrong-subject", "wrong-subject", "wrong-subject"])
  assert.ok(invoice.lines.some((l) => l.includes("arrived on routing.events.RouteCalculated.truck-2")))
  assert.ok(invoice.lines.some((l) => l.includes("arrived on replay.invoice.ROUTING without its original subject")))
  await sleep(300)
  assert.is(await invoicesOf("replay-wrong"), 0, "none of them was billed")
  // the same event, named with its own subject, is handled
  await ajs.publish("replay.invoice.ROUTING", body, { msgID: "right-1", headers: h(subjectOf("RouteCalculated", "truck-4")) })
  await waitUntil(async () => (await invoicesOf("replay-wrong")) === 1, { what: "the invoice of the well-formed replay" })
})

test.run()
