// contracts/: CloudEvents binary mode round trip, and rejections that name the wrong field.
import { test } from "uvu"
import * as assert from "uvu/assert"
import {
  ceTypeOf,
  ContractError,
  decode,
  encode,
  eventNames,
  eventOfSubject,
  keyOf,
  parseType,
  serverBackoff,
  streamOf,
  subjectOf,
  subjectsOf,
  topology,
  validate,
  workers,
} from "../contracts/mod.ts"
import { invoice, route } from "./fixtures/events.ts"

const headerFn = (h: Record<string, string>) => (k: string) => h[k]

const rejects = (fn: () => unknown): ContractError => {
  try {
    fn()
  } catch (err) {
    assert.instance(err, ContractError)
    return err as ContractError
  }
  throw new assert.Assertion({
    message: "expected a ContractError",
    generated: false,
    operator: "throws",
    expects: "throw",
    actual: "none",
  })
}

test("contracts - subjects, streams and ce-types follow <domain>.events.<Name>.<key>", () => {
  assert.is(subjectOf("RouteCalculated", "truck-7"), "routing.events.RouteCalculated.truck-7")
  assert.is(subjectOf("InvoiceGenerated", "route_1"), "invoice.events.InvoiceGenerated.route_1")
  assert.is(subjectsOf("PositionReported"), "tracking.events.PositionReported.*")
  assert.is(subjectsOf("EtaUpdated"), "tracking.events.EtaUpdated.*")
  assert.is(streamOf("EtaUpdated"), "TRACKING")
  assert.is(streamOf("PositionReported"), "POSITIONS")
  assert.is(keyOf("InvoiceGenerated", invoice({ routeId: "r-9" })), "r-9")
  assert.is(keyOf("RouteCalculated", route(3)), "truck-3")
  assert.is(eventOfSubject("routing.events.RouteCalculated.truck-7"), "RouteCalculated")
  assert.is(eventOfSubject("routing.events.RouteCalculated"), undefined)
  assert.is(eventOfSubject("routing.events.Nope.x"), undefined)
  assert.is(ceTypeOf("RouteCalculated"), "logiflow.routing.RouteCalculated.v1")
  assert.equal(eventNames, ["RouteCalculated", "InvoiceGenerated", "PositionReported", "EtaUpdated"])
})

test("envelope - encode then decode gives back the same event, metadata in ce-* headers", () => {
  const data = route(1)
  const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
  const e = encode("RouteCalculated", data, { id: "id-1", source: "logiflow/routing", time: "2026-11-25T10:00:00.000Z", traceparent: tp })
  assert.is(e.subject, "routing.events.RouteCalculated.truck-1")
  assert.equal(e.headers, {
    "ce-specversion": "1.0",
    "ce-id": "id-1",
    "ce-source": "logiflow/routing",
    "ce-type": "logiflow.routing.RouteCalculated.v1",
    "ce-time": "2026-11-25T10:00:00.000Z",
    "ce-subject": "truck-1",
    "content-type": "application/json",
    traceparent: tp,
  })
  assert.equal(JSON.parse(new TextDecoder().decode(e.body)), data)
  const d = decode(headerFn(e.headers), e.body, e.subject)
  assert.is(d.name, "RouteCalculated")
  assert.is(d.version, 1)
  assert.equal(d.data, data)
  assert.equal(d.meta, { id: "id-1", source: "logiflow/routing", key: "truck-1", time: "2026-11-25T10:00:00.000Z", traceparent: tp })
})

test("envelope - encode refuses an event that breaks its own contract", () => {
  const err = rejects(() => encode("RouteCalculated", { ...route(1), distanceKm: -1 }, { id: "x", source: "s" }))
  assert.is(err.reason, "invalid-event")
  assert.equal(
    err.issues.map((i) => i.path),
    ["distanceKm"],
  )
})

test("validate - each wrong field is named by its exact path", () => {
  const err = rejects(() =>
    validate("RouteCalculated", {
      ...route(1),
      truckId: 42,
      stops: [
        { id: "a", lat: 91, lon: 0 },
        { id: "b", lat: 0, lon: -181 },
      ],
      eta: "tomorrow",
      extra: true,
    }),
  )
  assert.is(err.reason, "invalid-event")
  assert.equal(err.issues.map((i) => i.path).sort(), ["eta", "extra", "stops.0.lat", "stops.1.lon", "truckId"])
  assert.match(err.message, /stops\.0\.lat: .*<=90.*91/)
})

