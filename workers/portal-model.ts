// workers/portal-model.ts — the portal's read model as data: a truck's stored document and what a customer is shown
// of it (pure functions, unit-tested), and the queries the HTTP routes answer from it.
import { StatusError } from "itty-router"
import { type EtaUpdated, type InvoiceGenerated, parseTime, type RouteCalculated, type Stop } from "../contracts/mod.ts"
import { envInt, type Follower } from "../mesh/mod.ts"
import { decodeCursor, encodeCursor, type InvoiceStore } from "./portal-invoices.ts"
import type { Position, Positions } from "./portal-positions.ts"

export const config = {
  staleSeconds: envInt("PORTAL_STALE_SECONDS", 300),
  /** a position younger than this is "fresh" on the map; older than staleSeconds, "stale"; between, "late" */
  freshSeconds: envInt("PORTAL_FRESH_SECONDS", 60),
  refreshSeconds: envInt("PORTAL_REFRESH_SECONDS", 5),
  /** invoices per page: the default, and the most one request may ask for */
  pageDefault: envInt("PORTAL_PAGE_DEFAULT", 50),
  pageMax: envInt("PORTAL_PAGE_MAX", 200),
}

// --- the read model (pure) ------------------------------------------------------------------------------------

/**
 * One truck as stored. The route and the newest tracked ETA are kept apart, each replaced only by newer input,
 * because they come from different streams with no order between them: an EtaUpdated may arrive before the route
 * it belongs to, or after a newer route. Which ETA to show is decided when reading (truckView).
 */
export type TruckDoc = {
  truckId: string
  route?: { routeId: string; customerId: string; stops: Stop[]; distanceKm: number; eta: string; calculatedAt: string }
  tracked?: { routeId: string; eta: string; nextStopId?: string; remainingKm: number; at: string }
}

// times in events passed the contract's parser, so they parse here
const ms = (iso: string) => parseTime(iso)!

export function applyRoute(prev: TruckDoc | undefined, r: RouteCalculated): TruckDoc {
  const old = prev?.route
  if (old) {
    if (old.routeId === r.routeId) return prev
    const d = ms(old.calculatedAt) - ms(r.calculatedAt)
    if (d > 0 || (d === 0 && old.routeId > r.routeId)) return prev
  }
  const { routeId, customerId, stops, distanceKm, eta, calculatedAt } = r
  return {
    truckId: r.truckId,
    route: { routeId, customerId, stops, distanceKm, eta, calculatedAt },
    ...(prev?.tracked ? { tracked: prev.tracked } : {}),
  }
}

export function applyEta(prev: TruckDoc | undefined, e: EtaUpdated): TruckDoc {
  // the same or an older update (redelivery, replay, a late instance) never overwrites a newer one
  if (prev?.tracked && ms(e.updatedAt) <= ms(prev.tracked.at)) return prev
  const tracked = {
    routeId: e.routeId,
    eta: e.eta,
    remainingKm: e.remainingKm,
    at: e.updatedAt,
    ...(e.nextStopId ? { nextStopId: e.nextStopId } : {}),
  }
  return { ...(prev ?? { truckId: e.truckId }), tracked }
}

/**
 * Trucks are served from memory, filled by a KV watch: at start the watch delivers every key's current value, then
 * each change as it is written. Not filled by this instance's handlers, because instances share one durable, so
 * each handles only part of the events; the KV is the whole model. One key per truck: the copy grows with the fleet,
 * not with history. Invoices, which do grow with history, stay in their bucket and are read a page at a time.
 */
export type ReadModel = {
  trucks: Map<string, TruckDoc>
  /** undefined until loaded (and while a rebuild runs) */
  invoices?: InvoiceStore
  positions: Positions
  asOf: { trucks: string | null }
  stops: (() => void)[]
  /** `logiflow rebuild portal` (mesh/rebuild.ts): while it runs, nothing is served as complete */
  rebuild?: Follower
}

export type TruckView = {
  truckId: string
  routeId: string
  customerId: string
  stops: Stop[]
  nextStopId: string | null
  remainingKm: number | null
  eta: string
  etaSource: "planned" | "tracked"
  updatedAt: string
  stale: boolean
}

export type InvoiceView = InvoiceGenerated & { updatedAt: string; stale: boolean }

/** How old a truck's last position is, for the map's colours: "none" until it has reported one. */
export type PositionAge = "fresh" | "late" | "stale" | "none"
export type MappedTruck = TruckView & { position: Position | null; positionAge: PositionAge }

