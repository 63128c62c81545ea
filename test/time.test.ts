// contracts/time.ts and the contract checks built on it: strict RFC 3339 date-times (every time field of every event
// and request), and ids without control characters.
import { test } from "uvu"
import * as assert from "uvu/assert"
import { StatusError } from "itty-router"
import { ContractError, daysInMonth, eventNames, isTime, parseTime, validate } from "../contracts/mod.ts"
import { toFilter } from "../mesh/admin/mod.ts"
import { route } from "./fixtures/events.ts"

test("parseTime - full date-times with Z or an offset give their exact instant", () => {
  assert.is(parseTime("2026-11-25T08:00:00Z"), Date.UTC(2026, 10, 25, 8))
  assert.is(parseTime("2026-11-25t08:00:00z"), Date.UTC(2026, 10, 25, 8), "lower-case t and z")
  assert.is(parseTime("2026-11-25T09:30:00+01:30"), Date.UTC(2026, 10, 25, 8))
  assert.is(parseTime("2026-11-25T03:00:00-05:00"), Date.UTC(2026, 10, 25, 8))
  assert.is(parseTime("2026-11-25T08:00:00+00:00"), parseTime("2026-11-25T08:00:00-00:00"))
  assert.is(parseTime("2026-11-25T08:00:00.5Z"), Date.UTC(2026, 10, 25, 8, 0, 0, 500))
  assert.is(parseTime("2026-11-25T08:00:00.123456789Z"), Date.UTC(2026, 10, 25, 8, 0, 0, 123))
  assert.is(
    parseTime("2026-11-25T08:00:00.9999Z"),
    Date.UTC(2026, 10, 25, 8, 0, 0, 999),
    "fractions are cut, never rounded into the next second",
  )
  assert.is(parseTime("2026-12-31T23:00:00-01:00"), Date.UTC(2027, 0, 1), "an offset can cross into the next year")
  assert.is(parseTime("0001-01-01T00:00:00Z"), -62135596800000, "years below 100 are not read as 19xx")
  assert.is(parseTime("9999-12-31T23:59:59Z"), 253402300799000)
  assert.is(parseTime("2016-12-31T23:59:60Z"), Date.UTC(2017, 0, 1), "a leap second is the instant after 23:59:59")
})

test("parseTime - days are checked against their month, leap years included", () => {
  assert.is(parseTime("2024-02-29T00:00:00Z"), Date.UTC(2024, 1, 29), "2024 is a leap year")
  assert.is(parseTime("2000-02-29T00:00:00Z"), Date.UTC(2000, 1, 29), "2000: divisible by 400")
  assert.is(parseTime("2026-02-29T00:00:00Z"), undefined)
  assert.is(parseTime("1900-02-29T00:00:00Z"), undefined, "1900: divisible by 100, not by 400")
  assert.is(parseTime("2026-02-30T00:00:00Z"), undefined, "Date.parse would roll it over to March 2")
  assert.is(Number.isNaN(Date.parse("2026-02-30T00:00:00Z")), false, "…which is why it is not used")
  for (const [month, days] of [
    [1, 31],
    [3, 31],
    [4, 30],
    [5, 31],
    [6, 30],
    [7, 31],
    [8, 31],
    [9, 30],
    [10, 31],
    [11, 30],
    [12, 31],
  ] as const) {
    const mm = String(month).padStart(2, "0")
    assert.is(daysInMonth(2026, month), days)
    assert.ok(parseTime(`2026-${mm}-${days}T12:00:00Z`), `2026-${mm}-${days}`)
    assert.is(parseTime(`2026-${mm}-${days + 1}T12:00:00Z`), undefined, `2026-${mm}-${days + 1}`)
  }
  assert.is(parseTime("2026-00-10T00:00:00Z"), undefined)
  assert.is(parseTime("2026-13-10T00:00:00Z"), undefined)
  assert.is(parseTime("2026-01-00T00:00:00Z"), undefined)
})

test("parseTime - everything that is not a full RFC 3339 date-time is refused", () => {
  const bad = [
    "2026-11-25",
    "2026-11-25T08:00Z",
    "2026-11-25T08:00:00",
    "2026-11-25 08:00:00Z",
    "2026-11-25T24:00:00Z",
    "2026-11-25T23:60:00Z",
    "2026-11-25T23:59:61Z",
    "2026-11-25T08:00:00+24:00",
    "2026-11-25T08:00:00+01:60",
    "2026-11-25T08:00:00+0100",
    "2026-11-25T08:00:00+01",
    "2026-11-25T08:00:00.Z",
    "2026-11-25T08:00:00.1234567890Z",
    "+02026-11-25T08:00:00Z",
    "26-11-25T08:00:00Z",
    "2026-1-25T08:00:00Z",
    "Nov 25 2026 08:00:00 GMT",
    "1764057600000",
    " 2026-11-25T08:00:00Z",
    "2026-11-25T08:00:00Z ",
    "2026-11-25T08:00:00Z\n",
    "２０２６-11-25T08:00:00Z",
    "",
    "NaN",
  ]
  for (const s of bad) assert.is(parseTime(s), undefined, JSON.stringify(s))
  for (const x of [undefined, null, 0, 1764057600000, new Date(), {}]) assert.is(parseTime(x), undefined, String(x))
})

