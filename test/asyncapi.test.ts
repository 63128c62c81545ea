// contracts/asyncapi.json: current with contracts/, a valid AsyncAPI 3.0 document, and saying what the code does.
import { readFile } from "node:fs/promises"
import { Parser } from "@asyncapi/parser"
import * as assert from "uvu/assert"
import { ASYNCAPI_FILE, render } from "../mesh/cli/asyncapi.ts"
import { ceTypeOf, type EventName, eventNames, subjectsOf, workerNames, workers } from "../contracts/mod.ts"
import { suite } from "./harness.ts"

const test = suite("asyncapi")
const committed = () => readFile(ASYNCAPI_FILE, "utf8")
// parsing runs the whole spectral ruleset (seconds): once for the file
let parsed: ReturnType<Parser["parse"]> | undefined
const parse = async () => (parsed ??= new Parser().parse(await committed()))

test("contracts/asyncapi.json - is what `npm run asyncapi` generates from contracts/ now", async () => {
  assert.ok((await committed()) === (await render()), "contracts/asyncapi.json is stale: run `npm run asyncapi` and commit it")
})

test("contracts/asyncapi.json - @asyncapi/parser finds no error or warning", async () => {
  const { document, diagnostics } = await parse()
  const serious = diagnostics.filter((d) => d.severity <= 1).map((d) => `${d.code} at ${d.path.join(".")}: ${d.message}`)
  assert.equal(serious, [])
  assert.ok(document, "parsed")
  assert.is(document!.version(), "3.0.0")
})

test("channels - one per event subject, plus dlq.{stream}.{consumer} and replay.{worker}.{stream} with their parameters", async () => {
  const { document } = await parse()
  const addresses = document!
    .channels()
    .all()
    .map((c) => c.address())
  const keyed = (e: EventName) => subjectsOf(e).replace(/\*$/, "{key}")
  assert.equal(addresses.sort(), [...eventNames.map(keyed), "dlq.{stream}.{consumer}", "replay.{worker}.{stream}"].sort())
  const dlq = document!
    .channels()
    .all()
    .find((c) => c.address() === "dlq.{stream}.{consumer}")!
  const params = Object.fromEntries(
    dlq
      .parameters()
      .all()
      .map((p) => [p.id(), (p.json() as { enum?: string[] }).enum]),
  )
  const consuming = workerNames.filter((w) => workers[w].consumes.length > 0)
  assert.equal(params, { stream: ["INVOICE", "POSITIONS", "ROUTING", "TRACKING"], consumer: consuming })
})

test("operations - each worker sends exactly what it publishes and receives exactly what it consumes", async () => {
  const { document } = await parse()
  const ops = document!.operations().all()
  for (const w of workerNames) {
    const mine = ops.filter((o) =>
      o
        .tags()
        .all()
        .some((t) => t.name() === w),
    )
    const of = (action: string) =>
      mine
        .filter((o) => o.action() === action)
        .map((o) => o.channels().all()[0]!.address())
        .filter((a) => !a?.startsWith("dlq.") && !a?.startsWith("replay."))
        .sort()
    const keyed = (e: EventName) => subjectsOf(e).replace(/\*$/, "{key}")
    assert.equal(of("send"), workers[w].publishes.map(keyed).sort(), `${w} sends`)
    assert.equal(of("receive"), workers[w].consumes.map(keyed).sort(), `${w} receives`)
    const dead = mine.some((o) => o.action() === "send" && o.channels().all()[0]!.address() === "dlq.{stream}.{consumer}")
    assert.is(dead, workers[w].consumes.length > 0 || w === "ops", `${w} dead-letters`)
  }
})

test("messages - CloudEvents headers with descriptions, ce-type fixed per event, payload from the valibot schema", async () => {
  const doc = JSON.parse(await committed())
  for (const name of eventNames) {
    const m = doc.components.messages[name]
    const headers = m.headers.properties as Record<string, { description?: string; const?: string }>
    for (const h of ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "content-type", "traceparent"]) {
      assert.type(headers[h]?.description, "string", `${name} ${h}`)
    }
    assert.is(headers["ce-type"]!.const, ceTypeOf(name))
    assert.equal(m.headers.required, ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "content-type"])
    assert.equal(m.payload, { $ref: `#/components/schemas/${name}` })
  }
  const rc = doc.components.schemas.RouteCalculated
  assert.equal(rc.required, ["routeId", "truckId", "customerId", "stops", "distanceKm", "eta", "calculatedAt"])
  assert.is(rc.additionalProperties, false)
  assert.equal(rc.properties.eta, { type: "string", format: "date-time" })
  assert.equal(rc.properties.stops.items.properties.lat, { type: "number", minimum: -90, maximum: 90 })
  assert.equal(doc.components.schemas.InvoiceGenerated.properties.totalCents, { type: "integer", minimum: 0 })
  const dlqHeaders = doc.components.messages.DeadLetter.headers
  assert.ok(dlqHeaders.required.includes("logiflow-dlq-reason"))
  assert.type(dlqHeaders.properties["logiflow-dlq-reason"].description, "string")
})

test.run()
