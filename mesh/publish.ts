// mesh/publish.ts — every event leaves through here: encoded by the contract, msg id = ce-id, JetStream ack awaited.
import type { JetStreamClient, PubAck } from "@nats-io/jetstream"
import type { MsgHdrs } from "@nats-io/transport-node"
import { InvalidArgumentError } from "@nats-io/transport-node"
import {
  ceTypeOf,
  encode,
  type EventData,
  type EventName,
  keyOf,
  MAX_EVENT_BYTES,
  streamOf,
  subjectsOf,
  utf8Length,
} from "../contracts/mod.ts"
import { publishAcked } from "./acked.ts"
import { ApiCode, apiCode, TooLarge } from "./errors.ts"
import { OutgoingHeaders } from "./headers.ts"
import { type Context, type PublishObserver, publishing, spansOn } from "./tracing.ts"

/**
 * An event a handler returns. `once`: the event is the one effect of its key for the stream's lifetime (an invoice
 * for a route): it is stored only if nothing was stored on its subject yet, and a refusal means it already was —
 * so a redelivery, a retry or a replay days later, past the duplicate window, cannot store a second one.
 */
export type Outgoing = { [N in EventName]: { name: N; data: EventData<N>; id?: string; once?: boolean } }[EventName]

export type PublishMeta = {
  id: string
  source: string
  traceparent?: string
  once?: boolean
  /** stored only if the last message on its subject is this one (0: none), else refused with 10071: an append guard */
  expectLastSubjectSequence?: number
  /** the subject (or pattern) whose last message that is, when not the one it is stored under */
  expectLastSubjectSequenceSubject?: string
}

/** Headers for a publish (mesh/headers.ts: kept as lines, encoded once). */
export const toHeaders = (record: Record<string, string>): MsgHdrs => new OutgoingHeaders(record)

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))
/** lowercase hex of `b` (a table lookup per byte: Array.from + padStart + join cost ~5 µs per id) */
export function hex(b: Uint8Array): string {
  let s = ""
  for (let i = 0; i < b.length; i++) s += HEX[b[i]!]
  return s
}

// crypto randomness drawn 4 KiB at a time: one getRandomValues call per id was most of an id's cost
let pool = new Uint8Array(0)
let used = 0
/** `n` cryptographically random bytes (a view into a pool: copy them before keeping them past the next call) */
export function randomBytes(n: number): Uint8Array {
  if (used + n > pool.length) {
    pool = crypto.getRandomValues(new Uint8Array(Math.max(4096, n)))
    used = 0
  }
  used += n
  return pool.subarray(used - n, used)
}
const randomHex = (bytes: number) => hex(randomBytes(bytes))

/**
 * A W3C traceparent: the same trace with a new span and the parent's flags, or a new trace when there is none. A
 * new trace is marked sampled only while an SDK records spans: with none, nothing was recorded, and a sampled flag
 * makes nats-server (2.11+) copy every header of the message into a map on each publish, to look for a trace
 * destination: 3.5 µs more of its CPU per publish, on the 11–12 µs the rest of a once-guarded publish with
 * these headers costs it.
 */
export function childTraceparent(parent?: string): string {
  const m = parent ? /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/.exec(parent) : null
  return m ? `00-${m[1]}-${randomHex(8)}-${m[2]}` : `00-${randomHex(16)}-${randomHex(8)}-${spansOn() ? "01" : "00"}`
}

// "NATS/1.0\r\n" and the closing "\r\n", plus the Nats-Msg-Id and Nats-Expected-* lines a publish may add
const HEADER_FRAME = 12 + 96

/** What the stream counts against its max_msg_size: the header block as sent (msg id included) and the body. */
export function storedBytes(headers: Record<string, string>, body: Uint8Array, msgId: string): number {
  let n = HEADER_FRAME + utf8Length(msgId)
  for (const k in headers) n += utf8Length(k) + utf8Length(headers[k]!) + 4
  return n + body.length
}

/** More than an event's header block ever takes: a body this far below its limit fits without counting them. */
const HEADERS_AT_MOST = 2048

/** Throws TooLarge when the event would be bigger than its stream stores (MAX_EVENT_BYTES). */
function checkSize(name: EventName, headers: Record<string, string>, body: Uint8Array, msgId: string): void {
  const stream = streamOf(name) as keyof typeof MAX_EVENT_BYTES
  const limit = MAX_EVENT_BYTES[stream]
  // the body alone is the usual case, checked without walking the headers
  if (limit === undefined || body.length + HEADERS_AT_MOST < limit) return
  const size = storedBytes(headers, body, msgId)
  if (size > limit) throw new TooLarge(`${name} of ${size} bytes is larger than the ${limit} bytes ${stream} stores`)
}

