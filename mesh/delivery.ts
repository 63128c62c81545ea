// mesh/delivery.ts — delivery rules 1–3 and 5 of ARCHITECTURE.md, for one message, in one place:
//   1. handler returns      → publish its events (acks awaited, msg ids from the cause), then ack the input
//   2. PermanentError, or input that breaks the contract → DLQ entry, then term(); DLQ publish fails → nak
//   3. any other error      → nak(delay) with client-side backoff; on the final delivery → DLQ as in 2
import {
  ContractError,
  decode,
  type Envelope,
  type EventName,
  isEventName,
  keyOf,
  publishedSubject,
  REPLAY_STREAM,
  streamOf,
  subjectOf,
} from "../contracts/mod.ts"
import { backoffDelay, nakDelay } from "./backoff.ts"
import type { DeliveryDeps, Handler, Outcome } from "./handler.ts"
import { deadLetter as dlqEntry, dlqHoldMs, publishDeadLetter, publishDeadLetterHolding, REPLAY } from "./dlq.ts"
import { PermanentError } from "./errors.ts"
import { versionSupports } from "./features.ts"
import { childTraceparent, type Outgoing, publishTraced } from "./publish.ts"
import type { PulledMsg } from "./pulled.ts"
import {
  type Context,
  contextOf,
  eventNameOf,
  publishing,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  spansOn,
  tracer,
  trace,
} from "./tracing.ts"

/** One message on its way through the rules: what every step needs, in one object. */
class Delivery {
  readonly started = performance.now()
  /** the ce-type as sent; read from the header only where decoding failed (on the way that succeeds the envelope has it) */
  type = ""
  constructor(
    readonly msg: PulledMsg,
    readonly d: DeliveryDeps,
    /** the consumer span, when spans are recorded, and the context whose parent it is for what this publishes */
    readonly span?: Span,
    readonly spanContext?: Context,
  ) {}
  // a delivery reads six headers: PulledMsg reads each straight from the raw header block (mesh/pull.ts)
  header(name: string) {
    return this.msg.header(name)
  }
  typeAsSent() {
    return (this.type ||= this.header("ce-type") || "unknown")
  }
  finish(outcome: Outcome): Outcome {
    this.d.observe(outcome, this.typeAsSent(), (performance.now() - this.started) / 1000)
    return outcome
  }
  ack(): Outcome {
    this.d.ack ? this.d.ack(this.msg) : this.msg.ack()
    return this.finish("ack")
  }
}

/**
 * Handles one message. When spans are recorded (spansOn), inside a `<worker> handle <Event>` consumer span whose
 * parent is the span named by the message's traceparent; the events it publishes are children of that span.
 * Without an SDK no span is made at all: on every message it was a measurable share of the runtime's cost.
 * Synchronous when it can be (a handler that returns plainly and publishes nothing): no promise, no microtask.
 */
export function deliver(msg: PulledMsg, d: DeliveryDeps): Outcome | Promise<Outcome> {
  if (!spansOn()) return handle(new Delivery(msg, d))
  const type = msg.header("ce-type")
  const id = msg.header("ce-id")
  const parent = contextOf(msg.header("traceparent"))
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
  const end = (outcome: Outcome) => {
    span.setAttribute("logiflow.outcome", outcome)
    span.end()
    return outcome
  }
  let outcome: Outcome | Promise<Outcome>
  try {
    outcome = handle(new Delivery(msg, d, span, trace.setSpan(parent, span)))
  } catch (err) {
    span.end()
    throw err
  }
  return outcome instanceof Promise ? outcome.then(end, (err) => (span.end(), Promise.reject(err))) : end(outcome)
}

