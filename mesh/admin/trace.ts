// mesh/admin/trace.ts — the story of one route or one truck: every event about it across the streams, in time order,
// its dead letters with their replays and who made them, the trace ids, and what is missing, with numbers. Read by
// `logiflow trace` and ops (GET /api/story/:id, the /story/:id page). Only direct gets by subject and sequence and
// the entries' bucket: never a scan of a whole stream (a route id without a known truck is looked for near the time
// its UUIDv7 names).
import type { StoredMsg } from "@nats-io/jetstream"
import { StatusError } from "itty-router"
import { eventOfSubject, type InvoiceGenerated, publishedSubject, type RouteCalculated } from "../../contracts/mod.ts"
import { getJson } from "../kv.ts"
import { type Admin, type DlqEntry, ENTRIES } from "./entries.ts"
import { allEntries } from "./list.ts"
import { countOfKey, firstFrom, firstOfKey, keyBetween, keySubjects, lastOfKey, newestOfKey, rangeOf, seqAtTime } from "./reading.ts"
import { count, gapOf } from "./trace-gaps.ts"
import { entryLines, etaLine, type Line, type Placed, positionLine, routeHere, stored, summaryOfEntries } from "./trace-lines.ts"

export type { Line } from "./trace-lines.ts"

export type Story = {
  id: string
  kind: "route" | "truck"
  truckId: string
  routeId?: string
  customerId?: string
  lines: Line[]
  /** what is not there yet, and why: "no invoice yet: invoice consumer 1,204 behind" */
  missing: string[]
  traceIds: string[]
}

export type StoryOptions = { /** a truck's story shows its newest routes, this many (default 20) */ routes?: number }

/** How far from the time in a route's UUIDv7 its RouteCalculated is looked for when nothing else names its truck. */
// (a route is stored after its id is made; "before" allows for the clocks of routing's host and the server to differ)
const NEAR_MS = { before: 1_000, after: 60_000 }
const SEARCH_CAP = 5_000

type Subject = { kind: "truck"; truckId: string } | { kind: "route"; routeId: string }

const json = <T>(m: StoredMsg) => m.json<T>()
const eventIdOf = (e: DlqEntry) => (e as DlqEntry & { eventId?: string }).eventId

/**
 * What an id names: a ce-id (`routing:<routeId>`, `invoice:<routeId>`, `eta:<routeId>:…`, `pos:<truckId>:…`), a DLQ
 * entry id (its original's route or truck), a truck with routes or positions, or else a route id.
 */
async function resolve(a: Admin, id: string): Promise<Subject> {
  const ce = /^(routing|invoice|eta|pos):(.+)$/.exec(id)
  if (ce) {
    if (ce[1] === "pos") return { kind: "truck", truckId: ce[2]!.replace(/:[^:]*$/, "") }
    return { kind: "route", routeId: ce[1] === "eta" ? ce[2]!.replace(/:[^:]*$/, "") : ce[2]! }
  }
  if (/^[A-Z_]+\.[A-Za-z0-9_-]+\.\d+(\.r\d+)?$/.test(id)) {
    const entry = await getJson<DlqEntry>(a.kv, id)
    const original = entry && (await a.jsm.streams.getMessage(entry.stream, { seq: entry.seq }))
    const name = original && eventOfSubject(publishedSubject(original.subject))
    if (!entry || !original || !name)
      throw new StatusError(404, `no story for ${id}: no such DLQ entry, or its original has left ${entry?.stream ?? "its stream"}`)
    const data = original.json<{ routeId?: string; truckId: string }>()
    return name === "PositionReported" || !data.routeId
      ? { kind: "truck", truckId: data.truckId }
      : { kind: "route", routeId: data.routeId }
  }
  const [route, position] = await Promise.all([lastOfKey(a.jsm, "RouteCalculated", id), lastOfKey(a.jsm, "PositionReported", id)])
  return route || position ? { kind: "truck", truckId: id } : { kind: "route", routeId: id }
}

/** The time a UUIDv7 route id (optionally `<site>-` prefixed) was made, in ms. */
export function uuidTime(id: string): number | undefined {
  const m = /([\da-f]{8})-([\da-f]{4})-7[\da-f]{3}-[89ab][\da-f]{3}-[\da-f]{12}$/i.exec(id)
  return m ? Number.parseInt(m[1]! + m[2]!, 16) : undefined
}

