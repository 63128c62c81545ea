// contracts/envelope.ts — CloudEvents 1.0 binary mode over NATS headers: metadata in `ce-*` headers, data as the JSON body.
import { Buffer } from "node:buffer"
import * as v from "valibot"
import { parser } from "./check.ts"
import { ceTypeOf, type EventData, type EventName, events, isEventName, keyOf, subjectOf } from "./events.ts"

export type ContractReason = "missing-header" | "unknown-type" | "unknown-version" | "invalid-json" | "invalid-event"

export type ContractIssue = { path: string; message: string }

/** Input that breaks the contract. `reason` is what a DLQ entry records; `issues` say which field is wrong. */
export class ContractError extends Error {
  override name = "ContractError"
  constructor(
    readonly reason: ContractReason,
    message: string,
    readonly issues: ContractIssue[] = [],
  ) {
    super(message)
  }
}

export type Meta = {
  /** globally unique; also the `Nats-Msg-Id`, so a republish under the same id is deduped */
  id: string
  /** `logiflow/<worker>` */
  source: string
  /** the ordering key (a truck id); events with the same key are handled in order */
  key?: string
  time: string
  traceparent?: string
}

export type Envelope<N extends EventName = EventName> = {
  [K in N]: { name: K; version: number; type: string; subject: string; meta: Meta; data: EventData<K> }
}[N]

export const CE = {
  specversion: "ce-specversion",
  id: "ce-id",
  source: "ce-source",
  type: "ce-type",
  time: "ce-time",
  subject: "ce-subject",
  contentType: "content-type",
  traceparent: "traceparent",
} as const

const dec = new TextDecoder()

/**
 * A string's UTF-8 bytes. Buffer.from rather than TextEncoder: 0.1–0.2 µs against 0.8–1 µs a call on Node 20 and
 * Deno 2 alike (the encoder makes a fresh ArrayBuffer each time), and every published event takes two (headers, body).
 */
export const utf8 = (s: string): Uint8Array => Buffer.from(s, "utf8")

/** A string's length in UTF-8, without encoding it. */
export const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8")

export function issuesOf(issues: readonly v.BaseIssue<unknown>[]): ContractIssue[] {
  return issues.map((i) => ({ path: v.getDotPath(i) ?? "", message: i.message }))
}

const describe = (issues: ContractIssue[]) => issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ")

/** each schema's parser, made on first use (contracts/check.ts) */
const parsers = new Map<v.GenericSchema, (input: unknown) => v.SafeParseResult<v.GenericSchema>>()

/** Validates `data` against the current version of `name`'s schema; throws ContractError naming each wrong field. */
export function validate<N extends EventName>(name: N, data: unknown, version = 1): EventData<N> {
  const schema = (events[name].versions as Record<number, v.GenericSchema>)[version]
  if (!schema) throw new ContractError("unknown-version", `${name} has no version ${version}`)
  let parse = parsers.get(schema)
  if (!parse) parsers.set(schema, (parse = parser(schema)))
  const r = parse(data)
  if (!r.success) {
    const issues = issuesOf(r.issues)
    throw new ContractError("invalid-event", `${name}: ${describe(issues)}`, issues)
  }
  return r.output as EventData<N>
}

/** Event → subject, headers, body. Refuses to encode an event that breaks its own contract. */
export function encode<N extends EventName>(
  name: N,
  data: EventData<N>,
  meta: Omit<Meta, "time" | "key"> & { time?: string },
): { subject: string; key: string; headers: Record<string, string>; body: Uint8Array } {
  validate(name, data)
  // the key is the contract's (keyOf), never the producer's choice: subject, ordering and guards all follow from it
  const key = keyOf(name, data)
  return { subject: subjectOf(name, key), key, headers: ceHeaders(name, key, meta), body: utf8(JSON.stringify(data)) }
}

/** The CloudEvents headers of an event of `name` with key `key`, in the order they go on the wire. */
export function ceHeaders(name: EventName, key: string, meta: Omit<Meta, "time" | "key"> & { time?: string }): Record<string, string> {
  const headers: Record<string, string> = {
    [CE.specversion]: "1.0",
    [CE.id]: meta.id,
    [CE.source]: meta.source,
    [CE.type]: ceTypeOf(name),
    [CE.time]: meta.time ?? new Date().toISOString(),
    [CE.contentType]: "application/json",
  }
  headers[CE.subject] = key
  if (meta.traceparent) headers[CE.traceparent] = meta.traceparent
  return headers
}

const TYPE = /^logiflow\.([a-z]+)\.([A-Za-z]+)\.v(\d+)$/

/** Parses `ce-type` into the event name and version; throws `unknown-type` / `unknown-version`. */
export function parseType(type: string): { name: EventName; version: number } {
  const m = TYPE.exec(type)
  if (!m || !isEventName(m[2]!) || events[m[2]].domain !== m[1]) {
    throw new ContractError("unknown-type", `unknown event type "${type}"`)
  }
  const name = m[2]
  const version = Number(m[3])
  if (!Object.hasOwn(events[name].versions, version)) {
    throw new ContractError("unknown-version", `${name} v${version} is not a version this consumer knows`)
  }
  return { name, version }
}

/** `type`: one string per known type, so what keys maps by it downstream (metrics) hashes it once, not per message */
const known = new Map<string, { name: EventName; version: number; type: string }>()
// the type of the message before: a stream's messages are nearly always of one type, and comparing two strings is
// cheaper than hashing a fresh one for the map
let lastType = ""
let lastParsed: { name: EventName; version: number; type: string } | undefined

function need(header: (name: string) => string | undefined, name: string): string {
  const value = header(name)
  if (!value) throw new ContractError("missing-header", `missing header ${name}`)
  return value
}

/** Headers + body → a validated event, or a ContractError saying exactly what is wrong. */
export function decode(header: (name: string) => string | undefined, body: Uint8Array, subject = ""): Envelope {
  const type = need(header, CE.type)
  // a type parsed once is remembered (only known ones: parseType throws for the rest, so the map stays small)
  let t = type === lastType ? lastParsed : known.get(type)
  if (!t) known.set(type, (t = { ...parseType(type), type }))
  ;(lastType = type), (lastParsed = t)
  const meta: Meta = { id: need(header, CE.id), source: need(header, CE.source), time: header(CE.time) ?? "" }
  const key = header(CE.subject)
  if (key) meta.key = key
  const traceparent = header(CE.traceparent)
  if (traceparent) meta.traceparent = traceparent
  let json: unknown
  try {
    json = JSON.parse(dec.decode(body))
  } catch (err) {
    throw new ContractError("invalid-json", `body is not JSON: ${(err as Error).message}`)
  }
  const data = validate(t.name, json, t.version)
  return { name: t.name, version: t.version, type: t.type, subject, meta, data } as Envelope
}
