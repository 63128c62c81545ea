// The ops worker: the advisory safety net (rule 4), the DLQ entry index, replay/discard and its HTTP API,
// against a real nats-server with ops and the failing worker as real child processes.
import { jetstream } from "@nats-io/jetstream"
import { type NatsConnection, nanos } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { type DlqEntry, ORIGINAL_GONE } from "../mesh/admin/mod.ts"
import { publishDeadLetter } from "../mesh/dlq.ts"
import { publishEvent } from "../mesh/publish.ts"
import { worker } from "../mesh/worker.ts"
import { opsWorker } from "../workers/ops.ts"
import { parseOperators } from "../mesh/auth.ts"
import {
  authFixture,
  type Child,
  freePort,
  natsSuite,
  sleep,
  spawnTs,
  startReady,
  type TestServer,
  testAuth,
  userEnv,
  waitUntil,
  suite,
} from "./harness.ts"
import { maxDeliveries, route } from "./fixtures/events.ts"

const test = suite("ops")
// the harness's operator (LOGIFLOW_OPERATORS=tester:<token>): every read and action of the API needs one
const TOKEN = testAuth().operator.token
const children: Child[] = []
// registered before natsSuite's hooks, so after each test the child processes are killed before the workers stop
test.after.each(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop("SIGKILL")))
})
const f = natsSuite(test, {
  // two deliveries, 1 s apart at most: the final delivery comes quickly (and the server's backoff, one wait of 1 s)
  reset: ({ jsm }) => jsm.consumers.update("ROUTING", "invoice", { max_deliver: 2, ack_wait: nanos(1000), backoff: [nanos(1000)] }),
})

const startOps = () => startReady("workers/ops.ts", "OPS_PORT", { NATS_URL: f.server.url }, children)
const startFailing = async (env: Record<string, string> = {}) =>
  (await startReady("test/fixtures/failing-worker.ts", "INVOICE_PORT", { NATS_URL: f.server.url, ...env }, children)).child

const send = (i: number, over = {}) =>
  publishEvent(f.js, "RouteCalculated", route(i, over), { id: `rc-${i}-${crypto.randomUUID()}`, source: "logiflow/test" })

type Api = { status: number; body: any; headers: Headers }
/** An API call as the harness's operator, or with `token` (null: none at all). */
async function api(base: string, path: string, o: { method?: string; token?: string | null; body?: unknown } = {}): Promise<Api> {
  const headers: Record<string, string> = {}
  const token = o.token === undefined ? TOKEN : o.token
  if (token) headers.authorization = `Bearer ${token}`
  if (o.body !== undefined) headers["content-type"] = "application/json"
  const r = await fetch(base + path, {
    method: o.method ?? "GET",
    headers,
    body: o.body === undefined ? undefined : JSON.stringify(o.body),
  })
  return { status: r.status, body: await r.json(), headers: r.headers }
}

const entriesVia = async (base: string, query = ""): Promise<DlqEntry[]> => (await api(base, `/api/dlq${query}`)).body.entries
const untilEntries = (base: string, n: number, query = "") =>
  waitUntil(
    async () => {
      const e = await entriesVia(base, query)
      return e.length >= n ? e : null
    },
    { what: `${n} DLQ entries${query}` },
  )
const dlqMessages = async () => (await f.jsm.streams.info("DLQ")).state.messages

test("advisory path - a worker SIGKILLed on its final delivery yields exactly one entry, reason max-deliveries", async () => {
  const ops = await startOps()
  const w = await startFailing({ FAIL_BELOW: "2", HANG_ON: "2" })
  const ack = await send(1)
  await w.waitFor(/"msg":"handling".*"deliveries":2/)
  await w.stop("SIGKILL")
  // the server advises only while a pull is pending on the consumer: a restarted instance provides it
  const w2 = await startFailing()
  const [entry] = await untilEntries(ops.url, 1)
  await sleep(700)
  assert.is((await entriesVia(ops.url)).length, 1)
  assert.is(await dlqMessages(), 1)
  assert.is(entry!.id, `ROUTING.invoice.${ack.seq}`)
  assert.is(entry!.reason, "max-deliveries")
  assert.is(entry!.deliveries, 2)
  assert.match(entry!.error, /crashed or hung/)
  assert.is(entry!.state, "open")
  assert.is(w2.lines.filter((l) => l.includes('"msg":"handling"')).length, 0, "the server never redelivers it")
  const detail = await api(ops.url, `/api/dlq/${entry!.id}`)
  assert.is(detail.status, 200)
  assert.equal(JSON.parse(detail.body.payload), route(1))
  assert.is(detail.body.headers["logiflow-dlq-reason"], "max-deliveries")
  assert.is(detail.body.headers["Nats-Msg-Id"], `dlq:ROUTING:invoice:${ack.seq}`)
})

