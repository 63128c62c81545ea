// Metrics, logs, traces, readiness and heartbeats of live workers (in-process and as child processes), against a
// real nats-server.
import { createServer, type IncomingMessage } from "node:http"
import { readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { Kvm } from "@nats-io/kv"
import { SpanKind, trace } from "@opentelemetry/api"
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { StatusError } from "itty-router"
import * as assert from "uvu/assert"
import { topology, workerNames } from "../contracts/mod.ts"
import { connect } from "../mesh/connect.ts"
import { HEARTBEATS, type Beat } from "../mesh/heartbeat.ts"
import { registry } from "../mesh/metrics.ts"
import { freePort, startNatsd } from "../mesh/cli/natsd.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { type Worker, worker } from "../mesh/worker.ts"
import invoice from "../workers/invoice.ts"
import { opsWorker } from "../workers/ops.ts"
import routing from "../workers/routing.ts"
import { route } from "./fixtures/events.ts"
import { connectTo, natsSuite, sleep, spawnTs, startServer, testAuth, waitUntil, suite } from "./harness.ts"

const test = suite("observability")
const f = natsSuite(test, { provision: { consumers: () => false } })

const start = async (w: Worker, drainTimeoutMs = 5000) => {
  const r = await w.start({ url: f.server.url, port: 0, drainTimeoutMs })
  f.running.push(r)
  return r
}

const send = (i: number, over = {}, traceparent?: string) =>
  publishEvent(f.js, "RouteCalculated", route(i, over), { id: `rc-${i}`, source: "logiflow/test", traceparent })

const settled = (n: number) =>
  waitUntil(
    async () => {
      const c = await f.jsm.consumers.info("ROUTING", "invoice")
      return c.ack_floor.stream_seq === n && c.num_ack_pending === 0 && c.num_pending === 0
    },
    { what: `invoice consumer acked/termed ${n}` },
  )

// --- the Prometheus text, parsed strictly enough to catch a malformed exposition ------------------------------

type Sample = { name: string; labels: Record<string, string>; value: number }

function parse(text: string): Sample[] {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split("\n")) {
    if (!line) continue
    const t = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line)
    if (t) types.set(t[1]!, t[2]!)
    if (line.startsWith("#")) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.ok(m, `malformed sample line: ${line}`)
    const labels: Record<string, string> = {}
    const body = m![2] ?? ""
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy
    let l: RegExpExecArray | null
    let at = 0
    while ((l = re.exec(body))) (labels[l[1]!] = l[2]!.replace(/\\(["\\n])/g, (_, c) => (c === "n" ? "\n" : c))), (at = re.lastIndex)
    assert.is(at, body.length, `unparsed labels in: ${line}`)
    const family = m![1]!.replace(/_(bucket|sum|count)$/, "")
    assert.ok(types.has(m![1]!) || types.get(family) === "histogram", `no # TYPE for ${m![1]}`)
    samples.push({ name: m![1]!, labels, value: Number(m![3]) })
  }
  return samples
}

/** the value of the one series with exactly these labels; undefined when there is none */
const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.find(
    (s) =>
      s.name === name &&
      Object.keys(s.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  )?.value

async function scrape(port: number): Promise<Sample[]> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  assert.is(res.status, 200)
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/)
  return parse(await res.text())
}

/** each histogram series: buckets never decrease, and +Inf equals _count */
function assertCumulative(samples: Sample[], name: string) {
  const series = new Map<string, Sample[]>()
  for (const s of samples.filter((s) => s.name === `${name}_bucket`)) {
    const { le: _, ...rest } = s.labels
    const k = JSON.stringify(rest)
    series.set(k, [...(series.get(k) ?? []), s])
  }
  assert.ok(series.size > 0, `${name} has buckets`)
  for (const [k, buckets] of series) {
    const sorted = [...buckets].sort((a, b) =>
      a.labels.le === "+Inf" ? 1 : b.labels.le === "+Inf" ? -1 : Number(a.labels.le) - Number(b.labels.le),
    )
    sorted.reduce((prev, b) => (assert.ok(b.value >= prev, `${name}${k} le=${b.labels.le} decreases`), b.value), 0)
    assert.is(sorted.at(-1)!.labels.le, "+Inf")
    assert.is(sorted.at(-1)!.value, value(samples, `${name}_count`, JSON.parse(k)), `${name}${k}: +Inf = _count`)
  }
}

const RC = "logiflow.routing.RouteCalculated.v1"

// --- metrics ---------------------------------------------------------------------------------------------------

test("metrics - events by stream/type/outcome, handler and publish latency move by exactly what was sent", async () => {
  const w = await start(invoice)
  for (let i = 1; i <= 7; i++) await send(i)
  await send(8, { customerId: "nobody" })
  await send(9, { customerId: "nobody" })
  await settled(9)
  const m = await scrape(w.port)
  assert.is(value(m, "logiflow_events_total", { stream: "ROUTING", type: RC, outcome: "ack" }), 7)
  assert.is(value(m, "logiflow_events_total", { stream: "ROUTING", type: RC, outcome: "dlq" }), 2)
  assert.is(value(m, "logiflow_events_total", { stream: "ROUTING", type: RC, outcome: "nak" }), undefined)
  assert.is(value(m, "logiflow_handler_seconds_count", { stream: "ROUTING" }), 9)
  assertCumulative(m, "logiflow_handler_seconds")
  // returned events and DLQ entries are publishes too, not only rt.publish
  assert.is(value(m, "logiflow_publish_seconds_count", { subject: "invoice.events.InvoiceGenerated.*", outcome: "ok" }), 7)
  assert.is(value(m, "logiflow_publish_seconds_count", { subject: "dlq.ROUTING.invoice", outcome: "ok" }), 2)
  assertCumulative(m, "logiflow_publish_seconds")
  assert.is(value(m, "logiflow_inflight"), 0)
  assert.is(value(m, "logiflow_nats_connected"), 1)
  assert.is(value(m, "logiflow_consumer_pending", { stream: "ROUTING", consumer: "invoice" }), 0)
  assert.is(value(m, "logiflow_consumer_ack_pending", { stream: "ROUTING", consumer: "invoice" }), 0)
  assert.is(value(m, "logiflow_consumer_pending", { stream: "REPLAY", consumer: "invoice" }), 0)
  assert.ok((value(m, "process_resident_memory_bytes") ?? 0) > 0, "prom-client's process metrics are there")
})

test("metrics - in-flight and consumer ack-pending are sampled at scrape time", async () => {
  // handlers that never return: two run, the third waits for a slot (the prefetch, 16 × concurrency, has room for all)
  const probe = await start(
    worker({ name: "invoice", consumes: { RouteCalculated: () => new Promise<never>(() => {}) }, concurrency: 2 }),
    300,
  )
  for (let i = 1; i <= 3; i++) await send(i)
  const m = await waitUntil(
    async () => {
      const s = await scrape(probe.port)
      return value(s, "logiflow_inflight") === 3 ? s : null
    },
    { what: "3 messages held" },
  )
  assert.is(value(m, "logiflow_consumer_pending", { stream: "ROUTING", consumer: "invoice" }), 0)
  assert.is(value(m, "logiflow_consumer_ack_pending", { stream: "ROUTING", consumer: "invoice" }), 3)
  assert.is(value(m, "logiflow_handler_seconds_count", { stream: "ROUTING" }), undefined, "nothing finished")
})

test("metrics - HTTP requests by method, route pattern (not the raw path) and status", async () => {
  const w = await start(
    worker({
      name: "fleet",
      routes: (router) => {
        router.get("/api/trucks/:id", ({ params }) => ({ id: params.id }))
        router.post("/api/fail", () => {
          throw new StatusError(422, "no")
        })
        router.get("/api/crash", () => {
          throw new Error("boom")
        })
      },
    }),
  )
  const get = (path: string, init?: RequestInit) =>
    fetch(`http://127.0.0.1:${w.port}${path}`, init).then((r) => (r.body?.cancel(), r.status))
  for (const id of ["t1", "t2", "t3", "t4"]) assert.is(await get(`/api/trucks/${id}`), 200)
  assert.is(await get("/api/fail", { method: "POST" }), 422)
  assert.is(await get("/api/fail", { method: "POST" }), 422)
  assert.is(await get("/api/crash"), 500)
  assert.is(await get("/nope/1"), 404)
  assert.is(await get("/nope/2"), 404)
  assert.is(await get("/healthz"), 200)
  const m = await scrape(w.port)
  const count = (method: string, route: string, status: string) => value(m, "logiflow_http_requests_total", { method, route, status })
  assert.is(count("GET", "/api/trucks/:id", "200"), 4)
  assert.is(count("POST", "/api/fail", "422"), 2)
  assert.is(count("GET", "/api/crash", "500"), 1)
  assert.is(count("GET", "unmatched", "404"), 2)
  assert.is(count("GET", "/healthz", "200"), 1)
  assert.is(count("GET", "/metrics", "200"), undefined, "a scrape is counted once it is answered")
  assert.not.ok(
    m.some((s) => s.labels.route?.includes("t1")),
    "no raw path becomes a label value",
  )
  assert.is(value(m, "logiflow_http_request_seconds_count", { method: "GET", route: "/api/trucks/:id", status: "200" }), 4)
  assertCumulative(m, "logiflow_http_request_seconds")
  const next = await scrape(w.port)
  assert.is(value(next, "logiflow_http_requests_total", { method: "GET", route: "/metrics", status: "200" }), 1)
})

test("metrics - a histogram counts each value in the first bucket whose le it does not exceed, skips NaN and ∞, and renders as prom-client's do", async () => {
  const r = registry({ defaults: false })
  const h = r.histogram("demo_seconds", "demo", { labelNames: ["stream"], buckets: [0.1, 0.01, 1] })
  const bound = h.bind({ stream: 'A"1' })
  for (const v of [0.01, 0.0100001, 0.5, 1, 7, Number.NaN, Number.POSITIVE_INFINITY]) bound.observe(v)
  h.observe(0.001, { stream: "B" })
  const text = await r.render()
  assert.match(text, "# TYPE demo_seconds histogram")
  const m = parse(text)
  const a = { stream: 'A"1' } // parse() unescapes what the exposition format escaped
  assert.equal(
    ["0.01", "0.1", "1", "+Inf"].map((le) => value(m, "demo_seconds_bucket", { ...a, le })),
    [1, 2, 4, 5],
  )
  assert.is(value(m, "demo_seconds_count", a), 5)
  assert.is(Math.round(value(m, "demo_seconds_sum", a)! * 1e7), Math.round((0.01 + 0.0100001 + 0.5 + 1 + 7) * 1e7))
  assert.equal(
    ["0.01", "+Inf"].map((le) => value(m, "demo_seconds_bucket", { stream: "B", le })),
    [1, 1],
  )
  assertCumulative(m, "demo_seconds")
})

test("metrics - a label the metric was not declared with is dropped, never thrown into the handler", async () => {
  const w = await start(
    worker({
      name: "fleet",
      routes: (router, rt) => {
        const c = rt.metrics.counter("demo_total", "demo", ["outcome"])
        router.get("/x", () => (c.inc({ outcome: "ok", extra: "y" }), { ok: true }))
      },
    }),
  )
  const warn = console.warn
  const warned: string[] = []
  console.warn = (...a: unknown[]) => void warned.push(a.join(" "))
  try {
    assert.is((await fetch(`http://127.0.0.1:${w.port}/x`)).status, 200)
    assert.is((await fetch(`http://127.0.0.1:${w.port}/x`)).status, 200)
  } finally {
    console.warn = warn
  }
  assert.is(value(await scrape(w.port), "demo_total", { outcome: "ok" }), 2)
  assert.equal(warned, ["metrics: demo_total has no label extra; dropped"])
})

test("ops - open DLQ entries by stream, consumer and reason, and GET /asyncapi.json serves the contract", async () => {
  const ops = await start(opsWorker({}))
  await start(invoice)
  await send(1, { customerId: "nobody" })
  await send(2, { customerId: "nobody" })
  await send(3, { customerId: "acme" })
  await settled(3)
  const m = await waitUntil(
    async () => {
      const s = await scrape(ops.port)
      return value(s, "logiflow_dlq_open_entries", { stream: "ROUTING", consumer: "invoice", reason: "no-tariff" }) === 2 ? s : null
    },
    { what: "2 open entries indexed" },
  )
  assert.equal(
    m.filter((s) => s.name === "logiflow_dlq_open_entries").map((s) => [s.labels, s.value]),
    [[{ stream: "ROUTING", consumer: "invoice", reason: "no-tariff" }, 2]],
  )
  const res = await fetch(`http://127.0.0.1:${ops.port}/asyncapi.json`, { headers: testAuth().operator.headers })
  assert.is(res.status, 200)
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/)
  assert.equal(await res.json(), JSON.parse(await readFile(new URL("../contracts/asyncapi.json", import.meta.url), "utf8")))
})

// --- logs ------------------------------------------------------------------------------------------------------

async function captured<T>(fn: () => Promise<T>): Promise<{ result: T; lines: Record<string, unknown>[] }> {
  const log = console.log
  const level = process.env.LOG_LEVEL
  const lines: Record<string, unknown>[] = []
  console.log = (...a: unknown[]) => void lines.push(JSON.parse(a.join(" ")))
  process.env.LOG_LEVEL = "info"
  try {
    return { result: await fn(), lines }
  } finally {
    console.log = log
    process.env.LOG_LEVEL = level
  }
}

test("logs - at info, one JSON line per lifecycle event and none per successful event", async () => {
  const { lines } = await captured(async () => {
    const w = await invoice.start({ url: f.server.url, port: 0, drainTimeoutMs: 5000 })
    for (let i = 1; i <= 48; i++) await send(i)
    await send(49, { customerId: "nobody" })
    await send(50, { customerId: "nobody" })
    await settled(50)
    await w.stop()
  })
  assert.equal(
    lines.map((l) => l.msg),
    ["http listening", "nats connected", "ready", "dead-lettered", "dead-lettered", "draining", "stopped"],
  )
  for (const l of lines) {
    assert.is(l.worker, "invoice")
    assert.match(String(l.time), /^\d{4}-\d\d-\d\dT/)
  }
  const dlq = lines.filter((l) => l.msg === "dead-lettered")
  assert.equal(
    dlq.map((l) => [l.level, l.reason, l.stream, l.seq]),
    [
      ["warn", "no-tariff", "ROUTING", 49],
      ["warn", "no-tariff", "ROUTING", 50],
    ],
  )
})

test("readiness and logs - /readyz is 503 while NATS is down and 200 again after it returns; one line each way", async () => {
  const { lines } = await captured(async () => {
    const w = await invoice.start({ url: f.server.url, port: 0, drainTimeoutMs: 5000 })
    f.running.push(w)
    const ready = () =>
      fetch(`http://127.0.0.1:${w.port}/readyz`).then(async (r) => ({
        status: r.status,
        body: (await r.json()) as Record<string, unknown>,
      }))
    assert.equal(await ready(), { status: 200, body: { status: "ready", worker: "invoice" } })
    await f.nc.close()
    await f.server.stop()
    const down = await waitUntil(async () => ((await ready()).status === 503 ? ready() : null), { what: "readyz 503" })
    assert.equal(down.body, { status: "not-ready", worker: "invoice", connected: false, bound: true, stopping: false })
    assert.is((await fetch(`http://127.0.0.1:${w.port}/healthz`)).status, 200, "the process is still alive")
    const scraped = await scrape(w.port)
    assert.is(value(scraped, "logiflow_nats_connected"), 0)
    await f.server.restart()
    f.nc = await connectTo(f.server)
    f.js = jetstream(f.nc)
    f.jsm = await jetstreamManager(f.nc)
    await waitUntil(async () => (await ready()).status === 200, { what: "readyz 200 again" })
    // and it works again: the durable consumer survived in the server's store
    await send(1)
    await settled(1)
    const m = await scrape(w.port)
    assert.is(value(m, "logiflow_nats_connected"), 1)
    assert.is(value(m, "logiflow_nats_connection_events_total", { event: "disconnect" }), 1)
    assert.is(value(m, "logiflow_nats_connection_events_total", { event: "reconnect" }), 1)
    assert.is(value(m, "logiflow_events_total", { stream: "ROUTING", type: RC, outcome: "ack" }), 1)
    await w.stop()
  })
  const msgs = lines.map((l) => l.msg)
  assert.is(msgs.filter((m) => m === "nats disconnected").length, 1)
  assert.is(msgs.filter((m) => m === "nats reconnected").length, 1)
  assert.ok(msgs.indexOf("nats disconnected") < msgs.indexOf("nats reconnected"))
})

// --- tracing ---------------------------------------------------------------------------------------------------

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
const CALLER = "00f067aa0ba902b7"
const idsOf = (tp: string | undefined) => /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/.exec(tp ?? "")?.slice(1) ?? []

/** The headers of the newest message in `stream` on a subject `pattern` matches (`*` one token). */
async function lastHeader(stream: string, pattern: string) {
  const re = new RegExp(`^${pattern.replaceAll(".", "\\.").replaceAll("*", "[^.]+")}$`)
  const newest = async () => {
    const { state } = await f.jsm.streams.info(stream)
    for (let seq = state.last_seq; seq >= state.first_seq && state.messages > 0; seq--) {
      const m = await f.jsm.streams.getMessage(stream, { seq }).catch(() => null)
      if (m && re.test(m.subject)) return m
    }
    return null
  }
  const m = await waitUntil(newest, { what: `a message on ${pattern}` })
  return (h: string) => m.header.get(h)
}

const postRoute = (port: number, customerId: string, traceparent: string) =>
  fetch(`http://127.0.0.1:${port}/routes`, {
    method: "POST",
    headers: { "content-type": "application/json", ...testAuth().headers.routes, traceparent },
    body: JSON.stringify({
      truckId: "truck-7",
      customerId,
      depot: { lat: 52.52, lon: 13.4 },
      stops: [{ id: "a", lat: 52.53, lon: 13.41 }],
    }),
  })

test("tracing - the caller's trace id reaches InvoiceGenerated through routing and invoice, and stays on a DLQ entry", async () => {
  const r = await start(routing)
  await start(invoice)
  const res = await postRoute(r.port, "acme", `00-${TRACE}-${CALLER}-01`)
  assert.is(res.status, 202)
  const inv = await lastHeader("INVOICE", "invoice.events.InvoiceGenerated.*")
  const [invTrace, invSpan] = idsOf(inv("traceparent"))
  assert.is(invTrace, TRACE)
  const rc = await lastHeader("ROUTING", "routing.events.RouteCalculated.truck-7")
  assert.is(idsOf(rc("traceparent"))[0], TRACE)
  assert.is.not(invSpan, idsOf(rc("traceparent"))[1], "each hop has its own span id")

  assert.is((await postRoute(r.port, "nobody", `00-${TRACE}-${CALLER}-01`)).status, 202)
  const dlq = await lastHeader("DLQ", "dlq.ROUTING.invoice")
  assert.is(dlq("logiflow-dlq-reason"), "no-tariff")
  assert.is(idsOf(dlq("traceparent"))[0], TRACE)
  const rc2 = await lastHeader("ROUTING", "routing.events.RouteCalculated.truck-7")
  assert.is(dlq("traceparent"), rc2("traceparent"), "the entry keeps the failed event's own traceparent (a replay continues it)")
})

test("tracing - with an SDK registered, handle spans are children of the incoming span and publish spans of the handle span", async () => {
  const spans = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })
  assert.ok(trace.setGlobalTracerProvider(provider))
  try {
    const r = await start(routing)
    await start(invoice)
    assert.is((await postRoute(r.port, "acme", `00-${TRACE}-${CALLER}-01`)).status, 202)
    const inv = await lastHeader("INVOICE", "invoice.events.InvoiceGenerated.*")
    const rc = await lastHeader("ROUTING", "routing.events.RouteCalculated.truck-7")
    const find = (name: string) => waitUntil(() => spans.getFinishedSpans().find((s) => s.name === name), { what: `span ${name}` })
    const served = await find("POST /routes")
    const routed = await find("publish routing.events.RouteCalculated.*")
    const handled = await find("invoice handle RouteCalculated")
    const published = await find("publish invoice.events.InvoiceGenerated.*")
    const id = (s: ReadableSpan) => s.spanContext().spanId
    for (const s of [served, routed, handled, published]) assert.is(s.spanContext().traceId, TRACE, s.name)
    // the HTTP server span is the root of what routing does, under the caller's span
    assert.is(served.kind, SpanKind.SERVER)
    assert.is(served.parentSpanContext?.spanId, CALLER)
    assert.is(served.attributes["http.route"], "/routes")
    assert.is(served.attributes["http.response.status_code"], 202)
    assert.is(routed.parentSpanContext?.spanId, id(served))
    // the event carries its publish span: a consumer's handle span hangs under it
    assert.equal(idsOf(rc("traceparent")), [TRACE, id(routed)])
    assert.is(handled.parentSpanContext?.spanId, id(routed))
    assert.is(published.parentSpanContext?.spanId, id(handled))
    assert.equal(idsOf(inv("traceparent")), [TRACE, id(published)])
    assert.is(handled.attributes["messaging.system"], "nats")
    assert.is(handled.attributes["messaging.destination.name"], "routing.events.RouteCalculated.truck-7")
    assert.is(handled.attributes["cloudevents.event_id"], rc("ce-id"))
    assert.is(handled.attributes["logiflow.outcome"], "ack")
    assert.is(published.attributes["messaging.destination.name"], "invoice.events.InvoiceGenerated.*")
    assert.is(published.attributes["cloudevents.event_id"], inv("ce-id"))
    assert.is(published.attributes["logiflow.outcome"], "ok")

    // a dead-lettered event: its handle span says why, and the DLQ publish is its child
    spans.reset()
    const direct = "1234567890abcdef"
    await send(99, { customerId: "nobody" }, `00-${TRACE}-${direct}-01`)
    const failed = await find("invoice handle RouteCalculated")
    const filed = await find("publish dlq.ROUTING.invoice")
    assert.is(failed.parentSpanContext?.spanId, direct)
    assert.is(failed.attributes["logiflow.outcome"], "dlq")
    assert.is(failed.attributes["logiflow.dlq_reason"], "no-tariff")
    assert.is(failed.status.code, 2, "ERROR")
    assert.is(filed.parentSpanContext?.spanId, id(failed))
    const dlq = await lastHeader("DLQ", "dlq.ROUTING.invoice")
    assert.is(dlq("traceparent"), `00-${TRACE}-${direct}-01`)
  } finally {
    await Promise.all(f.running.splice(0).map((w) => w.stop()))
    trace.disable()
    await provider.shutdown()
  }
})

