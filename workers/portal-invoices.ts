// workers/portal-invoices.ts — the portal's invoices, stored once per invoice in the `portal-invoices` bucket under
// `<customer>.<invoice>` and read a page at a time for one customer, newest first. Nothing here holds the history in
// memory: a page is read from the bucket's stream, and only each recently asked customer's first page is cached.
import { AckPolicy, DeliverPolicy, type JetStreamManager } from "@nats-io/jetstream"
import { type KV, KvWatchInclude } from "@nats-io/kv"
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node"
import { type InvoiceGenerated, subjectToken } from "../contracts/mod.ts"
import { ApiCode, apiCode } from "../mesh/mod.ts"

export const INVOICES_BUCKET = "portal-invoices"
const STREAM = `KV_${INVOICES_BUCKET}`

/**
 * `acme.inv-42`: one subject token per id (contracts' subjectToken: letters, digits, `-`, `_` kept, every other byte
 * `=XX`), so a customer's invoices are exactly the keys `<customer>.*`, whatever either id holds: a customer named
 * `acme.eu` cannot reach into `acme`'s keys.
 */
export const invoiceKey = (customerId: string, invoiceId: string) => `${subjectToken(customerId)}.${subjectToken(invoiceId)}`

/** Stores an invoice once: the first one stored stays (an invoice never changes), a redelivery writes nothing. */
export async function storeInvoice(kv: KV, inv: InvoiceGenerated): Promise<void> {
  try {
    await kv.create(invoiceKey(inv.customerId, inv.invoiceId), JSON.stringify(inv))
  } catch (err) {
    if (apiCode(err) !== ApiCode.WrongLastSequence) throw err
  }
}

export type Found = { seq: number; invoice: InvoiceGenerated }
export type Page = { items: Found[] /** the sequence below which the next page starts, if there is one */; next: number | null }

const toBase64url = (s: string) => btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "")
const fromBase64url = (s: string) => atob(s.replaceAll("-", "+").replaceAll("_", "/"))

/** `{ before: 1234 }` ↔ an opaque string: a cursor says where the next page starts, nothing about whose it is. */
export const encodeCursor = (before: number) => toBase64url(JSON.stringify({ v: 1, before }))
export function decodeCursor(cursor: string): number | undefined {
  try {
    const c = JSON.parse(fromBase64url(cursor)) as { v?: unknown; before?: unknown }
    return c.v === 1 && Number.isSafeInteger(c.before) && (c.before as number) > 0 ? (c.before as number) : undefined
  } catch {
    return undefined
  }
}

/** The sequence of a message pushed by a consumer, from its ack subject (both the short and the domain form). */
function seqOf(reply: string | undefined): number {
  const t = (reply ?? "").split(".")
  return Number(t.length === 9 ? t[5] : t[7])
}

/** What reading needs: the manager, the connection, and the private inbox prefix the worker's user may subscribe to. */
export type Reader = { jsm: JetStreamManager; nc: NatsConnection; inboxPrefix: string }

/**
 * A window of the customer's invoices from sequence `from` on, through a short-lived push consumer: its creation
 * answers how many of the customer's messages lie at or after `from` (num_pending), and it pushes at most `cap` of
 * them (max_ack_pending, never acked), so a window that turns out too wide costs one round trip, not a flood.
 */
async function open(r: Reader, filter: string, from: number, cap: number) {
  const name = `page${crypto.randomUUID().replaceAll("-", "")}`
  const inbox = `${r.inboxPrefix}.${name}`
  const sub = r.nc.subscribe(inbox)
  const close = () => {
    sub.unsubscribe()
    r.jsm.consumers.delete(STREAM, name).catch(() => {})
  }
  try {
    const info = await r.jsm.consumers.add(STREAM, {
      name,
      deliver_subject: inbox,
      filter_subject: filter,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: from,
      ack_policy: AckPolicy.Explicit,
      max_ack_pending: cap,
      mem_storage: true,
      num_replicas: 1,
      inactive_threshold: 10_000_000_000,
    })
    return { pending: info.num_pending, sub, close }
  } catch (err) {
    close()
    throw err
  }
}

/** Reads the window's messages below `below`: `count` of them, or fewer if one at `below` or later comes first. */
async function read(sub: Subscription, count: number, below: number) {
  const out: Found[] = []
  if (count <= 0) return out
  let seen = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), 5000)))
  const it = sub[Symbol.asyncIterator]()
  try {
    while (seen < count) {
      const next = await Promise.race([it.next(), late])
      if (next === "late") throw new Error("the invoice store did not deliver a page in time")
      if (next.done) break
      const m: Msg = next.value
      const seq = seqOf(m.reply)
      if (!(seq < below)) break
      seen++
      // a key deleted by hand leaves a marker (no body); it is counted, not shown
      if (m.data.length > 0 && !m.headers?.get("KV-Operation")) out.push({ seq, invoice: JSON.parse(new TextDecoder().decode(m.data)) })
    }
  } finally {
    clearTimeout(timer)
  }
  return out
}

/**
 * The customer's newest `limit` invoices stored before sequence `before` (all of them without it), newest first.
 * It walks the bucket's stream backwards in windows, counting before it reads: each window's size is guessed from
 * the customer's share of the last one, and a window holding far more than needed is narrowed before anything is
 * read. The cost follows the page, not the history: another customer's volume only spreads this one's invoices over
 * more sequences, which the server skips.
 */
