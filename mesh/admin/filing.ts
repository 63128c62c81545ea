// mesh/admin/filing.ts — what ops checks before a DLQ message becomes an entry, and before an entry is replayed.
// A worker may publish only `dlq.*.<itself>` (nats.conf), so the subject says who filed; the headers and body are the
// filer's word, and are believed only where they agree with the original still in its stream. A failure whose effect
// is stored anyway (the invoice of a route) is not an open failure. And a replay stays safe only within the horizon
// of the guard that makes its effect happen once: the retention of the stream that holds the effects.
import type { StoredMsg } from "@nats-io/jetstream"
import type { MsgHdrs } from "@nats-io/transport-node"
import { StatusError } from "itty-router"
import { effectOf, eventOfSubject, publishedSubject, REPLAY_STREAM, topology } from "../../contracts/mod.ts"
import { DLQ, REPLAY } from "../dlq.ts"
import type { Admin, DlqEntry, DlqMessage } from "./entries.ts"
import { entryOf, headerOf, ORIGINAL_GONE } from "./entries.ts"
import { subjectMatches } from "./list.ts"
import { layoutOf } from "../partitioning.ts"

const topo = topology()

/** The consumer `dlq.<stream>.<consumer>` names, with what it reads; a string says why there is none. */
export function consumerOfSubject(subject: string): { stream: string; consumer: string; filters: string[] } | string {
  const [dlq, stream, consumer, ...rest] = subject.split(".")
  if (dlq !== "dlq" || !stream || !consumer || rest.length) return `${subject} is not a dead-letter subject (dlq.<stream>.<consumer>)`
  const spec = topo.consumers.find((c) => c.stream === stream && c.durable === consumer)
  // ops' own consumers (no events) retry their failures and never file them
  if (!spec || spec.events.length === 0) return `no worker consumes ${stream} as ${consumer}: nothing there can fail`
  return { stream, consumer, filters: spec.filterSubjects }
}

/** The original of a dead letter, or null when it has left its stream (age, limits, deleted). */
export const originalOf = (a: Pick<Admin, "jsm">, stream: string, seq: number): Promise<StoredMsg | null> =>
  a.jsm.streams.getMessage(stream, { seq })

// headers that belong to the entry or to the server, not to the event
const OWN = /^(nats-|logiflow-dlq-|logiflow-replay-)/i

function eventHeaders(h?: MsgHdrs): Map<string, string> {
  const out = new Map<string, string>()
  for (const [k, vs] of h ?? []) if (!OWN.test(k)) out.set(k.toLowerCase(), vs.join("\n"))
  return out
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])

/** Why `m` does not match `original`, or undefined when it does (a by-reference entry: its headers only). */
function mismatch(m: DlqMessage, original: StoredMsg, byReference: boolean): string | undefined {
  const h = headerOf(m.headers)
  if (h(DLQ.subject) !== original.subject) return `it names subject ${h(DLQ.subject) ?? "(none)"}; the original is on ${original.subject}`
  const mine = eventHeaders(m.headers)
  const theirs = eventHeaders(original.header)
  for (const [k, v] of mine) if (theirs.get(k) !== v) return `its header ${k} differs from the original's`
  if (byReference) return undefined
  if (mine.size !== theirs.size) return "its headers differ from the original's"
  if (!sameBytes(m.data ?? new Uint8Array(), original.data)) return "its body differs from the original's"
  return undefined
}

export type Checked = { ok: true; entry: DlqEntry } | { ok: false; why: string }

/**
 * A DLQ message as an entry, checked: its subject names a consumer of the topology (and the headers agree), and its
 * headers and body are the original's, still in its stream at the sequence it names. An entry whose original is gone
 * (ops was down longer than the stream keeps events) is kept, marked unverified, and never replayed. A refusal is a
 * forged or broken entry: it is not indexed.
 */
export async function checkDeadLetter(a: Admin, m: DlqMessage): Promise<Checked> {
  const named = consumerOfSubject(m.subject)
  if (typeof named === "string") return { ok: false, why: named }
  const h = headerOf(m.headers)
  const claimed = [h(DLQ.stream), h(DLQ.consumer)]
  if (claimed[0] !== named.stream || claimed[1] !== named.consumer) {
    return { ok: false, why: `published on ${m.subject} with headers naming ${claimed[0] ?? "?"}/${claimed[1] ?? "?"}` }
  }
  const seq = Number(h(DLQ.seq))
  if (!Number.isSafeInteger(seq) || seq < 1) return { ok: false, why: `no stream sequence (${DLQ.seq}: ${h(DLQ.seq) ?? "missing"})` }
  const entry = entryOf(m)
  // the advisory path's own entry for an original that was already gone: ops filed it, nothing to compare
  if (entry.error === ORIGINAL_GONE && !m.data?.length) return { ok: true, entry: { ...entry, unverified: ORIGINAL_GONE } }
  const original = await originalOf(a, named.stream, seq)
  if (!original)
    return {
      ok: true,
      entry: { ...entry, unverified: `${named.stream} seq ${seq} is no longer in its stream; this copy cannot be checked against it` },
    }
  // a partitioned stream stores an event under its subject plus generation and partition: the filters name the former
  if (!named.filters.some((f) => subjectMatches(f, publishedSubject(original.subject)))) {
    return { ok: false, why: `${named.stream} seq ${seq} is on ${original.subject}, which ${named.consumer} does not read` }
  }
  const wrong = mismatch(m, (await replayedAs(a, m, named.stream, seq)) ?? original, entry.byReference === true)
  if (wrong) return { ok: false, why: `${named.stream} seq ${seq}: ${wrong}` }
  const stored = await effectStored(a, named.consumer, original)
  if (stored) {
    const note = `${stored.subject} holds it (${stored.stream} seq ${stored.seq})`
    return {
      ok: true,
      entry: {
        ...entry,
        state: "resolved",
        history: [...entry.history, { at: new Date().toISOString(), action: "resolved", by: "ops", note }],
      },
    }
  }
  return { ok: true, entry }
}