test("ops down - failures while ops is down are filed once when it starts: a permanent one and a crash", async () => {
  const w = await startFailing({ NO_TARIFF: "nobody", FAIL_BELOW: "2", HANG_ON: "2" })
  const permanent = await send(1, { customerId: "nobody" })
  const crashed = await send(2)
  await w.waitFor(/"msg":"handling".*"route-2".*"deliveries":2/)
  await waitUntil(async () => (await dlqMessages()) === 1, { what: "the worker's own dead letter" })
  await w.stop("SIGKILL")
  await startFailing()
  // both advisories (MSG_TERMINATED from the worker's own dead letter, MAX_DELIVERIES from the crash) wait in the stream
  await waitUntil(async () => (await f.jsm.streams.info("ADVISORIES")).state.messages === 2, { what: "two stored advisories" })
  assert.is(await dlqMessages(), 1)
  const ops = await startOps()
  const entries = await untilEntries(ops.url, 2)
  await sleep(700)
  assert.is((await entriesVia(ops.url)).length, 2)
  assert.is(await dlqMessages(), 2)
  const byId = Object.fromEntries(entries.map((e) => [e.id, e.reason]))
  assert.equal(byId, { [`ROUTING.invoice.${permanent.seq}`]: "no-tariff", [`ROUTING.invoice.${crashed.seq}`]: "max-deliveries" })
})

test("both paths racing - worker and advisory file the same failure: one DLQ message, one entry", async () => {
  const ops = await startOps()
  // the final delivery outlives ack_wait (1 s): the server advises at ~1 s, the worker dead-letters at 4 s
  const w = await startFailing({ FAIL_BELOW: "2", HANG_ON: "2", HANG_MS: "4000" })
  const ack = await send(1)
  await w.waitFor(/"msg":"dead-lettered"/, 15_000)
  await waitUntil(
    async () => {
      const [s, c] = await Promise.all([f.jsm.streams.info("ADVISORIES"), f.jsm.consumers.info("ADVISORIES", "ops")])
      // ops reads the MAX_DELIVERIES advisory; the worker's MSG_TERMINATED stays in the stream, not delivered to ops
      return s.state.messages >= 1 && c.delivered.consumer_seq >= 1 && c.num_pending === 0 && c.num_ack_pending === 0
    },
    { what: "the advisory handled" },
  )
  const [entry] = await untilEntries(ops.url, 1)
  await sleep(500)
  assert.is((await entriesVia(ops.url)).length, 1)
  assert.is(await dlqMessages(), 1, "the second publish was deduped by msg id")
  assert.is(entry!.id, `ROUTING.invoice.${ack.seq}`)
  // normally the advisory gets there first; on a starved machine the worker may: either way, one entry
  assert.match(entry!.error, /crashed or hung|gave up after hanging 4000 ms/)
})

