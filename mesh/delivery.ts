// mesh/delivery.ts — delivery rules 1–3 and 5 of ARCHITECTURE.md, for one message, in one place:
//   1. handler returns      → publish its events (acks awaited, msg ids from the cause), then ack the input
//   2. PermanentError, or input that breaks the contract → DLQ entry, then term(); DLQ publish fails → nak
//   3. any other error      → nak(delay) with client-side backoff; on the final delivery → DLQ as in 2
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream"
import type { KV } from "@nats-io/kv"
import { ContractError, decode, type EventData, type EventName, type Meta, REPLAY_STREAM, subjectOf } from "../contracts/mod.ts"
import { type Backoff, backoffDelay } from "./backoff.ts"
import { deadLetter as dlqEntry, publishDeadLetter } from "./dlq.ts"
import { PermanentError } from "./errors.ts"
import type { Logger } from "./log.ts"
import { childTraceparent, type Outgoing, publishTraced } from "./publish.ts"
import { type Context, contextOf, eventNameOf, type PublishObserver, publishing, type Span, SpanKind, SpanStatusCode, tracer, trace } from "./tracing.ts"

export type HandlerContext = {
  worker: string
  /** metadata of the event being handled (ce-id, key, source, time, traceparent) */
  meta: Meta
  /** 1 on the first delivery */
  deliveries: number
  log: Logger
  /** tells the server the handler is still busy, so it does not redeliver after ack_wait */
  working(): void
  /** runs `fn` once per key across redeliveries, crashes and instances; later calls get the stored result */
  once<T>(key: string, fn: () => T | Promise<T>): Promise<T>
  kv(bucket: string): Promise<KV>
}

export type Handler<N extends EventName> = (event: EventData<N>, ctx: HandlerContext) => Outgoing[] | void | Promise<Outgoing[] | void>
export type Handlers = { [N in EventName]?: Handler<N> }
/** For streams that carry no domain events (advisories, DLQ entries): gets the raw message; return = ack. */
export type RawHandler = (msg: JsMsg, ctx: HandlerContext) => void | Promise<void>

export type Outcome = "ack" | "nak" | "dlq"

export type DeliveryDeps = {
  worker: string
  js: JetStreamClient
  stream: string
  consumer: string
  maxDeliver: number
  handlers: Handlers
  raw?: RawHandler
  backoff: Backoff
  log: Logger
  context(msg: JsMsg, meta: Meta): HandlerContext
  observe(outcome: Outcome, type: string, seconds: number): void
  /** every publish (returned events, DLQ entries): subject, outcome, seconds */
  observePublish?: PublishObserver
  /** acks `msg` (default: at once); the worker batches acks so a burst leaves in one socket write */
  ack?(msg: JsMsg): void
}

// one pass over the headers: each MsgHdrs.get() copies and filters the key list, and a delivery reads eight of them
function headerOf(msg: JsMsg): (name: string) => string | undefined {
  const values = new Map<string, string>()
  if (msg.headers) for (const [k, v] of msg.headers) if (v[0]) values.set(k, v[0])
  return (name) => values.get(name)
}

const ack = (msg: JsMsg, d: DeliveryDeps) => (d.ack ? d.ack(msg) : msg.ack())

/**
 * Handles one message inside a `<worker> handle <Event>` consumer span whose parent is the span named by the
 * message's traceparent; the events it publishes are children of that span.
 */
