// The dead-letter desk of ops: finding entries by what failed (event id, key, consumer, reason, state, time), pages
// and live counts, correcting a payload (schema form, valibot issues), a dry run through the consumer's real handler,
// replay of the correction, and bulk replay as a background job (rate cap, cancel, ops killed mid-way). Real
// nats-server, ops and the real invoice worker as child processes, real HTTP.
import type { StoredMsg } from "@nats-io/jetstream"
import { Kvm } from "@nats-io/kv"
import * as assert from "uvu/assert"
import * as v from "valibot"
import { issuesOf, RouteCalculated } from "../contracts/mod.ts"
import type { DlqEntry, Job } from "../mesh/admin/mod.ts"
import { publishDeadLetter } from "../mesh/dlq.ts"
import { kvKey } from "../mesh/kv.ts"
import { publishEvent } from "../mesh/publish.ts"
import { demoTariffs, priceRoute } from "../workers/pricing.ts"
import { type Child, natsSuite, sleep, spawnTs, startReady, testAuth, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const test = suite("dlq-desk")
const TOKEN = testAuth().operator.token
const children: Child[] = []
test.after.each(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop("SIGKILL")))
})
const f = natsSuite(test)

const startOps = (env: Record<string, string> = {}) =>
  startReady("workers/ops.ts", "OPS_PORT", { NATS_URL: f.server.url, ...env }, children)

/** the real invoice worker: demo tariffs for acme, globex, initech; any other customer is dead-lettered, no-tariff */
const startInvoice = async () => (await startReady("workers/invoice.ts", "INVOICE_PORT", { NATS_URL: f.server.url }, children)).child

type Api = { status: number; body: any }
async function api(base: string, path: string, o: { method?: string; body?: unknown } = {}): Promise<Api> {
  const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }
  if (o.body !== undefined) headers["content-type"] = "application/json"
  const r = await fetch(base + path, {
    method: o.method ?? "GET",
    headers,
    body: o.body === undefined ? undefined : JSON.stringify(o.body),
  })
  return { status: r.status, body: await r.json() }
}

/** route i, for a customer without tariff: the invoice worker dead-letters it (ce-id rc-<i>) */
const sendFailing = (i: number, over = {}) =>
  publishEvent(f.js, "RouteCalculated", route(i, { customerId: "nobody", ...over }), { id: `rc-${i}`, source: "logiflow/test" })

/** a dead letter for another consumer, filed as a worker would (it matches its original) */
async function fileFor(consumer: string, seq: number, reason: string) {
  const m = (await f.jsm.streams.getMessage("ROUTING", { seq })) as StoredMsg
  await publishDeadLetter(f.js, {
    stream: "ROUTING",
    seq,
    consumer,
    subject: m.subject,
    headers: m.header,
    data: m.data,
    deliveries: 5,
    reason,
  })
}

const ids = (es: DlqEntry[]) => es.map((e) => e.id).sort()
const list = async (base: string, q: string): Promise<DlqEntry[]> => {
  const r = await api(base, `/api/dlq?${q}`)
  assert.is(r.status, 200, `GET /api/dlq?${q}: ${JSON.stringify(r.body)}`)
  return r.body.entries
}
const untilTotal = (base: string, n: number, q = "") =>
  waitUntil(async () => ((await api(base, `/api/dlq?${q}`)).body.total === n ? true : null), { what: `${n} entries for ?${q}` })

/** the open-entries gauge as {"stream/consumer/reason": n}, from ops' /metrics */
async function openGauge(base: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^logiflow_dlq_open_entries\{stream="([^"]*)",consumer="([^"]*)",reason="([^"]*)"\} (\d+)$/gm))
    out[`${m[1]}/${m[2]}/${m[3]}`] = Number(m[4])
  return out
}
const countsOf = async (base: string) =>
  Object.fromEntries(
    ((await api(base, "/api/dlq/counts")).body as { stream: string; consumer: string; reason: string; state: string; entries: number }[])
      .map((c) => [`${c.stream}/${c.consumer}/${c.reason}/${c.state}`, c.entries])
      .sort(),
  )

