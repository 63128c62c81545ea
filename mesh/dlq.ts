// mesh/dlq.ts — the dead-letter entry (delivery rule 5), shared by the worker path and ops' advisory path.
// Both publish under `Nats-Msg-Id: dlq:<stream>:<consumer>:<seq>`, so whichever gets there first, a failure is one
// entry. The consumer is part of it: two workers failing the same event are two failures (with `dlq:<stream>:<seq>`,
// as first designed, the second one was deduped away — and then termed: lost).
import type { JetStreamClient } from "@nats-io/jetstream"
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node"
import { DLQ, dlqSubject, REPLAY, REPLAY_STREAM } from "../contracts/mod.ts"

export { DLQ, REPLAY }

export type Failed = {
  /** the stream and sequence the failing delivery came from (REPLAY for a replayed event) */
  stream: string
  seq: number
  consumer: string
  subject: string
  headers?: MsgHdrs
  data: Uint8Array
  deliveries: number
  reason: string
  error?: string
}

export type DeadLetter = { subject: string; msgID: string; headers: MsgHdrs; data: Uint8Array }

/** Original body (byte for byte) and headers, plus where, how often and why it failed. */
export function deadLetter(f: Failed): DeadLetter {
  const h = natsHeaders()
  if (f.headers) {
    for (const [k, values] of f.headers) {
      // server-owned headers (Nats-Msg-Id, Nats-Expected-*) of the original must not steer the DLQ publish
      if (/^nats-/i.test(k) || k.toLowerCase().startsWith("logiflow-dlq-")) continue
      for (const v of values) h.append(k, v)
    }
  }
  // a replayed event that fails again is filed under the stream it was first stored in
  const replayed = f.stream === REPLAY_STREAM && f.headers?.get(REPLAY.stream)
  const stream = replayed ? f.headers!.get(REPLAY.stream) : f.stream
  const seq = replayed ? f.headers!.get(REPLAY.seq) : String(f.seq)
  h.set(DLQ.stream, stream)
  h.set(DLQ.consumer, f.consumer)
  h.set(DLQ.seq, seq)
  h.set(DLQ.subject, replayed ? f.headers!.get(REPLAY.subject) || f.subject : f.subject)
  h.set(DLQ.deliveries, String(f.deliveries))
  h.set(DLQ.reason, f.reason)
  h.set(DLQ.error, (f.error ?? f.reason).replace(/[\r\n]+/g, " ").slice(0, 1024))
  h.set(DLQ.failedAt, new Date().toISOString())
  return { subject: dlqSubject(stream, f.consumer), msgID: `dlq:${f.stream}:${f.consumer}:${f.seq}`, headers: h, data: f.data }
}

/** Publishes the entry and waits for the DLQ stream to store it; throws if it was not stored. */
export async function publishDeadLetter(js: JetStreamClient, f: Failed): Promise<{ seq: number; duplicate: boolean }> {
  const d = deadLetter(f)
  const ack = await js.publish(d.subject, d.data, { msgID: d.msgID, headers: d.headers })
  return { seq: ack.seq, duplicate: ack.duplicate }
}
