// mesh/admin/live.ts — ops' index of the DLQ entries: one read of the dlq-entries bucket when ops starts, then every
// change as it is written (a watch), whoever wrote it (ops, `logiflow dlq`, another ops instance). Lists, counts,
// the dashboard and /metrics read this, never the bucket as a whole: a scan per request, refresh or scrape grew with
// the DLQ (and was the cost of every dashboard refresh). In memory: a summary per entry (ids, state, reason: a few
// hundred bytes), never payloads or histories; a page reads its entries from the bucket by key.
import { type KV, KvWatchInclude } from "@nats-io/kv"
import { StatusError } from "itty-router"
import { getJson, kvKey } from "../kv.ts"
import type { Logger } from "../log.ts"
import type { DlqEntry, EntryState } from "./entries.ts"
import { type Filter, matches, type Page, type Paging, pageOf, type Summary, summaryOf } from "./list.ts"
import { sleep } from "../time.ts"

/** the most entries one bulk replay takes */
export const MAX_SELECTED = 100_000

export type Count = { stream: string; consumer: string; reason: string; state: EntryState; entries: number }

export type LiveIndex = {
  /** resolves once the bucket as it was at start is read */
  ready: Promise<void>
  /** newest first; the entries are read from the bucket as they are now */
  page(f: Filter, paging?: Paging): Promise<Page>
  /** every summary `f` selects, oldest first (what a bulk replay walks through) */
  select(f: Filter): Summary[]
  /** entries by stream, consumer, reason and state; a group that emptied stays, at 0 (its gauge falls, not vanishes) */
  counts(): Count[]
  /** entries indexed (all states) */
  size(): number
  /** ids of the entries whose DLQ message lies before `dlqSeq` (oldest first) */
  before(dlqSeq: number): string[]
  /**
   * false once the watch has ended or the bucket was deleted and made again since the index was built (checked at
   * most every `CHECK_MS`): the index no longer follows the bucket and must be built afresh
   */
  current(): Promise<boolean>
  stop(): void
}

const CHECK_MS = 2000
/** how long a list waits for the watch to catch up with the bucket before it answers from what it has */
const CATCH_UP_MS = 1000

const bySeqDesc = (list: Summary[], dlqSeq: number): number => {
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (list[mid]!.dlqSeq > dlqSeq) lo = mid + 1
    else hi = mid
  }
  return lo
}