test("find - filters by event id, route, key, consumer, reason, state and time; pages cover each entry once; counts stay exact", async () => {
  const ops = await startOps()
  await startInvoice()
  const acks: { seq: number }[] = []
  for (let i = 1; i <= 7; i++) acks.push(await sendFailing(i))
  const billed = await publishEvent(f.js, "RouteCalculated", route(8), { id: "rc-8", source: "logiflow/test" })
  await untilTotal(ops.url, 7)
  // two more failures, of other consumers, on the same events
  await fileFor("portal", acks[2]!.seq, "boom")
  await fileFor("tracking", billed.seq, "boom")
  await untilTotal(ops.url, 9)
  const all = await list(ops.url, "limit=100")
  const inv = (i: number) => `ROUTING.invoice.${acks[i - 1]!.seq}`

  const e3 = all.find((e) => e.id === inv(3))!
  assert.equal([e3.eventId, e3.routeId, e3.key], ["rc-3", "route-3", "truck-3"])
  assert.equal(ids(await list(ops.url, "eventId=rc-3")), [inv(3), `ROUTING.portal.${acks[2]!.seq}`].sort())
  assert.equal(ids(await list(ops.url, "eventId=route-3&consumer=invoice")), [inv(3)], "the route id finds it too")
  assert.equal(ids(await list(ops.url, "key=truck-8")), [`ROUTING.tracking.${billed.seq}`])
  assert.equal(ids(await list(ops.url, "consumer=invoice")), [1, 2, 3, 4, 5, 6, 7].map(inv).sort())
  assert.equal(ids(await list(ops.url, "reason=boom")), [`ROUTING.portal.${acks[2]!.seq}`, `ROUTING.tracking.${billed.seq}`].sort())
  // time: since the 4th invoice failure, until the 5th: exactly those whose failedAt lies between
  const byTime = [...all].sort((x, y) => x.failedAt.localeCompare(y.failedAt))
  const [from, to] = [byTime[3]!.failedAt, byTime[5]!.failedAt]
  const between = ids(byTime.filter((e) => e.failedAt >= from && e.failedAt <= to))
  assert.equal(ids(await list(ops.url, `since=${from}&until=${to}`)), between)
  assert.ok(between.length >= 3)
  const refused = await api(ops.url, "/api/dlq?colour=red")
  assert.equal(
    [refused.status, refused.body.error],
    [400, 'unknown filter "colour" (use eventId, key, consumer, subject, reason, state, since, until)'],
  )

  // pages of 2, cursor to cursor: every entry exactly once, newest first
  const seen: string[] = []
  let cursor = ""
  for (let pages = 0; ; pages++) {
    const r = await api(ops.url, `/api/dlq?limit=2${cursor ? `&cursor=${cursor}` : ""}`)
    assert.is(r.body.total, 9)
    seen.push(...r.body.entries.map((e: DlqEntry) => e.id))
    if (!r.body.nextCursor) break
    cursor = r.body.nextCursor
    assert.ok(pages < 10)
  }
  assert.equal(
    seen,
    all.map((e) => e.id),
  )
  assert.is(new Set(seen).size, 9)

  // counts: kept as entries change, the same in /api/dlq/counts, /metrics and /api/status
  const expected = { "ROUTING/invoice/no-tariff": 7, "ROUTING/portal/boom": 1, "ROUTING/tracking/boom": 1 }
  assert.equal(await openGauge(ops.url), expected)
  assert.equal(await countsOf(ops.url), {
    "ROUTING/invoice/no-tariff/open": 7,
    "ROUTING/portal/boom/open": 1,
    "ROUTING/tracking/boom/open": 1,
  })
  assert.is((await api(ops.url, `/api/dlq/${inv(1)}/discard`, { method: "POST" })).status, 200)
  assert.is((await api(ops.url, `/api/dlq/ROUTING.tracking.${billed.seq}/discard`, { method: "POST" })).status, 200)
  // a replay of a no-tariff route fails again: the replayed entry leaves the open ones, its new failure joins them
  assert.is((await api(ops.url, `/api/dlq/${inv(2)}/replay`, { method: "POST" })).status, 200)
  await untilTotal(ops.url, 10)
  await waitUntil(async () => (await openGauge(ops.url))["ROUTING/invoice/no-tariff"] === 6 || null, { what: "6 open" })
  assert.equal(await openGauge(ops.url), { "ROUTING/invoice/no-tariff": 6, "ROUTING/portal/boom": 1, "ROUTING/tracking/boom": 0 })
  assert.equal(await countsOf(ops.url), {
    "ROUTING/invoice/no-tariff/discarded": 1,
    "ROUTING/invoice/no-tariff/open": 6,
    "ROUTING/invoice/no-tariff/replayed": 1,
    "ROUTING/portal/boom/open": 1,
    "ROUTING/tracking/boom/discarded": 1,
  })
  assert.equal(ids(await list(ops.url, "state=discarded")), [inv(1), `ROUTING.tracking.${billed.seq}`].sort())
  assert.equal(ids(await list(ops.url, "state=replayed")), [inv(2)])
  const again = await list(ops.url, "eventId=rc-2&state=open")
  assert.equal(
    again.map((e) => e.replayOf),
    [inv(2)],
  )
  const st = (await api(ops.url, "/api/status")).body
  assert.equal(st.dlq.byConsumer, { invoice: 6, portal: 1 })
  // a restarted ops reads the bucket once and has the same counts
  await ops.child.stop("SIGKILL")
  const ops2 = await startOps()
  assert.equal(await openGauge(ops2.url), { "ROUTING/invoice/no-tariff": 6, "ROUTING/portal/boom": 1 })
})