/** a stand-in OTLP/HTTP collector: keeps every JSON body posted to /v1/traces */
async function collector() {
  const bodies: { path: string; json: OtlpTraces }[] = []
  const srv = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      bodies.push({ path: req.url ?? "", json: JSON.parse(Buffer.concat(chunks).toString()) })
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  const port = await freePort()
  await new Promise<void>((r) => srv.listen(port, "127.0.0.1", r))
  return { url: `http://127.0.0.1:${port}`, bodies, close: () => new Promise<void>((r) => srv.close(() => r())) }
}
type OtlpTraces = {
  resourceSpans: {
    resource: { attributes: { key: string; value: { stringValue?: string } }[] }
    scopeSpans: { scope: { name: string }; spans: { name: string; traceId: string; parentSpanId?: string }[] }[]
  }[]
}

test("tracing - with OTEL_EXPORTER_OTLP_ENDPOINT set, a worker process exports its spans over OTLP/HTTP (flushed on SIGTERM)", async () => {
  const otlp = await collector()
  const child = spawnTs("workers/invoice.ts", { NATS_URL: f.server.url, INVOICE_PORT: "0", OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url })
  try {
    await child.waitFor(/"msg":"exporting spans over OTLP\/HTTP"/)
    await child.waitFor(/"msg":"ready"/)
    await send(1, {}, `00-${TRACE}-${CALLER}-01`)
    await settled(1)
    assert.is(await child.stop("SIGTERM"), 0)
    const spans = otlp.bodies.flatMap((b) =>
      b.json.resourceSpans.flatMap((rs) =>
        rs.scopeSpans.flatMap((ss) =>
          ss.spans.map((s) => ({
            ...s,
            path: b.path,
            scope: ss.scope.name,
            service: rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue,
          })),
        ),
      ),
    )
    const handled = spans.find((s) => s.name === "invoice handle RouteCalculated")
    assert.ok(handled, `spans received: ${spans.map((s) => s.name).join(", ")}`)
    assert.equal(
      [handled!.path, handled!.scope, handled!.service, handled!.traceId, handled!.parentSpanId],
      ["/v1/traces", "logiflow", "logiflow-invoice", TRACE, CALLER],
    )
    assert.ok(spans.some((s) => s.name === "publish invoice.events.InvoiceGenerated.*" && s.traceId === TRACE))
  } finally {
    await child.stop("SIGKILL")
    await otlp.close()
  }
})

