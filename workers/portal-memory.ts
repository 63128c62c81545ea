// workers/portal-memory.ts — the portal's read model as each instance holds it: a copy in memory of its trucks (one
// key per truck, so bounded by the fleet) kept current by a KV watch, the invoice store (portal-invoices.ts: paged
// from its bucket, only first pages cached), and the last positions (portal-positions.ts); dropped and loaded again
// around a rebuild of the buckets (mesh/rebuild.ts).
import { jetstreamManager } from "@nats-io/jetstream"
import type { KV } from "@nats-io/kv"
import { parseTime } from "../contracts/mod.ts"
import { envInt, followRebuild, type Logger, type Runtime } from "../mesh/mod.ts"
import { config as portal, type ReadModel, type TruckDoc } from "./portal-model.ts"
import { INVOICES_BUCKET, invoiceStore } from "./portal-invoices.ts"
import { positions } from "./portal-positions.ts"

export const TRUCKS_BUCKET = "portal-trucks"
export { INVOICES_BUCKET }

const config = {
  cache: {
    // at most customers × perCustomer invoices (~1 KiB each in memory): 25 MiB with the defaults
    customers: envInt("PORTAL_CACHE_CUSTOMERS", 500),
    perCustomer: Math.min(portal.pageDefault, portal.pageMax),
    maxAgeMs: envInt("PORTAL_CACHE_SECONDS", 600) * 1000,
  },
  positions: { cacheMs: envInt("PORTAL_POSITION_CACHE_MS", 1000), trucks: envInt("PORTAL_POSITION_TRUCKS", 50_000), parallel: 32 },
}

// times in events passed the contract's parser, so they parse here
const ms = (iso: string) => parseTime(iso)!

/** Newest event time applied to a truck, whether shown or not: what "as of" means for the whole list. */
const appliedAt = (doc: TruckDoc) => [doc.route?.calculatedAt, doc.tracked?.at].filter((t): t is string => !!t)

const models = new WeakMap<Runtime, ReadModel>()

export function modelOf(rt: Runtime): ReadModel {
  let m = models.get(rt)
  if (!m) {
    const jsm = () => (rt.connected ? jetstreamManager(rt.nc, { checkAPI: false }) : Promise.reject(new Error("not connected")))
    m = { trucks: new Map(), positions: positions(jsm, config.positions), asOf: { trucks: null }, stops: [] }
    models.set(rt, m)
  }
  return m
}

/** Forgets the copy in memory: the buckets are about to be emptied and filled again from the streams. */
export function unload(m: ReadModel) {
  m.stops.splice(0).forEach((stop) => stop())
  m.trucks.clear()
  m.invoices = undefined
  m.asOf = { trucks: null }
}

const later = (a: string | null, b: string) => (a === null || ms(b) > ms(a) ? b : a)

/** Mirrors a bucket into `into`; resolves once the values present at start are in (or after `waitMs`, logged). */
async function mirror<T>(
  bucket: string,
  kv: KV,
  into: Map<string, T>,
  onValue: (v: T) => void,
  log: Logger,
  waitMs = 10_000,
): Promise<() => void> {
  const state = (await kv.status()).streamInfo.state
  const watch = await kv.watch()
  let loaded!: () => void
  const initial = new Promise<void>((r) => (loaded = r))
  if (state.messages === 0) loaded()
  ;(async () => {
    for await (const e of watch) {
      if (e.operation === "PUT" && e.length > 0) {
        const value = e.json<T>()
        into.set(e.key, value)
        onValue(value)
      } else into.delete(e.key)
      if (e.revision >= state.last_seq) loaded()
    }
  })().catch((err) => log.error("KV watch ended; the portal serves what it has", { bucket, error: err }))
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), waitMs)))
  const done = await Promise.race([initial.then(() => true), late])
  clearTimeout(timer)
  if (!done) log.warn("read model not fully loaded yet; serving while it fills", { bucket, waitMs })
  return () => watch.stop()
}

async function load(rt: Runtime): Promise<void> {
  const m = modelOf(rt)
  const [trucks, invoices] = await Promise.all([rt.kv(TRUCKS_BUCKET), rt.kv(INVOICES_BUCKET)])
  m.stops.push(
    await mirror<TruckDoc>(
      TRUCKS_BUCKET,
      trucks,
      m.trucks,
      (d) => appliedAt(d).forEach((t) => (m.asOf.trucks = later(m.asOf.trucks, t))),
      rt.log,
    ),
  )
  const jsm = await jetstreamManager(rt.nc, { checkAPI: false })
  const store = await invoiceStore({ jsm, nc: rt.nc, inboxPrefix: `_INBOX_${rt.name}` }, invoices, config.cache)
  m.stops.push(() => store.stop())
  m.invoices = store
  rt.log.info("read model loaded", { trucks: m.trucks.size, invoicesAsOf: store.asOf })
}

/** Loads the model, unless a rebuild is under way: then it is loaded once the rebuild has replayed the streams. */
export async function startFollowing(rt: Runtime): Promise<void> {
  const m = modelOf(rt)
  m.rebuild = await followRebuild(rt, { begin: () => unload(m), end: () => load(rt) })
  if (!m.rebuild.state) await load(rt)
}