test("edit, check, dry run, replay - 400 with valibot issues; the dry run shows the exact invoice; the replay bills it; the original stays", async () => {
  const ops = await startOps()
  await startInvoice()
  const ack = await sendFailing(20)
  const other = await sendFailing(21)
  await untilTotal(ops.url, 2)
  await fileFor("portal", other.seq, "boom")
  await untilTotal(ops.url, 3)
  const id = `ROUTING.invoice.${ack.seq}`

  // the form comes from the schema: every field of RouteCalculated, with what the schema checks
  const form = await api(ops.url, `/api/dlq/${id}/edit`)
  assert.is(form.status, 200)
  assert.is(form.body.event, "RouteCalculated")
  assert.equal(
    form.body.form.fields.map((x: { name: string }) => x.name),
    Object.keys(RouteCalculated.entries),
  )
  const stops = form.body.form.fields.find((x: { name: string }) => x.name === "stops").field
  assert.equal(stops.kind, "array")
  assert.equal([stops.minItems, stops.maxItems], [1, 200])
  assert.equal(stops.item.fields[1], { name: "lat", optional: false, field: { kind: "number", min: -90, max: 90 } })
  assert.equal(form.body.payload, route(20, { customerId: "nobody" }))
  assert.equal(form.body.issues, [])

  // invalid: 400 with the schema's own issues, and nothing stored
  const broken = { ...route(20), customerId: "", distanceKm: -1 }
  const bad = await api(ops.url, `/api/dlq/${id}/edit`, { method: "POST", body: { payload: broken } })
  assert.is(bad.status, 400)
  const r = v.safeParse(RouteCalculated, broken)
  assert.ok(!r.success)
  assert.equal(bad.body.issues, issuesOf(r.issues))
  assert.equal(
    bad.body.issues.map((i: { path: string }) => i.path),
    ["customerId", "distanceKm"],
  )
  const check = await api(ops.url, `/api/dlq/${id}/check`, { method: "POST", body: { payload: broken } })
  assert.equal(check.body, { valid: false, issues: issuesOf(r.issues) })
  const rekeyed = await api(ops.url, `/api/dlq/${id}/edit`, { method: "POST", body: { payload: route(20, { truckId: "truck-9" }) } })
  assert.is(rekeyed.status, 400)
  assert.match(rekeyed.body.error, /keeps the event's key \(truck-0\)/)

  // the original as it is: the consumer would dead-letter it again
  const before = await api(ops.url, `/api/dlq/${id}/dry-run`, { method: "POST", body: {} })
  assert.equal([before.body.outcome, before.body.payload, before.body.reason], ["dead-letter", "original", "no-tariff"])

  const fixed = route(20, { customerId: "acme" })
  const edited = await api(ops.url, `/api/dlq/${id}/edit`, { method: "POST", body: { payload: fixed } })
  assert.is(edited.status, 200)
  assert.equal(edited.body.edit.payload, fixed)
  assert.equal(
    edited.body.history.map((h: { action: string; by: string }) => [h.action, h.by]),
    [
      ["dead-lettered", "invoice"],
      ["edited", "tester"],
    ],
  )

  // the dry run: the invoice worker's real handler, its invoice captured, nothing published
  const dry = (await api(ops.url, `/api/dlq/${id}/dry-run`, { method: "POST", body: {} })).body
  assert.equal([dry.outcome, dry.payload, dry.consumer, dry.event, dry.notEvaluated], ["emits", "edit", "invoice", "RouteCalculated", []])
  assert.is(dry.emitted.length, 1)
  const [inv] = dry.emitted
  assert.equal(inv, {
    name: "InvoiceGenerated",
    subject: "invoice.events.InvoiceGenerated.route-20",
    key: "route-20",
    id: "invoice:route-20",
    data: priceRoute(fixed, demoTariffs.acme!, { invoiceId: inv.data.invoiceId, issuedAt: inv.data.issuedAt }),
    once: true,
  })
  assert.is((await f.jsm.streams.info("INVOICE")).state.messages, 0, "a dry run publishes nothing")
  // a handler that needs its worker's private state: said, not guessed
  const portalDry = (await api(ops.url, `/api/dlq/ROUTING.portal.${other.seq}/dry-run`, { method: "POST", body: {} })).body
  assert.equal([portalDry.outcome, portalDry.emitted], ["not-evaluated", []])
  assert.equal(portalDry.notEvaluated, ["bucket portal-trucks: portal's own state, which the dry run neither reads nor writes"])
  const invalidDry = (await api(ops.url, `/api/dlq/${id}/dry-run`, { method: "POST", body: { payload: broken } })).body
  assert.equal([invalidDry.outcome, invalidDry.issues], ["invalid", issuesOf(r.issues)])

  // replay: the correction reaches the invoice worker, which bills it; the DLQ message stays the original
  const replayed = await api(ops.url, `/api/dlq/${id}/replay`, { method: "POST" })
  assert.is(replayed.status, 200)
  const billed = await waitUntil(() => f.jsm.streams.getMessage("INVOICE", { last_by_subj: "invoice.events.InvoiceGenerated.route-20" }), {
    what: "the invoice of the corrected route",
  })
  const invoice = billed.json<{ customerId: string; totalCents: number; routeId: string }>()
  assert.equal([invoice.customerId, invoice.routeId, invoice.totalCents], ["acme", "route-20", inv.data.totalCents])
  const shown = (await api(ops.url, `/api/dlq/${id}`)).body
  assert.equal(JSON.parse(shown.payload), route(20, { customerId: "nobody" }), "the original stays as it failed")
  assert.equal(
    shown.entry.history.map((h: { action: string; by: string; note?: string }) => [h.action, h.by, h.note]),
    [
      ["dead-lettered", "invoice", undefined],
      ["edited", "tester", "edit 1"],
      ["replayed", "tester", "edit 1 by tester"],
    ],
  )
  assert.is(shown.entry.state, "replayed")
  assert.is((await api(ops.url, "/api/dlq?eventId=route-20")).body.total, 1, "no new failure")
  // now the dry run knows the invoice is stored: the stream would refuse a second one
  const after = await api(ops.url, `/api/dlq/${id}/dry-run`, { method: "POST", body: {} })
  assert.match(after.body.emitted[0].refused, /^invoice\.events\.InvoiceGenerated\.route-20 already holds one \(INVOICE seq 1\)/)
  const closed = await api(ops.url, `/api/dlq/${id}/edit`, { method: "POST", body: { payload: fixed } })
  assert.equal([closed.status, closed.body.error], [409, `entry ${id} is replayed: only an open entry is edited`])
})

const job = async (base: string, id: string): Promise<Job> => (await api(base, `/api/dlq/jobs/${id}`)).body
const replays = async () => (await f.jsm.streams.info("REPLAY")).state.messages

test("bulk replay - a job at 2/s outlives its request and is cancelled mid-way with exact counts", async () => {
  const ops = await startOps()
  await startInvoice()
  for (let i = 30; i < 40; i++) await sendFailing(i)
  await untilTotal(ops.url, 10, "state=open")
  const started = await api(ops.url, "/api/dlq/jobs", { method: "POST", body: { consumer: "invoice", reason: "no-tariff", rate: 2 } })
  assert.is(started.status, 202)
  assert.equal([started.body.state, started.body.total, started.body.done, started.body.rate], ["running", 10, 0, 2])
  const id = started.body.id as string
  await waitUntil(async () => ((await job(ops.url, id)).done >= 3 ? true : null), { what: "3 replays" })
  const cancelled = await api(ops.url, `/api/dlq/jobs/${id}`, { method: "DELETE" })
  assert.is(cancelled.status, 200)
  const end = cancelled.body as Job
  assert.is(end.state, "cancelled")
  assert.is(end.cancel?.by, "tester")
  assert.ok(end.done >= 3 && end.done < 10, `cancelled mid-way (done ${end.done})`)
  assert.equal([end.failed, end.skipped], [0, 0])
  // nothing more happens: as many replays as done, as many entries replayed, the rest open
  await sleep(1500)
  assert.equal(await job(ops.url, id), end)
  assert.is(await replays(), end.done)
  const original = (await list(ops.url, "limit=100")).filter((e) => !e.replayOf)
  assert.is(original.filter((e) => e.state === "replayed").length, end.done)
  assert.is(original.filter((e) => e.state === "open").length, 10 - end.done)
  assert.ok(original.filter((e) => e.state === "replayed").every((e) => e.replays === 1))
  const bad = await api(ops.url, "/api/dlq/jobs", { method: "POST", body: { consumer: "invoice", rate: 0 } })
  assert.equal([bad.status, bad.body.error], [400, "rate must be a number of replays per second, above 0 and at most 1000"])
  const everything = await api(ops.url, "/api/dlq/jobs", { method: "POST", body: {} })
  assert.is(everything.status, 400)
})

test("bulk replay - ops killed mid-job: the next ops resumes it, and every entry is replayed exactly once", async () => {
  const ops = await startOps()
  await startInvoice()
  for (let i = 40; i < 48; i++) await sendFailing(i)
  await untilTotal(ops.url, 8, "state=open")
  const started = await api(ops.url, "/api/dlq/replay", { method: "POST", body: { consumer: "invoice", rate: 3 } })
  assert.is(started.status, 202)
  const id = started.body.id as string
  await waitUntil(async () => ((await job(ops.url, id)).done >= 2 ? true : null), { what: "2 replays" })
  await ops.child.stop("SIGKILL")
  const ops2 = await startOps()
  // the dead runner's heartbeat lapses (15 s), then the new ops takes the job over where it stood
  const end = await waitUntil(
    async () => {
      const j = await job(ops2.url, id)
      return j.state === "done" ? j : null
    },
    { what: "the resumed job to finish", timeoutMs: 90_000, every: 250 },
  )
  await ops2.child.waitFor(/resuming a replay job whose runner stopped/)
  assert.equal([end.total, end.done, end.failed, end.skipped, end.resumed], [8, 8, 0, 0, 1])
  assert.is(await replays(), 8, "one replay per entry: none sent twice")
  const original = (await list(ops2.url, "limit=100")).filter((e) => !e.replayOf)
  assert.equal(
    original.map((e) => [e.state, e.replays]),
    Array.from({ length: 8 }, () => ["replayed", 1]),
  )
})

type Run = { code: number | null; out: string[]; err: string[] }
/** `logiflow <args>` as its own process, stdout and stderr apart */
function logiflow(args: string[]): Promise<Run> {
  const child = spawnTs("mesh/cli/main.ts", { NATS_URL: f.server.url, LOGIFLOW_OPERATOR: "carol" }, args)
  const run: Run = { code: null, out: [], err: [] }
  const collect = (into: string[]) => (b: Buffer) => into.push(...b.toString().split("\n").filter(Boolean))
  child.proc.stdout!.on("data", collect(run.out))
  child.proc.stderr!.on("data", collect(run.err))
  return new Promise((resolve) => child.proc.once("close", (code) => resolve({ ...run, code })))
}

test("cli - dlq ls by event id and key, edit refused with the issues, dry-run prints the invoice, edit and replay", async () => {
  const ops = await startOps()
  await startInvoice()
  const ack = await sendFailing(50)
  await sendFailing(51)
  await untilTotal(ops.url, 2)
  const id = `ROUTING.invoice.${ack.seq}`
  const ls = await logiflow(["dlq", "ls", "--event-id", "rc-50", "--key", "truck-0", "--state", "open"])
  assert.is(ls.code, 0, ls.err.join("\n"))
  assert.equal(
    ls.out.map((l) => l.split(/\s{2,}/).slice(0, 6)),
    [["ID", "STATE", "CONSUMER", "REASON", "EVENT", "KEY"], [id, "open", "invoice", "no-tariff", "route-50", "truck-0"], ["1 entry"]],
  )
  const broken = JSON.stringify({ ...route(50), distanceKm: -1 })
  const refused = await logiflow(["dlq", "edit", id, broken])
  assert.equal([refused.code, refused.out], [1, []])
  assert.equal(refused.err, [
    "logiflow dlq: the payload is not a valid RouteCalculated",
    "  distanceKm: Invalid value: Expected >=0 but received -1",
  ])
  const fixed = route(50, { customerId: "globex" })
  const dry = await logiflow(["dlq", "dry-run", id, JSON.stringify(fixed)])
  assert.is(dry.code, 0, dry.err.join("\n"))
  assert.equal(dry.out.slice(0, 2), [
    `dry run of ${id}: invoice handles RouteCalculated (given payload) → emits`,
    "  emits InvoiceGenerated on invoice.events.InvoiceGenerated.route-50 (msg id invoice:route-50, once)",
  ])
  const data = JSON.parse(dry.out[2]!)
  assert.equal(data, priceRoute(fixed, demoTariffs.globex!, { invoiceId: data.invoiceId, issuedAt: data.issuedAt }))
  const edit = await logiflow(["dlq", "edit", id, JSON.stringify(fixed)])
  assert.equal(edit.out, [`edited ${id} (edit 1); check it with logiflow dlq dry-run ${id}, then logiflow dlq replay ${id}`])
  const replay = await logiflow(["dlq", "replay", id])
  assert.equal(replay.out, [`replayed ${id} to replay.invoice.ROUTING (replay 1)`])
  const billed = await waitUntil(() => f.jsm.streams.getMessage("INVOICE", { last_by_subj: "invoice.events.InvoiceGenerated.route-50" }), {
    what: "the invoice",
  })
  assert.is(billed.json<{ customerId: string }>().customerId, "globex")
  const shown = await logiflow(["dlq", "show", id])
  assert.match(shown.out.at(-1)!, /^ {2}\S+ replayed by carol \(edit 1 by carol\)$/)
  assert.match(shown.out.at(-2)!, /^ {2}\S+ edited by carol \(edit 1\)$/)
})

test("prune - entries whose DLQ message is gone (a purge, max_age) are purged from the bucket; later ones stay", async () => {
  const ops = await startOps({ OPS_PRUNE_EVERY_MS: "300" })
  await startInvoice()
  for (let i = 1; i <= 3; i++) await sendFailing(i)
  await untilTotal(ops.url, 3)
  const before = ids(await list(ops.url, "limit=10"))
  const entries = await new Kvm(f.js).open("dlq-entries")
  for (const id of before) assert.is((await entries.get(kvKey(id)))?.operation, "PUT", `${id} in the bucket`)

  // what max_age does after 90 days, done at once: the stream's messages go, its sequence stays
  await f.jsm.streams.purge("DLQ")
  await untilTotal(ops.url, 0)
  assert.equal(await countsOf(ops.url), {})
  assert.equal(await openGauge(ops.url), { "ROUTING/invoice/no-tariff": 0 })
  for (const id of before) assert.is((await entries.get(kvKey(id)))?.operation, "PURGE", `${id} purged`)
  assert.equal(
    ops.child.lines.filter((l) => /dlq entries purged/.test(l)).map((l) => JSON.parse(l).entries),
    [3],
  )

  // a failure after the purge is filed, indexed and kept through the next rounds of pruning
  await sendFailing(4)
  await untilTotal(ops.url, 1)
  await sleep(1000)
  const kept = await list(ops.url, "")
  assert.equal(
    kept.map((e) => e.eventId),
    ["rc-4"],
  )
  assert.is((await entries.get(kvKey(kept[0]!.id)))?.operation, "PUT")
})

test.run()