/** rule 2 (and 3's last step): the entry is stored before the message is terminated; if it is not, nak */
async function deadLetter(x: Delivery, reason: string, error: string): Promise<Outcome> {
  const { msg, d } = x
  x.span?.setAttribute("logiflow.dlq_reason", reason)
  x.span?.setStatus({ code: SpanStatusCode.ERROR, message: `${reason}: ${error}` })
  const deliveries = msg.info.deliveryCount
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
      storedAt: msg.time,
    }
    // on the final delivery a refused entry is retried in place: handed back, the message would be filed by ops from
    // the MAX_DELIVERIES advisory, as `max-deliveries` instead of its own reason
    const holding = {
      holdMs: dlqHoldMs(),
      backoff: d.backoff,
      keepAlive: () => msg.working(),
      onRetry: (attempt: number, err: unknown) =>
        d.log.warn("dead-letter publish refused; holding the message and retrying", {
          stream: d.stream,
          seq: msg.seq,
          reason,
          attempt,
          error: err,
        }),
    }
    const publish = () => (deliveries >= d.maxDeliver ? publishDeadLetterHolding(d.js, failed, holding) : publishDeadLetter(d.js, failed))
    // the entry keeps the original's traceparent (replays continue its trace); the span only records the publish
    const entry = await publishing(dlqEntry(failed).subject, { parent: x.spanContext ?? ROOT_CONTEXT, observe: d.observePublish }, publish)
    // the reason reaches the MSG_TERMINATED advisory (2.10.4+); 2.9 would redeliver a term with a reason, so it gets a
    // plain term() there, and the entry's headers keep the reason on every server
    if (versionSupports(d.serverVersion(), "termReason")) msg.term(reason)
    else msg.term()
    d.log.warn("dead-lettered", {
      stream: d.stream,
      seq: msg.seq,
      type: x.typeAsSent(),
      reason,
      error,
      deliveries,
      dlqSeq: entry.seq,
      ...(entry.byReference ? { byReference: true } : {}),
    })
    return x.finish("dlq")
  } catch (err) {
    msg.nak(nakDelay(backoffDelay(deliveries, d.backoff), deliveries, d.redelivery))
    d.log.error("dead-letter publish failed; message handed back to the server", { stream: d.stream, seq: msg.seq, reason, error: err })
    return x.finish("nak")
  }
}

/**
 * A raw consumer (ops' ADVISORIES and DLQ) is the dead-letter net itself: whatever failed there is retried with backoff,
 * for as long as it takes (its consumers have no max deliveries), and said loudly; never filed into the DLQ it serves.
 */
function retryNet(x: Delivery, err: unknown): Outcome {
  const { msg, d } = x
  const deliveries = msg.info.deliveryCount
  const delay = backoffDelay(deliveries, d.backoff)
  x.span?.setStatus({ code: SpanStatusCode.ERROR, message: String((err as Error)?.message ?? err) })
  msg.nak(nakDelay(delay, deliveries, d.redelivery))
  d.log.error("could not handle; retrying, never dead-lettered", { stream: d.stream, seq: msg.seq, deliveries, delayMs: delay, error: err })
  return x.finish("nak")
}

/** what happens once a handler threw or rejected: rules 2 and 3 */
function failed(x: Delivery, err: unknown): Outcome | Promise<Outcome> {
  if (x.d.raw) return retryNet(x, err)
  if (err instanceof PermanentError) return deadLetter(x, err.reason, err.message)
  // the handler produced an event that breaks its contract: a bug that retrying cannot fix
  if (err instanceof ContractError) return deadLetter(x, "invalid-output", err.message)
  const { msg, d } = x
  const error = (err as Error)?.message ?? String(err)
  const deliveries = msg.info.deliveryCount
  if (deliveries >= d.maxDeliver) return deadLetter(x, "max-deliveries", error)
  const delay = backoffDelay(deliveries, d.backoff)
  x.span?.setStatus({ code: SpanStatusCode.ERROR, message: error })
  msg.nak(nakDelay(delay, deliveries, d.redelivery))
  d.log.warn("handler failed; will retry", { stream: d.stream, seq: msg.seq, type: x.typeAsSent(), deliveries, delayMs: delay, error })
  return x.finish("nak")
}

/** what a handler returned, checked: undefined when it is a list of events, else why it is not */
function wrongOutput(out: unknown): string | undefined {
  if (!Array.isArray(out)) return `${typeof out}, not an array of events`
  const at = out.findIndex((o) => typeof o !== "object" || o === null || !isEventName((o as { name?: unknown }).name as string))
  return at < 0 ? undefined : `${JSON.stringify(out[at]) ?? String(out[at])} at [${at}], not an event`
}