test("dedupe window - past it, the index still keeps one entry per failure", async () => {
  await f.jsm.streams.update("DLQ", { duplicate_window: nanos(1000) })
  const ops = await startOps()
  await startFailing({ NO_TARIFF: "nobody" })
  const ack = await send(1, { customerId: "nobody" })
  const [entry] = await untilEntries(ops.url, 1)
  await sleep(1200)
  // a late MAX_DELIVERIES advisory for the same message: the bucket, not the expired dedupe, says it is filed
  await f.js.publish(...maxDeliveries("ROUTING", "invoice", ack.seq, 2))
  await ops.child.waitFor(/"msg":"ready"/)
  await waitUntil(
    async () =>
      (await f.jsm.consumers.info("ADVISORIES", "ops")).num_ack_pending + (await f.jsm.consumers.info("ADVISORIES", "ops")).num_pending ===
      0,
    {
      what: "advisories handled",
    },
  )
  // and a duplicate DLQ message published past the window is stored, but indexed as the same entry
  const original = (await f.jsm.streams.getMessage("ROUTING", { seq: ack.seq }))!
  const dup = await publishDeadLetter(f.js, {
    stream: "ROUTING",
    seq: ack.seq,
    consumer: "invoice",
    subject: original.subject,
    headers: original.header,
    data: original.data,
    deliveries: 1,
    reason: "no-tariff",
  })
  assert.is(dup.duplicate, false)
  await waitUntil(async () => (await f.jsm.consumers.info("DLQ", "ops")).ack_floor.stream_seq === dup.seq, { what: "duplicate indexed" })
  const entries = await entriesVia(ops.url)
  assert.is(entries.length, 1)
  assert.equal(entries[0], entry)
  assert.is(await dlqMessages(), 2)
})

test("original gone - an advisory for a message no longer in its stream is still filed, and cannot be replayed", async () => {
  const ops = await startOps()
  const ack = await send(3)
  await f.jsm.streams.deleteMessage("ROUTING", ack.seq)
  await f.js.publish(...maxDeliveries("ROUTING", "invoice", ack.seq, 2))
  const [entry] = await untilEntries(ops.url, 1)
  assert.is(entry!.id, `ROUTING.invoice.${ack.seq}`)
  assert.is(entry!.reason, "max-deliveries")
  assert.is(entry!.error, ORIGINAL_GONE)
  const r = await api(ops.url, `/api/dlq/${entry!.id}/replay`, { method: "POST", token: TOKEN })
  assert.is(r.status, 409)
  assert.match(r.body.error, /no payload to replay/)
})

test("replay - only the consumer that failed sees it again, and the effect happens once", async () => {
  const ops = await startOps()
  const seenByPortal: string[] = []
  f.running.push(
    await worker({
      name: "portal",
      consumes: { RouteCalculated: (r) => void seenByPortal.push(r.routeId), EtaUpdated: () => {}, InvoiceGenerated: () => {} },
    }).start({ url: f.server.url, port: 0, drainTimeoutMs: 1000 }),
  )
  const w = await startFailing({ NO_TARIFF: "nobody" })
  await send(5, { customerId: "nobody" })
  const [entry] = await untilEntries(ops.url, 1)
  await waitUntil(() => seenByPortal.length === 1, { what: "portal handled the route" })
  // the fix ships: invoice restarts without the failing rule
  await w.stop()
  const fixed = await startFailing()
  const r1 = await api(ops.url, `/api/dlq/${entry!.id}/replay`, { method: "POST", token: TOKEN })
  assert.is(r1.status, 200)
  assert.is(r1.body.state, "replayed")
  assert.is(r1.body.replays, 1)
  await fixed.waitFor(/"msg":"invoiced".*"route-5"/)
  const r2 = await api(ops.url, `/api/dlq/${entry!.id}/replay`, { method: "POST", token: TOKEN })
  assert.is(r2.body.replays, 2)
  await waitUntil(() => fixed.lines.filter((l) => l.includes('"msg":"invoiced"')).length === 2, { what: "second replay handled" })
  await sleep(500)
  const invoices = await f.jsm.streams.info("INVOICE")
  assert.is(invoices.state.messages, 1, "two replays, one invoice")
  assert.is((await f.jsm.streams.getMessage("INVOICE", { seq: invoices.state.last_seq }))!.header.get("Nats-Msg-Id"), "invoice:route-5")
  assert.equal(seenByPortal, ["route-5"], "portal saw the route once")
  const portalReplay = await f.jsm.consumers.info("REPLAY", "portal")
  assert.is(portalReplay.delivered.stream_seq, 0)
  assert.is(portalReplay.num_pending, 0)
  const replayed = (await api(ops.url, `/api/dlq/${entry!.id}`)).body.entry as DlqEntry
  assert.equal(
    replayed.history.map((h) => [h.action, h.by]),
    [
      ["dead-lettered", "invoice"],
      ["replayed", "tester"],
      ["replayed", "tester"],
    ],
  )
})