export async function deliver(msg: JsMsg, d: DeliveryDeps): Promise<Outcome> {
  const header = headerOf(msg)
  const type = header("ce-type")
  const id = header("ce-id")
  const parent = contextOf(header("traceparent"))
  const span = tracer().startSpan(
    `${d.worker} handle ${d.raw ? d.stream : eventNameOf(type || "unknown")}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        "messaging.system": "nats",
        "messaging.destination.name": msg.subject,
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": d.consumer,
        "messaging.message.delivery_count": msg.info.deliveryCount,
        "logiflow.stream": d.stream,
        "logiflow.stream_seq": msg.seq,
        ...(id ? { "messaging.message.id": id, "cloudevents.event_id": id } : {}),
        ...(type ? { "cloudevents.event_type": type } : {}),
      },
    },
    parent,
  )
  try {
    const outcome = await handle(msg, header, d, span, trace.setSpan(parent, span))
    span.setAttribute("logiflow.outcome", outcome)
    return outcome
  } finally {
    span.end()
  }
}

async function handle(msg: JsMsg, header: (name: string) => string | undefined, d: DeliveryDeps, span: Span, spanContext: Context): Promise<Outcome> {
  const started = performance.now()
  const deliveries = msg.info.deliveryCount
  const final = deliveries >= d.maxDeliver
  let type = header("ce-type") || "unknown"

  const done = (outcome: Outcome) => (d.observe(outcome, type, (performance.now() - started) / 1000), outcome)

  const deadLetter = async (reason: string, error: string): Promise<Outcome> => {
    span.setAttribute("logiflow.dlq_reason", reason)
    span.setStatus({ code: SpanStatusCode.ERROR, message: `${reason}: ${error}` })
    try {
      const failed = {
        stream: d.stream,
        seq: msg.seq,
        consumer: d.consumer,
        subject: msg.subject,
        headers: msg.headers,
        data: msg.data,
        deliveries,
        reason,
        error,
      }
      // the entry keeps the original's traceparent (replays continue its trace); the span only records the publish
      const entry = await publishing(dlqEntry(failed).subject, { parent: spanContext, observe: d.observePublish }, () => publishDeadLetter(d.js, failed))
      // no reason string: 2.9.10 ignores term(reason) and redelivers; the reason lives in the entry's headers
      msg.term()
      d.log.warn("dead-lettered", { stream: d.stream, seq: msg.seq, type, reason, error, deliveries, dlqSeq: entry.seq })
      return done("dlq")
    } catch (err) {
      msg.nak(backoffDelay(deliveries, d.backoff))
      d.log.error("dead-letter publish failed; message handed back to the server", { stream: d.stream, seq: msg.seq, reason, error: err })
      return done("nak")
    }
  }

  try {
    if (d.raw) {
      await d.raw(msg, d.context(msg, { id: `${d.stream}:${msg.seq}`, source: "", time: msg.time.toISOString() }))
      ack(msg, d)
      return done("ack")
    }
    let event
    try {
      event = decode(header, msg.data, msg.subject)
    } catch (err) {
      if (err instanceof ContractError) return await deadLetter(err.reason, err.message)
      throw err
    }
    type = event.type
    // the ce-type must match the subject it was stored under (a replay travels on replay.<worker>.<stream>)
    if (d.stream !== REPLAY_STREAM && msg.subject !== subjectOf(event.name)) {
      return await deadLetter("wrong-subject", `${event.name} arrived on ${msg.subject}; its subject is ${subjectOf(event.name)}`)
    }
    const handler = d.handlers[event.name] as Handler<EventName> | undefined
    if (!handler) return await deadLetter("unhandled-type", `${d.worker} has no handler for ${event.name}`)
    const result = handler(event.data, d.context(msg, event.meta))
    // no await for a handler that returned plainly, none for no events: each costs a promise and a microtask
    const out = (result instanceof Promise ? await result : result) ?? []
    if (out.length) await Promise.all(
      out.map((o, i) =>
        publishTraced(
          d.js,
          o.name,
          o.data,
          {
            id: o.id ?? `${d.worker}:${event.meta.id}:${i}`,
            source: `logiflow/${d.worker}`,
            key: o.key ?? event.meta.key,
            traceparent: childTraceparent(event.meta.traceparent),
          },
          spanContext,
          d.observePublish,
        ),
      ),
    )
    ack(msg, d)
    return done("ack")
  } catch (err) {
    if (err instanceof PermanentError) return deadLetter(err.reason, err.message)
    // the handler produced an event that breaks its contract: a bug that retrying cannot fix
    if (err instanceof ContractError) return deadLetter("invalid-output", err.message)
    const error = (err as Error)?.message ?? String(err)
    if (final) return deadLetter("max-deliveries", error)
    const delay = backoffDelay(deliveries, d.backoff)
    span.setStatus({ code: SpanStatusCode.ERROR, message: error })
    msg.nak(delay)
    d.log.warn("handler failed; will retry", { stream: d.stream, seq: msg.seq, type, deliveries, delayMs: delay, error })
    return done("nak")
  }
}
