// mesh/admin/trace-gaps.ts — what a story says is missing, and why, with numbers: an effect (a route's invoice) that
// is not stored yet because its consumer is behind, paused or down, or because the event was dead-lettered.
import type { ConsumerInfo } from "@nats-io/jetstream"
import { publishedSubject, REPLAY_STREAM } from "../../contracts/mod.ts"
import { HEARTBEATS } from "../heartbeat.ts"
import { durableNames } from "../partitioning.ts"
import type { Admin, DlqEntry } from "./entries.ts"
import { latestValues, subjectMatches } from "./list.ts"
import type { WorkerStatus } from "./status.ts"

export const count = (n: number) => n.toLocaleString("en-US")

/** The durable of `worker` on `stream` that reads `stored` (its partition's, when the stream is partitioned). */
export async function consumerFor(
  a: Pick<Admin, "jsm">,
  stream: string,
  worker: string,
  stored: string,
): Promise<ConsumerInfo | undefined> {
  const names = new Set(durableNames(worker))
  for await (const c of a.jsm.consumers.list(stream)) {
    if (!names.has(c.name)) continue
    const filters = c.config.filter_subjects?.length ? c.config.filter_subjects : [c.config.filter_subject ?? ">"]
    if (filters.some((f) => subjectMatches(f, stored) || subjectMatches(f, publishedSubject(stored)))) return c
  }
  return undefined
}

async function running(a: Pick<Admin, "js">, worker: string): Promise<number> {
  const beats = await latestValues<WorkerStatus>(a.js, HEARTBEATS).catch(() => [] as WorkerStatus[])
  return beats.filter((b) => b.worker === worker).length
}

const paused = (c: ConsumerInfo) => (c.paused ? `, paused until ${c.config.pause_until ?? "resumed"}` : "")

/** How far `c` is from handling the message at `seq`, as the end of a sentence. */
async function position(a: Pick<Admin, "js">, worker: string, c: ConsumerInfo, seq: number): Promise<string> {
  if (seq > c.delivered.stream_seq) {
    const down = (await running(a, worker)) === 0 ? `; no ${worker} instance is running` : ""
    return `${worker} consumer ${count(c.num_pending)} behind${paused(c)}${down}`
  }
  if (seq > c.ack_floor.stream_seq) return `delivered to ${worker}, not yet acknowledged (being handled or retried)`
  return ""
}

export type Gap = {
  /** "invoice": what the missing effect is called in the sentence */
  what: string
  worker: string
  stream: string
  /** the subject the event is stored under, and its sequence */
  subject: string
  seq: number
}

/**
 * Why the effect `g` describes is not stored. Dead letters of the worker's for this event say it first (the newest
 * decides: a replay that failed again is open again); otherwise the worker's consumer: behind it, in flight, or past
 * it without an effect.
 */
export async function gapOf(a: Pick<Admin, "js" | "jsm">, g: Gap, entries: DlqEntry[]): Promise<string> {
  const mine = entries.filter((e) => e.consumer === g.worker).sort((x, y) => x.dlqSeq - y.dlqSeq)
  const last = mine.at(-1)
  if (last) {
    const acted = last.history.at(-1)!
    if (last.state === "open") return `no ${g.what}: dead-lettered: ${last.reason}, open`
    if (last.state === "discarded") return `no ${g.what}: dead-lettered: ${last.reason}, discarded by ${acted.by}`
    if (last.state === "replayed") {
      const replay = await a.jsm.consumers.info(REPLAY_STREAM, g.worker).catch(() => undefined)
      const where =
        replay && replay.num_pending + replay.num_ack_pending > 0 ? `: ${g.worker} replay consumer ${count(replay.num_pending)} behind` : ""
      return `no ${g.what} yet: replayed by ${acted.by} at ${acted.at}${where}`
    }
  }
  const c = await consumerFor(a, g.stream, g.worker, g.subject)
  if (!c) return `no ${g.what}: no ${g.worker} consumer reads ${g.subject} (logiflow provision creates it)`
  const where = await position(a, g.worker, c, g.seq)
  return where
    ? `no ${g.what} yet: ${where}`
    : `no ${g.what}: ${g.stream}/${c.name} acknowledged it (ack floor ${count(c.ack_floor.stream_seq)}) and none is stored`
}