/** the `i`th event a handler returned, published as a child of what it handled: its msg id from the cause */
const publishOne = (d: DeliveryDeps, meta: Envelope["meta"], o: Outgoing, i: number, parent: Context) =>
  publishTraced(
    d.js,
    o.name,
    o.data,
    {
      id: o.id ?? `${d.worker}:${meta.id}:${i}`,
      source: `logiflow/${d.worker}`,
      traceparent: childTraceparent(meta.traceparent),
      once: o.once,
    },
    parent,
    d.observePublish,
  )

/** rule 1: the handler returned; its events are published (acks awaited) before the input is acked */
function handled(x: Delivery, event: Envelope, out: Outgoing[] | void): Outcome | Promise<Outcome> {
  if (out === undefined || out === null || (Array.isArray(out) && out.length === 0)) return x.ack()
  const { d } = x
  // a handler that returned something other than an array of events broke its output contract: retrying repeats it
  const wrong = wrongOutput(out)
  if (wrong) return failed(x, new ContractError("invalid-event", `${d.worker} handler for ${event.name} returned ${wrong}`))
  // the parent of the publishes' spans: only read when an SDK records them
  const parent = x.spanContext ?? (spansOn() ? contextOf(event.meta.traceparent) : ROOT_CONTEXT)
  const meta = event.meta
  let published: Promise<unknown>
  try {
    // anything publishTraced throws before its promise exists must not escape the delivery; the usual one event
    // without a Promise.all around it
    published =
      out.length === 1 ? publishOne(d, meta, out[0]!, 0, parent) : Promise.all(out.map((o, i) => publishOne(d, meta, o, i, parent)))
  } catch (err) {
    return failed(x, err)
  }
  return published.then(
    () => x.ack(),
    (err) => failed(x, err),
  )
}

async function handleRaw(x: Delivery): Promise<Outcome> {
  const { msg, d } = x
  try {
    await d.raw!(msg, d.context(msg, { id: `${d.stream}:${msg.seq}`, source: "", time: msg.time.toISOString() }))
  } catch (err) {
    return failed(x, err)
  }
  return x.ack()
}

/** The subject a replayed event was first stored under (its header), if the replay's own subject names that stream. */
function replayedFrom(replaySubject: string, original: string | undefined, name: EventName): string {
  if (!original) return `${replaySubject} without its original subject`
  return replaySubject.split(".")[2] === streamOf(name) ? original : `${replaySubject}, not a replay for ${streamOf(name)}`
}

function handle(x: Delivery): Outcome | Promise<Outcome> {
  const { msg, d } = x
  if (d.raw) return handleRaw(x)
  let event: Envelope
  try {
    event = decode((name) => x.header(name), msg.data, msg.subject)
  } catch (err) {
    if (err instanceof ContractError) return deadLetter(x, err.reason, err.message)
    return failed(x, err)
  }
  x.type = event.type
  // the ce-type and the event's key must match the subject it was stored under (a replay travels on
  // replay.<worker>.<stream> and names that subject in a header), and the ce-subject its lane was chosen by must be that key
  const key = keyOf(event.name, event.data)
  const subject = subjectOf(event.name, key)
  // (stored under a partitioned stream, the subject carries the generation and partition the server added)
  const storedAs = d.stream === REPLAY_STREAM ? replayedFrom(msg.subject, x.header(REPLAY.subject), event.name) : msg.subject
  if (storedAs !== subject && publishedSubject(storedAs) !== subject) {
    return deadLetter(x, "wrong-subject", `${event.name} with key ${key} arrived on ${storedAs}; its subject is ${subject}`)
  }
  if (event.meta.key !== key) {
    return deadLetter(
      x,
      "wrong-subject",
      `${event.name}'s ce-subject is ${event.meta.key === undefined ? "missing" : `"${event.meta.key}"`}; its key is "${key}"`,
    )
  }
  const handler = d.handlers[event.name] as Handler<EventName> | undefined
  if (!handler) return deadLetter(x, "unhandled-type", `${d.worker} has no handler for ${event.name}`)
  let result: ReturnType<Handler<EventName>>
  try {
    result = handler(event.data, d.context(msg, event.meta))
  } catch (err) {
    return failed(x, err)
  }
  if (!(result instanceof Promise)) return handled(x, event, result)
  return result.then(
    (out) => handled(x, event, out),
    (err) => failed(x, err),
  )
}
