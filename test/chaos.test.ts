// Faults under load, each bounded and on its own nats-server (or 3-node cluster) with real worker processes: a
// crash-looping worker, a crashed broker, a lost cluster node, hung and slow consumers, SIGTERM under load, a full
// stream. Each ends on exact counts (lost 0, duplicated 0) and prints a markdown row; the table comes at the end.
// CHAOS_SEED=<n> repeats a run's random choices. Longer variants: `npm run test:chaos -- --events 100000`.
import * as assert from "uvu/assert"
import { type Row, rowText, TABLE_HEAD } from "./fixtures/chaos.ts"
import { brokerCrash, clusterNodeLoss, crashLoop, gracefulShutdown, hungConsumer, slowConsumer, streamFull } from "./fixtures/faults.ts"
import { suite } from "./harness.ts"

const test = suite("chaos")
const SEED = Number(process.env.CHAOS_SEED ?? 20261125)
const rows: Row[] = []
const report = (row: Row) => (rows.push(row), console.log(`\n${rowText(row)}`))

test.after(() => {
  console.log(`\nchaos results (seed ${SEED}):\n${TABLE_HEAD}\n${rows.map(rowText).join("\n")}\n`)
})

test("worker crash loop - kill -9 every 1–3 s under load: exactly one invoice per routeId, nothing dead-lettered", async () => {
  const n = 2000
  // 50 ms per event, 16 at once (320 events/s, PREFETCH still 256) keeps each process busy with a backlog when it dies,
  // which is when held messages are charged, and the load outlasts at least three kill cycles of restart + 1–3 s:
  // at the default 64 at once the backlog was gone after one kill in a run on a fast hour
  const r = await crashLoop({
    events: n,
    seed: SEED,
    maxKills: 5,
    publishSeconds: 4,
    workerEnv: { INVOICE_SLOW_MS: "50", CONCURRENCY: "16" },
  })
  report(r.row)
  assert.ok(r.kills >= 3, `the process was killed mid-stream (${r.kills} kills)`)
  assert.is(r.distinct, n, `every route invoiced (consumer: ${JSON.stringify(r.consumer)})`)
  assert.is(r.total, n, "no route invoiced twice")
  assert.is(r.dlq, 0, "nothing dead-lettered")
  assert.is(r.consumer.redelivered, 0, "nothing left waiting for redelivery")
})

test("broker crash - SIGKILL nats-server mid-load: workers go 503 → 200 alone, every 202 invoiced exactly once", async () => {
  const r = await brokerCrash({ requests: 400, seed: SEED })
  report(r.row)
  assert.ok(r.accepted > 0 && r.refused > 0, `load on both sides of the outage (${r.accepted} accepted, ${r.refused} refused)`)
  for (const w of ["routing", "invoice"]) {
    assert.ok(r.readiness[w]!.duringOutage.includes(503), `${w} /readyz said 503 during the outage`)
    assert.not.ok(r.readiness[w]!.duringOutage.includes(200), `${w} never claimed ready while the broker was down`)
    assert.is(r.readiness[w]!.after, 200, `${w} ready again by itself`)
  }
  const counts = [...r.invoicesForAccepted.values()]
  assert.is(counts.filter((c) => c === 0).length, 0, "no accepted route lost")
  assert.is(counts.filter((c) => c > 1).length, 0, "no accepted route invoiced twice")
  assert.is(r.strangers, 0, "no invoice for a route nobody asked for")
  assert.is(r.routingStoredTwice, 0, "no route stored twice")
  assert.is(r.notRecordedButStored, 0, "no route answered 503 (nothing recorded) was stored after all")
  assert.is(r.afterRetry.accepted, r.refused, "every refused request accepted on retry with its Idempotency-Key")
  assert.is(r.afterRetry.missing, 0)
  assert.is(r.afterRetry.total, r.requests, "one invoice per request, retries included")
  assert.is(r.afterRetry.distinct, r.requests)
})