// --- heartbeats ------------------------------------------------------------------------------------------------

test("heartbeats - a running worker keeps <worker>.<instance> in the heartbeats bucket; stopping removes it", async () => {
  const w = await start(invoice)
  const kv = await new Kvm(f.js).open(HEARTBEATS)
  const key = `invoice.${w.runtime.instance}`
  const beat = await waitUntil(async () => (await kv.get(key).catch(() => null))?.json<Beat>(), { what: "a heartbeat" })
  assert.equal(Object.keys(beat).sort(), ["at", "inflight", "instance", "ready", "startedAt", "version", "worker"])
  assert.is(beat.worker, "invoice")
  assert.is(beat.instance, w.runtime.instance)
  assert.is(beat.ready, true)
  assert.is(beat.inflight, 0)
  const status = await f.jsm.streams.info(`KV_${HEARTBEATS}`)
  assert.is(status.config.max_age, 15e9, "a dead instance's key ages out in 15 s")
  await w.stop()
  f.running.length = 0
  const after = await kv.get(key)
  assert.ok(after?.operation !== "PUT", "the key is gone at stop")
})

test("heartbeats - a worker whose user may not write heartbeats starts, works, and says so once", async () => {
  // a server whose only user may do anything but write the heartbeats bucket
  const dir = f.server.storeDir
  const conf = join(dir, "deny-heartbeats.conf")
  await writeFile(
    conf,
    `jetstream: enabled\nauthorization { users = [ { user: w, password: pw, permissions: { publish: { allow: [">"], deny: ["$KV.${HEARTBEATS}.>"] } } } ] }\n`,
  )
  const natsd = await startNatsd({ port: await freePort(), monitorPort: await freePort(), storeDir: join(dir, "deny"), config: conf })
  const own = await connectTo(natsd, { user: "w", pass: "pw" })
  // a server with auth: workers bind, they do not provision (mesh/worker.ts)
  await provision(own, topology())
  const { lines } = await captured(async () => {
    const w = await invoice.start({ url: natsd.url, user: "w", pass: "pw", port: 0, drainTimeoutMs: 5000 })
    try {
      const res = await fetch(`http://127.0.0.1:${w.port}/readyz`)
      assert.is(res.status, 200)
      await publishEvent(jetstream(own), "RouteCalculated", route(1), { id: "rc-1", source: "logiflow/test" })
      await waitUntil(async () => (await jetstreamManager(own).then((m) => m.streams.info("INVOICE"))).state.messages === 1, {
        what: "an invoice",
      })
      await sleep(5500) // past the next beat: still one line
    } finally {
      await w.stop()
    }
  })
  await own.close()
  await natsd.stop()
  const warned = lines.filter((l) => l.msg === "cannot write heartbeats; the worker runs on without them")
  assert.is(warned.length, 1)
  assert.match(String(warned[0]!.error), /permission/i)
})