test("contracts - every time field of every event refuses a day that does not exist, and takes an offset", () => {
  const route1 = route(1)
  const samples: Record<string, [Record<string, unknown>, string[]]> = {
    RouteCalculated: [route1, ["eta", "calculatedAt"]],
    InvoiceGenerated: [
      {
        invoiceId: "i",
        routeId: "r",
        truckId: "t",
        customerId: "c",
        lines: [{ description: "d", amountCents: 1 }],
        totalCents: 1,
        currency: "EUR",
        issuedAt: "2026-11-25T08:00:00Z",
      },
      ["issuedAt"],
    ],
    PositionReported: [{ truckId: "t", lat: 1, lon: 2, at: "2026-11-25T08:00:00Z" }, ["at"]],
    EtaUpdated: [
      {
        truckId: "t",
        routeId: "r",
        eta: "2026-11-25T08:00:00Z",
        previousEta: "2026-11-25T08:00:00Z",
        remainingKm: 1,
        updatedAt: "2026-11-25T08:00:00Z",
      },
      ["eta", "previousEta", "updatedAt"],
    ],
  }
  assert.equal(Object.keys(samples), eventNames)
  for (const [name, [valid, fields]] of Object.entries(samples) as [never, [Record<string, unknown>, string[]]][]) {
    validate(name, valid)
    for (const f of fields) {
      validate(name, { ...valid, [f]: "2026-11-25T09:00:00.250+01:00" })
      try {
        validate(name, { ...valid, [f]: "2026-02-30T00:00:00Z" })
        assert.unreachable(`${name}.${f}: 2026-02-30 accepted`)
      } catch (err) {
        assert.instance(err, ContractError)
        assert.is((err as ContractError).reason, "invalid-event")
        assert.equal(
          (err as ContractError).issues.map((i) => i.path),
          [f],
        )
      }
    }
  }
})

test("contracts - ids with control characters (NUL, CR, LF, DEL, C1) are invalid-event; other unicode is fine", () => {
  const route1 = route(1)
  for (const c of ["\u0000", "\r", "\n", "\t", "\u001b", "\u007f", "\u0085"]) {
    for (const field of ["routeId", "truckId", "customerId"] as const) {
      try {
        validate("RouteCalculated", { ...route1, [field]: `truck${c}1` })
        assert.unreachable(`${field} with U+${c.charCodeAt(0).toString(16)} accepted`)
      } catch (err) {
        assert.is((err as ContractError).reason, "invalid-event")
        assert.equal(
          (err as ContractError).issues.map((i) => [i.path, i.message]),
          [[field, "must not contain control characters"]],
        )
      }
    }
    try {
      validate("RouteCalculated", { ...route1, stops: [{ ...route1.stops[0]!, id: `s${c}` }] })
      assert.unreachable("stop id accepted")
    } catch (err) {
      assert.equal(
        (err as ContractError).issues.map((i) => i.path),
        ["stops.0.id"],
      )
    }
  }
  validate("RouteCalculated", { ...route1, truckId: "Lkw 7/ä.. 🚚", customerId: "Ünïcødé GmbH" })
})

test("DLQ filters - since/until take durations or strict RFC 3339 times; a day that does not exist is a 400", () => {
  assert.equal(toFilter({ since: "2026-11-25T09:00:00+01:00", until: "2026-11-25T08:30:00.5Z" }), {
    since: "2026-11-25T08:00:00.000Z",
    until: "2026-11-25T08:30:00.500Z",
  })
  const fiveMinutes = Date.parse(toFilter({ since: "5m" }).since!)
  assert.ok(Math.abs(Date.now() - 300_000 - fiveMinutes) < 1000)
  for (const bad of ["2026-02-30T00:00:00Z", "2026-11-25", "yesterday"]) {
    try {
      toFilter({ since: bad })
      assert.unreachable(bad)
    } catch (err) {
      assert.instance(err, StatusError)
      assert.is((err as StatusError).status, 400)
      assert.is((err as Error).message, `"${bad}" is neither a duration (5m, 2h, 1d) nor an ISO time`)
    }
  }
})

test("isTime - the digit-by-digit check of toISOString's form agrees with parseTime, valid or not", () => {
  // every field at and around its bounds, in the 24-character form, plus other characters where digits belong
  let seed = 42
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!
  const years = ["0000", "0099", "1900", "2000", "2024", "2026", "2100", "9999", "20x6", " 026"]
  const months = ["00", "01", "02", "04", "09", "12", "13", "1a"]
  const days = ["00", "01", "28", "29", "30", "31", "32", "3-"]
  const hours = ["00", "23", "24", "9:"]
  const minutes = ["00", "59", "60"]
  const seconds = ["00", "59", "60", "61"]
  const fractions = ["000", "999", "12a", "1.2"]
  let checked = 0
  for (let i = 0; i < 20_000; i++) {
    const s = `${pick(years)}-${pick(months)}-${pick(days)}T${pick(hours)}:${pick(minutes)}:${pick(seconds)}.${pick(fractions)}Z`
    assert.is(s.length, 24)
    assert.is(isTime(s), parseTime(s) !== undefined, s)
    checked++
  }
  for (const now of [0, Date.UTC(2024, 1, 29, 23, 59, 59, 999), Date.now()]) assert.ok(isTime(new Date(now).toISOString()))
  // other forms go to parseTime itself
  for (const s of ["2026-11-25T08:00:00Z", "2026-11-25t08:00:00.000z", "2026-11-25T08:00:00.000+01:00", "2026-11-25"]) {
    assert.is(isTime(s), parseTime(s) !== undefined, s)
  }
  assert.is(checked, 20_000)
})

test.run()