export async function readPage(r: Reader, customerId: string, limit: number, before?: number): Promise<Page> {
  const filter = `$KV.${INVOICES_BUCKET}.${subjectToken(customerId)}.*`
  const state = (await r.jsm.streams.info(STREAM)).state
  const first = Math.max(1, state.first_seq)
  const need = limit + 1
  const cap = 4 * need
  let hi = Math.min(before ?? state.last_seq + 1, state.last_seq + 1)
  let above = 0
  if (hi <= state.last_seq) {
    const at = await open(r, filter, hi, 1)
    at.close()
    above = at.pending
  }
  let width = need * 8
  let got: Found[] = []
  for (let round = 0; hi > first && got.length < need && round < 64; round++) {
    const lo = Math.max(first, hi - width)
    const w = await open(r, filter, lo, cap)
    const inside = w.pending - above
    if (inside > cap && hi - lo > 1) {
      w.close()
      width = Math.max(1, Math.floor(((hi - lo) * need * 2) / inside))
      continue
    }
    try {
      got = [...(await read(w.sub, inside, hi)), ...got]
    } finally {
      w.close()
    }
    const span = hi - lo
    hi = lo
    above = w.pending
    const missing = need - got.length
    width = inside > 0 ? Math.max(span * 2, Math.ceil(((span * missing) / inside) * 1.5)) : span * 4
  }
  const items = got.slice(-limit).reverse()
  return { items, next: got.length > limit ? items.at(-1)!.seq : null }
}

export type CacheOptions = {
  /** customers whose first page is kept (least recently asked dropped first) */
  customers: number
  /** invoices kept per customer: the default page */
  perCustomer: number
  /** a cached page is read again after this long (an invoice can expire with the bucket's TTL) */
  maxAgeMs: number
}

type Cached = { items: Found[]; more: boolean; at: number }

export type InvoiceStore = {
  /** newest first; the first page of a recently asked customer from memory, every other page from the bucket */
  page(customerId: string, limit: number, before?: number): Promise<Page>
  /** the newest issue time the portal has applied, of any customer: how current the invoice lists are */
  readonly asOf: string | null
  readonly cached: number
  stop(): void
}

/**
 * The store with its cache: each cached first page is kept current by one watch of new writes (every instance sees
 * every invoice, whichever instance stored it), so a page open in a browser costs no NATS round trip per refresh,
 * and keeps being served, with its "as of" time, while NATS is away.
 */
export async function invoiceStore(r: Reader, kv: KV, o: CacheOptions): Promise<InvoiceStore> {
  const cache = new Map<string, Cached>()
  const loading = new Map<string, Found[]>()
  let asOf: string | null = null
  const later = (t: string) => (asOf === null || Date.parse(t) > Date.parse(asOf) ? (asOf = t) : asOf)
  const remember = (token: string, c: Cached) => {
    cache.delete(token)
    cache.set(token, c)
    while (cache.size > o.customers) cache.delete(cache.keys().next().value!)
  }
  const state = (await r.jsm.streams.info(STREAM)).state
  if (state.last_seq >= Math.max(1, state.first_seq)) {
    const last = await r.jsm.streams.getMessage(STREAM, { seq: state.last_seq }).catch(() => null)
    if (last && last.data.length > 0) later(last.json<InvoiceGenerated>().issuedAt)
  }
  const watch = await kv.watch({ include: KvWatchInclude.UpdatesOnly })
  ;(async () => {
    for await (const e of watch) {
      const token = e.key.slice(0, e.key.indexOf("."))
      if (e.operation !== "PUT" || e.length === 0) {
        // deleted by hand or purged: the next ask reads the bucket
        cache.delete(token)
        continue
      }
      const found = { seq: e.revision, invoice: e.json<InvoiceGenerated>() }
      later(found.invoice.issuedAt)
      loading.get(token)?.push(found)
      const c = cache.get(token)
      if (c && (c.items[0]?.seq ?? 0) < found.seq) {
        c.items.unshift(found)
        if (c.items.length > o.perCustomer) (c.items.length = o.perCustomer), (c.more = true)
      }
    }
  })().catch(() => {})

  async function firstPage(customerId: string): Promise<Cached> {
    const token = subjectToken(customerId)
    const hit = cache.get(token)
    if (hit && Date.now() - hit.at < o.maxAgeMs) return (remember(token, hit), hit)
    const arrived: Found[] = []
    loading.set(token, arrived)
    try {
      const p = await readPage(r, customerId, o.perCustomer).catch((err) => {
        // NATS away: the page kept, however old, rather than none (the answer's asOf says how old)
        if (hit) return null
        throw err
      })
      if (!p) return hit!
      // what the watch brought while the page was read, newer than anything on it
      const top = p.items[0]?.seq ?? 0
      const fresh = arrived.filter((f) => f.seq > top).reverse()
      const items = [...fresh, ...p.items]
      const c = { items: items.slice(0, o.perCustomer), more: p.next !== null || items.length > o.perCustomer, at: Date.now() }
      remember(token, c)
      return c
    } finally {
      if (loading.get(token) === arrived) loading.delete(token)
    }
  }

  return {
    async page(customerId, limit, before) {
      if (before !== undefined || limit > o.perCustomer) return readPage(r, customerId, limit, before)
      const c = await firstPage(customerId)
      const items = c.items.slice(0, limit)
      const more = c.items.length > limit || c.more
      return { items, next: more && items.length ? items.at(-1)!.seq : null }
    },
    get asOf() {
      return asOf
    },
    get cached() {
      return cache.size
    },
    stop: () => void watch.stop(),
  }
}