export async function liveIndex(kv: KV, log?: Logger): Promise<LiveIndex> {
  const byId = new Map<string, Summary>()
  // newest first, by DLQ sequence: an entry keeps the sequence of the message that filed it
  const sorted: Summary[] = []
  const counts = new Map<string, Count>()
  const tally = (s: Summary, by: number) => {
    const k = `${s.stream}\u0000${s.consumer}\u0000${s.reason}\u0000${s.state}`
    const c = counts.get(k) ?? { stream: s.stream, consumer: s.consumer, reason: s.reason, state: s.state, entries: 0 }
    c.entries += by
    counts.set(k, c)
  }
  // the bucket's keys are entry ids made safe (kvKey): a delete names the key
  const idOfKey = new Map<string, string>()
  const remove = (key: string) => {
    const id = idOfKey.get(key) ?? key
    idOfKey.delete(key)
    const old = byId.get(id)
    if (!old) return
    byId.delete(id)
    tally(old, -1)
    const i = bySeqDesc(sorted, old.dlqSeq)
    if (sorted[i]?.id === id) sorted.splice(i, 1)
    else sorted.splice(sorted.indexOf(old), 1)
  }
  const put = (e: DlqEntry) => {
    const s = summaryOf(e)
    const old = byId.get(s.id)
    if (old) {
      tally(old, -1)
      const i = bySeqDesc(sorted, old.dlqSeq)
      sorted[sorted[i]?.id === s.id ? i : sorted.indexOf(old)] = s
    } else sorted.splice(bySeqDesc(sorted, s.dlqSeq), 0, s)
    byId.set(s.id, s)
    idOfKey.set(kvKey(s.id), s.id)
    tally(s, +1)
  }

  let initialized!: () => void
  const ready = new Promise<void>((r) => (initialized = r))
  const watch = await kv.watch({ include: KvWatchInclude.LastValue })
  // an empty bucket sends nothing to say so; otherwise the last of the values at start has delta 0
  const status = await kv.status()
  const created = status.streamInfo.created
  if (status.values === 0) initialized()
  let ended = false
  let checked = { at: Date.now(), ok: true }
  /** the bucket's newest revision the watch has delivered */
  let seen = 0
  void (async () => {
    for await (const e of watch) {
      if (e.revision > seen) seen = e.revision
      try {
        if (e.operation === "PUT" && e.length > 0) put(e.json<DlqEntry>())
        else remove(e.key)
      } catch (err) {
        log?.warn("dlq-entries: a value that is not an entry; not indexed", { key: e.key, error: (err as Error).message })
      }
      if (e.delta === 0) initialized()
    }
    ended = true
  })().catch((err) => {
    ended = true
    log?.error("dlq-entries watch ended: the index is built again at the next request", { error: (err as Error).message })
  })

  const get = (id: string) => getJson<DlqEntry>(kv, id)
  /** until the watch has delivered every write the bucket held when asked (at most CATCH_UP_MS): a list right after a
   * discard or a replay, here or anywhere, shows it */
  const caughtUp = async () => {
    const last = await kv
      .status()
      .then(({ streamInfo: { state } }) => (state.messages > 0 ? state.last_seq : 0))
      .catch(() => 0)
    const until = Date.now() + CATCH_UP_MS
    while (seen < last && !ended && Date.now() < until) await sleep(5)
  }
  return {
    ready,
    async page(f, paging) {
      await ready
      await caughtUp()
      const { chosen, total, nextCursor } = pageOf(sorted, f, paging)
      // each entry is read as it is now: one changed since the watch last told the index (discarded a moment ago,
      // say) is left out when it no longer matches, so a list never shows an entry of another state than it asks
      const fetched = await Promise.all(chosen.map((s) => get(s.id)))
      const entries = fetched.filter((e): e is DlqEntry => !!e && matches(summaryOf(e), f))
      return { entries, total: total - (chosen.length - entries.length), ...(nextCursor ? { nextCursor } : {}) }
    },
    select(f) {
      const all = sorted.filter((s) => matches(s, f))
      if (all.length > MAX_SELECTED)
        throw new StatusError(400, `the filter selects ${all.length} entries; narrow it to ${MAX_SELECTED} or fewer`)
      return all.reverse()
    },
    counts: () => [...counts.values()],
    size: () => byId.size,
    before(dlqSeq) {
      // newest first: the ones before dlqSeq are the tail
      return sorted
        .slice(bySeqDesc(sorted, dlqSeq - 1))
        .map((s) => s.id)
        .reverse()
    },
    async current() {
      if (ended || !checked.ok) return false
      if (Date.now() - checked.at < CHECK_MS) return true
      const now = await kv.status().then(
        (st) => st.streamInfo.created === created,
        () => false,
      )
      checked = { at: Date.now(), ok: now }
      if (!now) log?.warn("dlq-entries was deleted and made again: the index is built again")
      return now
    },
    stop: () => watch.stop(),
  }
}

/** The DLQ part of the status report (mesh/admin/status.ts), from counts. */
export function openGroups(counts: Count[]) {
  const open = counts.filter((c) => c.state === "open" && c.entries > 0)
  const sum = (key: (c: Count) => string) =>
    open.reduce<Record<string, number>>((r, c) => ((r[key(c)] = (r[key(c)] ?? 0) + c.entries), r), {})
  const groups = Object.entries(sum((c) => `${c.consumer}\u0000${c.reason}`))
    .map(([k, n]) => ({ consumer: k.split("\u0000")[0]!, reason: k.split("\u0000")[1]!, open: n }))
    .sort((x, y) => y.open - x.open || x.consumer.localeCompare(y.consumer))
  return {
    open: open.reduce((n, c) => n + c.entries, 0),
    byConsumer: sum((c) => c.consumer),
    byReason: sum((c) => c.reason),
    groups,
  }
}
