// workers/routing.ts over real HTTP against a real nats-server: validation, the event it records, idempotency, and
// what a client sees when NATS is down or full. Stalled and refusing servers, and the retry horizon: routing-retry.
import { DiscardPolicy, jetstreamManager } from "@nats-io/jetstream"
import { nanos } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { type Stop, subjectOf } from "../contracts/mod.ts"
import { berlin, depot, request, routing, routingSuite } from "./fixtures/routing.ts"
import { connectTo, startServer, testAuth, waitUntil } from "./harness.ts"

const r = routingSuite("routing")
const { test, post, routingMessages } = r

const { estimateEta, planRoute } = await import("../workers/plan.ts")

const issuePaths = async (res: Response) => {
  assert.is(res.status, 400)
  const body = (await res.json()) as { status: number; error: string; issues: { path: string; message: string }[] }
  assert.is(body.status, 400)
  assert.type(body.error, "string")
  return body.issues.map((i) => i.path)
}

test("POST /routes - 202 with the stops in planned order, and the same route recorded as RouteCalculated", async () => {
  const departAt = "2026-11-25T08:00:00.000Z"
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
  const res = await post(request({ departAt }), { traceparent: `00-${traceId}-00f067aa0ba902b7-01` })
  assert.is(res.status, 202)
  const body = (await res.json()) as { routeId: string; eta: string; distanceKm: number; stops: Stop[] }
  assert.equal(Object.keys(body).sort(), ["distanceKm", "eta", "routeId", "stops"])
  const planned = planRoute(depot, berlin)
  assert.equal(body.stops, planned.stops)
  assert.equal(
    [...body.stops].sort((a, b) => a.id.localeCompare(b.id)),
    [...berlin].sort((a, b) => a.id.localeCompare(b.id)),
  )
  assert.is(body.distanceKm, planned.distanceKm)
  const eta = estimateEta(new Date(departAt), planned.distanceKm, berlin.length, { avgSpeedKmh: 50, serviceMinutesPerStop: 10 })
  assert.is(body.eta, eta.toISOString())
  assert.match(body.routeId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)

  const [msg, ...rest] = await routingMessages()
  assert.is(rest.length, 0)
  assert.is(msg!.subject, subjectOf("RouteCalculated", "truck-7"))
  assert.is(msg!.header("ce-subject"), "truck-7")
  assert.is(msg!.header("Nats-Msg-Id"), `routing:${body.routeId}`)
  assert.is(msg!.header("ce-id"), `routing:${body.routeId}`)
  assert.is(msg!.header("ce-type"), "logiflow.routing.RouteCalculated.v1")
  assert.is(msg!.header("ce-source"), "logiflow/routing")
  assert.match(msg!.header("traceparent"), new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`))
  assert.is.not(msg!.header("traceparent"), `00-${traceId}-00f067aa0ba902b7-01`, "routing's own span, in the caller's trace")
  const { calculatedAt, ...event } = msg!.data
  assert.equal(event, {
    routeId: body.routeId,
    truckId: "truck-7",
    customerId: "acme",
    stops: body.stops,
    distanceKm: body.distanceKm,
    eta: body.eta,
  })
  assert.ok(Date.parse(calculatedAt) > Date.parse(departAt))
})

test("POST /routes - without a valid traceparent the event starts its own trace, not sampled without an SDK", async () => {
  const res = await post(request(), { traceparent: "not-a-trace" })
  assert.is(res.status, 202)
  const [msg] = await routingMessages()
  // nothing recorded the new trace (no SDK in this process): a sampled flag would also cost nats-server a header map
  assert.match(msg!.header("traceparent"), /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
})

test("validation - 400 names each wrong field by its path, and nothing is published", async () => {
  assert.equal(await issuePaths(await post(request({ stops: [{ id: "a", lat: 91, lon: 13 }] }))), ["stops.0.lat"])
  const { truckId: _, ...noTruck } = request()
  assert.equal(await issuePaths(await post(noTruck)), ["truckId"])
  assert.equal(await issuePaths(await post(request({ stops: [] }))), ["stops"])
  const many = Array.from({ length: 201 }, (_, i) => ({ id: `s${i}`, lat: 52.5, lon: 13.4 + i / 1000 }))
  assert.equal(await issuePaths(await post(request({ stops: many }))), ["stops"])
  const dup = [berlin[0]!, berlin[1]!, { ...berlin[2]!, id: "alex" }, berlin[3]!, { ...berlin[4]!, id: "zoo" }]
  const res = await post(request({ stops: dup }))
  assert.is(res.status, 400)
  const body = (await res.json()) as { issues: { path: string; message: string }[] }
  assert.equal(body.issues, [
    { path: "stops.2.id", message: 'duplicate stop id "alex"' },
    { path: "stops.4.id", message: 'duplicate stop id "zoo"' },
  ])
  assert.equal(await issuePaths(await post(request({ depot: { lat: 52.5, lon: 181 } }))), ["depot.lon"])
  assert.equal(await issuePaths(await post(request({ departAt: "tomorrow" }))), ["departAt"])
  assert.equal(await issuePaths(await post(request({ departAt: "2026-02-30T08:00:00Z" }))), ["departAt"])
  assert.equal(await issuePaths(await post(request({ truckId: "truck\r\n7" }))), ["truckId"])
  assert.equal(await issuePaths(await post(request({ customerId: "acme\u0000" }))), ["customerId"])
  assert.equal(await issuePaths(await post(request({ stops: [{ id: "a\u007f", lat: 52.5, lon: 13.4 }] }))), ["stops.0.id"])
  assert.equal(await issuePaths(await post(request({ colour: "red" }))), ["colour"])
  assert.equal(await issuePaths(await post("42")), [""])
  const badJson = await post("{not json")
  assert.is(badJson.status, 400)
  assert.match(((await badJson.json()) as { error: string }).error, /not valid JSON/)
  // exactly 200 stops is allowed
  const max = many.slice(0, 200)
  assert.is((await post(request({ stops: max }))).status, 202)
  assert.is((await routingMessages()).length, 1)
})

test("limits - 413 past ROUTING_MAX_BODY_BYTES (default 64 KiB: the largest route ROUTING stores), 415 for anything but JSON", async () => {
  const big = JSON.stringify(request({ padding: "x".repeat(64 * 1024) }))
  const tooBig = await post(big)
  assert.is(tooBig.status, 413)
  assert.match(((await tooBig.json()) as { error: string }).error, /65536-byte limit/)
  const text = await fetch(`${r.base}/routes`, {
    method: "POST",
    headers: { "content-type": "text/plain", ...testAuth().headers.routes },
    body: JSON.stringify(request()),
  })
  assert.is(text.status, 415)
  assert.is(((await text.json()) as { status: number }).status, 415)
  assert.is((await routingMessages()).length, 0)
})

test("Idempotency-Key - a retry gets the same routeId and body, and one event is recorded; the key is bound to its body", async () => {
  const key = { "idempotency-key": "order-4711" }
  const first = await post(request(), key)
  const second = await post(request(), key)
  assert.is(first.status, 202)
  assert.is(second.status, 202)
  assert.is(first.headers.get("idempotency-key"), "order-4711")
  const a = (await first.json()) as { routeId: string }
  const b = await second.json()
  assert.equal(b, a)
  // a fresh UUIDv7, not derived from the key: once the key's record expires, nothing can map to this route again
  assert.match(a.routeId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  const msgs = await routingMessages()
  assert.is(msgs.length, 1)
  assert.is(msgs[0]!.header("Nats-Msg-Id"), `routing:${a.routeId}`)
  // the same key with another body (another truck) is refused, not a second route
  const other = await post(request({ truckId: "truck-8" }), key)
  assert.is(other.status, 422)
  assert.match(((await other.json()) as { error: string }).error, /already used for a different request; it stays bound to that one/)
  assert.is((await routingMessages()).length, 1)
})

test("no Idempotency-Key - routing makes one, hands it back, and a retry with it gets the same route", async () => {
  const first = await post(request())
  assert.is(first.status, 202)
  const key = first.headers.get("idempotency-key")!
  assert.match(key, /^routing-[0-9a-f-]{36}$/)
  const a = (await first.json()) as { routeId: string }
  const again = await post(request(), { "idempotency-key": key })
  assert.equal(await again.json(), a)
  const fresh = await post(request())
  assert.is.not(((await fresh.json()) as { routeId: string }).routeId, a.routeId, "a request without a key is a new route")
  assert.is((await routingMessages()).length, 2)
})

test("Idempotency-Key - past the duplicate window the stored answer comes back without a second event", async () => {
  const info = await r.jsm.streams.info("ROUTING")
  await r.jsm.streams.update("ROUTING", { ...info.config, duplicate_window: nanos(100) })
  try {
    const key = { "idempotency-key": "late-retry" }
    const a = await (await post(request({ departAt: "2026-11-25T08:00:00.000Z" }), key)).json()
    await new Promise((r) => setTimeout(r, 300))
    const b = await (await post(request({ departAt: "2026-11-25T08:00:00.000Z" }), key)).json()
    assert.equal(b, a)
    assert.is((await routingMessages()).length, 1)
    const changed = await post(request({ departAt: "2026-11-25T09:00:00.000Z" }), key)
    assert.is(changed.status, 422)
    assert.match(((await changed.json()) as { error: string }).error, /already used for a different request/)
    assert.is((await routingMessages()).length, 1)
  } finally {
    await r.jsm.streams.update("ROUTING", info.config)
  }
})

test("Idempotency-Key - an unusable key is a 400, not a silent fresh route", async () => {
  const res = await post(request(), { "idempotency-key": "x".repeat(256) })
  assert.is(res.status, 400)
  assert.is((await routingMessages()).length, 0)
})

test("full stream - at max_msgs with discard new, 503 says the routing log is full", async () => {
  const info = await r.jsm.streams.info("ROUTING")
  assert.is((await post(request())).status, 202)
  await r.jsm.streams.update("ROUTING", { ...info.config, max_msgs: 1, discard: DiscardPolicy.New })
  try {
    const res = await post(request())
    assert.is(res.status, 503)
    assert.ok(Number(res.headers.get("retry-after")) > 0)
    const body = (await res.json()) as { status: number; error: string }
    assert.is(body.status, 503)
    assert.match(body.error, /routing log is full/)
    assert.match(body.error, /maximum messages exceeded/)
    assert.is((await routingMessages()).length, 1)
  } finally {
    await r.jsm.streams.update("ROUTING", info.config)
  }
  assert.is((await post(request())).status, 202)
})

test("fresh dev r.server - routing provisions its own stream and bucket at start, then records routes", async () => {
  const fresh = await startServer()
  const other = await routing.start({ url: fresh.url, port: 0, hostname: "127.0.0.1", drainTimeoutMs: 2000 })
  const fnc = await connectTo(fresh)
  try {
    const fjsm = await jetstreamManager(fnc)
    assert.is(await fjsm.streams.find(subjectOf("RouteCalculated", "truck-7")), "ROUTING")
    assert.is((await fjsm.streams.info("KV_routing-requests")).config.max_age, nanos(24 * 3600 * 1000))
    const res = await fetch(`http://127.0.0.1:${other.port}/routes`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "fresh-1", ...testAuth().headers.routes },
      body: JSON.stringify(request()),
    })
    assert.is(res.status, 202)
    assert.is((await fjsm.streams.info("ROUTING")).state.messages, 1)
  } finally {
    await fnc.close()
    await other.stop()
    await fresh.close()
  }
})

