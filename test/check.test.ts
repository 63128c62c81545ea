// contracts/check.ts: the fast path of the contract check must agree with valibot on everything. Each schema of the
// contracts and of the HTTP edge gets its valid input and thousands of broken variants of it (a field removed,
// added, retyped, pushed past a bound); for each, parser(schema) and v.safeParse must give the same verdict, the same
// output (keys and their order included) and the same issues.
import { test } from "uvu"
import * as assert from "uvu/assert"
import * as v from "valibot"
import { type EventName, eventNames, events, fastPath, parser } from "../contracts/mod.ts"
import { PositionBatch } from "../workers/tracking.ts"
import { prng } from "../workers/fleet.ts"
import { RouteRequest } from "../workers/routing.ts"
import { invoice, route } from "./fixtures/events.ts"

const ODD: unknown[] = [
  undefined,
  null,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  -0,
  0,
  -1,
  0.5,
  1e308,
  -90,
  90,
  90.000001,
  -180.5,
  180,
  300,
  300.01,
  2 ** 53,
  "",
  "x",
  "EUR",
  "eur",
  "\u0000",
  "a\u0085b",
  "a".repeat(128),
  "a".repeat(129),
  "a".repeat(201),
  "2026-11-25T10:00:00Z",
  "2026-11-25T10:00:00.000Z",
  "2026-02-30T00:00:00Z",
  "2026-11-25 10:00:00Z",
  true,
  false,
  [],
  {},
  [1],
  { id: "s" },
]

const valid: Record<string, { schema: v.GenericSchema; inputs: unknown[] }> = {
  RouteCalculated: {
    schema: events.RouteCalculated.versions[1],
    inputs: [route(1), route(2, { stops: [{ id: "a", lat: -90, lon: 180 }] })],
  },
  InvoiceGenerated: {
    schema: events.InvoiceGenerated.versions[1],
    inputs: [invoice(), invoice({ lines: [{ description: "", amountCents: 0 }], totalCents: 0 })],
  },
  PositionReported: {
    schema: events.PositionReported.versions[1],
    inputs: [
      { truckId: "t-1", lat: 52.5, lon: 13.4, at: "2026-11-25T10:00:00Z" },
      { truckId: "t-1", lat: 52.5, lon: 13.4, speedKmh: 80, at: "2026-11-25T10:00:00.5+01:00" },
    ],
  },
  EtaUpdated: {
    schema: events.EtaUpdated.versions[1],
    inputs: [
      {
        truckId: "t-1",
        routeId: "r-1",
        eta: "2026-11-25T12:00:00Z",
        previousEta: "2026-11-25T11:00:00Z",
        nextStopId: "s-2",
        remainingKm: 3.5,
        updatedAt: "2026-11-25T10:00:00Z",
      },
    ],
  },
  RouteRequest: {
    schema: RouteRequest,
    inputs: [
      {
        truckId: "truck-1",
        customerId: "acme",
        depot: { lat: 52.52, lon: 13.405 },
        stops: [
          { id: "a", lat: 52.53, lon: 13.41 },
          { id: "b", lat: 52.5, lon: 13.39 },
        ],
        departAt: "2026-11-25T08:00:00Z",
      },
    ],
  },
  PositionBatch: {
    schema: PositionBatch,
    inputs: [{ positions: [{ truckId: "t-1", lat: 1, lon: 2, at: "2026-11-25T10:00:00Z" }] }],
  },
  // every construct the fast path mirrors, beyond those the contracts use today
  synthetic: {
    schema: v.strictObject({
      kind: v.literal("a"),
      mode: v.picklist(["x", "y"]),
      on: v.boolean(),
      n: v.pipe(v.number(), v.gtValue(0), v.integer()),
      tag: v.optional(v.pipe(v.string(), v.regex(/^[a-z]+$/))),
      weight: v.optional(v.number()),
      list: v.pipe(v.array(v.string()), v.minLength(0), v.maxLength(3)),
    }),
    inputs: [
      { kind: "a", mode: "y", on: false, n: 3, list: ["p", "q"] },
      { kind: "a", mode: "x", on: true, n: 1, tag: "ok", weight: -0.5, list: [] },
    ],
  },
}