export function positionAge(
  p: Position | null,
  now = Date.now(),
  freshSeconds = config.freshSeconds,
  staleSeconds = config.staleSeconds,
): PositionAge {
  if (!p) return "none"
  const age = now - ms(p.at)
  return age <= freshSeconds * 1000 ? "fresh" : age <= staleSeconds * 1000 ? "late" : "stale"
}

const isStale = (updatedAt: string, now: number, staleSeconds: number) => now - ms(updatedAt) > staleSeconds * 1000

/** Undefined until the truck's route is known: a customer sees a truck only once it has a route for them. */
export function truckView(doc: TruckDoc, now = Date.now(), staleSeconds = config.staleSeconds): TruckView | undefined {
  const route = doc.route
  if (!route) return undefined
  const tracked = doc.tracked?.routeId === route.routeId ? doc.tracked : undefined
  const updatedAt = tracked && ms(tracked.at) > ms(route.calculatedAt) ? tracked.at : route.calculatedAt
  return {
    truckId: doc.truckId,
    routeId: route.routeId,
    customerId: route.customerId,
    stops: route.stops,
    nextStopId: tracked ? (tracked.nextStopId ?? null) : (route.stops[0]?.id ?? null),
    remainingKm: tracked ? tracked.remainingKm : route.distanceKm,
    eta: tracked ? tracked.eta : route.eta,
    etaSource: tracked ? "tracked" : "planned",
    updatedAt,
    stale: isStale(updatedAt, now, staleSeconds),
  }
}

export const invoiceView = (inv: InvoiceGenerated, now = Date.now(), staleSeconds = config.staleSeconds): InvoiceView => ({
  ...inv,
  updatedAt: inv.issuedAt,
  stale: isStale(inv.issuedAt, now, staleSeconds),
})

// --- queries --------------------------------------------------------------------------------------------------

/** The trucks whose current route is for `customerId`. */
export function listTrucks(m: ReadModel, customerId: string, now = Date.now()): { trucks: TruckView[]; asOf: string | null } {
  const trucks = [...m.trucks.values()]
    .map((d) => truckView(d, now))
    .filter((t): t is TruckView => !!t && t.customerId === customerId)
    .sort((a, b) => (a.truckId < b.truckId ? -1 : a.truckId > b.truckId ? 1 : 0))
  return { trucks, asOf: m.asOf.trucks }
}

/** The same, each with its last position (from POSITIONS) and how old that is: what the map draws. */
export async function mapTrucks(
  m: ReadModel,
  customerId: string,
  now = Date.now(),
): Promise<{ trucks: MappedTruck[]; asOf: string | null }> {
  const { trucks, asOf } = listTrucks(m, customerId, now)
  const at = await m.positions.of(trucks.map((t) => t.truckId))
  return {
    trucks: trucks.map((t) => {
      const position = at.get(t.truckId) ?? null
      return { ...t, position, positionAge: positionAge(position, now) }
    }),
    asOf,
  }
}

export type InvoicePage = { invoices: InvoiceView[]; asOf: string | null; limit: number; next: string | null }

/** One page of the customer's invoices, newest first; `next` is the cursor of the page after it, if any. */
export async function listInvoices(m: ReadModel, customerId: string, limit = config.pageDefault, cursor?: string): Promise<InvoicePage> {
  const before = cursor === undefined ? undefined : decodeCursor(cursor)
  if (cursor !== undefined && before === undefined)
    throw new StatusError(400, "cursor is not one this portal gave out; start again without it")
  const store = m.invoices
  if (!store) throw new StatusError(503, "the invoices are not loaded yet; try again shortly")
  const now = Date.now()
  const page = await store.page(customerId, limit, before)
  return {
    invoices: page.items.map((f) => invoiceView(f.invoice, now)),
    asOf: store.asOf,
    limit,
    next: page.next === null ? null : encodeCursor(page.next),
  }
}

/** `?limit=`: a whole number from 1; more than the maximum is the maximum (the answer says which was used). */
export function limitOf(raw: string | undefined): number {
  if (raw === undefined) return Math.min(config.pageDefault, config.pageMax)
  const n = Number(raw)
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1)
    throw new StatusError(400, `limit must be a whole number from 1 to ${config.pageMax}, got "${raw}"`)
  return Math.min(n, config.pageMax)
}
