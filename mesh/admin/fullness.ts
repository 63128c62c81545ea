// mesh/admin/fullness.ts — the gauges deploy/alerts/logiflow.rules.yaml alerts on, for every stream and durable
// consumer, sampled from the server at each scrape by one process that is always up (ops): a worker's own gauges vanish
// with the worker, which is exactly when its lag matters.
//   logiflow_stream_bytes / _max_bytes, logiflow_stream_messages / _max_messages, _max_age_seconds   {stream, discard}
//   logiflow_consumer_lag (num_pending), logiflow_consumer_unacked (num_ack_pending),
//   logiflow_consumer_oldest_unacked_seconds (age of the oldest message the consumer has not acked)   {stream, consumer}
import type { JetStreamManager } from "@nats-io/jetstream"
import type { Labels, Registry } from "../metrics.ts"

type Row = [Labels, number]
export type Fullness = {
  bytes: Row[]
  maxBytes: Row[]
  messages: Row[]
  maxMessages: Row[]
  maxAgeSeconds: Row[]
  lag: Row[]
  unacked: Row[]
  oldestUnacked: Row[]
}

/** One pass over the server's streams and durable consumers. */
export async function fullness(jsm: JetStreamManager, now = Date.now()): Promise<Fullness> {
  const f: Fullness = { bytes: [], maxBytes: [], messages: [], maxMessages: [], maxAgeSeconds: [], lag: [], unacked: [], oldestUnacked: [] }
  for await (const s of jsm.streams.list()) {
    const stream = s.config.name
    const labels = { stream, discard: String(s.config.discard ?? "old") }
    f.bytes.push([labels, s.state.bytes])
    f.messages.push([labels, s.state.messages])
    // unlimited (-1) has no fullness: no series, so no ratio and no alert
    if (s.config.max_bytes > 0) f.maxBytes.push([labels, s.config.max_bytes])
    if (s.config.max_msgs > 0) f.maxMessages.push([labels, s.config.max_msgs])
    if (s.config.max_age > 0) f.maxAgeSeconds.push([labels, s.config.max_age / 1e9])
    for await (const c of jsm.consumers.list(stream)) {
      if (!c.config.durable_name) continue
      const l = { stream, consumer: c.name }
      f.lag.push([l, c.num_pending])
      f.unacked.push([l, c.num_ack_pending])
      let age = 0
      if (c.num_pending + c.num_ack_pending > 0) {
        // everything up to the ack floor is acked, so the oldest unacked message is the first one after it that the
        // consumer reads (with several filters, the first after it in the stream: at worst a little older)
        const filter = c.config.filter_subject || ">"
        const m = await jsm.streams.getMessage(stream, { seq: c.ack_floor.stream_seq + 1, next_by_subj: filter } as unknown as {
          seq: number
        })
        if (m) age = Math.max(0, (now - m.time.getTime()) / 1000)
      }
      f.oldestUnacked.push([l, age])
    }
  }
  return f
}

/**
 * Registers the gauges on `metrics`; each scrape reads the server once (shared by the gauges, kept for a second).
 * `jsm` must be allowed STREAM.LIST, CONSUMER.LIST and MSG.GET on the streams (ops' user is).
 */
export function registerFullness(metrics: Registry, jsm: () => Promise<JetStreamManager>): void {
  let last: { at: number; value: Promise<Fullness> } | undefined
  const read = () => {
    if (!last || Date.now() - last.at > 1000) {
      const value = jsm().then((j) => fullness(j))
      value.catch(() => (last = undefined))
      last = { at: Date.now(), value }
    }
    return last.value
  }
  const gauge = (name: string, help: string, labelNames: string[], pick: (f: Fullness) => Row[]) =>
    metrics.gauge(name, help, { labelNames, collect: async () => pick(await read()) })
  const streams = ["stream", "discard"]
  const consumers = ["stream", "consumer"]
  gauge("logiflow_stream_bytes", "Bytes stored in the stream", streams, (f) => f.bytes)
  gauge("logiflow_stream_max_bytes", "The stream's max_bytes (none when unlimited)", streams, (f) => f.maxBytes)
  gauge("logiflow_stream_messages", "Messages stored in the stream", streams, (f) => f.messages)
  gauge("logiflow_stream_max_messages", "The stream's max_msgs (none when unlimited)", streams, (f) => f.maxMessages)
  gauge(
    "logiflow_stream_max_age_seconds",
    "The stream's max_age: older messages are dropped (none when unlimited)",
    streams,
    (f) => f.maxAgeSeconds,
  )
  gauge("logiflow_consumer_lag", "Messages not yet delivered to the durable consumer (num_pending)", consumers, (f) => f.lag)
  gauge("logiflow_consumer_unacked", "Messages delivered to the durable consumer and not yet acked", consumers, (f) => f.unacked)
  gauge(
    "logiflow_consumer_oldest_unacked_seconds",
    "Age of the oldest message the durable consumer has not acked (0 when it has nothing left)",
    consumers,
    (f) => f.oldestUnacked,
  )
}
