// contracts/events.ts — the domain events. A schema and its type share one name.
import * as v from "valibot"
import { isTime } from "./time.ts"

/** An id: 1–128 characters, none of them a control character (C0, DEL, C1: they break logs, headers, terminals). */
export const Id = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(128),
  v.regex(/^[^\x00-\x1f\x7f-\x9f]*$/, "must not contain control characters"),
)
/** An RFC 3339 date-time that parses to a real instant (contracts/time.ts): `2026-02-30T00:00:00Z` is refused. */
export const Time = v.pipe(
  v.string(),
  v.check(
    (s: string) => isTime(s),
    "must be an RFC 3339 date-time such as 2026-11-25T08:00:00Z (a real day, seconds included, Z or ±hh:mm)",
  ),
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
 * Every event the mesh knows: its domain (the first token of its subject), the stream that stores it, and the schema
 * of each version. A new version is a new entry in `versions`; consumers dead-letter versions they do not list
 * (`unknown-version`). Positions are telemetry and live apart (POSITIONS drops old ones to make room); everything
 * else is a business event that is never dropped.
 */
export const events = {
  RouteCalculated: { domain: "routing", stream: "ROUTING", versions: { 1: RouteCalculated } },
  InvoiceGenerated: { domain: "invoice", stream: "INVOICE", versions: { 1: InvoiceGenerated } },
  PositionReported: { domain: "tracking", stream: "POSITIONS", versions: { 1: PositionReported } },
  EtaUpdated: { domain: "tracking", stream: "TRACKING", versions: { 1: EtaUpdated } },
} as const

export type EventName = keyof typeof events
export type EventData<N extends EventName> = v.InferOutput<(typeof events)[N]["versions"][1]>
export type Domain = (typeof events)[EventName]["domain"]

export const eventNames = Object.keys(events) as EventName[]
export const isEventName = (s: string): s is EventName => Object.hasOwn(events, s)

/**
 * Each event's key: its ordering key (the CloudEvents `subject`, `ce-subject`: one key's events are handled in order)
 * and the last token of its NATS subject, so that per-key limits, guards and partitions can act on it. A truck for
 * what happens to a truck; the route for an invoice, because a route is billed once (a second InvoiceGenerated on
 * the route's subject is refused at publish).
 */
const keys: { [N in EventName]: (data: EventData<N>) => string } = {
  RouteCalculated: (d) => d.truckId,
  InvoiceGenerated: (d) => d.routeId,
  PositionReported: (d) => d.truckId,
  EtaUpdated: (d) => d.truckId,
}
export const keyOf = <N extends EventName>(name: N, data: EventData<N>): string => keys[name](data)

const PLAIN = /^[A-Za-z0-9_-]{1,128}$/
/**
 * A key as one subject token: letters, digits, `-` and `_` as they are; every other byte (`.`, `*`, `>`, space, `=`,
 * non-ASCII) as `=XX`, so that two keys never share a token and no key can add tokens or wildcards to a subject.
 */
export function subjectToken(key: string): string {
  if (PLAIN.test(key)) return key
  let out = ""
  for (const b of new TextEncoder().encode(key)) {
    const c = String.fromCharCode(b)
    out += /[A-Za-z0-9_-]/.test(c) ? c : `=${b.toString(16).toUpperCase().padStart(2, "0")}`
  }
  return out || "="
}

const prefixes = Object.fromEntries(eventNames.map((n) => [n, `${events[n].domain}.events.${n}.`])) as Record<EventName, string>
/** `routing.events.RouteCalculated.truck-7`: where an event with this key is published. */
export const subjectOf = (name: EventName, key: string): string => prefixes[name] + subjectToken(key)
/** `routing.events.RouteCalculated.*`: every subject of one event type (a consumer's filter, a tail). */
export const subjectsOf = (name: EventName): string => `${prefixes[name]}*`
/** The event a subject belongs to, from its prefix; undefined for any other subject. */
export function eventOfSubject(subject: string): EventName | undefined {
  const last = subject.lastIndexOf(".")
  const name = subject.slice(subject.lastIndexOf(".", last - 1) + 1, last)
  return isEventName(name) && subject.startsWith(prefixes[name]) && subject.length > prefixes[name].length ? name : undefined
}
/** The stream an event lives in: `ROUTING`, `INVOICE`, `TRACKING`, `POSITIONS`. */
export const streamOf = (name: EventName): string => events[name].stream
/** `logiflow.routing.RouteCalculated.v1` */
export const ceTypeOf = (name: EventName, version = 1): string => `logiflow.${events[name].domain}.${name}.v${version}`
