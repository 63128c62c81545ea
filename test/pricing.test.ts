import { test } from "uvu"
import * as assert from "uvu/assert"
import * as v from "valibot"
import { InvoiceGenerated, type RouteCalculated } from "../contracts/events.ts"
import { demoTariffs, priceRoute, tariffsFromEnv, type Tariff } from "../workers/pricing.ts"

const route: RouteCalculated = {
  routeId: "r-1",
  truckId: "t-7",
  customerId: "acme",
  stops: [
    { id: "a", lat: 45.76, lon: 4.84 },
    { id: "b", lat: 45.19, lon: 5.72 },
    { id: "c", lat: 45.9, lon: 6.13 },
  ],
  distanceKm: 123.456,
  eta: "2025-03-10T12:00:00.000Z",
  calculatedAt: "2025-03-10T08:00:00.000Z",
}
const tariff: Tariff = { baseCents: 4_500, perKmCents: 120, perStopCents: 800, currency: "EUR" }
const opts = { invoiceId: "inv-1", issuedAt: "2025-03-10T08:00:01.000Z" }

test("pricing - prices a route to the exact cent", () => {
  // 123.456 km × 120 = 14 814.72 → 14 815; 3 stops × 800 = 2 400; 4 500 + 14 815 + 2 400 = 21 715
  assert.equal(priceRoute(route, tariff, opts), {
    invoiceId: "inv-1",
    routeId: "r-1",
    truckId: "t-7",
    customerId: "acme",
    lines: [
      { description: "Base fee", amountCents: 4_500 },
      { description: "Distance 123.456 km", amountCents: 14_815 },
      { description: "Stops × 3", amountCents: 2_400 },
    ],
    totalCents: 21_715,
    currency: "EUR",
    issuedAt: "2025-03-10T08:00:01.000Z",
  })
})

test("pricing - invoice passes the InvoiceGenerated contract", () => {
  const invoice = priceRoute(route, tariff, opts)
  assert.equal(v.parse(InvoiceGenerated, invoice), invoice)
})

test("pricing - total is the sum of integer lines for every demo tariff", () => {
  for (const [customerId, t] of Object.entries(demoTariffs)) {
    for (const distanceKm of [0, 0.001, 12.3456, 99.995, 1234.567]) {
      const invoice = priceRoute({ ...route, customerId, distanceKm }, t, opts)
      const sum = invoice.lines.reduce((s, l) => s + l.amountCents, 0)
      assert.is(invoice.totalCents, sum)
      for (const l of invoice.lines) assert.ok(Number.isInteger(l.amountCents), `${l.description}: ${l.amountCents}`)
      assert.ok(v.safeParse(InvoiceGenerated, invoice).success, `${customerId} @ ${distanceKm} km`)
    }
  }
})

test("pricing - demo tariffs cover exactly acme, globex and initech, each distinct and valid", () => {
  assert.equal(Object.keys(demoTariffs).sort(), ["acme", "globex", "initech"])
  const distinct = new Set(Object.values(demoTariffs).map((t) => JSON.stringify(t)))
  assert.is(distinct.size, 3)
  assert.equal(tariffsFromEnv(JSON.stringify(demoTariffs)), demoTariffs)
})

test("pricing - tariffsFromEnv falls back to the demo tariffs when unset or blank", () => {
  assert.is(tariffsFromEnv(undefined), demoTariffs)
  assert.is(tariffsFromEnv("  "), demoTariffs)
})

test("pricing - tariffsFromEnv replaces the demo tariffs with a valid override", () => {
  const override = { hooli: { baseCents: 100, perKmCents: 2, perStopCents: 3, currency: "GBP" } }
  assert.equal(tariffsFromEnv(JSON.stringify(override)), override)
})

test("pricing - tariffsFromEnv rejects malformed JSON", () => {
  assert.throws(() => tariffsFromEnv("{acme:"), /INVOICE_TARIFFS is not valid JSON/)
})

const rejects = (value: unknown, field: RegExp): void => {
  let message = ""
  try {
    tariffsFromEnv(JSON.stringify(value))
  } catch (err) {
    message = (err as Error).message
  }
  assert.ok(message !== "", `accepted ${JSON.stringify(value)}`)
  assert.match(message, field)
}

test("pricing - tariffsFromEnv names the bad field", () => {
  const good = { baseCents: 100, perKmCents: 2, perStopCents: 3, currency: "EUR" }
  rejects({ acme: { ...good, perKmCents: "12" } }, /INVOICE_TARIFFS\.acme\.perKmCents/)
  rejects({ acme: { ...good, baseCents: 1.5 } }, /INVOICE_TARIFFS\.acme\.baseCents/)
  rejects({ acme: { ...good, perStopCents: -1 } }, /INVOICE_TARIFFS\.acme\.perStopCents/)
  rejects({ acme: { ...good, currency: "eur" } }, /INVOICE_TARIFFS\.acme\.currency/)
  rejects({ acme: { ...good, perkm: 3 } }, /INVOICE_TARIFFS\.acme\.perkm/)
  rejects({ globex: good, acme: (({ currency: _, ...rest }) => rest)(good) }, /INVOICE_TARIFFS\.acme\.currency/)
  rejects([good], /INVOICE_TARIFFS/)
  rejects({}, /at least one customer/)
})

test.run()
