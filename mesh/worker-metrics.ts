// mesh/worker-metrics.ts — the metrics every worker exports on /metrics, besides what its own routes add: events
// handled, handler and publish times, messages held, the NATS connection, requests refused before routing, and its
// consumers' pending and ack-pending counts sampled at scrape.
import type { ConsumerInfo } from "@nats-io/jetstream"
import type { ConsumerSpec } from "../contracts/mod.ts"
import { boundPairs, type Registry } from "./metrics.ts"
import { withTimeout } from "./time.ts"
import type { PublishObserver, PublishOutcome } from "./tracing.ts"

export type WorkerMetricSources = {
  /** messages this process holds (running or waiting for their key) */
  held: () => number
  connected: () => boolean
  /** the consumer's info, or undefined while not connected */
  consumerInfo: (stream: string, durable: string) => Promise<ConsumerInfo> | undefined
  specs: readonly ConsumerSpec[]
}

export function workerMetrics(metrics: Registry, from: WorkerMetricSources) {
  const events = metrics.counter("logiflow_events_total", "Events handled, by stream, type and outcome (ack, nak, dlq)", [
    "stream",
    "type",
    "outcome",
  ])
  const handlerSeconds = metrics.histogram("logiflow_handler_seconds", "Time from pickup to ack/nak/dlq, by stream", {
    labelNames: ["stream"],
  })
  const publishSeconds = metrics.histogram(
    "logiflow_publish_seconds",
    "Time for JetStream to store a publish (events and DLQ entries), by subject and outcome (ok, duplicate, error)",
    { labelNames: ["subject", "outcome"] },
  )
  const publishSeries = boundPairs((subject: string, outcome: PublishOutcome) => publishSeconds.bind({ subject, outcome }))
  const observePublish: PublishObserver = (subject, outcome, seconds) => publishSeries(subject, outcome).observe(seconds)
  metrics.gauge("logiflow_inflight", "Messages held by this worker (running or waiting for their key)", { collect: from.held })
  metrics.gauge("logiflow_nats_connected", "1 while connected to NATS", { collect: () => (from.connected() ? 1 : 0) })
  const natsEvents = metrics.counter("logiflow_nats_connection_events_total", "NATS connection changes, by event (disconnect, reconnect)", [
    "event",
  ])
  const refused = metrics.counter(
    "logiflow_http_refused_total",
    "Requests refused before routing (malformed, too large, too slow), by status",
    ["status"],
  )

  const consumerGauge = (field: "num_pending" | "num_ack_pending") => async (): Promise<[Record<string, string>, number][]> => {
    const rows = await Promise.all(
      from.specs.map(async (c) => {
        const asked = from.consumerInfo(c.stream, c.durable)
        const info = asked && (await withTimeout(asked, 1000).catch(() => undefined))
        return info ? ([{ stream: c.stream, consumer: c.durable }, info[field]] as [Record<string, string>, number]) : undefined
      }),
    )
    return rows.filter((r) => r !== undefined)
  }
  const sampled = { labelNames: ["stream", "consumer"] }
  metrics.gauge("logiflow_consumer_pending", "Messages not yet delivered to the consumer (sampled at scrape)", {
    ...sampled,
    collect: consumerGauge("num_pending"),
  })
  metrics.gauge("logiflow_consumer_ack_pending", "Messages delivered but not yet acked (sampled at scrape)", {
    ...sampled,
    collect: consumerGauge("num_ack_pending"),
  })
  return { events, handlerSeconds, observePublish, natsEvents, refused }
}
