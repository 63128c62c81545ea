// workers/routing.ts over real HTTP against a real nats-server, when NATS is stalled or refusing: an honest answer
// (503 nothing recorded, 504 outcome unknown), the retry the answer documents, and the retry horizon.
import { readFileSync } from "node:fs"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { type Msg, nanos } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { type RouteCalculated, topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import type { Running } from "../mesh/worker.ts"
import { request, routing, routingSuite } from "./fixtures/routing.ts"
import { connectTo, sleep, startServer, testAuth, waitUntil } from "./harness.ts"

const r = routingSuite("routing retry")
const { test, post, routingMessages } = r

test("NATS stalled - nothing answers before the publish: 503 not-recorded after ROUTING_PUBLISH_TIMEOUT_MS; the retry records it once", async () => {
  r.server.process.kill("SIGSTOP")
  // kill() returns before the kernel has stopped it: wait until /proc says so, or a quick r.server still acks
  await waitUntil(() => readFileSync(`/proc/${r.server.process.pid}/stat`, "utf8").split(") ")[1]?.startsWith("T"), {
    what: "nats-server stopped",
  })
  let res: Response
  let waited: number
  try {
    const t0 = Date.now()
    res = await post(request(), { "idempotency-key": "stalled-1" })
    waited = Date.now() - t0
  } finally {
    r.server.process.kill("SIGCONT")
  }
  assert.is(res.status, 503)
  assert.is(res.headers.get("retry-after"), "2")
  const body = (await res.json()) as { error: string; outcome: string; idempotencyKey: string }
  assert.is(body.outcome, "not-recorded")
  assert.is(body.idempotencyKey, "stalled-1")
  assert.match(body.error, /did not answer within 1500 ms; nothing was recorded/)
  // bounded by our 1.5 s, not the client's 5 s request timeout
  assert.ok(waited >= 1400 && waited < 4000, `answered after ${waited} ms`)
  await sleep(300)
  assert.is((await routingMessages()).length, 0, "and nothing was: no publish starts after the answer")
  const retry = await post(request(), { "idempotency-key": "stalled-1" })
  assert.is(retry.status, 202)
  assert.is((await routingMessages()).length, 1)
})

test("publish stalled - sent, never acknowledged: 504 outcome unknown; it lands late, and the retry with the key returns that route, stored once", async () => {
  const info = await r.jsm.streams.info("ROUTING")
  // the stream stops taking route subjects; a plain subscriber takes the publishes and never answers them
  await r.jsm.streams.update("ROUTING", { ...info.config, subjects: ["routing.parked.>"] })
  const captured: Msg[] = []
  const sub = r.nc.subscribe("routing.events.RouteCalculated.>", { callback: (_e, m) => void captured.push(m) })
  let keyed: Response, keyless: Response
  try {
    ;[keyed, keyless] = await Promise.all([post(request(), { "idempotency-key": "lost-ack-1" }), post(request({ truckId: "truck-9" }))])
  } finally {
    sub.unsubscribe()
    await r.jsm.streams.update("ROUTING", info.config)
  }
  const generated = keyless.headers.get("idempotency-key")!
  for (const [res, key] of [
    [keyed, "lost-ack-1"],
    [keyless, generated],
  ] as const) {
    assert.is(res.status, 504)
    assert.is(res.headers.get("retry-after"), "2")
    const body = (await res.json()) as { error: string; outcome: string; idempotencyKey: string; retryWithinSeconds: number }
    assert.is(body.outcome, "unknown")
    assert.is(body.idempotencyKey, key)
    assert.is(body.retryWithinSeconds, 24 * 3600)
    assert.match(body.error, /did not acknowledge the route within 1500 ms/)
    assert.match(body.error, new RegExp(`send the same request again with Idempotency-Key: ${key} within 24 h`))
  }
  assert.is(captured.length, 2, "both publishes went out")
  // they land after all, late (a r.server that stored them and lost the acks)
  const js = jetstream(r.nc)
  for (const m of captured) await js.publish(m.subject, m.data, { headers: m.headers })
  const landed = (await routingMessages()).map((m) => m.data.routeId)
  assert.is(landed.length, 2)
  // the retry comes after the duplicate window: the msg id no longer dedupes, routing finds the route on its subject
  await r.jsm.streams.update("ROUTING", { ...info.config, duplicate_window: nanos(100) })
  await sleep(300)
  try {
    // the documented retry: same request, same key → the route that landed, not a second one
    for (const [key, body] of [
      ["lost-ack-1", request()],
      [generated, request({ truckId: "truck-9" })],
    ] as const) {
      const retry = await post(body, { "idempotency-key": key })
      assert.is(retry.status, 202)
      assert.ok(landed.includes(((await retry.json()) as { routeId: string }).routeId))
    }
    assert.is((await routingMessages()).length, 2, "stored once each")
    // and a late copy of the first attempt, landing after something else on the truck's subject, is refused
    const late = captured[0]!
    const refused = await js.publish(late.subject, late.data, { headers: late.headers, expect: { lastSubjectSequence: 0 } }).then(
      () => "stored",
      (e) => e.constructor.name,
    )
    assert.is(refused, "JetStreamApiError")
  } finally {
    await r.jsm.streams.update("ROUTING", info.config)
  }
})

test("refusing r.server - no stream takes routes: 503 not-recorded at once, naming logiflow provision", async () => {
  const info = await r.jsm.streams.info("ROUTING")
  await r.jsm.streams.update("ROUTING", { ...info.config, subjects: ["routing.parked.>"] })
  try {
    const res = await post(request(), { "idempotency-key": "refused-1" })
    assert.is(res.status, 503)
    const body = (await res.json()) as { error: string; outcome: string }
    assert.is(body.outcome, "not-recorded")
    assert.match(body.error, /no stream records routes .*run `logiflow provision`/)
    assert.is(res.headers.get("retry-after"), "30")
  } finally {
    await r.jsm.streams.update("ROUTING", info.config)
  }
  assert.is((await post(request(), { "idempotency-key": "refused-1" })).status, 202)
  assert.is((await routingMessages()).length, 1)
})

test("retry horizon - ROUTING_RETRY_HORIZON_SECONDS is the key's lifetime; past it the same key makes a new route with a new routeId", async () => {
  const fresh = await startServer()
  process.env.ROUTING_RETRY_HORIZON_SECONDS = "1"
  const other = await routing
    .start({ url: fresh.url, port: 0, hostname: "127.0.0.1", drainTimeoutMs: 2000 })
    .finally(() => delete process.env.ROUTING_RETRY_HORIZON_SECONDS)
  const fnc = await connectTo(fresh)
  try {
    const fjsm = await jetstreamManager(fnc)
    assert.is((await fjsm.streams.info("KV_routing-requests")).config.max_age, nanos(1000))
    const at = (body: unknown) =>
      fetch(`http://127.0.0.1:${other.port}/routes`, {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": "reused-key", ...testAuth().headers.routes },
        body: JSON.stringify(body),
      })
    const first = (await (await at(request())).json()) as { routeId: string }
    assert.is((await at(request({ customerId: "globex" }))).status, 422, "within the horizon the key is bound to its body")
    await sleep(1600)
    const later = await at(request({ customerId: "globex" }))
    assert.is(later.status, 202)
    const second = (await later.json()) as { routeId: string }
    assert.is.not(second.routeId, first.routeId)
    assert.is((await fjsm.streams.info("ROUTING")).state.messages, 2)
  } finally {
    await fnc.close()
    await other.stop()
    await fresh.close()
  }
})

test("partitioned ROUTING - the append guard reads the truck's routes in every layout: one route per key, across a change of partitions", async () => {
  const fresh = await startServer()
  const fnc = await connectTo(fresh)
  const other = { running: undefined as Running | undefined }
  try {
    await provision(fnc, topology({ partitions: 4 }), { consumers: () => false })
    other.running = await routing.start({ url: fresh.url, port: 0, hostname: "127.0.0.1", drainTimeoutMs: 2000 })
    const at = (key: string, body: unknown) =>
      fetch(`http://127.0.0.1:${other.running!.port}/routes`, {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": key, ...testAuth().headers.routes },
        body: JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, routeId: ((await r.json()) as { routeId: string }).routeId }))
    const fjsm = await jetstreamManager(fnc)
    const stored = async () => {
      const info = await fjsm.streams.info("ROUTING")
      const out: { subject: string; routeId: string }[] = []
      for (let seq = 1; seq <= info.state.last_seq; seq++) {
        const m = await fjsm.streams.getMessage("ROUTING", { seq })
        if (m) out.push({ subject: m.subject, routeId: m.json<RouteCalculated>().routeId })
      }
      return out
    }
    const a = await at("part-1", request())
    const b = await at("part-2", request({ customerId: "globex" }))
    assert.equal([a.status, b.status], [202, 202])
    assert.ok((await stored()).every((m) => /^routing\.events\.RouteCalculated\.truck-7\.g1\.[0-3]$/.test(m.subject)))
    // a new layout: the truck's next route goes under generation 2, the guard still sees generation 1's
    await provision(fnc, topology({ partitions: 2 }), { consumers: () => false })
    const c = await at("part-3", request({ customerId: "initech" }))
    assert.is(c.status, 202)
    for (const [key, body, want] of [
      ["part-1", request(), a],
      ["part-3", request({ customerId: "initech" }), c],
    ] as const) {
      assert.equal(await at(key, body), want)
    }
    const all = await stored()
    assert.equal(
      all.map((m) => m.routeId),
      [a.routeId, b.routeId, c.routeId],
      "one route per key",
    )
    assert.match(all[2]!.subject, /\.g2\.[01]$/)
  } finally {
    await other.running?.stop()
    await fnc.close()
    await fresh.close()
  }
})

test.run()
