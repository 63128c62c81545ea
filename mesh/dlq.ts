// mesh/dlq.ts — the dead-letter entry (delivery rule 5), shared by the worker path and ops' advisory path.
// Both publish under `Nats-Msg-Id: dlq:<stream>:<consumer>:<seq>`, so whichever gets there first, a failure is one
// entry. The consumer is part of it: two workers failing the same event are two failures (with `dlq:<stream>:<seq>`,
// as first designed, the second one was deduped away — and then termed: lost).
import type { JetStreamClient } from "@nats-io/jetstream"
import { headers as natsHeaders, InvalidArgumentError, type MsgHdrs } from "@nats-io/transport-node"
import { BY_REFERENCE, DLQ, dlqSubject, REPLAY, REPLAY_STREAM } from "../contracts/mod.ts"
import { type Backoff, backoffDelay } from "./backoff.ts"
import { envInt } from "./env.ts"
import { ApiCode, apiCode } from "./errors.ts"
import { sleep } from "./time.ts"

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
  /** when the failing message was stored in `stream` */
  storedAt?: Date
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
  if (f.storedAt && !replayed) h.set(DLQ.storedAt, f.storedAt.toISOString())
  return { subject: dlqSubject(stream, f.consumer), msgID: `dlq:${f.stream}:${f.consumer}:${f.seq}`, headers: h, data: f.data }
}

// what a by-reference entry keeps of the original's headers: enough to list and trace it, nothing that can be large
const KEPT = /^(ce-|traceparent$|logiflow-replay-)/i

/**
 * The same entry without a body, naming its original by stream and sequence (the headers say where): for an event
 * that, with the DLQ headers added, is larger than the DLQ stream's maximum message size (or the server's payload).
 */
export function byReference(d: DeadLetter): DeadLetter {
  const h = natsHeaders()
  for (const [k, values] of d.headers)
    if (KEPT.test(k) || k.toLowerCase().startsWith("logiflow-dlq-")) for (const v of values) h.append(k, v)
  h.set(DLQ.payload, BY_REFERENCE)
  return { ...d, headers: h, data: new Uint8Array() }
}

/** The DLQ refused the entry for its size: the stream's max_msg_size (10054) or the server's max_payload. */
const tooLarge = (err: unknown) => apiCode(err) === ApiCode.MessageTooLarge || err instanceof InvalidArgumentError

/** Publishes the entry and waits for the DLQ stream to store it; throws if it was not stored. */
export async function publishDeadLetter(
  js: JetStreamClient,
  f: Failed,
): Promise<{ seq: number; duplicate: boolean; byReference: boolean }> {
  const d = deadLetter(f)
  try {
    const ack = await js.publish(d.subject, d.data, { msgID: d.msgID, headers: d.headers })
    return { seq: ack.seq, duplicate: ack.duplicate, byReference: false }
  } catch (err) {
    if (!tooLarge(err)) throw err
    // the original stays in its stream: the entry names it, and ops shows and replays it from there
    const r = byReference(d)
    const ack = await js.publish(r.subject, r.data, { msgID: r.msgID, headers: r.headers })
    return { seq: ack.seq, duplicate: ack.duplicate, byReference: true }
  }
}

/** How long a final delivery holds its message while the DLQ refuses its entry (DLQ_HOLD_MS, default 60 s). */
export const dlqHoldMs = () => envInt("DLQ_HOLD_MS", 60_000)

export type Holding = {
  /** how long to keep trying; past it the caller hands the message back */
  holdMs: number
  backoff: Backoff
  /** tells the server the message is still being worked on, so it neither redelivers nor gives up on it */
  keepAlive(): void
  onRetry?(attempt: number, err: unknown): void
}

/**
 * publishDeadLetter, retried while the DLQ refuses (full, unreachable, a denied subject), for up to `holdMs`, keeping
 * the message alive meanwhile. For the final delivery: handed back, it would be filed by ops from the server's
 * MAX_DELIVERIES advisory, under the reason `max-deliveries` instead of its own.
 */
export async function publishDeadLetterHolding(
  js: JetStreamClient,
  f: Failed,
  h: Holding,
): Promise<{ seq: number; duplicate: boolean; byReference: boolean }> {
  const until = Date.now() + h.holdMs
  for (let attempt = 1; ; attempt++) {
    try {
      return await publishDeadLetter(js, f)
    } catch (err) {
      const wait = Math.min(backoffDelay(attempt, h.backoff), until - Date.now())
      if (wait <= 0) throw err
      h.onRetry?.(attempt, err)
      // in short steps: a wait longer than ack_wait must not let the server take the message back meanwhile
      for (const end = Date.now() + wait; Date.now() < end; ) {
        h.keepAlive()
        await sleep(Math.min(250, end - Date.now()))
      }
      h.keepAlive()
    }
  }
}