test("replay failing again - a new entry under the original stream and seq; bulk replay by filter counts", async () => {
  const ops = await startOps()
  await startFailing({ NO_TARIFF: "nobody" })
  const ack = await send(6, { customerId: "nobody" })
  await send(7, { customerId: "nobody" })
  const first = await untilEntries(ops.url, 2)
  const id = `ROUTING.invoice.${ack.seq}`
  assert.ok(first.some((e) => e.id === id))
  const r = await api(ops.url, `/api/dlq/${id}/replay`, { method: "POST", token: TOKEN })
  assert.is(r.status, 200)
  const all = await untilEntries(ops.url, 3)
  const again = all.find((e) => e.replayOf === id)!
  assert.match(again.id, new RegExp(`^ROUTING\\.invoice\\.${ack.seq}\\.r\\d+$`))
  assert.is(again.stream, "ROUTING")
  assert.is(again.seq, ack.seq)
  assert.is(again.subject, "routing.events.RouteCalculated.truck-6")
  assert.is(again.reason, "no-tariff")
  assert.is(again.state, "open")
  assert.is(all.find((e) => e.id === id)!.state, "replayed")
  // bulk replay is a background job (test/dlq-desk.test.ts): the request starts it
  const none = await api(ops.url, "/api/dlq/replay", {
    method: "POST",
    token: TOKEN,
    body: { consumer: "invoice", reason: "no-such-reason" },
  })
  assert.equal([none.status, none.body.state, none.body.total], [202, "done", 0])
  const bulk = await api(ops.url, "/api/dlq/replay", { method: "POST", token: TOKEN, body: { consumer: "invoice", reason: "no-tariff" } })
  assert.is(bulk.status, 202)
  assert.is(bulk.body.total, 2, "the two open entries; the replayed one is left alone")
  const ended = await waitUntil(
    async () => {
      const j = (await api(ops.url, `/api/dlq/jobs/${bulk.body.id}`)).body
      return j.state === "done" ? j : null
    },
    { what: "the bulk replay job" },
  )
  assert.equal([ended.done, ended.failed, ended.skipped], [2, 0, 0])
  await untilEntries(ops.url, 5)
  const everything = await api(ops.url, "/api/dlq/replay", { method: "POST", token: TOKEN, body: {} })
  assert.is(everything.status, 400)
})

test("discard and auth - 401 without or with a wrong token, 503 when ops has no operators, 200 and the entry leaves the open list", async () => {
  const ops = await startOps()
  await startFailing({ NO_TARIFF: "nobody" })
  await send(8, { customerId: "nobody" })
  const [entry] = await untilEntries(ops.url, 1, "?state=open")
  const path = `/api/dlq/${entry!.id}/discard`
  const missing = await api(ops.url, path, { method: "POST", token: null })
  assert.is(missing.status, 401)
  assert.is(missing.headers.get("www-authenticate"), 'Bearer realm="logiflow-ops"')
  assert.is((await api(ops.url, path, { method: "POST", token: `${TOKEN}x` })).status, 401)
  assert.is((await api(ops.url, path, { method: "POST", token: TOKEN.slice(0, -1) })).status, 401)
  const tokenless = await opsWorker({ operators: parseOperators("") }).start({ url: f.server.url, port: 0, drainTimeoutMs: 1000 })
  f.running.push(tokenless)
  const refused = await api(`http://127.0.0.1:${tokenless.port}`, path, { method: "POST", token: TOKEN })
  assert.is(refused.status, 503)
  assert.match(refused.body.error, /set LOGIFLOW_OPERATORS/)
  assert.is((await api(`http://127.0.0.1:${tokenless.port}`, "/api/dlq")).status, 503, "reads too")
  assert.is((await entriesVia(ops.url, "?state=open")).length, 1, "refused requests changed nothing")
  const ok = await api(ops.url, path, { method: "POST", token: TOKEN })
  assert.is(ok.status, 200)
  assert.is(ok.body.state, "discarded")
  assert.equal(await entriesVia(ops.url, "?state=open"), [])
  assert.is((await entriesVia(ops.url, "?state=discarded"))[0]!.id, entry!.id)
  assert.is((await api(ops.url, path, { method: "POST", token: TOKEN })).status, 409)
  assert.is((await api(ops.url, `/api/dlq/${entry!.id}/replay`, { method: "POST", token: TOKEN })).status, 409)
  assert.is((await api(ops.url, "/api/dlq/ROUTING.invoice.999")).status, 404)
  assert.is((await api(ops.url, "/api/dlq?state=bogus")).status, 400)
  const st = (await api(ops.url, "/api/status")).body
  assert.ok(st.streams.some((s: { name: string; messages: number }) => s.name === "ROUTING" && s.messages === 1))
  assert.ok(st.consumers.some((c: { stream: string; name: string }) => c.stream === "ROUTING" && c.name === "invoice"))
  assert.equal(st.dlq, { open: 0, byConsumer: {}, byReason: {}, groups: [] })
})