/** The route's RouteCalculated: on its truck's subject when the invoice or a dead letter names the truck, else near its id's time. */
async function findRoute(a: Admin, routeId: string, entries: DlqEntry[]): Promise<StoredMsg> {
  const invoice = await lastOfKey(a.jsm, "InvoiceGenerated", routeId)
  const trucks = new Set<string>()
  if (invoice) trucks.add(json<InvoiceGenerated>(invoice).truckId)
  for (const e of entries) if (e.key && eventIdOf(e) === `routing:${routeId}`) trucks.add(e.key)
  const made = uuidTime(routeId)
  for (const truckId of trucks) {
    const { msgs } = await keyBetween(a.jsm, "RouteCalculated", truckId, made ? made - NEAR_MS.before : 0, Infinity, SEARCH_CAP)
    const m = msgs.find((x) => json<RouteCalculated>(x).routeId === routeId)
    if (m) return m
  }
  if (made === undefined)
    throw new StatusError(404, `no story for ${routeId}: no truck, and no route with an invoice or a dead letter, has that id`)
  const range = await rangeOf(a.jsm, "ROUTING")
  const all = "routing.events.RouteCalculated.>"
  let seq = range.last < range.first ? range.last + 1 : await seqAtTime(a.jsm, "ROUTING", all, made - NEAR_MS.before, range)
  const start = seq
  for (let n = 0; n < SEARCH_CAP; n++) {
    const m = await firstFrom(a.jsm, "ROUTING", all, seq)
    if (!m || m.time.getTime() > made + NEAR_MS.after) break
    if (json<RouteCalculated>(m).routeId === routeId) return m
    seq = m.seq + 1
  }
  throw new StatusError(
    404,
    `no story for ${routeId}: no RouteCalculated with that route id in ROUTING from ${new Date(made - NEAR_MS.before).toISOString()} ` +
      `to ${new Date(made + NEAR_MS.after).toISOString()} (seq ${count(start)} to ${count(seq)}), none invoiced or dead-lettered, and no truck has that id`,
  )
}

/** Lines about one route: its RouteCalculated, invoice, dead letters and, when asked, its truck's positions and ETAs. */
async function routeChapter(a: Admin, rc: StoredMsg, entries: DlqEntry[], detail: boolean) {
  const route = json<RouteCalculated>(rc)
  const invoice = await lastOfKey(a.jsm, "InvoiceGenerated", route.routeId)
  const mine = entries.filter(
    (e) =>
      (e.stream === "ROUTING" && e.seq === rc.seq) ||
      e.key === route.routeId ||
      (invoice && e.stream === "INVOICE" && e.seq === invoice.seq),
  )
  const lines: Line[] = [routeHere(rc, route), ...entryLines(mine)]
  if (invoice) {
    const inv = json<InvoiceGenerated>(invoice)
    const total = `${(inv.totalCents / 100).toFixed(2)} ${inv.currency}`
    lines.push({ ...stored(invoice, "InvoiceGenerated"), text: `invoice ${inv.invoiceId}: ${total}, ${inv.lines.length} lines` })
  }
  const missing: string[] = []
  if (!invoice) {
    const gap = { what: "invoice", worker: "invoice", stream: "ROUTING", subject: rc.subject, seq: rc.seq }
    missing.push(
      await gapOf(
        a,
        gap,
        mine.filter((e) => e.stream === "ROUTING" && e.seq === rc.seq),
      ),
    )
  }
  if (detail) {
    // the truck's positions and ETAs while this was its newest route: up to its next route, or now
    const next = (await Promise.all(keySubjects("RouteCalculated", route.truckId).map((s) => firstFrom(a.jsm, "ROUTING", s, rc.seq + 1))))
      .filter((m) => m !== null)
      .sort((x, y) => x.seq - y.seq)[0]
    const since = rc.time.getTime()
    const until = next ? next.time.getTime() : Infinity
    const [positions, etas] = await Promise.all([
      keyBetween(a.jsm, "PositionReported", route.truckId, since, until),
      keyBetween(a.jsm, "EtaUpdated", route.truckId, since, until),
    ])
    const own = etas.msgs.filter((m) => json<{ routeId: string }>(m).routeId === route.routeId)
    if (positions.msgs.length) lines.push(positionLine(positions.msgs, positions.capped))
    else missing.push(`no position from ${route.truckId} since the route was calculated`)
    if (own.length) lines.push(etaLine(own, etas.capped))
    if (next)
      lines.push({
        ...stored(next, "RouteCalculated"),
        text: `${route.truckId} is given route ${json<RouteCalculated>(next).routeId}: positions and ETAs from here on are that route's`,
      })
  }
  return { route, lines, missing }
}