test("cluster node loss - kill -9 the ROUTING leader of a 3-node R3 cluster under load: nothing acked lost, it rejoins", async () => {
  const n = 2000
  const r = await clusterNodeLoss({ events: n, seed: SEED })
  report(r.row)
  assert.ok(r.kills[0]!.wasRoutingLeader, "the ROUTING stream leader was killed")
  assert.is.not(r.kills[0]!.newLeader, r.kills[0]!.node)
  assert.is(r.invoicesForAcked.missing, 0, "every acknowledged event invoiced")
  assert.is(r.invoicesForAcked.twice, 0, "none twice")
  assert.is(r.invoices.total, r.invoices.distinct)
  assert.is(r.invoices.distinct, r.acked + r.unackedStored)
  // a bound on stalls, not a speed target: a leader election takes seconds, a stuck consumer forever
  assert.ok(r.longestGapMs < 15_000, `longest gap between invoices ${r.longestGapMs} ms`)
})

test("hung handler - past ack_wait it is redelivered, past max_deliver ops files exactly one DLQ entry", async () => {
  const r = await hungConsumer({ ackWaitMs: 2000, maxDeliver: 3 })
  report(r.row)
  assert.is(
    r.deliveriesSeen.reduce((a, b) => a + b, 0),
    3,
    `three deliveries reached a handler (${r.deliveriesSeen.join("/")})`,
  )
  assert.is(r.dlq.count, 1, "one DLQ message")
  assert.is(r.dlq.reason, "max-deliveries")
  assert.is(r.dlq.deliveries, "3")
  assert.is(r.dlq.consumer, "invoice")
  assert.is(r.opsEntries.length, 1, "one entry in ops' index")
  assert.equal(r.exits, [0, 0], "SIGTERM with a hung handler still exits 0 at the drain deadline")
})

test("slow consumer - a 10× slower invoice worker changes none of routing's answers; the portal keeps answering", async () => {
  const requests = 100
  const r = await slowConsumer({ requests })
  report(r.row)
  for (const p of r.phases) {
    assert.equal(p.statuses, { 202: requests }, `invoice at ${p.invoiceSlowMs} ms per event: routing answered 202 to all`)
    assert.ok((p.portal[200] ?? 0) > 0, "the portal was asked")
    assert.equal(Object.keys(p.portal), ["200"], `the portal answered 200 throughout (${JSON.stringify(p.portal)})`)
  }
  console.log(
    `  routing latency: invoice normal ${JSON.stringify(r.phases[0]!.latency)}, invoice ${r.phases[1]!.invoiceSlowMs} ms/event ${JSON.stringify(r.phases[1]!.latency)}`,
  )
  assert.is(r.invoices.distinct, 2 * requests)
  assert.is(r.invoices.total, 2 * requests)
})

test("graceful shutdown - SIGTERM under load: exit 0 within the deadline, in-flight acked, nothing acked comes back", async () => {
  const n = 2000
  const r = await gracefulShutdown({ events: n, drainTimeoutMs: 10_000 })
  report(r.row)
  assert.is(r.exitCode, 0)
  assert.ok(r.exitMs < 10_000 + 2000, `exited within the drain deadline (${r.exitMs} ms)`)
  assert.ok(r.drainedLogged, "logged a complete drain")
  assert.is(r.ackPendingAfterExit, r.handedBack, "every message un-acked at exit was handed back, none stranded")
  // a stranded message would come back only after the 30 s ack_wait: a bound on stranding, not on speed
  assert.is(r.lateRedeliveries, 0, "every handed-back message came again at once")
  assert.equal(r.ackedTwice, [], "no stream sequence acked twice")
  assert.is(r.acks, n, "one ack per event")
  assert.is(r.invoices.distinct, n)
  assert.is(r.invoices.total, n)
})

test("full stream - ROUTING at max_msgs (discard new): 503 with the reason, every 202 stored, retries stored once", async () => {
  const r = await streamFull({ maxMsgs: 40, requests: 60 })
  report(r.row)
  assert.is(r.accepted, 40)
  assert.is(r.stored, r.accepted, "202s == messages stored")
  assert.is(r.refused.length, 20)
  for (const x of r.refused) {
    assert.is(x.status, 503)
    assert.match(x.error, /routing log is full \(maximum messages exceeded\)/)
    assert.is(x.retryAfter, "60")
  }
  assert.is(r.afterRaise.accepted, 20, "accepted once the operator raised the limit")
  assert.is(r.afterRaise.stored, 60)
  assert.is(r.afterRaise.distinct, 60)
})

test.run()
