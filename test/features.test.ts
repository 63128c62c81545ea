// What newer nats-servers add, as the mesh uses it (mesh/features.ts), on the newest server: the dead-letter reason
// in MSG_TERMINATED advisories, server-side backoff after ack timeouts beside exact client-side nak delays, and ops'
// ADVISORIES consumer reading only the advisories it handles (filter_subjects). The same on 2.9.10: compat.test.ts.
import { AckPolicy, DeliverPolicy, type JsMsg } from "@nats-io/jetstream"
import { nanos } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { OPS_ADVISORIES, serverBackoff, topology } from "../contracts/mod.ts"
import { nakDelay } from "../mesh/backoff.ts"
import { DLQ } from "../mesh/dlq.ts"
import { PermanentError } from "../mesh/errors.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { type Running, worker, type WorkerOptions } from "../mesh/worker.ts"
import { lacks, natsSuite, sleep, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const test = suite("features")
// every feature here is 2.11 or older; the pause advisory of the last test is the newest
const why = lacks("pause")
if (why) console.log(`skipped: ${why}`)

// a clean slate per test; workers provision what they bind to (dev server, no auth), with their topology options
const f = natsSuite(test, { provision: { consumers: (c) => c.worker === "ops" } })

async function startInvoice(o: Partial<WorkerOptions>): Promise<Running> {
  const r = await worker({ name: "invoice", ...o }).start({ url: f.server.url, port: 0, drainTimeoutMs: 500 })
  f.running.push(r)
  return r
}

const send = (i: number, over = {}) =>
  publishEvent(f.js, "RouteCalculated", route(i, over), { id: `rc-${i}-${crypto.randomUUID()}`, source: "logiflow/test" })
const advisory = (subject: string) => f.jsm.streams.getMessage("ADVISORIES", { last_by_subj: subject }).catch(() => null)
const gapsOf = (ts: number[]) => ts.slice(1).map((t, i) => t - ts[i]!)

if (!why) {
  test("term(reason) - a no-tariff route is terminated with its reason: the MSG_TERMINATED advisory in ADVISORIES says no-tariff, and nothing is redelivered", async () => {
    let calls = 0
    await startInvoice({
      consumes: {
        RouteCalculated: (r) => {
          calls++
          throw new PermanentError("no-tariff", `no tariff for customer ${r.customerId}`)
        },
      },
    })
    const sent = await send(1, { customerId: "nobody" })
    const terminated = await waitUntil(() => advisory("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.ROUTING.invoice"), {
      what: "the MSG_TERMINATED advisory",
    })
    const a = terminated.json<{ type: string; stream: string; consumer: string; stream_seq: number; deliveries: number; reason: string }>()
    assert.equal(
      [a.type, a.stream, a.consumer, a.stream_seq, a.deliveries, a.reason],
      ["io.nats.jetstream.advisory.v1.terminated", "ROUTING", "invoice", sent.seq, 1, "no-tariff"],
    )
    const dlq = (await f.jsm.streams.getMessage("DLQ", { seq: 1 }))!
    assert.is(dlq.header.get(DLQ.reason), "no-tariff", "the entry keeps the reason too")
    await sleep(1500)
    const info = await f.jsm.consumers.info("ROUTING", "invoice")
    assert.equal(
      [calls, info.num_redelivered, info.num_ack_pending, info.ack_floor.stream_seq],
      [1, 0, 0, sent.seq],
      "terminated: never delivered again",
    )
  })

  test("backoff - a hung handler's message comes back after ack_wait × 1, 2, 4 (server-side), where every redelivery used to wait ack_wait", async () => {
    const starts: number[] = []
    await startInvoice({
      topology: { ackWaitSeconds: 1, maxDeliver: 4 },
      consumes: {
        RouteCalculated: () => {
          starts.push(Date.now())
          return new Promise<never>(() => {})
        },
      },
    })
    const c = await f.jsm.consumers.info("ROUTING", "invoice")
    assert.equal(
      [c.config.ack_wait, c.config.backoff, c.config.max_deliver],
      [nanos(1000), serverBackoff(1, 4).map((s) => nanos(s * 1000)), 4],
    )
    await send(1)
    await waitUntil(() => starts.length >= 4 || null, { timeoutMs: 15_000, what: "four deliveries" })
    const gaps = gapsOf(starts)
    // a redelivery may wait in its key's lane until the worker's ack_wait sweep lets the hung one go (≤ 0.5 s), and
    // the next gap is that much shorter: each gap within 0.6 s of its wait, and the sum exact to 0.5 s
    ;[1000, 2000, 4000].forEach((wait, i) =>
      assert.ok(Math.abs(gaps[i]! - wait) < 600, `gap ${i + 1}: ${gaps[i]} ms, wanted ${wait} (gaps ${gaps.join(", ")})`),
    )
    assert.ok(Math.abs(starts[3]! - starts[0]! - 7000) < 500, `from first to fourth: ${starts[3]! - starts[0]!} ms, wanted 7000`)
    await sleep(1500)
    assert.is(starts.length, 4, "max_deliver 4: no fifth")
  })

  test("backoff - a failing handler's retries keep the client's nak delays exactly (200, 400, 800, 1600 ms) beside the server's 1, 2, 4, 8 s", async () => {
    const starts: number[] = []
    await startInvoice({
      topology: { ackWaitSeconds: 1, maxDeliver: 5 },
      backoff: { initialMs: 200, factor: 2, jitter: 0, maxMs: 10_000 },
      consumes: {
        RouteCalculated: () => {
          starts.push(Date.now())
          throw new Error("tariff service flaked")
        },
      },
    })
    await send(1)
    await waitUntil(() => starts.length >= 5 || null, { timeoutMs: 10_000, what: "five deliveries" })
    const gaps = gapsOf(starts)
    // a plain nak(delay) would wait delay + backoff[n − 1] − ack_wait: 200, 1400, 3800, 8600 ms
    ;[200, 400, 800, 1600].forEach((want, i) =>
      assert.ok(gaps[i]! >= want - 20 && gaps[i]! < want + 300, `gap ${i + 1}: ${gaps[i]} ms, wanted ${want} (gaps ${gaps.join(", ")})`),
    )
    const dlq = await waitUntil(() => f.jsm.streams.getMessage("DLQ", { seq: 1 }).catch(() => null), { what: "the DLQ entry" })
    assert.equal([dlq.header.get(DLQ.reason), dlq.header.get(DLQ.deliveries)], ["max-deliveries", "5"])
    // the correction, as the worker computes it: exact on the first delivery, backoff[n − 1] − ack_wait less after
    const s = { ackWaitMs: 1000, backoffMs: [1000, 2000, 4000, 8000] }
    assert.equal(
      [1, 2, 3, 4, 5, 9].map((n) => nakDelay(500, n, s)),
      [500, -500, -2500, -6500, -6500, -6500],
    )
    assert.is(nakDelay(500, 3, { ackWaitMs: 30_000, backoffMs: [] }), 500)
  })

  test("filter_subjects - ops' ADVISORIES consumer reads MAX_DELIVERIES and PAUSE only: a MSG_TERMINATED advisory stays in the stream, undelivered", async () => {
    const c = await f.jsm.consumers.info("ADVISORIES", "ops")
    assert.equal([c.config.filter_subject, c.config.filter_subjects], [undefined, OPS_ADVISORIES])
    const seen: JsMsg[] = []
    const ops = await worker({
      name: "ops",
      raw: { ADVISORIES: (m) => void seen.push(m), DLQ: () => {} },
    }).start({ url: f.server.url, port: 0, drainTimeoutMs: 500 })
    f.running.push(ops)
    await startInvoice({
      consumes: {
        RouteCalculated: () => {
          throw new PermanentError("no-tariff")
        },
      },
    })
    await send(1, { customerId: "nobody" })
    const terminated = await waitUntil(() => advisory("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.ROUTING.invoice"), {
      what: "MSG_TERMINATED stored",
    })
    await sleep(500)
    assert.equal(seen.length, 0, "not delivered to ops")
    const before = await f.jsm.consumers.info("ADVISORIES", "ops")
    assert.equal([before.num_pending, before.delivered.consumer_seq], [0, 0], "nothing pending for ops: the filter leaves it out")
    // a pause is what ops handles: it arrives
    await f.jsm.consumers.pause("ROUTING", "invoice", new Date(Date.now() + 60_000))
    await waitUntil(() => seen.length === 1 || null, { what: "the PAUSE advisory delivered to ops" })
    assert.is(seen[0]!.subject, "$JS.EVENT.ADVISORY.CONSUMER.PAUSE.ROUTING.invoice")
    assert.ok(seen[0]!.seq > terminated.seq, "the one stored before it was skipped")
    assert.equal(seen[0]!.json<{ paused: boolean }>().paused, true)
  })

  test("filter_subjects - provision moves an ops consumer made with the old single filter (>) to filter_subjects in place, keeping its position", async () => {
    await f.jsm.consumers.delete("ADVISORIES", "ops")
    await f.jsm.consumers.add("ADVISORIES", {
      durable_name: "ops",
      filter_subject: ">",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(30_000),
      max_deliver: 5,
    })
    await f.js.publish(
      "$JS.EVENT.ADVISORY.CONSUMER.PAUSE.ROUTING.invoice",
      JSON.stringify({ type: "io.nats.jetstream.advisory.v1.consumer_pause" }),
    )
    const old = await f.js.consumers.get("ADVISORIES", "ops")
    ;(await old.next({ expires: 2000 }))!.ack()
    await waitUntil(async () => (await f.jsm.consumers.info("ADVISORIES", "ops")).ack_floor.stream_seq === 1 || null, { what: "acked" })
    const actions = await provision(f.nc, topology(), {
      streams: () => false,
      buckets: () => false,
      consumers: (c) => c.stream === "ADVISORIES",
    })
    assert.equal(actions, [{ kind: "consumer", name: "ADVISORIES/ops", action: "updated" }])
    const now = await f.jsm.consumers.info("ADVISORIES", "ops")
    assert.equal([now.config.filter_subject, now.config.filter_subjects, now.ack_floor.stream_seq], [undefined, OPS_ADVISORIES, 1])
    const again = await provision(f.nc, topology(), {
      streams: () => false,
      buckets: () => false,
      consumers: (c) => c.stream === "ADVISORIES",
    })
    assert.equal(
      again.map((a) => a.action),
      ["unchanged"],
    )
  })
}

test.run()
