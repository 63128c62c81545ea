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

export type Filter = { consumer?: string; subject?: string; reason?: string; state?: EntryState; since?: string; until?: string }

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
    if (!["consumer", "subject", "reason", "state", "since", "until"].includes(k)) {
      throw new StatusError(400, `unknown filter "${k}" (use consumer, subject, reason, state, since, until)`)
    }
    if (typeof v !== "string") throw new StatusError(400, `filter ${k} must be a string`)
    if (k === "state" && !entryStates.includes(v as EntryState))
      throw new StatusError(400, `state must be one of ${entryStates.join(", ")}`)
    if (k === "since" || k === "until") f[k] = parseTime(v).toISOString()
    else f[k as "consumer"] = v
  }
  return f
}

export function matches(e: DlqEntry, f: Filter): boolean {
  return (
    (!f.consumer || e.consumer === f.consumer) &&
    (!f.subject || subjectMatches(f.subject, e.subject)) &&
    (!f.reason || e.reason === f.reason) &&
    (!f.state || e.state === f.state) &&
    (!f.since || e.failedAt >= f.since) &&
    (!f.until || e.failedAt <= f.until)
  )
}

export type Page = { entries: DlqEntry[]; total: number; nextCursor?: string }

/** Newest first; `cursor` is the last page's nextCursor (a DLQ sequence: stable while new entries arrive). */
export async function listEntries(
  a: Pick<Admin, "js">,
  f: Filter,
  { limit = 50, cursor }: { limit?: number; cursor?: string } = {},
): Promise<Page> {
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new StatusError(400, "limit must be an integer from 1 to 1000")
  const before = cursor === undefined ? Infinity : Number(cursor)
  if (Number.isNaN(before)) throw new StatusError(400, `bad cursor "${cursor}"`)
  const all = (await allEntries(a)).filter((e) => matches(e, f))
  const rest = all.filter((e) => e.dlqSeq < before)
  const entries = rest.slice(0, limit)
  const page: Page = { entries, total: all.length }
  if (rest.length > limit) page.nextCursor = String(entries[entries.length - 1]!.dlqSeq)
  return page
}