/**
 * An event as it would be published (a traceparent included) checked against its stream's MAX_EVENT_BYTES: throws
 * TooLarge. For an edge that must refuse before it records anything (routing's 413).
 */
export function checkEventSize<N extends EventName>(name: N, data: EventData<N>, meta: { id: string; source: string }): void {
  // the usual event is far below its limit: its JSON (at most 3 bytes per UTF-16 unit) says so without the envelope
  const limit = MAX_EVENT_BYTES[streamOf(name) as keyof typeof MAX_EVENT_BYTES]
  if (limit === undefined || JSON.stringify(data).length * 3 + HEADERS_AT_MOST < limit) return
  const { headers, body } = encode(name, data, { ...meta, traceparent: childTraceparent() })
  checkSize(name, headers, body, meta.id)
}

/** The server refused the message for its size: the stream's max_msg_size (10054), or its max_payload. */
const refusedForSize = (err: unknown) => apiCode(err) === ApiCode.MessageTooLarge || err instanceof InvalidArgumentError

/**
 * Publishes one event and waits for the stream to store it. The ce-id doubles as `Nats-Msg-Id`, so publishing
 * the same event again within the stream's duplicate window is stored once (PubAck.duplicate = true). With `once`,
 * the server also refuses it when its subject holds any message (`Nats-Expected-Last-Subject-Sequence: 0`), at any
 * age; that refusal is answered as a duplicate.
 */
export async function publishEvent<N extends EventName>(
  js: JetStreamClient,
  name: N,
  data: EventData<N>,
  meta: PublishMeta,
): Promise<PubAck> {
  const { subject, headers, body } = encode(name, data, meta)
  checkSize(name, headers, body, meta.id)
  return send(js, name, subject, headers, body, meta).catch((err) => {
    if (!refusedForSize(err)) throw err
    throw new TooLarge(`${name} of ${storedBytes(headers, body, meta.id)} bytes refused by ${streamOf(name)}: ${(err as Error).message}`)
  })
}

async function send(
  js: JetStreamClient,
  name: EventName,
  subject: string,
  headers: Record<string, string>,
  body: Uint8Array,
  meta: PublishMeta,
): Promise<PubAck> {
  if (meta.expectLastSubjectSequence !== undefined) {
    const expect = {
      lastSubjectSequence: meta.expectLastSubjectSequence,
      ...(meta.expectLastSubjectSequenceSubject ? { lastSubjectSequenceSubject: meta.expectLastSubjectSequenceSubject } : {}),
    }
    return publishAcked(js, subject, body, meta.id, new OutgoingHeaders(headers), expect)
  }
  if (!meta.once) return publishAcked(js, subject, body, meta.id, new OutgoingHeaders(headers))
  try {
    return await publishAcked(js, subject, body, meta.id, new OutgoingHeaders(headers), { lastSubjectSequence: 0 })
  } catch (err) {
    if (apiCode(err) !== ApiCode.WrongLastSequence) throw err
    return { stream: streamOf(name), seq: 0, duplicate: true, domain: "" } as PubAck
  }
}

/**
 * publishEvent inside a `publish <subject>` span, child of `parent`, timed for `observe`. The event carries the
 * span's traceparent when an SDK records spans, else `meta.traceparent` (or a new trace when that is unset).
 */
export function publishTraced<N extends EventName>(
  js: JetStreamClient,
  name: N,
  data: EventData<N>,
  meta: PublishMeta,
  parent: Context,
  observe?: PublishObserver,
): Promise<PubAck> {
  // spans and the publish metric are named by the event's subjects (`….RouteCalculated.*`), never one key's subject:
  // a series per truck would grow without bound. The attributes are a method (tsx names an arrow made per publish)
  const o = {
    parent,
    fallback: meta.traceparent ?? childTraceparent(),
    observe,
    attributes() {
      return {
        "messaging.message.id": meta.id,
        "cloudevents.event_id": meta.id,
        "cloudevents.event_type": ceTypeOf(name),
        "cloudevents.event_source": meta.source,
        "cloudevents.event_subject": keyOf(name, data),
      }
    },
  }
  return publishing(subjectsOf(name), o, (traceparent) => publishEvent(js, name, data, { ...meta, traceparent }))
}

/** A UUIDv7: time-ordered, globally unique; `prefix` (an edge site) keeps ids from different sites apart. */
export function newId(prefix = ""): string {
  const b = randomBytes(16).slice()
  let ms = Date.now()
  for (let i = 5; i >= 0; i--) (b[i] = ms % 256), (ms = Math.floor(ms / 256))
  b[6] = (b[6]! & 0x0f) | 0x70
  b[8] = (b[8]! & 0x3f) | 0x80
  const h = hex(b)
  const id = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
  return prefix ? `${prefix}-${id}` : id
}