test("pagination - newest first, a cursor continues where the last page stopped", async () => {
  const ops = await startOps()
  await startFailing({ NO_TARIFF: "nobody" })
  for (let i = 0; i < 5; i++) await send(20 + i, { customerId: "nobody" })
  const all = await untilEntries(ops.url, 5)
  const seqs = all.map((e) => e.dlqSeq)
  assert.equal(
    seqs,
    [...seqs].sort((a, b) => b - a),
  )
  const p1 = (await api(ops.url, "/api/dlq?limit=2")).body
  const p2 = (await api(ops.url, `/api/dlq?limit=2&cursor=${p1.nextCursor}`)).body
  const p3 = (await api(ops.url, `/api/dlq?limit=2&cursor=${p2.nextCursor}`)).body
  assert.is(p1.total, 5)
  assert.equal(
    [...p1.entries, ...p2.entries, ...p3.entries].map((e: DlqEntry) => e.id),
    all.map((e) => e.id),
  )
  assert.is(p3.nextCursor, undefined)
})

test.run()

// the same paths as the nats.conf users: ops may file, index, list, replay and report with its own permissions
const secure = suite("ops least privilege")
let authServer: TestServer
let admin: NatsConnection

secure.before(async () => {
  ;({ server: authServer, admin } = await authFixture())
})
secure.after(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop("SIGKILL")))
  await admin.close()
  await authServer.close()
})

secure("least privilege - as nats.conf's ops user: advisory filed, entries indexed, listed, replayed, status reported", async () => {
  const as = (user: string) => userEnv(authServer, user)
  const port = await freePort()
  const ops = spawnTs("workers/ops.ts", { ...as("ops"), OPS_PORT: String(port) })
  const inv = spawnTs("test/fixtures/failing-worker.ts", { ...as("invoice"), INVOICE_PORT: String(await freePort()), NO_TARIFF: "nobody" })
  children.push(ops, inv)
  await Promise.all([ops.waitFor(/"msg":"ready"/), inv.waitFor(/"msg":"ready"/)])
  const base = `http://127.0.0.1:${port}`
  const ajs = jetstream(admin)
  const p1 = await publishEvent(ajs, "RouteCalculated", route(1, { customerId: "nobody" }), { id: "sec-1", source: "logiflow/test" })
  const p2 = await publishEvent(ajs, "RouteCalculated", route(2), { id: "sec-2", source: "logiflow/test" })
  await admin.publish(...maxDeliveries("ROUTING", "tracking", p2.seq, 5))
  const entries = await untilEntries(base, 2)
  assert.equal(entries.map((e) => e.id).sort(), [`ROUTING.invoice.${p1.seq}`, `ROUTING.tracking.${p2.seq}`].sort())
  const replay = await api(base, `/api/dlq/ROUTING.invoice.${p1.seq}/replay`, { method: "POST", token: TOKEN })
  assert.is(replay.status, 200, JSON.stringify(replay.body))
  await untilEntries(base, 3)
  const st = await api(base, "/api/status")
  assert.is(st.status, 200, JSON.stringify(st.body))
  assert.is(st.body.dlq.open, 2)
  assert.equal(
    ops.lines.filter((l) => /Permissions Violation|"level":"error"/i.test(l)),
    [],
  )
})

secure.run()
