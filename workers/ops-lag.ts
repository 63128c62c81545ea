// workers/ops-lag.ts — consumer lag over time, for the dashboard's sparklines: ops samples every durable's lag
// (pending + in flight) every OPS_LAG_SAMPLE_MS (10 s) and keeps OPS_LAG_WINDOW_MINUTES (60) of samples in memory,
// so a page opened after an incident still shows how the backlog grew and drained. Bounded: window / interval
// samples per consumer (360 by default); a consumer gone for a whole window is forgotten. Lost on restart, by design:
// lag history for longer than an hour belongs in the metrics (logiflow_consumer_* in Prometheus).
import type { JetStreamManager } from "@nats-io/jetstream"
import { envInt, repeat } from "../mesh/mod.ts"

export type LagSeries = {
  everyMs: number
  windowMs: number
  /** `<stream>/<consumer>` → [unix ms, lag] oldest first */
  consumers: Record<string, [number, number][]>
}

export type LagSampler = { start(jsm: () => Promise<JetStreamManager>): void; stop(): void; series(): LagSeries }

export function lagSampler(o: { everyMs?: number; windowMs?: number } = {}): LagSampler {
  const everyMs = o.everyMs ?? envInt("OPS_LAG_SAMPLE_MS", 10_000)
  const windowMs = o.windowMs ?? envInt("OPS_LAG_WINDOW_MINUTES", 60) * 60_000
  const samples = new Map<string, [number, number][]>()
  let sampling: { stop(): void } | undefined

  async function sample(jsm: JetStreamManager): Promise<void> {
    const now = Date.now()
    for await (const s of jsm.streams.list()) {
      // KV buckets' streams have only short-lived watchers; the lag that matters is the workers' durables'
      if (s.config.name.startsWith("KV_")) continue
      for await (const c of jsm.consumers.list(s.config.name)) {
        if (!c.config.durable_name) continue
        const key = `${s.config.name}/${c.name}`
        const row = samples.get(key) ?? []
        row.push([now, c.num_pending + c.num_ack_pending])
        samples.set(key, row)
      }
    }
    for (const [key, row] of samples) {
      while (row.length && row[0]![0] < now - windowMs) row.shift()
      if (!row.length) samples.delete(key)
    }
  }

  return {
    start(jsm) {
      // a failed sample (NATS away for a moment) leaves a gap in the line, nothing else
      sampling = repeat(everyMs, () => jsm().then(sample))
    },
    stop() {
      sampling?.stop()
    },
    series: () => ({ everyMs, windowMs, consumers: Object.fromEntries(samples) }),
  }
}