/**
 * A replay that failed again was filed from the REPLAY stream's message, which carries an operator's correction
 * when the entry was edited: that message, seen as the original it stands for, is what the entry must match.
 */
async function replayedAs(a: Pick<Admin, "jsm">, m: DlqMessage, stream: string, seq: number) {
  const replaySeq = /^dlq:REPLAY:(?:[^:]+:)?(\d+)$/.exec(headerOf(m.headers)("Nats-Msg-Id") ?? "")?.[1]
  if (!replaySeq) return undefined
  const r = await a.jsm.streams.getMessage(REPLAY_STREAM, { seq: Number(replaySeq) }).catch(() => null)
  const h = headerOf(r?.header)
  if (!r || h(REPLAY.stream) !== stream || h(REPLAY.seq) !== String(seq)) return undefined
  return { subject: h(REPLAY.subject) ?? "", header: r.header, data: r.data, seq: r.seq, time: r.time } as StoredMsg
}

/** The stored effect (`contracts/effects.ts`) of `original` as handled by `consumer`, if the worker declares one. */
export async function effectStored(a: Pick<Admin, "jsm">, consumer: string, original: { subject: string; data: Uint8Array }) {
  const name = eventOfSubject(publishedSubject(original.subject))
  if (!name) return undefined
  let input: unknown
  try {
    input = JSON.parse(new TextDecoder().decode(original.data))
  } catch {
    return undefined
  }
  const effect = effectOf(consumer, name, input)
  if (!effect) return undefined
  const m = await lastOf(a, effect)
  return m ? { stream: effect.stream, subject: effect.subject, seq: m.seq } : undefined
}

/** The last message stored for an effect's subject, its stream partitioned or not (then generation and partition follow). */
export async function lastOf(a: Pick<Admin, "jsm">, effect: { stream: string; subject: string }) {
  return (
    (await a.jsm.streams.getMessage(effect.stream, { last_by_subj: effect.subject })) ??
    (await a.jsm.streams.getMessage(effect.stream, { last_by_subj: `${effect.subject}.>` }))
  )
}

const DAY_NS = 86_400e9
const age = (ns: number) => (ns % DAY_NS === 0 ? `${ns / DAY_NS} d` : `${Math.round(ns / 3600e9)} h`)

/**
 * Refuses (409) a replay that could store a second effect: when no effect is stored for the original and the original
 * is older than the effect stream keeps effects, one stored for it may have aged out, and the once-guard (nothing
 * stored on its subject yet) would let a second one in. With the effect stored, the guard refuses the replay's.
 */
export async function checkReplay(
  a: Pick<Admin, "jsm">,
  entry: DlqEntry,
  original: { subject: string; data: Uint8Array; storedAt?: Date },
): Promise<void> {
  const name = eventOfSubject(publishedSubject(original.subject))
  let input: unknown
  try {
    input = JSON.parse(new TextDecoder().decode(original.data))
  } catch {
    return
  }
  const effect = name && effectOf(entry.consumer, name, input)
  if (!effect) return
  const stored = await lastOf(a, effect)
  const info = await a.jsm.streams.info(effect.stream)
  if (stored) {
    // the guard looks at the subject a new effect would be stored under: after a change of partition layout, another
    const generation = /\.g(\d+)\.\d+$/.exec(stored.subject)?.[1]
    if ((generation === undefined ? undefined : Number(generation)) === layoutOf(info.config)?.generation) return
    throw new StatusError(
      409,
      `entry ${entry.id}: ${effect.stream} holds its ${effect.event} as ${stored.subject}, under an earlier partition layout; the once-guard ` +
        `checks only the current one, so a replay could store a second (bill it twice). Discard the entry`,
    )
  }
  const maxAge = info.config.max_age
  const since = original.storedAt ?? new Date(entry.failedAt)
  if (maxAge > 0 && Date.now() - since.getTime() >= maxAge / 1e6) {
    throw new StatusError(
      409,
      `entry ${entry.id}: its event was stored at ${since.toISOString()}, longer ago than ${effect.stream} keeps ${effect.event} (max_age ${age(maxAge)}). ` +
        `One stored for it then may have aged out, and a replay could store a second (bill it twice). ` +
        `Check the records for ${effect.subject}; if it never had one, issue it anew; then discard this entry`,
    )
  }
}
