// The delivery rules of mesh/, against a real nats-server.
import * as assert from "uvu/assert"
import { subjectOf, topology } from "../contracts/mod.ts"
import { DLQ } from "../mesh/dlq.ts"
import { PermanentError } from "../mesh/errors.ts"
import { provision, TopologyConflict } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { type Running, worker, type WorkerOptions } from "../mesh/worker.ts"
import { natsSuite, sleep, waitUntil, suite } from "./harness.ts"
import { invoice, route } from "./fixtures/events.ts"

const test = suite("runtime")
// a clean slate per test: no streams, no consumers; workers provision what they bind to (dev server, no auth)
const f = natsSuite(test, { provision: { consumers: () => false } })

async function startInvoice(o: Partial<WorkerOptions>): Promise<Running> {
  const r = await worker({ name: "invoice", port: 0, ...o }).start({ url: f.server.url, port: 0, drainTimeoutMs: 5000 })
  f.running.push(r)
  return r
}

const send = (i: number, over = {}, id = `rc-${i}`) =>
  publishEvent(f.js, "RouteCalculated", route(i, over), { id, source: "logiflow/test" })

async function dlqEntries(): Promise<{ subject: string; headers: Record<string, string>; data: Uint8Array }[]> {
  const info = await f.jsm.streams.info("DLQ")
  const out = []
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await f.jsm.streams.getMessage("DLQ", { seq })
    if (!m) continue
    const headers: Record<string, string> = {}
    for (const [k, v] of m.header) headers[k.toLowerCase()] = v[0]!
    out.push({ subject: m.subject, headers, data: m.data })
  }
  return out
}

const consumerInfo = () => f.jsm.consumers.info("ROUTING", "invoice")

