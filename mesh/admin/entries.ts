// mesh/admin/entries.ts — a DLQ entry: what it is, how a DLQ message becomes one in the `dlq-entries` bucket, and
// how it is read and changed. The DLQ stream stays append-only; an entry's state lives only in the bucket, and the
// bucket is the authority on "is this failure already filed" (the DLQ stream's dedupe forgets after its window).
import { jetstream, type JetStreamClient, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node"
import { StatusError } from "itty-router"
import { BY_REFERENCE, REPLAY_STREAM } from "../../contracts/mod.ts"
import { DLQ, REPLAY } from "../dlq.ts"
import { changeJson, getJson, kvKey } from "../kv.ts"

export const ENTRIES = "dlq-entries"
/** error of an entry whose original had left its stream (age, limits) before ops could copy it */
export const ORIGINAL_GONE = "original no longer in stream"

/** resolved: the effect the failed delivery was to store is stored after all (a crash between publish and ack) */
export type EntryState = "open" | "replayed" | "discarded" | "resolved"
export const entryStates: EntryState[] = ["open", "replayed", "discarded", "resolved"]
export type HistoryItem = {
  at: string
  action: "dead-lettered" | "edited" | "replayed" | "discarded" | "resolved"
  by: string
  note?: string
}

/** An operator's correction of the payload: what a replay sends instead of the original, which stays as it was. */
export type Edit = { payload: unknown; by: string; at: string; n: number }

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
  /** ce-type and ce-subject (the key: a truck) of the failed event, when it had them */
  type?: string
  key?: string
  /** ce-id of the failed event, and the route it is about when its payload names one (RouteCalculated, EtaUpdated, …) */
  eventId?: string
  routeId?: string
  /** the latest correction of the payload (mesh/admin/edit.ts); a replay sends it */
  edit?: Edit
  /** set when this failure is a replay of an earlier entry that failed again */
  replayOf?: string
  /** the DLQ message has no body (too large for the DLQ): show and replay read the original from stream and seq */
  byReference?: true
  /** why the entry could not be checked against its original (no longer in its stream); it is not replayed */
  unverified?: string
}

export type Admin = { js: JetStreamClient; jsm: JetStreamManager; kv: KV }

export async function adminFor(nc: NatsConnection): Promise<Admin> {
  const js = jetstream(nc)
  return { js, jsm: await jetstreamManager(nc), kv: await new Kvm(js).open(ENTRIES) }
}

export type Header = (name: string) => string | undefined
export const headerOf =
  (h?: MsgHdrs): Header =>
  (name) =>
    h?.get(name) || undefined

/**
 * The entry id of a DLQ message. Both failure paths publish under `Nats-Msg-Id: dlq:<stream>:<consumer>:<seq>`, so the id
 * follows that identity: a replayed event that fails again carries `dlq:REPLAY:<seq>` and
 * becomes a new entry; a late duplicate of the same failure maps to the id already indexed.
 */
export function entryIdOf(subject: string, h: Header, msgId: string | undefined, dlqSeq = 0): string {
  const [, stream = "unknown", consumer = "unknown"] = subject.split(".")
  const seq = h(DLQ.seq)
  // not written by mesh/dlq.ts (a hand-published message): still listed, under its DLQ position
  if (!seq) return `${stream}.${consumer}.dlq${dlqSeq}`
  // the REPLAY sequence, whether or not the msg id also names the consumer (dlq:REPLAY:<seq> or with :<consumer>)
  const replay = /^dlq:REPLAY:(?:[^:]+:)?(\d+)(?::[^:]+)?$/.exec(msgId ?? "")
  return replay && stream !== REPLAY_STREAM ? `${stream}.${consumer}.${seq}.r${replay[1]}` : `${stream}.${consumer}.${seq}`
}

export type DlqMessage = { subject: string; headers?: MsgHdrs; seq: number; time: Date; data?: Uint8Array }

