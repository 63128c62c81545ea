// contracts/events.ts — the domain events. A schema and its type share one name.
import * as v from "valibot"
import { isTime } from "./time.ts"

/** An id: 1–128 characters, none of them a control character (C0, DEL, C1: they break logs, headers, terminals). */
export const Id = v.pipe(v.string(), v.minLength(1), v.maxLength(128), v.regex(/^[^\x00-\x1f\x7f-\x9f]*$/, "must not contain control characters"))
/** An RFC 3339 date-time that parses to a real instant (contracts/time.ts): `2026-02-30T00:00:00Z` is refused. */
export const Time = v.pipe(
  v.string(),
  v.check((s: string) => isTime(s), "must be an RFC 3339 date-time such as 2026-11-25T08:00:00Z (a real day, seconds included, Z or ±hh:mm)"),
  v.metadata({ format: "date-time" }),
)
const Lat = v.pipe(v.number(), v.finite(), v.minValue(-90), v.maxValue(90))
const Lon = v.pipe(v.number(), v.finite(), v.minValue(-180), v.maxValue(180))
const Cents = v.pipe(v.number(), v.integer(), v.minValue(0))

export const Stop = v.strictObject({ id: Id, lat: Lat, lon: Lon })
export type Stop = v.InferOutput<typeof Stop>

export const RouteCalculated = v.strictObject({
  routeId: Id,
  truckId: Id,
  customerId: Id,
  /** in planned order */
  stops: v.pipe(v.array(Stop), v.minLength(1), v.maxLength(200)),
  distanceKm: v.pipe(v.number(), v.finite(), v.minValue(0)),
  eta: Time,
  calculatedAt: Time,
})
export type RouteCalculated = v.InferOutput<typeof RouteCalculated>

export const InvoiceLine = v.strictObject({ description: v.pipe(v.string(), v.maxLength(200)), amountCents: Cents })
export type InvoiceLine = v.InferOutput<typeof InvoiceLine>

export const InvoiceGenerated = v.strictObject({
  invoiceId: Id,
  routeId: Id,
  truckId: Id,
  customerId: Id,
  lines: v.pipe(v.array(InvoiceLine), v.minLength(1), v.maxLength(50)),
  totalCents: Cents,
  currency: v.pipe(v.string(), v.regex(/^[A-Z]{3}$/)),
  issuedAt: Time,
})
export type InvoiceGenerated = v.InferOutput<typeof InvoiceGenerated>

export const PositionReported = v.strictObject({
  truckId: Id,
  lat: Lat,
  lon: Lon,
  speedKmh: v.optional(v.pipe(v.number(), v.finite(), v.minValue(0), v.maxValue(300))),
  at: Time,
})
export type PositionReported = v.InferOutput<typeof PositionReported>

export const EtaUpdated = v.strictObject({
  truckId: Id,
  routeId: Id,
  eta: Time,
  previousEta: Time,
  nextStopId: v.optional(Id),
  remainingKm: v.pipe(v.number(), v.finite(), v.minValue(0)),
  updatedAt: Time,
})
export type EtaUpdated = v.InferOutput<typeof EtaUpdated>

/**
 * Every event the mesh knows: its domain (which fixes subject and stream) and the schema of each version.
 * A new version is a new entry in `versions`; consumers dead-letter versions they do not list (`unknown-version`).
 */
export const events = {
  RouteCalculated: { domain: "routing", versions: { 1: RouteCalculated } },
  InvoiceGenerated: { domain: "invoice", versions: { 1: InvoiceGenerated } },
  PositionReported: { domain: "tracking", versions: { 1: PositionReported } },
  EtaUpdated: { domain: "tracking", versions: { 1: EtaUpdated } },
} as const

export type EventName = keyof typeof events
export type EventData<N extends EventName> = v.InferOutput<(typeof events)[N]["versions"][1]>
export type Domain = (typeof events)[EventName]["domain"]

export const eventNames = Object.keys(events) as EventName[]
export const isEventName = (s: string): s is EventName => Object.hasOwn(events, s)

const subjects = Object.fromEntries(eventNames.map((n) => [n, `${events[n].domain}.events.${n}`])) as Record<EventName, string>
/** `routing.events.RouteCalculated` (made once per event: a consumer compares it with every message's subject) */
export const subjectOf = (name: EventName): string => subjects[name]
/** The stream a domain's events live in: `ROUTING`, `INVOICE`, `TRACKING`. */
export const streamOf = (name: EventName): string => events[name].domain.toUpperCase()
/** `logiflow.routing.RouteCalculated.v1` */
export const ceTypeOf = (name: EventName, version = 1): string => `logiflow.${events[name].domain}.${name}.v${version}`