test("validate - money is integer cents, currency ISO 4217, at least one line", () => {
  const inv = {
    invoiceId: "i",
    routeId: "r",
    truckId: "t",
    customerId: "acme",
    lines: [{ description: "Base", amountCents: 10.5 }],
    totalCents: -1,
    currency: "eur",
    issuedAt: "2026-11-25T10:00:00.000Z",
  }
  const err = rejects(() => validate("InvoiceGenerated", inv))
  assert.equal(err.issues.map((i) => i.path).sort(), ["currency", "lines.0.amountCents", "totalCents"])
  assert.is(rejects(() => validate("InvoiceGenerated", { ...inv, lines: [], totalCents: 0, currency: "EUR" })).issues[0]!.path, "lines")
})

test("decode - missing headers, unknown types and versions, bad JSON each have their own reason", () => {
  const e = encode("RouteCalculated", route(1), { id: "x", source: "s" })
  const without = (k: string) => Object.fromEntries(Object.entries(e.headers).filter(([h]) => h !== k))
  assert.is(rejects(() => decode(headerFn(without("ce-type")), e.body)).reason, "missing-header")
  assert.is(rejects(() => decode(headerFn(without("ce-id")), e.body)).message, "missing header ce-id")
  assert.is(
    rejects(() => decode(headerFn({ ...e.headers, "ce-type": "logiflow.routing.RouteExploded.v1" }), e.body)).reason,
    "unknown-type",
  )
  assert.is(
    rejects(() => decode(headerFn({ ...e.headers, "ce-type": "logiflow.invoice.RouteCalculated.v1" }), e.body)).reason,
    "unknown-type",
  )
  assert.is(
    rejects(() => decode(headerFn({ ...e.headers, "ce-type": "logiflow.routing.RouteCalculated.v2" }), e.body)).reason,
    "unknown-version",
  )
  assert.is(rejects(() => decode(headerFn(e.headers), new TextEncoder().encode("{oops"))).reason, "invalid-json")
  const wrong = rejects(() => decode(headerFn(e.headers), new TextEncoder().encode(JSON.stringify({ ...route(1), stops: [] }))))
  assert.is(wrong.reason, "invalid-event")
  assert.is(wrong.issues[0]!.path, "stops")
  assert.equal(parseType("logiflow.tracking.EtaUpdated.v1"), { name: "EtaUpdated", version: 1 })
})

test("topology - one durable per worker per stream, plus its replay consumer; nothing consumes work-queue style", () => {
  const t = topology()
  const names = t.consumers.map((c) => `${c.stream}/${c.durable}:${c.filterSubjects.join(",")}`).sort()
  assert.equal(names, [
    "ADVISORIES/ops:$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>,$JS.EVENT.ADVISORY.CONSUMER.PAUSE.>",
    "DLQ/ops:>",
    "INVOICE/portal:invoice.events.InvoiceGenerated.*",
    "POSITIONS/tracking:tracking.events.PositionReported.*",
    "REPLAY/invoice:replay.invoice.>",
    "REPLAY/portal:replay.portal.>",
    "REPLAY/tracking:replay.tracking.>",
    "ROUTING/invoice:routing.events.RouteCalculated.*",
    "ROUTING/portal:routing.events.RouteCalculated.*",
    "ROUTING/tracking:routing.events.RouteCalculated.*",
    "TRACKING/portal:tracking.events.EtaUpdated.*",
  ])
  for (const c of t.consumers) assert.is(c.maxDeliver, c.worker === "ops" ? -1 : 5, `${c.stream}/${c.durable}`)
  // the server spaces out redeliveries after ack timeouts: 30, 60, 120, 240 s (max_deliver must exceed their count);
  // ops' unlimited ones have none
  for (const c of t.consumers) assert.equal(c.backoffSeconds, c.worker === "ops" ? [] : [30, 60, 120, 240], `${c.stream}/${c.durable}`)
  assert.equal([serverBackoff(1, 3), serverBackoff(2, 1), serverBackoff(2, -1)], [[1, 2], [], []])
  assert.equal(
    t.streams.map((s) => s.name),
    ["ROUTING", "INVOICE", "TRACKING", "POSITIONS", "DLQ", "ADVISORIES", "REPLAY"],
  )
  // business events and dead letters are refused when full, never dropped; positions make room
  for (const s of ["ROUTING", "INVOICE", "TRACKING", "DLQ"]) assert.is(t.streams.find((x) => x.name === s)!.discard, "new", s)
  assert.is(t.streams.find((s) => s.name === "POSITIONS")!.discard, "old")
  assert.is(topology({ replicas: 3 }).replicas, 3)
  for (const w of Object.values(workers))
    for (const e of w.publishes) assert.ok(t.streams.some((s) => s.name === streamOf(e) && s.subjects.includes(subjectsOf(e))))
})

test.run()