test("heartbeats - under nats.conf each worker user writes only its own keys, and ops reads them all", async () => {
  const auth = await startServer({ auth: true })
  const as = (user: string) => connect({ name: user, url: auth.url, user, pass: auth.env[`${user.toUpperCase()}_PASSWORD`] })
  const conns: Awaited<ReturnType<typeof as>>[] = []
  try {
    const admin = await as("admin")
    conns.push(admin)
    await provision(admin, topology())
    for (const w of workerNames) {
      const nc = await as(w)
      conns.push(nc)
      const kv = await new Kvm(jetstream(nc)).open(HEARTBEATS)
      await kv.put(`${w}.i1`, JSON.stringify({ worker: w }))
      const other = workerNames.find((x) => x !== w)!
      const err = await kv.put(`${other}.i1`, "{}").then(
        () => undefined,
        (e: Error) => e,
      )
      assert.match(String(err?.cause ?? err), /permission/i, `${w} may not write ${other}'s heartbeat`)
    }
    const ops = await as("ops")
    conns.push(ops)
    const kv = await new Kvm(jetstream(ops)).open(HEARTBEATS)
    const keys: string[] = []
    for await (const k of await kv.keys()) keys.push(k)
    assert.equal(keys.sort(), workerNames.map((w) => `${w}.i1`).sort())
    assert.equal((await kv.get("invoice.i1"))?.json(), { worker: "invoice" })
  } finally {
    await Promise.allSettled(conns.map((c) => c.close()))
    await auth.close()
  }
})

test.run()
