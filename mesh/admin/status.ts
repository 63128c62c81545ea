// mesh/admin/status.ts — the mesh at a glance: running workers (heartbeats), streams, consumers and their lag, and
// the open DLQ entries grouped by consumer and reason.
import { HEARTBEATS } from "../heartbeat.ts"
import { type Admin, ENTRIES } from "./entries.ts"
import { allEntries, latestValues } from "./list.ts"
import { type Count, openGroups } from "./live.ts"
import { isoTime } from "./pause.ts"

/** Counts by stream, consumer, reason and state, from one scan of the bucket. */
export async function countEntries(a: Pick<Admin, "js">): Promise<Count[]> {
  const counts = new Map<string, Count>()
  for (const e of await allEntries(a)) {
    const k = `${e.stream}\u0000${e.consumer}\u0000${e.reason}\u0000${e.state}`
    const c = counts.get(k) ?? { stream: e.stream, consumer: e.consumer, reason: e.reason, state: e.state, entries: 0 }
    c.entries++
    counts.set(k, c)
  }
  return [...counts.values()]
}

export type StreamStatus = { name: string; subjects: string[]; messages: number; bytes: number; consumers: number }
export type ConsumerStatus = {
  stream: string
  name: string
  pending: number
  ackPending: number
  redelivered: number
  waiting: number
  lastActive?: string
  /** set while the consumer is paused (2.11+): its events wait in the stream until pauseUntil, or a resume */
  paused?: true
  pauseUntil?: string
}
/** A running worker instance, from its heartbeat (mesh/heartbeat.ts); one that stopped beating is gone in 15 s. */
export type WorkerStatus = {
  worker: string
  instance: string
  ready: boolean
  inflight: number
  at: string
  startedAt: string
  version: string
}
export type Status = {
  workers: WorkerStatus[]
  streams: StreamStatus[]
  consumers: ConsumerStatus[]
  dlq: {
    open: number
    byConsumer: Record<string, number>
    byReason: Record<string, number>
    groups: { consumer: string; reason: string; open: number }[]
    /** the bucket could not be read (not provisioned yet); the stream and consumer report stands anyway */
    error?: string
  }
}

const activeAt = (t: unknown) => (typeof t === "string" && !t.startsWith("0001-") ? t : undefined)

/** `dlq`: the DLQ report from ops' live counts (mesh/admin/live.ts); without it, from a scan of the bucket (the CLI). */
export async function status(a: Admin, dlq?: () => Promise<Status["dlq"]>): Promise<Status> {
  const streams: StreamStatus[] = []
  const consumers: ConsumerStatus[] = []
  for await (const s of a.jsm.streams.list()) {
    streams.push({
      name: s.config.name,
      subjects: s.config.subjects ?? [],
      messages: s.state.messages,
      bytes: s.state.bytes,
      consumers: s.state.consumer_count,
    })
    for await (const c of a.jsm.consumers.list(s.config.name)) {
      // ephemeral consumers (tails, KV watchers) come and go; the report is about the durables
      if (!c.config.durable_name) continue
      const last = [activeAt(c.delivered.last_active), activeAt(c.ack_floor.last_active)].filter(Boolean).sort().pop()
      consumers.push({
        stream: s.config.name,
        name: c.name,
        pending: c.num_pending,
        ackPending: c.num_ack_pending,
        redelivered: c.num_redelivered,
        waiting: c.num_waiting,
        ...(last ? { lastActive: last } : {}),
        ...(c.paused ? { paused: true as const, ...(c.config.pause_until ? { pauseUntil: isoTime(c.config.pause_until) } : {}) } : {}),
      })
    }
  }
  streams.sort((x, y) => x.name.localeCompare(y.name))
  consumers.sort((x, y) => `${x.stream}/${x.name}`.localeCompare(`${y.stream}/${y.name}`))
  const dlqReport = await (dlq ?? (async () => openGroups(await countEntries(a))))().catch((err): Status["dlq"] => ({
    open: 0,
    byConsumer: {},
    byReason: {},
    groups: [],
    error: `${ENTRIES} unreadable: ${(err as Error).message}`,
  }))
  // no heartbeats bucket yet (a fresh server, or an older topology): the report stands without the worker list
  const workers = (await latestValues<WorkerStatus>(a.js, HEARTBEATS).catch(() => [] as WorkerStatus[])).sort(
    (x, y) => x.worker.localeCompare(y.worker) || x.instance.localeCompare(y.instance),
  )
  return { workers, streams, consumers, dlq: dlqReport }
}