/** a deep copy with one change at a random place: a key removed or added, a value replaced, an array grown or emptied */
function mutate(value: unknown, r: () => number): unknown {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!
  const holder: Record<string, unknown> = { root: structuredClone(value) }
  // walk down to a random container, sometimes stopping early
  let parent: Record<string | number, unknown> | unknown[] = holder
  let key: string | number = "root"
  for (;;) {
    const here: unknown = (parent as Record<string | number, unknown>)[key]
    const keys: (string | number)[] = Array.isArray(here)
      ? here.map((_, i) => i)
      : here && typeof here === "object"
        ? Object.keys(here)
        : []
    if (!keys.length || r() < 0.3) break
    parent = here as Record<string | number, unknown>
    key = pick(keys)
  }
  const target = parent as Record<string | number, unknown>
  const here = target[key]
  const roll = r()
  if (roll < 0.15 && !Array.isArray(target)) delete target[key]
  else if (roll < 0.25 && here && typeof here === "object" && !Array.isArray(here))
    (here as Record<string, unknown>)[pick(["extra", "__proto__", "constructor", "id"])] = pick(ODD)
  else if (roll < 0.35 && Array.isArray(here)) {
    if (r() < 0.5) here.length = 0
    else for (let n = 0, k = here.length; n < 210 && k > 0; n++) here.push(structuredClone(here[n % k]))
  } else if (roll < 0.4 && Array.isArray(here))
    here[here.length + 1] = here[0] // a hole in the middle
  else target[key] = pick(ODD)
  return holder.root
}

for (const [name, { schema, inputs }] of Object.entries(valid)) {
  test(`parser - ${name}: the same verdict, output and issues as valibot on valid and broken input`, () => {
    const fast = fastPath(schema)
    assert.ok(fast, `${name} has a fast path`)
    const parse = parser(schema)
    const r = prng(name.length * 7919)
    let accepted = 0
    let refused = 0
    let fastAccepted = 0
    const all = [...inputs, ...ODD, ...Array.from({ length: 3000 }, (_, i) => mutate(inputs[i % inputs.length], r))]
    for (const [i, input] of all.entries()) {
      const mine = parse(input)
      const theirs = v.safeParse(schema, input)
      const what = `${name} input ${i}: ${JSON.stringify(input)?.slice(0, 300)}`
      assert.is(mine.success, theirs.success, what)
      if (mine.success) {
        accepted++
        if (fast(input)) fastAccepted++
        assert.equal(mine.output, theirs.output, what)
        assert.is(JSON.stringify(mine.output), JSON.stringify(theirs.output), `${what}: keys in the same order`)
      } else {
        refused++
        assert.equal(
          mine.issues.map((x) => [v.getDotPath(x), x.message]),
          theirs.issues!.map((x) => [v.getDotPath(x), x.message]),
          what,
        )
      }
    }
    for (const input of inputs) assert.ok(fast(input), `${name}: the valid input takes the fast path`)
    // the generator must reach both sides, or this test checks little
    assert.ok(accepted >= inputs.length + 20, `${name}: ${accepted} accepted`)
    assert.ok(refused >= 1000, `${name}: ${refused} refused`)
    assert.is(fastAccepted, accepted, `${name}: everything valibot accepts, the fast path accepts too`)
  })
}

test("parser - every event version has a fast path", () => {
  for (const name of eventNames as readonly EventName[]) {
    for (const schema of Object.values(events[name].versions)) assert.ok(fastPath(schema as v.GenericSchema), name)
  }
})

test("parser - a schema with a construct it does not mirror goes to valibot whole, with valibot's answers", () => {
  const schema = v.strictObject({
    at: v.pipe(
      v.string(),
      v.transform((s) => s.length),
    ),
    n: v.optional(v.number(), 5),
  })
  assert.is(fastPath(schema), undefined)
  const parse = parser(schema)
  assert.equal(parse({ at: "abc" }).output, { at: 3, n: 5 })
  assert.is(parse({ at: 1 }).success, false)
})

test("parser - a strict object refuses an inherited or __proto__ key exactly as valibot does", () => {
  const schema = events.PositionReported.versions[1]
  const parse = parser(schema)
  const json = JSON.parse('{"truckId":"t","lat":1,"lon":2,"at":"2026-11-25T10:00:00Z","__proto__":{"x":1}}')
  assert.is(parse(json).success, v.safeParse(schema, json).success)
  assert.is(parse(json).success, false)
  const inherited = Object.assign(Object.create({ speedKmh: 5 }), { truckId: "t", lat: 1, lon: 2, at: "2026-11-25T10:00:00Z" })
  assert.equal(parse(inherited), v.safeParse(schema, inherited))
})

test.run()