test("NATS down - 503 with Retry-After at once, and 202 again once the r.server is back", async () => {
  await r.server.stop()
  try {
    await waitUntil(() => !r.running.runtime.connected, { what: "routing to notice the r.server is gone" })
    const res = await post(request())
    assert.is(res.status, 503)
    assert.is(res.headers.get("retry-after"), "2")
    assert.match(((await res.json()) as { error: string }).error, /not connected to NATS/)
    const ready = await fetch(`${r.base}/readyz`)
    assert.is(ready.status, 503)
  } finally {
    await r.server.restart()
  }
  const back = await waitUntil(
    async () => {
      const res = await post(request({ truckId: "truck-back" }))
      return res.status === 202 ? res : (await res.body?.cancel(), null)
    },
    { timeoutMs: 15_000, what: "a 202 after the restart" },
  )
  const { routeId } = (await back.json()) as { routeId: string }
  // read on a connection of its own: the suite's may still be waiting to reconnect (seen: longer than a request's 5 s)
  const nc = await connectTo(r.server)
  try {
    const last = await (await jetstreamManager(nc)).streams.getMessage("ROUTING", {
      last_by_subj: subjectOf("RouteCalculated", "truck-back"),
    })
    assert.is(last?.json<{ routeId: string }>().routeId, routeId)
  } finally {
    await nc.close()
  }
})

test.run()
