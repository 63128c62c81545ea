// mesh/admin/trace-lines.ts — the lines of a story (mesh/admin/trace.ts): one per event, dead letter and operator
// action, and one summary for a truck's positions and one for its ETAs, however many there are.
import type { StoredMsg } from "@nats-io/jetstream"
import { type EtaUpdated, type EventName, type PositionReported, type RouteCalculated, streamOf } from "../../contracts/mod.ts"
import type { DlqEntry } from "./entries.ts"
import { traceIdOf } from "./reading.ts"
import { count } from "./trace-gaps.ts"

export type Line = {
  /** when it was stored (an event), filed (a dead letter) or done (an operator's action) */
  at: string
  /** the event's name, or dead-lettered, replayed, discarded, resolved */
  event: string
  text: string
  stream?: string
  seq?: number
  traceId?: string
  /** the DLQ entry a line is about */
  entry?: string
  /** who did it: the worker that dead-lettered, the operator who replayed or discarded */
  by?: string
}

/** A line and where it sorts: a replay's failure after the replay (whose time is recorded once it was sent). */
export type Placed = Line & { after?: string }

/** Where and when an event was stored, and its trace. */
export function stored(m: StoredMsg, event: EventName): Omit<Line, "text"> {
  const traceId = traceIdOf(m)
  return { at: m.time.toISOString(), event, stream: streamOf(event), seq: m.seq, ...(traceId ? { traceId } : {}) }
}

export function routeHere(m: StoredMsg, r: RouteCalculated): Line {
  const stops = `${r.stops.length} stop${r.stops.length === 1 ? "" : "s"}`
  return {
    ...stored(m, "RouteCalculated"),
    text: `route ${r.routeId} for ${r.truckId}, customer ${r.customerId}: ${stops}, ${r.distanceKm} km, ETA ${r.eta}`,
  }
}

const oneLine = (s: string, max = 160) => {
  const flat = s.replace(/\s+/g, " ").trim()
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}

/** A dead letter and everything operators did with it since. */
export function entryLines(entries: DlqEntry[]): Placed[] {
  const byId = new Map(entries.map((e) => [e.id, e]))
  return entries.flatMap((e) => {
    // the worker may file the replay's failure before ops has written down that it replayed: the replay closest
    // before (or just after) the failure is its cause
    const replays = (e.replayOf && byId.get(e.replayOf)?.history.filter((h) => h.action === "replayed")) || []
    const cause = replays.filter((h) => Date.parse(h.at) <= Date.parse(e.failedAt) + 60_000).at(-1)
    const failed: Placed = {
      at: e.failedAt,
      event: "dead-lettered",
      text: `${e.replayOf ? "its replay failed again at" : "dead-lettered by"} ${e.consumer}: ${e.reason}${e.error ? ` (${oneLine(e.error)})` : ""}; entry ${e.id}, ${e.state}`,
      entry: e.id,
      by: e.consumer,
      ...(cause && cause.at >= e.failedAt ? { after: cause.at } : {}),
    }
    const acts = e.history.slice(1).map(
      (h): Line => ({
        at: h.at,
        event: h.action,
        text: `${h.action} by ${h.by}: entry ${e.id}${h.note ? ` (${h.note})` : ""}`,
        entry: e.id,
        by: h.by,
      }),
    )
    return [failed, ...acts]
  })
}

/** A truck's other dead letters (positions, ETAs): the newest `max` as lines, the rest counted by reason. */
export function summaryOfEntries(entries: DlqEntry[], max = 20): Placed[] {
  const sorted = [...entries].sort((x, y) => y.dlqSeq - x.dlqSeq)
  const rest = sorted.slice(max)
  const lines = entryLines(sorted.slice(0, max))
  if (rest.length) {
    const by = rest.reduce<Record<string, number>>((r, e) => ((r[e.reason] = (r[e.reason] ?? 0) + 1), r), {})
    const reasons = Object.entries(by)
      .map(([k, n]) => `${k} ${count(n)}`)
      .join(", ")
    lines.push({
      at: rest.at(-1)!.failedAt,
      event: "dead-lettered",
      text: `${count(rest.length)} older dead letters not shown: ${reasons}`,
    })
  }
  return lines
}

/** Positions as one line: how many, the first and the last (time and place). */
export function positionLine(msgs: StoredMsg[], capped: boolean, total = msgs.length): Line {
  const first = msgs[0]!.json<PositionReported>()
  const last = msgs.at(-1)!.json<PositionReported>()
  const where = `${last.lat.toFixed(4)}, ${last.lon.toFixed(4)}`
  return {
    ...stored(msgs[0]!, "PositionReported"),
    text: capped
      ? `${count(total)} or more positions from ${first.truckId}: first at ${first.at} (read up to the ${count(total)}th, at ${last.at})`
      : `${count(total)} position${total === 1 ? "" : "s"} from ${first.truckId}: first at ${first.at}, last at ${last.at} (${where})`,
  }
}

/** ETA updates as one line: how many, and the latest ETA. */
export function etaLine(msgs: StoredMsg[], capped: boolean, total = msgs.length): Line {
  const last = msgs.at(-1)!.json<EtaUpdated>()
  const next = last.nextStopId ? `next stop ${last.nextStopId}, ` : ""
  return {
    ...stored(msgs[0]!, "EtaUpdated"),
    text: capped
      ? `${count(total)} or more ETA updates (read up to the ${count(total)}th, ETA ${last.eta} then)`
      : `${count(total)} ETA update${total === 1 ? "" : "s"}, latest ETA ${last.eta} (${next}${last.remainingKm} km to go, route ${last.routeId})`,
  }
}
