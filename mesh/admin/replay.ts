// mesh/admin/replay.ts — what an operator does with an entry: replay it to the consumer that failed it (one entry,
// or every open one a filter selects), or discard it.
import { type MsgHdrs, headers as natsHeaders } from "@nats-io/transport-node"
import { StatusError } from "itty-router"
import { REPLAY_STREAM, replaySubject } from "../../contracts/mod.ts"
import { DLQ, REPLAY } from "../dlq.ts"
import { isNotFound as notFound } from "../errors.ts"
import { kvKey } from "../kv.ts"
import { type Admin, change, type DlqEntry, load, ORIGINAL_GONE } from "./entries.ts"
import { checkReplay, originalOf } from "./filing.ts"

const REPLAY_HEADER = /^(nats-|logiflow-dlq-|logiflow-replay-)/i

/**
 * Publishes the entry's original body and headers to `replay.<consumer>.<stream>`: only the consumer that failed
 * sees it again (REPLAY/<consumer>), and its handler is idempotent by business key. The msg id `replay:<id>:<n>`
 * makes two operators pressing replay at once one replay.
 */
export async function replayEntry(a: Admin, id: string, by: string, note?: string): Promise<DlqEntry> {
  let { entry } = await load(a.kv, id)
  if (entry.state === "discarded") throw new StatusError(409, `entry ${id} is discarded`)
  if (entry.state === "resolved")
    throw new StatusError(409, `entry ${id} is resolved: its effect is stored (${entry.history.at(-1)?.note ?? "see its history"})`)
  if (entry.error === ORIGINAL_GONE) throw new StatusError(409, `entry ${id} has no payload to replay (${ORIGINAL_GONE})`)
  if (entry.unverified) throw new StatusError(409, `entry ${id} is not replayed: ${entry.unverified}`)
  await a.jsm.consumers.info(REPLAY_STREAM, entry.consumer).catch((err) => {
    throw notFound(err)
      ? new StatusError(
          409,
          `${entry.consumer} has no replay consumer (${REPLAY_STREAM}/${entry.consumer}); its entries cannot be replayed`,
        )
      : err
  })
  const original = await payloadOf(a, entry)
  // an operator's correction goes instead of the original body (its headers stay: same event, same id, same key)
  const m = entry.edit ? { ...original, data: new TextEncoder().encode(JSON.stringify(entry.edit.payload)) } : original
  await checkReplay(a, entry, m)
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
      history: [...now.entry.history, { at: new Date().toISOString(), action: "replayed", by, ...replayNote(now.entry, note) }],
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

/**
 * What a replay sends: the original, read from its stream while it is there (a by-reference entry has nothing else),
 * else the DLQ copy, which ops checked against the original when it indexed the entry.
 */
const replayNote = (e: DlqEntry, note?: string) => {
  const said = [e.edit ? `edit ${e.edit.n} by ${e.edit.by}` : "", note ?? ""].filter(Boolean).join("; ")
  return said ? { note: said } : {}
}

export async function payloadOf(
  a: Admin,
  entry: DlqEntry,
): Promise<{ subject: string; data: Uint8Array; header?: MsgHdrs; storedAt?: Date }> {
  const original = await originalOf(a, entry.stream, entry.seq)
  if (original && original.subject === entry.subject)
    return { subject: original.subject, data: original.data, header: original.header, storedAt: original.time }
  if (entry.byReference)
    throw new StatusError(
      410,
      `entry ${entry.id} was filed by reference and ${entry.stream} seq ${entry.seq} has left its stream; nothing to replay`,
    )
  const m = await a.jsm.streams.getMessage("DLQ", { seq: entry.dlqSeq })
  if (!m) throw new StatusError(410, `the DLQ message of ${entry.id} (DLQ seq ${entry.dlqSeq}) has aged out; nothing to replay`)
  // when its stream stored it; else the earliest time the entry knows of (a later one would stretch the horizon)
  const times = [m.header?.get(DLQ.storedAt), m.header?.get("ce-time"), entry.failedAt]
    .map((t) => (t ? Date.parse(t) : NaN))
    .filter((t) => !Number.isNaN(t))
  return { subject: entry.subject, data: m.data, header: m.header, storedAt: times.length ? new Date(Math.min(...times)) : undefined }
}

export async function discardEntry(a: Pick<Admin, "kv">, id: string, by: string): Promise<DlqEntry> {
  return change(a.kv, id, (e) => {
    if (e.state === "discarded") throw new StatusError(409, `entry ${id} is already discarded`)
    return { ...e, state: "discarded", history: [...e.history, { at: new Date().toISOString(), action: "discarded", by }] }
  })
}
