// workers/pricing.ts — prices a planned route. Money is integer cents end to end; a float never reaches an invoice.
import * as v from "valibot"
import type { InvoiceGenerated, InvoiceLine, RouteCalculated } from "../contracts/events.ts"

const Cents = v.pipe(v.number(), v.integer(), v.minValue(0))

export const Tariff = v.strictObject({
  baseCents: Cents,
  perKmCents: Cents,
  perStopCents: Cents,
  currency: v.pipe(v.string(), v.regex(/^[A-Z]{3}$/, "must be a 3-letter upper-case ISO 4217 code")),
})
export type Tariff = v.InferOutput<typeof Tariff>

const Tariffs = v.pipe(
  // v.record alone would take an array as customers "0", "1", …
  v.custom<object>((x) => typeof x === "object" && x !== null && !Array.isArray(x), "must be an object keyed by customer id"),
  v.record(v.pipe(v.string(), v.minLength(1), v.maxLength(128)), Tariff),
  // an empty override would silently leave every customer unpriced
  v.check((t) => Object.keys(t).length > 0, "must define at least one customer"),
)

export const demoTariffs: Record<string, Tariff> = {
  acme: { baseCents: 4_500, perKmCents: 120, perStopCents: 800, currency: "EUR" },
  globex: { baseCents: 6_000, perKmCents: 95, perStopCents: 1_250, currency: "USD" },
  initech: { baseCents: 3_000, perKmCents: 150, perStopCents: 500, currency: "EUR" },
}

const formatKm = (km: number): string => String(Math.round(km * 1000) / 1000)

export function priceRoute(route: RouteCalculated, tariff: Tariff, opts: { invoiceId: string; issuedAt: string }): InvoiceGenerated {
  const stopCount = route.stops.length
  const lines: InvoiceLine[] = [
    { description: "Base fee", amountCents: tariff.baseCents },
    { description: `Distance ${formatKm(route.distanceKm)} km`, amountCents: Math.round(route.distanceKm * tariff.perKmCents) },
    { description: `Stops × ${stopCount}`, amountCents: stopCount * tariff.perStopCents },
  ]
  return {
    invoiceId: opts.invoiceId,
    routeId: route.routeId,
    truckId: route.truckId,
    customerId: route.customerId,
    lines,
    totalCents: lines.reduce((sum, line) => sum + line.amountCents, 0),
    currency: tariff.currency,
    issuedAt: opts.issuedAt,
  }
}

const VAR = "INVOICE_TARIFFS"

/** `INVOICE_TARIFFS` replaces the demo tariffs wholesale; unset or blank keeps them. Throws at startup, not per invoice. */
export function tariffsFromEnv(json: string | undefined): Record<string, Tariff> {
  if (json === undefined || json.trim() === "") return demoTariffs
  let raw: unknown
  try {
    raw = JSON.parse(json)
  } catch (err) {
    throw new Error(`${VAR} is not valid JSON: ${(err as Error).message}`)
  }
  const parsed = v.safeParse(Tariffs, raw)
  if (parsed.success) return parsed.output
  const problems = parsed.issues.map((issue) => {
    const path = v.getDotPath(issue)
    return `${path ? `${VAR}.${path}` : VAR}: ${issue.message}`
  })
  throw new Error(problems.join("; "))
}