test("happy path - the returned event is published with derived msg id and headers, then the input is acked", async () => {
  await startInvoice({
    consumes: {
      RouteCalculated: (r) => [
        {
          name: "InvoiceGenerated",
          id: `invoice:${r.routeId}`,
          data: {
            invoiceId: `inv-${r.routeId}`,
            routeId: r.routeId,
            truckId: r.truckId,
            customerId: r.customerId,
            lines: [{ description: "Base fee", amountCents: 1000 }],
            totalCents: 1000,
            currency: "EUR",
            issuedAt: "2026-11-25T10:00:00.000Z",
          },
        },
      ],
    },
  })
  await send(1, {}, "rc-1")
  const inv = await waitUntil(() => f.jsm.streams.getMessage("INVOICE", { seq: 1 }).catch(() => null), { what: "InvoiceGenerated" })
  assert.is(inv.subject, subjectOf("InvoiceGenerated", "route-1"))
  assert.is(inv.header.get("Nats-Msg-Id"), "invoice:route-1")
  assert.is(inv.header.get("ce-id"), "invoice:route-1")
  assert.is(inv.header.get("ce-type"), "logiflow.invoice.InvoiceGenerated.v1")
  assert.is(inv.header.get("ce-source"), "logiflow/invoice")
  // an invoice's key is its route: one invoice per route, on the route's subject
  assert.is(inv.header.get("ce-subject"), "route-1")
  assert.is(inv.header.get("ce-specversion"), "1.0")
  assert.is(inv.header.get("content-type"), "application/json")
  // the route came without a traceparent: invoice starts the trace, not sampled (no SDK records spans here)
  assert.match(inv.header.get("traceparent"), /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
  assert.is(inv.json<{ routeId: string }>().routeId, "route-1")
  const ci = await waitUntil(async () => {
    const c = await consumerInfo()
    return c.num_ack_pending === 0 && c.num_pending === 0 && c.delivered.stream_seq === 1 ? c : null
  })
  assert.is(ci.ack_floor.stream_seq, 1)
})

test("nak + backoff - each redelivery waits longer, the final one is dead-lettered as max-deliveries", async () => {
  const seen: number[] = []
  await startInvoice({
    backoff: { initialMs: 150, factor: 2, jitter: 0.2, maxMs: 10_000 },
    consumes: {
      RouteCalculated: () => {
        seen.push(Date.now())
        throw new Error("tariff service flaked")
      },
    },
  })
  await send(1)
  await waitUntil(() => seen.length >= 5, { timeoutMs: 15_000, what: "5 deliveries" })
  const gaps = seen.slice(1).map((t, i) => t - seen[i]!)
  // 150·2ⁿ ±20 %: 120–180, 240–360, 480–720, 960–1440 ms (+ scheduling slack)
  assert.ok(gaps[0]! >= 110 && gaps[0]! < 400, `first gap ${gaps[0]}`)
  for (let i = 1; i < gaps.length; i++) assert.ok(gaps[i]! > gaps[i - 1]!, `gaps must grow: ${gaps.join(", ")}`)
  const entries = await waitUntil(async () => ((await dlqEntries()).length === 1 ? dlqEntries() : null))
  assert.is(entries[0]!.headers[DLQ.reason], "max-deliveries")
  assert.is(entries[0]!.headers[DLQ.deliveries], "5")
  assert.is(entries[0]!.headers[DLQ.error], "tariff service flaked")
  await sleep(300)
  assert.is(seen.length, 5, "no delivery after the dead letter")
})

test("permanent error - exactly one DLQ entry, reason headers, the original body byte for byte", async () => {
  let calls = 0
  await startInvoice({
    consumes: {
      RouteCalculated: (r) => {
        calls++
        if (r.customerId === "nobody") throw new PermanentError("no-tariff", `no tariff for customer ${r.customerId}`)
      },
    },
  })
  const ack = await send(7, { customerId: "nobody" })
  const original = await f.jsm.streams.getMessage("ROUTING", { seq: ack.seq })
  const [entry] = await waitUntil(async () => {
    const e = await dlqEntries()
    return e.length ? e : null
  })
  await sleep(500)
  assert.is((await dlqEntries()).length, 1)
  assert.is(calls, 1)
  assert.is(entry!.subject, "dlq.ROUTING.invoice")
  assert.equal(entry!.data, original!.data)
  assert.is(entry!.headers[DLQ.reason], "no-tariff")
  assert.is(entry!.headers[DLQ.error], "no tariff for customer nobody")
  assert.is(entry!.headers[DLQ.stream], "ROUTING")
  assert.is(entry!.headers[DLQ.consumer], "invoice")
  assert.is(entry!.headers[DLQ.seq], String(ack.seq))
  assert.is(entry!.headers[DLQ.subject], "routing.events.RouteCalculated.truck-7")
  assert.is(entry!.headers[DLQ.deliveries], "1")
  assert.is(entry!.headers["ce-id"], "rc-7")
  assert.is(entry!.headers["nats-msg-id"], `dlq:ROUTING:invoice:${ack.seq}`)
  assert.ok(!Number.isNaN(Date.parse(entry!.headers[DLQ.failedAt]!)))
  const ci = await consumerInfo()
  assert.is(ci.num_ack_pending, 0, "terminated, not pending")
})

test("invalid output - a handler returning a non-array, a `false` element or an event that breaks its schema: one DLQ entry each, invalid-output, nothing published", async () => {
  const calls = new Map<string, number>()
  await startInvoice({
    consumes: {
      RouteCalculated: (r) => {
        calls.set(r.routeId, (calls.get(r.routeId) ?? 0) + 1)
        if (r.routeId === "route-1") return { name: "InvoiceGenerated" } as never
        if (r.routeId === "route-2") return [false] as never
        return [{ name: "InvoiceGenerated", data: { invoiceId: "" } as never }]
      },
    },
  })
  for (let i = 1; i <= 3; i++) await send(i)
  const entries = await waitUntil(async () => {
    const e = await dlqEntries()
    return e.length === 3 ? e : null
  })
  await sleep(500)
  assert.is((await dlqEntries()).length, 3, "one entry each, no retries")
  const byId = new Map(entries.map((e) => [e.headers["ce-id"], e.headers]))
  for (const id of ["rc-1", "rc-2", "rc-3"]) assert.is(byId.get(id)?.[DLQ.reason], "invalid-output", id)
  assert.match(byId.get("rc-1")![DLQ.error]!, /returned object, not an array of events/)
  assert.match(byId.get("rc-2")![DLQ.error]!, /returned false at \[0\], not an event/)
  assert.match(byId.get("rc-3")![DLQ.error]!, /invoiceId/)
  assert.equal([...calls.values()], [1, 1, 1], "each handled once: a contract bug is not retried")
  assert.is((await f.jsm.streams.info("INVOICE")).state.messages, 0, "nothing published")
  assert.is((await consumerInfo()).num_ack_pending, 0)
})

test("two consumers failing one event - two DLQ entries, one per consumer, neither deduped away", async () => {
  const fail = () => {
    throw new PermanentError("no-tariff")
  }
  await startInvoice({ consumes: { RouteCalculated: fail } })
  const tracking = await worker({ name: "tracking", consumes: { RouteCalculated: fail, PositionReported: () => {} } }).start({
    url: f.server.url,
    port: 0,
    drainTimeoutMs: 5000,
  })
  f.running.push(tracking)
  const ack = await send(3)
  const entries = await waitUntil(async () => {
    const e = await dlqEntries()
    return e.length >= 2 ? e : null
  })
  await sleep(300)
  assert.is((await dlqEntries()).length, 2)
  assert.equal(entries.map((e) => e.subject).sort(), ["dlq.ROUTING.invoice", "dlq.ROUTING.tracking"])
  assert.equal(entries.map((e) => e.headers["nats-msg-id"]).sort(), [`dlq:ROUTING:invoice:${ack.seq}`, `dlq:ROUTING:tracking:${ack.seq}`])
})

test("contract violations - bad JSON, a wrong field, an unknown version each go to the DLQ with a precise reason", async () => {
  let handled = 0
  await startInvoice({ consumes: { RouteCalculated: () => void handled++ } })
  const h = (type: string) => {
    const hd = new Map([
      ["ce-specversion", "1.0"],
      ["ce-id", `x-${type}`],
      ["ce-source", "logiflow/test"],
      ["ce-type", type],
    ])
    return hd
  }
  const { headers } = await import("@nats-io/transport-node")
  const pub = async (type: string | null, body: string, id: string, key = "truck-x", ceSubject?: string) => {
    const hd = headers()
    if (type) for (const [k, v] of h(type)) hd.set(k, v)
    if (ceSubject) hd.set("ce-subject", ceSubject)
    await f.js.publish(`routing.events.RouteCalculated.${key}`, new TextEncoder().encode(body), { headers: hd, msgID: id })
  }
  await pub("logiflow.routing.RouteCalculated.v1", "{not json", "a")
  await pub("logiflow.routing.RouteCalculated.v1", JSON.stringify({ ...route(1), stops: [{ id: "x", lat: 91, lon: 0 }] }), "b")
  await pub("logiflow.routing.RouteCalculated.v9", JSON.stringify(route(2)), "c")
  await pub(null, JSON.stringify(route(3)), "d")
  await pub("logiflow.invoice.InvoiceGenerated.v1", JSON.stringify(invoice()), "e")
  // a valid route on another truck's subject, and one on its own subject whose ce-subject (its lane) is another key
  await pub("logiflow.routing.RouteCalculated.v1", JSON.stringify(route(5)), "f", "truck-2", "truck-5")
  await pub("logiflow.routing.RouteCalculated.v1", JSON.stringify(route(6)), "g", "truck-6", "truck-9")
  await send(4)
  const entries = await waitUntil(async () => {
    const e = await dlqEntries()
    return e.length === 7 ? e : null
  })
  assert.equal(entries.map((e) => e.headers[DLQ.reason]).sort(), [
    "invalid-event",
    "invalid-json",
    "missing-header",
    "unknown-version",
    "wrong-subject",
    "wrong-subject",
    "wrong-subject",
  ])
  const errors = entries
    .filter((e) => e.headers[DLQ.reason] === "wrong-subject")
    .map((e) => e.headers[DLQ.error])
    .sort()
  assert.equal(errors, [
    "InvoiceGenerated with key route-1 arrived on routing.events.RouteCalculated.truck-x; its subject is invoice.events.InvoiceGenerated.route-1",
    "RouteCalculated with key truck-5 arrived on routing.events.RouteCalculated.truck-2; its subject is routing.events.RouteCalculated.truck-5",
    'RouteCalculated\'s ce-subject is "truck-9"; its key is "truck-6"',
  ])
  const invalid = entries.find((e) => e.headers[DLQ.reason] === "invalid-event")!
  assert.match(invalid.headers[DLQ.error]!, /stops\.0\.lat/)
  await waitUntil(() => handled === 1, { what: "the valid event behind them" })
})

test("DLQ publish failure - the message is handed back, never dropped, and dead-lettered once the DLQ is back", async () => {
  let calls = 0
  await startInvoice({
    backoff: { initialMs: 200, factor: 1, jitter: 0, maxMs: 200 },
    consumes: {
      RouteCalculated: () => {
        calls++
        throw new PermanentError("no-tariff")
      },
    },
  })
  // after the start: a worker creates a missing DLQ stream on a dev server
  await f.jsm.streams.delete("DLQ")
  await send(1)
  await waitUntil(() => calls >= 3, { what: "three deliveries while the DLQ is missing" })
  const ci = await consumerInfo()
  assert.is(ci.num_ack_pending + ci.num_pending, 1, "still pending on the server")
  await provision(f.nc, topology(), { streams: (s) => s.name === "DLQ", consumers: () => false, buckets: () => false })
  const entries = await waitUntil(async () => {
    const e = await dlqEntries()
    return e.length === 1 ? e : null
  })
  assert.is(entries[0]!.headers[DLQ.reason], "no-tariff")
  assert.ok(Number(entries[0]!.headers[DLQ.deliveries]) >= 3)
})

test("per-key order - concurrency 8, 1000 events over 10 keys, each key's order kept", async () => {
  const order = new Map<string, number[]>()
  let active = 0
  let maxActive = 0
  await startInvoice({
    concurrency: 8,
    consumes: {
      RouteCalculated: async (r) => {
        active++
        maxActive = Math.max(maxActive, active)
        await sleep(Math.random() * 3)
        const n = Number(r.routeId.slice("route-".length))
        order.set(r.truckId, [...(order.get(r.truckId) ?? []), n])
        active--
      },
    },
  })
  await Promise.all(Array.from({ length: 1000 }, (_, i) => send(i)))
  await waitUntil(() => [...order.values()].reduce((a, b) => a + b.length, 0) === 1000, { timeoutMs: 30_000, what: "1000 handled" })
  assert.is(order.size, 10)
  for (const [key, seq] of order) {
    assert.is(seq.length, 100, key)
    const sorted = [...seq].sort((a, b) => a - b)
    assert.equal(seq, sorted, `${key} out of order`)
  }
  assert.ok(maxActive > 1 && maxActive <= 8, `ran ${maxActive} at once`)
})

test("bounded prefetch - handlers that never finish: of 100 events the process holds no more than PREFETCH, then takes the rest as they finish", async () => {
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  let started = 0
  let finished = 0
  await startInvoice({
    concurrency: 2,
    prefetch: 6,
    consumes: {
      RouteCalculated: async () => {
        started++
        await gate
        finished++
      },
    },
  })
  await Promise.all(Array.from({ length: 100 }, (_, i) => send(i)))
  // invoice has two consumers: its REPLAY one, idle, keeps a long poll open for the smallest batch (1 here, a
  // quarter of its even share), which counts against the prefetch as what may still arrive
  await waitUntil(async () => (await consumerInfo()).num_ack_pending === 5, { what: "5 held" })
  await sleep(500) // room for a wrong extra pull to show
  const held = await consumerInfo()
  assert.is(held.num_ack_pending, 5, "held: the prefetch less the idle REPLAY consumer's open request")
  assert.is(held.num_pending, 95, "the rest stays on the server, for other instances")
  assert.is((await f.jsm.consumers.info("REPLAY", "invoice")).num_waiting, 1, "the REPLAY consumer's request is open")
  assert.is(started, 2, "running: exactly the concurrency")
  release()
  await waitUntil(async () => (await consumerInfo()).ack_floor.stream_seq === 100, { timeoutMs: 20_000, what: "all 100 acked" })
  const after = await consumerInfo()
  assert.is(finished, 100)
  assert.is(after.num_ack_pending, 0)
  assert.is(after.num_redelivered, 0, "nothing redelivered: held messages never outlived ack_wait")
})

test("ack_wait outlived - a handler that never returns holds its key's lane until ack_wait, then the lane moves on and the redelivery runs after the next event", async () => {
  const seen: string[] = []
  await startInvoice({
    topology: { ackWaitSeconds: 2 },
    consumes: {
      RouteCalculated: (r, ctx) => {
        // the first delivery of route-1 hangs; everything else is recorded and acked
        if (r.routeId === "route-1" && ctx.deliveries === 1) return new Promise<never>(() => {})
        seen.push(`${r.routeId}#${ctx.deliveries}`)
      },
    },
  })
  await send(1) // truck-1
  await waitUntil(async () => (await consumerInfo()).num_ack_pending === 1, { what: "route-1 running" })
  const sent = Date.now()
  await send(11) // truck-1 too: waits for route-1's lane
  await send(2) // truck-2: a lane of its own
  await waitUntil(() => seen.includes("route-2#1") || null, { what: "route-2 beside the hung handler" })
  await sleep(1200)
  assert.equal(seen, ["route-2#1"], "route-11 waits while route-1 is within its ack_wait")
  await waitUntil(() => seen.length === 3 || null, { timeoutMs: 10_000, what: "route-11 and route-1's redelivery" })
  assert.ok(Date.now() - sent >= 1800, "not before ack_wait (2 s)")
  assert.equal(seen, ["route-2#1", "route-11#1", "route-1#2"], "the lane moved on to route-11, then the redelivery of route-1")
  const c = await waitUntil(
    async () => {
      const i = await consumerInfo()
      return i.ack_floor.stream_seq === 3 && i.num_ack_pending === 0 ? i : null
    },
    { what: "all acked" },
  )
  assert.is(c.num_redelivered, 0, "the redelivered message was acked; none is still pending redelivery")
})

test("consumer deleted at runtime - /readyz says 503 and names it; once it is back the worker is ready and consuming again", async () => {
  const handled: string[] = []
  const r = await startInvoice({ consumes: { RouteCalculated: (e) => void handled.push(e.routeId) } })
  const readyz = async () => {
    const res = await fetch(`http://127.0.0.1:${r.port}/readyz`)
    return { status: res.status, body: (await res.json()) as { consumers?: Record<string, string> } }
  }
  assert.is((await readyz()).status, 200)
  await f.jsm.consumers.delete("ROUTING", "invoice")
  const down = await waitUntil(
    async () => {
      const x = await readyz()
      return x.status === 503 ? x : undefined
    },
    { timeoutMs: 20_000, what: "/readyz 503" },
  )
  assert.ok(down.body.consumers?.["ROUTING/invoice"], `names the consumer: ${JSON.stringify(down.body)}`)
  await provision(f.nc, topology(), { createMissing: true, streams: () => false, consumers: (c) => c.worker === "invoice" })
  await send(1)
  await waitUntil(() => handled.includes("route-1"), { timeoutMs: 20_000, what: "route-1 handled after the consumer is back" })
  assert.is((await readyz()).status, 200)
})

test("MAX_RATE - a backlog of 60 drains at 20 events/s, not all at once", async () => {
  for (let i = 0; i < 60; i++) await send(i)
  const at: number[] = []
  const t0 = performance.now()
  await startInvoice({ maxRate: 20, consumes: { RouteCalculated: () => void at.push(performance.now() - t0) } })
  await waitUntil(() => at.length === 60, { timeoutMs: 20_000, what: "60 handled" })
  const first = at[0]!
  // the limit is a ceiling: 60 events at 20/s with a burst of 2 cannot take less than (60 - 2) / 20 s
  assert.ok(at[59]! - first >= 2800, `drained in ${Math.round(at[59]! - first)} ms`)
  for (const t of at) {
    const inSecond = at.filter((x) => x >= t && x < t + 1000).length
    assert.ok(inSecond <= 23, `${inSecond} events in one second`)
  }
  assert.is((await consumerInfo()).num_redelivered, 0)
})

test("provision - twice changes nothing; an incompatible existing stream is reported, not ignored", async () => {
  const t = topology()
  await provision(f.nc, t)
  const again = await provision(f.nc, t)
  assert.ok(again.length > 10)
  assert.equal(
    again.filter((a) => a.action !== "unchanged"),
    [],
  )
  await f.jsm.streams.delete("INVOICE")
  const { StorageType } = await import("@nats-io/jetstream")
  await f.jsm.streams.add({ name: "INVOICE", subjects: ["invoice.events.>"], storage: StorageType.Memory })
  try {
    await provision(f.nc, t)
    assert.unreachable("should refuse")
  } catch (err) {
    assert.instance(err, TopologyConflict)
    assert.match((err as Error).message, /stream INVOICE exists with a different storage/)
  }
  await f.jsm.consumers.update("ROUTING", "invoice", { max_deliver: 9 })
  const fixed = await provision(f.nc, t, { streams: (s) => s.name !== "INVOICE" })
  assert.equal(
    fixed.filter((a) => a.action === "updated").map((a) => a.name),
    ["ROUTING/invoice"],
  )
})

test("start - handlers that do not fit the topology stop the start with a message naming the event and the fix", async () => {
  const stray = await worker({ name: "invoice", consumes: { RouteCalculated: () => {}, EtaUpdated: () => {} } })
    .start({ url: f.server.url, port: 0 })
    .then(
      () => "started",
      (err: Error) => err.message,
    )
  assert.is(
    stray,
    "invoice: handler for EtaUpdated would never run: contracts/topology.ts does not route it to invoice (add it to workers.invoice.consumes)",
  )
  const missing = await worker({ name: "tracking", consumes: { RouteCalculated: () => {} } })
    .start({ url: f.server.url, port: 0 })
    .then(
      () => "started",
      (err: Error) => err.message,
    )
  assert.is(
    missing,
    "tracking: contracts/topology.ts routes PositionReported to tracking, which has no handler for it: every such event would be dead-lettered",
  )
  // nothing was bound or listened: the consumers do not exist yet on this clean slate
  assert.is(
    await f.jsm.consumers.info("ROUTING", "invoice").then(
      () => "bound",
      () => "absent",
    ),
    "absent",
  )
})

test.run()
