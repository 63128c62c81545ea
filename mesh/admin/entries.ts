// mesh/admin/entries.ts — the DLQ entry lifecycle, shared by the ops worker (HTTP API, dashboard) and `logiflow dlq`:
// indexing DLQ messages into the `dlq-entries` bucket, the advisory safety net, list/show/replay/discard, status.
// The DLQ stream stays append-only; an entry's state lives only in the bucket, and the bucket is the authority on
// "is this failure already filed" (the DLQ stream's dedupe forgets after its duplicate window).
import { DeliverPolicy, jetstream, type JetStreamClient, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node"
import { StatusError } from "itty-router"
import { parseTime as rfc3339, REPLAY_STREAM, replaySubject } from "../../contracts/mod.ts"
import { DLQ, deadLetter, type Failed, publishDeadLetter, REPLAY } from "../dlq.ts"
import { HEARTBEATS } from "../heartbeat.ts"
import { isNotFound as notFound } from "../errors.ts"
import { getJson, kvKey } from "../kv.ts"

export const ENTRIES = "dlq-entries"
/** error of an entry whose original had left its stream (age, limits) before ops could copy it */
export const ORIGINAL_GONE = "original no longer in stream"

export type EntryState = "open" | "replayed" | "discarded"
export const entryStates: EntryState[] = ["open", "replayed", "discarded"]
export type HistoryItem = { at: string; action: "dead-lettered" | "replayed" | "discarded"; by: string }

export type DlqEntry = {
  /** `<stream>.<consumer>.<seq>` of the original; `….r<replaySeq>` when a replay of it failed again */
  id: string
  stream: string
  consumer: string
  seq: number
  subject: string
  reason: string
  error: string
  deliveries: number
  failedAt: string
  /** where the entry's body and headers are kept */
  dlqSeq: number
  state: EntryState
  history: HistoryItem[]
  replays: number
  /** ce-type and ce-subject of the failed event, when it had them */
  type?: string
  key?: string
  /** set when this failure is a replay of an earlier entry that failed again */
  replayOf?: string
}

export type Admin = { js: JetStreamClient; jsm: JetStreamManager; kv: KV }

export async function adminFor(nc: NatsConnection): Promise<Admin> {
  const js = jetstream(nc)
  return { js, jsm: await jetstreamManager(nc), kv: await new Kvm(js).open(ENTRIES) }
}

type Header = (name: string) => string | undefined
const headerOf = (h?: MsgHdrs): Header => (name) => h?.get(name) || undefined

/**
 * The entry id of a DLQ message. Both failure paths publish under `Nats-Msg-Id: dlq:<stream>:<consumer>:<seq>`, so the id
 * follows that identity: a replayed event that fails again carries `dlq:REPLAY:<seq>` and
 * becomes a new entry; a late duplicate of the same failure maps to the id already indexed.
 */
export function entryIdOf(h: Header, msgId: string | undefined, subject = "", dlqSeq = 0): string {
  const stream = h(DLQ.stream)
  const consumer = h(DLQ.consumer)
  const seq = h(DLQ.seq)
  if (!stream || !consumer || !seq) {
    // not written by mesh/dlq.ts (a hand-published message): still listed, under its DLQ position
    const [, s = "unknown", c = "unknown"] = subject.split(".")
    return `${s}.${c}.dlq${dlqSeq}`
  }
  // the REPLAY sequence, whether or not the msg id also names the consumer (dlq:REPLAY:<seq> or with :<consumer>)
  const replay = /^dlq:REPLAY:(?:[^:]+:)?(\d+)(?::[^:]+)?$/.exec(msgId ?? "")
  return replay && stream !== REPLAY_STREAM ? `${stream}.${consumer}.${seq}.r${replay[1]}` : `${stream}.${consumer}.${seq}`
}

export type DlqMessage = { subject: string; headers?: MsgHdrs; seq: number; time: Date }

export function entryOf(m: DlqMessage): DlqEntry {
  const h = headerOf(m.headers)
  const [, s = "unknown", c = "unknown"] = m.subject.split(".")
  const failedAt = h(DLQ.failedAt) ?? m.time.toISOString()
  const entry: DlqEntry = {
    id: entryIdOf(h, h("Nats-Msg-Id"), m.subject, m.seq),
    stream: h(DLQ.stream) ?? s,
    consumer: h(DLQ.consumer) ?? c,
    seq: Number(h(DLQ.seq) ?? 0),
    subject: h(DLQ.subject) ?? "",
    reason: h(DLQ.reason) ?? "unknown",
    error: h(DLQ.error) ?? "",
    deliveries: Number(h(DLQ.deliveries) ?? 0),
    failedAt,
    dlqSeq: m.seq,
    state: "open",
    history: [{ at: failedAt, action: "dead-lettered", by: h(DLQ.consumer) ?? c }],
    replays: 0,
  }
  const type = h("ce-type")
  const key = h("ce-subject")
  const replayOf = h(REPLAY.of)
  if (type) entry.type = type
  if (key) entry.key = key
  if (replayOf) entry.replayOf = replayOf
  return entry
}

/** Files a DLQ message in the bucket. The first writer wins: a duplicate of an indexed failure changes nothing. */
export async function indexDeadLetter(kv: KV, m: DlqMessage): Promise<{ entry: DlqEntry; created: boolean }> {
  const entry = entryOf(m)
  try {
    await kv.create(kvKey(entry.id), JSON.stringify(entry))
    return { entry, created: true }
  } catch (err) {
    const existing = await getJson<DlqEntry>(kv, entry.id)
    if (!existing) throw err
    return { entry: existing, created: false }
  }
}

export type Advisory = { type: string; stream: string; consumer: string; stream_seq: number; deliveries: number }

export function parseAdvisory(data: Uint8Array): Advisory | undefined {
  try {
    const a = JSON.parse(new TextDecoder().decode(data)) as Partial<Advisory>
    const ok = typeof a.type === "string" && typeof a.stream === "string" && typeof a.consumer === "string" && Number.isInteger(a.stream_seq)
    return ok ? ({ deliveries: 0, ...a } as Advisory) : undefined
  } catch {
    return undefined
  }
}


/**
 * Delivery rule 4: a message that hit max deliveries without anyone dead-lettering it (the worker crashed or hung on
 * its final delivery) is filed from the server's advisory, under the same msg id the worker would have used.
 * MSG_TERMINATED needs nothing: workers term only after their DLQ publish was stored.
 */
export async function fileFromAdvisory(a: Admin, adv: Advisory): Promise<"filed" | "already-filed" | "ignored"> {
  if (!adv.type.endsWith(".max_deliver")) return "ignored"
  const original = await a.jsm.streams.getMessage(adv.stream, { seq: adv.stream_seq }).catch((err) => {
    if (notFound(err)) return null
    throw err
  })
  const base = { stream: adv.stream, seq: adv.stream_seq, consumer: adv.consumer, deliveries: adv.deliveries, reason: "max-deliveries" }
  const failed: Failed = original
    ? {
        ...base,
        subject: original.subject,
        headers: original.header,
        data: original.data,
        error: `no ack after ${adv.deliveries} deliveries: the worker crashed or hung (filed by ops from the server advisory)`,
      }
    : { ...base, subject: "", data: new Uint8Array(), error: ORIGINAL_GONE }
  const dl = deadLetter(failed)
  // past the DLQ stream's duplicate window only the bucket remembers that the worker already filed this failure
  if (await getJson<DlqEntry>(a.kv, entryIdOf(headerOf(dl.headers), dl.msgID))) return "already-filed"
  await publishDeadLetter(a.js, failed)
  return "filed"
}

// ---- reading

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
    if (k === "state" && !entryStates.includes(v as EntryState)) throw new StatusError(400, `state must be one of ${entryStates.join(", ")}`)
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
export async function listEntries(a: Pick<Admin, "js">, f: Filter, { limit = 50, cursor }: { limit?: number; cursor?: string } = {}): Promise<Page> {
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

async function load(kv: KV, id: string): Promise<{ entry: DlqEntry; revision: number }> {
  const e = await kv.get(kvKey(id))
  if (!e || e.operation !== "PUT" || !e.length) throw new StatusError(404, `no DLQ entry "${id}"`)
  return { entry: e.json<DlqEntry>(), revision: e.revision }
}

export type EntryDetail = { entry: DlqEntry; headers: Record<string, string>; payload: string; payloadBytes: number }

/** An entry with the headers and body of its DLQ message (the payload pretty-printed when it is JSON). */
export async function showEntry(a: Admin, id: string): Promise<EntryDetail> {
  const { entry } = await load(a.kv, id)
  const m = await a.jsm.streams.getMessage("DLQ", { seq: entry.dlqSeq })
  const headers: Record<string, string> = {}
  if (m?.header) for (const [k, vs] of m.header) headers[k] = vs.join(", ")
  const text = m ? new TextDecoder().decode(m.data) : ""
  let payload = text
  try {
    payload = JSON.stringify(JSON.parse(text), null, 2)
  } catch {
    // not JSON (a contract violation kept as it came): shown as it is
  }
  return { entry, headers, payload: m ? payload : `(DLQ message ${entry.dlqSeq} has aged out of the DLQ stream)`, payloadBytes: m?.data.length ?? 0 }
}

// ---- changing

async function change(kv: KV, id: string, fn: (e: DlqEntry) => DlqEntry): Promise<DlqEntry> {
  for (let attempt = 1; ; attempt++) {
    const { entry, revision } = await load(kv, id)
    const next = fn(entry)
    try {
      await kv.update(kvKey(id), JSON.stringify(next), revision)
      return next
    } catch (err) {
      // another operator changed it in between: decide again on what is there now
      if (attempt >= 5) throw err
    }
  }
}

const REPLAY_HEADER = /^(nats-|logiflow-dlq-|logiflow-replay-)/i

/**
 * Publishes the entry's original body and headers to `replay.<consumer>.<stream>`: only the consumer that failed
 * sees it again (REPLAY/<consumer>), and its handler is idempotent by business key. The msg id `replay:<id>:<n>`
 * makes two operators pressing replay at once one replay.
 */
export async function replayEntry(a: Admin, id: string, by: string): Promise<DlqEntry> {
  let { entry } = await load(a.kv, id)
  if (entry.state === "discarded") throw new StatusError(409, `entry ${id} is discarded`)
  if (entry.error === ORIGINAL_GONE) throw new StatusError(409, `entry ${id} has no payload to replay (${ORIGINAL_GONE})`)
  await a.jsm.consumers.info(REPLAY_STREAM, entry.consumer).catch((err) => {
    throw notFound(err) ? new StatusError(409, `${entry.consumer} has no replay consumer (${REPLAY_STREAM}/${entry.consumer}); its entries cannot be replayed`) : err
  })
  const m = await a.jsm.streams.getMessage("DLQ", { seq: entry.dlqSeq })
  if (!m) throw new StatusError(410, `the DLQ message of ${id} (DLQ seq ${entry.dlqSeq}) has aged out; nothing to replay`)
  const h = natsHeaders()
  for (const [k, vs] of m.header ?? []) if (!REPLAY_HEADER.test(k)) for (const v of vs) h.append(k, v)
  h.set(REPLAY.of, entry.id)
  h.set(REPLAY.stream, entry.stream)
  h.set(REPLAY.seq, String(entry.seq))
  h.set(REPLAY.subject, entry.subject)
  for (let attempt = 1; ; attempt++) {
    const n = entry.replays + 1
    await a.js.publish(replaySubject(entry.consumer, entry.stream), m.data, { msgID: `replay:${entry.id}:${n}`, headers: h })
    const now = await load(a.kv, id)
    // another operator recorded replay n: it is this one (same msg id, so the REPLAY stream stored it once)
    if (now.entry.replays >= n) return now.entry
    if (now.entry.state === "discarded") throw new StatusError(409, `entry ${id} was discarded meanwhile`)
    const next: DlqEntry = {
      ...now.entry,
      state: "replayed",
      replays: n,
      history: [...now.entry.history, { at: new Date().toISOString(), action: "replayed", by }],
    }
    try {
      await a.kv.update(kvKey(id), JSON.stringify(next), now.revision)
      return next
    } catch (err) {
      if (attempt >= 5) throw err
      entry = (await load(a.kv, id)).entry
    }
  }
}

export async function discardEntry(a: Pick<Admin, "kv">, id: string, by: string): Promise<DlqEntry> {
  return change(a.kv, id, (e) => {
    if (e.state === "discarded") throw new StatusError(409, `entry ${id} is already discarded`)
    return { ...e, state: "discarded", history: [...e.history, { at: new Date().toISOString(), action: "discarded", by }] }
  })
}

/** Replays every open entry the filter selects; an empty filter is refused (it would replay everything). */
export async function replayMatching(a: Admin, f: Filter, by: string): Promise<{ replayed: number; ids: string[] }> {
  const { state, ...rest } = f
  if (state && state !== "open") throw new StatusError(400, "bulk replay takes open entries only; replay others one by one")
  if (Object.keys(rest).length === 0) throw new StatusError(400, "give at least one filter (consumer, subject, reason, since, until)")
  const chosen = (await allEntries(a)).filter((e) => matches(e, { ...rest, state: "open" })).reverse()
  for (const e of chosen) await replayEntry(a, e.id, by)
  return { replayed: chosen.length, ids: chosen.map((e) => e.id) }
}

// ---- status

export type StreamStatus = { name: string; subjects: string[]; messages: number; bytes: number; consumers: number }
export type ConsumerStatus = {
  stream: string
  name: string
  pending: number
  ackPending: number
  redelivered: number
  waiting: number
  lastActive?: string
}
/** A running worker instance, from its heartbeat (mesh/heartbeat.ts); one that stopped beating is gone in 15 s. */
export type WorkerStatus = { worker: string; instance: string; ready: boolean; inflight: number; at: string; startedAt: string; version: string }
export type Status = {
  workers: WorkerStatus[]
  streams: StreamStatus[]
  consumers: ConsumerStatus[]
  dlq: {
    open: number
    byConsumer: Record<string, number>
    byReason: Record<string, number>
    groups: { consumer: string; reason: string; open: number }[]
    /** the bucket could not be read (not provisioned yet); the stream and consumer report stands anyway */
    error?: string
  }
}

const activeAt = (t: unknown) => (typeof t === "string" && !t.startsWith("0001-") ? t : undefined)

export async function status(a: Admin): Promise<Status> {
  const streams: StreamStatus[] = []
  const consumers: ConsumerStatus[] = []
  for await (const s of a.jsm.streams.list()) {
    streams.push({ name: s.config.name, subjects: s.config.subjects ?? [], messages: s.state.messages, bytes: s.state.bytes, consumers: s.state.consumer_count })
    for await (const c of a.jsm.consumers.list(s.config.name)) {
      // ephemeral consumers (tails, KV watchers) come and go; the report is about the durables
      if (!c.config.durable_name) continue
      const last = [activeAt(c.delivered.last_active), activeAt(c.ack_floor.last_active)].filter(Boolean).sort().pop()
      consumers.push({
        stream: s.config.name,
        name: c.name,
        pending: c.num_pending,
        ackPending: c.num_ack_pending,
        redelivered: c.num_redelivered,
        waiting: c.num_waiting,
        ...(last ? { lastActive: last } : {}),
      })
    }
  }
  streams.sort((x, y) => x.name.localeCompare(y.name))
  consumers.sort((x, y) => `${x.stream}/${x.name}`.localeCompare(`${y.stream}/${y.name}`))
  let open: DlqEntry[] = []
  let error: string | undefined
  try {
    open = (await allEntries(a)).filter((e) => e.state === "open")
  } catch (err) {
    error = `${ENTRIES} unreadable: ${(err as Error).message}`
  }
  const count = (key: (e: DlqEntry) => string) => open.reduce<Record<string, number>>((r, e) => ((r[key(e)] = (r[key(e)] ?? 0) + 1), r), {})
  const groups = Object.entries(count((e) => `${e.consumer}\u0000${e.reason}`))
    .map(([k, n]) => ({ consumer: k.split("\u0000")[0]!, reason: k.split("\u0000")[1]!, open: n }))
    .sort((x, y) => y.open - x.open || x.consumer.localeCompare(y.consumer))
  const dlq: Status["dlq"] = { open: open.length, byConsumer: count((e) => e.consumer), byReason: count((e) => e.reason), groups }
  if (error) dlq.error = error
  // no heartbeats bucket yet (a fresh server, or an older topology): the report stands without the worker list
  const workers = (await latestValues<WorkerStatus>(a.js, HEARTBEATS).catch(() => [] as WorkerStatus[])).sort(
    (x, y) => x.worker.localeCompare(y.worker) || x.instance.localeCompare(y.instance),
  )
  return { workers, streams, consumers, dlq }
}
