// mesh/admin/reading.ts — reading one key's messages out of a stream without a consumer: direct gets by subject and
// sequence (`$JS.API.STREAM.MSG.GET`, which ops may use read-only; creating a consumer on a domain stream it may not).
// A key's messages are on `<prefix>.<key>` and, in a partitioned stream, on `<prefix>.<key>.g<gen>.<p>`
// (contracts/partitions.ts): every read here looks at both.
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream"
import { type EventName, streamOf, subjectOf } from "../../contracts/mod.ts"

type Jsm = Pick<JetStreamManager, "streams">

/** The subjects one key's events of `name` may be stored under: plain, and with a partition layout's suffix. */
export const keySubjects = (name: EventName, key: string): string[] => [subjectOf(name, key), `${subjectOf(name, key)}.>`]

/** The first message on `subject` (wildcards allowed) at or after `seq`, or null. */
export const firstFrom = (jsm: Jsm, stream: string, subject: string, seq: number): Promise<StoredMsg | null> =>
  // STREAM.MSG.GET takes next_by_subj on every server version; the client's type lists only seq and last_by_subj
  jsm.streams.getMessage(stream, { seq: Math.max(1, seq), next_by_subj: subject } as unknown as { seq: number })

/** The newest message of a key's event. */
export async function lastOfKey(jsm: Jsm, name: EventName, key: string): Promise<StoredMsg | null> {
  const found = await Promise.all(keySubjects(name, key).map((s) => jsm.streams.getMessage(streamOf(name), { last_by_subj: s })))
  return found.reduce<StoredMsg | null>((best, m) => (m && (!best || m.seq > best.seq) ? m : best), null)
}

/** The oldest message of a key's event. */
export async function firstOfKey(jsm: Jsm, name: EventName, key: string): Promise<StoredMsg | null> {
  const found = await Promise.all(keySubjects(name, key).map((s) => firstFrom(jsm, streamOf(name), s, 1)))
  return found.reduce<StoredMsg | null>((best, m) => (m && (!best || m.seq < best.seq) ? m : best), null)
}

/** How many messages a key's event has in its stream (the server counts by subject: one request). */
export async function countOfKey(jsm: Jsm, name: EventName, key: string): Promise<number> {
  let n = 0
  for (const s of keySubjects(name, key)) {
    const info = await jsm.streams.info(streamOf(name), { subjects_filter: s })
    for (const c of Object.values(info.state.subjects ?? {})) n += c
  }
  return n
}

export type Range = { first: number; last: number }

export async function rangeOf(jsm: Jsm, stream: string): Promise<Range> {
  const { state } = await jsm.streams.info(stream)
  return { first: state.first_seq, last: state.last_seq }
}

/**
 * The sequence of the first message on `subject` stored at or after `t` (ms), or `range.last + 1` when none is:
 * a binary search over sequences (stored times grow with them), about log2(messages) gets.
 */
export async function seqAtTime(jsm: Jsm, stream: string, subject: string, t: number, range: Range): Promise<number> {
  let lo = range.first
  let hi = range.last + 1
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2)
    const m = await firstFrom(jsm, stream, subject, mid)
    if (!m || m.time.getTime() >= t) hi = mid
    else lo = m.seq + 1
  }
  const m = lo <= range.last ? await firstFrom(jsm, stream, subject, lo) : null
  return m ? m.seq : range.last + 1
}

export type Walked = { msgs: StoredMsg[]; capped: boolean }

/**
 * Every message on `subject` with a sequence in [from, to), in order: the first `cap` of them at most (`capped`: there
 * were more). The range is cut in shards read side by side: one get per message, so a shard's latency, not the sum,
 * is what a reader waits for.
 */
export async function walk(jsm: Jsm, stream: string, subject: string, from: number, to: number, cap = 5000, shards = 8): Promise<Walked> {
  if (to <= from) return { msgs: [], capped: false }
  const n = Math.min(shards, to - from)
  const size = Math.ceil((to - from) / n)
  let seen = 0
  // a shard cut short leaves a hole after its last message: only what comes before the first such cut is a prefix
  let cut = Infinity
  const parts = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const out: StoredMsg[] = []
      const end = Math.min(to, from + (i + 1) * size)
      let m = await firstFrom(jsm, stream, subject, from + i * size)
      while (m && m.seq < end) {
        if (++seen > cap) {
          cut = Math.min(cut, m.seq)
          break
        }
        out.push(m)
        m = await firstFrom(jsm, stream, subject, m.seq + 1)
      }
      return out
    }),
  )
  const msgs = parts
    .flat()
    .filter((m) => m.seq < cut)
    .sort((x, y) => x.seq - y.seq)
  return { msgs: msgs.slice(0, cap), capped: cut !== Infinity }
}

/** A key's messages of one event stored in [since, until) ms, both subjects merged in order. */
export async function keyBetween(jsm: Jsm, name: EventName, key: string, since: number, until: number, cap?: number): Promise<Walked> {
  const stream = streamOf(name)
  const range = await rangeOf(jsm, stream)
  if (range.last < range.first) return { msgs: [], capped: false }
  const parts = await Promise.all(
    keySubjects(name, key).map(async (s) => {
      const from = since > 0 ? await seqAtTime(jsm, stream, s, since, range) : range.first
      const to = Number.isFinite(until) ? await seqAtTime(jsm, stream, s, until, range) : range.last + 1
      return walk(jsm, stream, s, from, to, cap)
    }),
  )
  return { msgs: parts.flatMap((p) => p.msgs).sort((x, y) => x.seq - y.seq), capped: parts.some((p) => p.capped) }
}

/**
 * A key's newest `n` messages of one event, oldest first: windows of sequences walked backwards from the end, each
 * twice the last, so the cost follows the messages read, not the stream's length.
 */
export async function newestOfKey(jsm: Jsm, name: EventName, key: string, n: number): Promise<StoredMsg[]> {
  const stream = streamOf(name)
  const range = await rangeOf(jsm, stream)
  const found: StoredMsg[] = []
  let to = range.last + 1
  for (let width = 1024; found.length < n && to > range.first; width *= 2) {
    const from = Math.max(range.first, to - width)
    const parts = await Promise.all(keySubjects(name, key).map((s) => walk(jsm, stream, s, from, to)))
    found.unshift(...parts.flatMap((p) => p.msgs).sort((x, y) => x.seq - y.seq))
    to = from
  }
  return found.slice(-n)
}

/** The traceparent's trace id (`00-<trace id>-<span id>-<flags>`), when the message carries one. */
export function traceIdOf(m: { header?: { get(k: string): string } }): string | undefined {
  return /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/.exec(m.header?.get("traceparent") ?? "")?.[1]
}