/** Stream and consumer come from the subject (`dlq.<stream>.<consumer>`): a worker may publish only its own. */
export function entryOf(m: DlqMessage): DlqEntry {
  const h = headerOf(m.headers)
  const [, s = "unknown", c = "unknown"] = m.subject.split(".")
  const failedAt = h(DLQ.failedAt) ?? m.time.toISOString()
  const entry: DlqEntry = {
    id: entryIdOf(m.subject, h, h("Nats-Msg-Id"), m.seq),
    stream: s,
    consumer: c,
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
  const eventId = h("ce-id")
  const replayOf = h(REPLAY.of)
  if (type) entry.type = type
  if (key) entry.key = key
  if (eventId) entry.eventId = eventId
  const routeId = routeIdOf(m.data)
  if (routeId) entry.routeId = routeId
  if (replayOf) entry.replayOf = replayOf
  if (h(DLQ.payload) === BY_REFERENCE) entry.byReference = true
  return entry
}

/** The `routeId` a payload names (every event about a route carries one), or undefined. */
function routeIdOf(data?: Uint8Array): string | undefined {
  if (!data?.length) return undefined
  try {
    const v = JSON.parse(new TextDecoder().decode(data)) as { routeId?: unknown }
    return typeof v?.routeId === "string" && v.routeId.length <= 128 ? v.routeId : undefined
  } catch {
    return undefined
  }
}

/** Files a DLQ message in the bucket. The first writer wins: a duplicate of an indexed failure changes nothing. */
export async function indexDeadLetter(kv: KV, m: DlqMessage, entry = entryOf(m)): Promise<{ entry: DlqEntry; created: boolean }> {
  try {
    await kv.create(kvKey(entry.id), JSON.stringify(entry))
    return { entry, created: true }
  } catch (err) {
    const existing = await getJson<DlqEntry>(kv, entry.id)
    if (!existing) throw err
    return { entry: existing, created: false }
  }
}

export async function load(kv: KV, id: string): Promise<{ entry: DlqEntry; revision: number }> {
  const e = await kv.get(kvKey(id))
  if (e?.operation !== "PUT" || !e.length) throw new StatusError(404, `no DLQ entry "${id}"`)
  return { entry: e.json<DlqEntry>(), revision: e.revision }
}

export type EntryDetail = { entry: DlqEntry; headers: Record<string, string>; payload: string; payloadBytes: number }

/** An entry with the headers and body of its DLQ message (the payload pretty-printed when it is JSON). */
export async function showEntry(a: Admin, id: string): Promise<EntryDetail> {
  const { entry } = await load(a.kv, id)
  const m = await a.jsm.streams.getMessage("DLQ", { seq: entry.dlqSeq })
  const headers: Record<string, string> = {}
  if (m?.header) for (const [k, vs] of m.header) headers[k] = vs.join(", ")
  // a by-reference entry carries no body: the payload is the original's, read from its stream while it is there
  const original = m && entry.byReference ? await a.jsm.streams.getMessage(entry.stream, { seq: entry.seq }) : undefined
  if (entry.byReference && !original)
    return { entry, headers, payload: `(filed by reference: ${entry.stream} seq ${entry.seq} is no longer in its stream)`, payloadBytes: 0 }
  const text = m ? new TextDecoder().decode(original?.data ?? m.data) : ""
  let payload = text
  try {
    payload = JSON.stringify(JSON.parse(text), null, 2)
  } catch {
    // not JSON (a contract violation kept as it came): shown as it is
  }
  return {
    entry,
    headers,
    payload: m ? payload : `(DLQ message ${entry.dlqSeq} has aged out of the DLQ stream)`,
    payloadBytes: (original ?? m)?.data.length ?? 0,
  }
}

// another operator changed it in between: decide again on what is there now
export const change = (kv: KV, id: string, fn: (e: DlqEntry) => DlqEntry): Promise<DlqEntry> =>
  changeJson(kv, id, () => load(kv, id).then(({ entry, revision }) => ({ value: entry, revision })), fn, 5)