async function truckStory(a: Admin, truckId: string, entries: DlqEntry[], o: StoryOptions): Promise<Omit<Story, "id" | "traceIds">> {
  const [shown, total] = await Promise.all([
    newestOfKey(a.jsm, "RouteCalculated", truckId, o.routes ?? 20),
    countOfKey(a.jsm, "RouteCalculated", truckId),
  ])
  const lines: Line[] = []
  const missing: string[] = []
  if (total > shown.length) {
    const first = (await firstOfKey(a.jsm, "RouteCalculated", truckId))!
    lines.push({
      at: first.time.toISOString(),
      event: "RouteCalculated",
      text: `${count(total - shown.length)} earlier routes not shown (${count(total)} in ROUTING)`,
    })
  }
  const chapters = await Promise.all(
    shown.map((rc, i) => routeChapter(a, rc, entries, false).then((c) => ({ ...c, last: i === shown.length - 1 }))),
  )
  for (const c of chapters) {
    lines.push(...c.lines)
    if (c.last) missing.push(...c.missing.map((m) => `route ${c.route.routeId}: ${m}`))
  }
  const routeSeqs = new Set(shown.map((r) => r.seq))
  lines.push(...summaryOfEntries(entries.filter((e) => e.key === truckId && !(e.stream === "ROUTING" && routeSeqs.has(e.seq)))))
  const [positions, lastPosition, firstPosition, etas, lastEta] = await Promise.all([
    countOfKey(a.jsm, "PositionReported", truckId),
    lastOfKey(a.jsm, "PositionReported", truckId),
    firstOfKey(a.jsm, "PositionReported", truckId),
    countOfKey(a.jsm, "EtaUpdated", truckId),
    lastOfKey(a.jsm, "EtaUpdated", truckId),
  ])
  if (lastPosition && firstPosition) lines.push(positionLine([firstPosition, lastPosition], false, positions))
  else missing.push(`no position from ${truckId} in POSITIONS`)
  if (lastEta) lines.push(etaLine([lastEta], false, etas))
  if (!shown.length) missing.push(`no route for ${truckId} in ROUTING`)
  return { kind: "truck", truckId, lines, missing }
}

/** The story of a route or a truck (`id`: a route id, a truck id, a ce-id or a DLQ entry id); 404 when nothing names it. */
export async function story(a: Admin, id: string, o: StoryOptions = {}): Promise<Story> {
  if (!id || id.length > 200) throw new StatusError(400, "give a route id, a truck id, an event id or a DLQ entry id")
  if (o.routes !== undefined && !(Number.isInteger(o.routes) && o.routes >= 1 && o.routes <= 1000))
    throw new StatusError(400, "routes must be a whole number from 1 to 1000")
  const subject = await resolve(a, id)
  const entries = await allEntries(a).catch((err) => {
    throw new StatusError(503, `${ENTRIES} unreadable: ${(err as Error).message}`)
  })
  let s: Omit<Story, "id" | "traceIds">
  if (subject.kind === "truck") s = await truckStory(a, subject.truckId, entries, o)
  else {
    const rc = await findRoute(a, subject.routeId, entries)
    const { route, lines, missing } = await routeChapter(a, rc, entries, true)
    s = { kind: "route", truckId: route.truckId, routeId: route.routeId, customerId: route.customerId, lines, missing }
  }
  const order = (l: Line) => ["RouteCalculated", "dead-lettered"].indexOf(l.event) + 1 || 3
  const lines = (s.lines as Placed[])
    .map((l, i) => ({ l, i, at: l.after ?? l.at, after: l.after ? 1 : 0 }))
    .sort((x, y) => x.at.localeCompare(y.at) || x.after - y.after || order(x.l) - order(y.l) || x.i - y.i)
    .map(({ l: { after: _, ...l } }) => l)
  const traceIds = [...new Set(lines.map((l) => l.traceId).filter((t) => t !== undefined))]
  return { id, ...s, lines, traceIds }
}
