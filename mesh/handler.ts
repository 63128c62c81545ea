// mesh/handler.ts — what a worker's handler is and gets (its context), and what delivering to it needs of its
// consumer: the types between the worker files, the consume engine (consume.ts) and the rules (delivery.ts).
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream"
import type { KV } from "@nats-io/kv"
import type { EventData, EventName, Meta } from "../contracts/mod.ts"
import type { Backoff, ServerBackoff } from "./backoff.ts"
import type { Version } from "./features.ts"
import type { Logger } from "./log.ts"
import type { Outgoing } from "./publish.ts"
import type { PublishObserver } from "./tracing.ts"

export type HandlerContext = {
  worker: string
  /** metadata of the event being handled (ce-id, key, source, time, traceparent) */
  meta: Meta
  /** 1 on the first delivery */
  deliveries: number
  log: Logger
  /** tells the server the handler is still busy, so it does not redeliver after ack_wait */
  working(): void
  kv(bucket: string): Promise<KV>
}

export type Handler<N extends EventName> = (event: EventData<N>, ctx: HandlerContext) => Outgoing[] | void | Promise<Outgoing[] | void>
export type Handlers = { [N in EventName]?: Handler<N> }
/** For streams that carry no domain events (advisories, DLQ entries): gets the raw message; return = ack. */
export type RawHandler = (msg: JsMsg, ctx: HandlerContext) => void | Promise<void>

export type Outcome = "ack" | "nak" | "dlq"

/** What delivery needs of its consumer: one per consumer, shared by all its messages. */
export type DeliveryDeps = {
  worker: string
  js: JetStreamClient
  stream: string
  consumer: string
  maxDeliver: number
  handlers: Handlers
  raw?: RawHandler
  backoff: Backoff
  /** the consumer's server-side backoff, which every nak(delay) is corrected for */
  redelivery: ServerBackoff
  /** the connected server's version: a reason goes with term() only where the server takes it */
  serverVersion(): Version
  log: Logger
  context(msg: JsMsg, meta: Meta): HandlerContext
  observe(outcome: Outcome, type: string, seconds: number): void
  /** every publish (returned events, DLQ entries): subject, outcome, seconds */
  observePublish?: PublishObserver
  /** acks `msg` (default: at once); the worker batches acks so a burst leaves in one socket write */
  ack?(msg: JsMsg): void
}
