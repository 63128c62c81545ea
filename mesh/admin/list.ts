// mesh/admin/list.ts — finding DLQ entries: filters from the outside (query string, JSON body, CLI flags), and
// pages of them, newest first.
import { DeliverPolicy, type JetStreamClient } from "@nats-io/jetstream"
import { StatusError } from "itty-router"
import { parseTime as rfc3339 } from "../../contracts/mod.ts"
import { type Admin, type DlqEntry, ENTRIES, type EntryState, entryStates } from "./entries.ts"

/** The latest value of every key of a bucket, read by one short-lived ordered consumer. */
export async function latestValues<T>(js: JetStreamClient, bucket: string): Promise<T[]> {
  // a push consumer, like kv.keys()/watch(): its deliveries reach the connection's own inbox prefix (least privilege)
  const c = await js.consumers.getPushConsumer(`KV_${bucket}`, {
    deliver_policy: DeliverPolicy.LastPerSubject,
    filter_subjects: `$KV.${bucket}.>`,
  })
  const out: T[] = []
  try {
    if ((await c.info(true)).num_pending > 0) {
      const msgs = await c.consume()
      for await (const m of msgs) {
        const op = m.headers?.get("KV-Operation")
        if (op !== "DEL" && op !== "PURGE" && m.data.length) out.push(m.json<T>())
        if (m.info.pending === 0) break
      }
    }
  } finally {
    // otherwise it lingers on the server for its 5-minute inactivity threshold, one per dashboard refresh
    await c.delete().catch(() => {})
  }
  return out
}

/** Every entry, newest first. */
export async function allEntries(a: Pick<Admin, "js">): Promise<DlqEntry[]> {
  return (await latestValues<DlqEntry>(a.js, ENTRIES)).sort((x, y) => y.dlqSeq - x.dlqSeq)
}

export type Filter = {
  /** the failed event's ce-id, or the route it is about (routeId) */
  eventId?: string
  /** the failed event's key (ce-subject: a truck) */
  key?: string
  consumer?: string
  subject?: string
  reason?: string
  state?: EntryState
  since?: string
  until?: string
}
export const FILTERS = ["eventId", "key", "consumer", "subject", "reason", "state", "since", "until"] as const

/** What a filter and a page look at: an entry without its history, error and edit (mesh/admin/live.ts keeps these). */
export type Summary = Pick<DlqEntry, "id" | "dlqSeq" | "stream" | "consumer" | "subject" | "reason" | "state" | "failedAt"> &
  Partial<Pick<DlqEntry, "eventId" | "routeId" | "key">>

export const summaryOf = (e: DlqEntry): Summary => {
  const { id, dlqSeq, stream, consumer, subject, reason, state, failedAt, eventId, routeId, key } = e
  return { id, dlqSeq, stream, consumer, subject, reason, state, failedAt, eventId, routeId, key }
}

/** NATS wildcard match: `*` one token, `>` the rest. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".")
  const s = subject.split(".")
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false
  }
  return p.length === s.length
}

/** `5m`, `90s`, `2h`, `1d` ago, or an RFC 3339 time (the contracts' strict parser: no rolled-over days). */
export function parseTime(s: string, now = Date.now()): Date {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(s.trim())
  if (m) return new Date(now - Number(m[1]) * { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as "s"])
  const t = rfc3339(s.trim())
  if (t === undefined) throw new StatusError(400, `"${s}" is neither a duration (5m, 2h, 1d) nor an ISO time`)
  return new Date(t)
}

/** Checks a filter from the outside (query string, JSON body, CLI flags); unknown fields are refused. */
export function toFilter(raw: Record<string, unknown>): Filter {
  const f: Filter = {}
  for (const [k, v] of Object.entries(raw)) {
    if (v === undefined || v === "") continue
    if (!(FILTERS as readonly string[]).includes(k)) throw new StatusError(400, `unknown filter "${k}" (use ${FILTERS.join(", ")})`)
    if (typeof v !== "string") throw new StatusError(400, `filter ${k} must be a string`)
    if (k === "state" && !entryStates.includes(v as EntryState))
      throw new StatusError(400, `state must be one of ${entryStates.join(", ")}`)
    if (k === "since" || k === "until") f[k] = parseTime(v).toISOString()
    else f[k as "consumer"] = v
  }
  return f
}

export function matches(e: Summary, f: Filter): boolean {
  return (
    (!f.eventId || e.eventId === f.eventId || e.routeId === f.eventId) &&
    (!f.key || e.key === f.key) &&
    (!f.consumer || e.consumer === f.consumer) &&
    (!f.subject || subjectMatches(f.subject, e.subject)) &&
    (!f.reason || e.reason === f.reason) &&
    (!f.state || e.state === f.state) &&
    (!f.since || e.failedAt >= f.since) &&
    (!f.until || e.failedAt <= f.until)
  )
}

export type Page = { entries: DlqEntry[]; total: number; nextCursor?: string }
export type Paging = { limit?: number; cursor?: string }

/**
 * One page of `newestFirst` (sorted by DLQ sequence, descending) that `f` selects, and how many it selects in all.
 * `cursor` is the last page's nextCursor: a DLQ sequence, so pages stay stable while new entries arrive.
 */
export function pageOf<T extends Summary>(newestFirst: T[], f: Filter, { limit = 50, cursor }: Paging = {}) {
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new StatusError(400, "limit must be an integer from 1 to 1000")
  const before = cursor === undefined || cursor === "" ? Infinity : Number(cursor)
  if (!Number.isSafeInteger(before) && before !== Infinity) throw new StatusError(400, `bad cursor "${cursor}"`)
  const chosen: T[] = []
  let total = 0
  let more = false
  for (const e of newestFirst) {
    if (!matches(e, f)) continue
    total++
    if (e.dlqSeq >= before) continue
    if (chosen.length < limit) chosen.push(e)
    else more = true
  }
  return { chosen, total, nextCursor: more ? String(chosen[chosen.length - 1]!.dlqSeq) : undefined }
}

/** Newest first, by a scan of the bucket (the CLI's way; ops pages its live index, mesh/admin/live.ts). */
export async function listEntries(a: Pick<Admin, "js">, f: Filter, paging: Paging = {}): Promise<Page> {
  const { chosen, total, nextCursor } = pageOf(await allEntries(a), f, paging)
  return { entries: chosen, total, ...(nextCursor ? { nextCursor } : {}) }
}
