// workers/route-record.ts — how routing records a route so that its answer is honest and a retry is safe.
//
// Every request has a record in routing-requests, under its Idempotency-Key (the client's, or one routing makes and
// hands back), scoped by the API client, bound to the request body and to the route planned for it (a fresh UUIDv7
// routeId, never one derived from the key). The record is written before the route is published and lives for the
// retry horizon (the bucket's TTL): a retry within it gets the same route back, appended only if it is not on its
// truck's subject yet (append below), so it is stored once whatever the duplicate window. Past the horizon the key is
// free again and makes a new route with a new routeId. What the answer may claim follows from how
// far a request got: nothing recorded (503), recorded (202), or unknown because the publish was sent and no answer
// came (504), which a retry with the same key settles.
import type { KV } from "@nats-io/kv"
import { StatusError } from "itty-router"
import { ContractError, edgeStream, ROUTING_REQUESTS, type RouteCalculated, subjectOf } from "../contracts/mod.ts"
import {
  ApiCode,
  apiCode,
  checkEventSize,
  createValue,
  getJson,
  getStoredMessage,
  hex,
  isNoResponders,
  isNotFound,
  isPermissionDenied,
  kvKey,
  newId,
  type Runtime,
  sha256,
  sleep,
  TooLarge,
  withTimeout,
} from "../mesh/mod.ts"

/**
 * What the routing-requests bucket keeps per Idempotency-Key for the retry horizon. `since`: a sequence the routes'
 * stream held before the record was made; the route, if it landed, is after it.
 */
export type Recorded = { fingerprint: string; route: RouteCalculated; since: number }

/** Nothing was recorded by this request: retrying (with the same key) is safe, and needed. */
export class NotRecorded extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds = 2,
  ) {
    super(message)
  }
}

/** The publish was sent and no answer came: the route may be recorded. Only a retry with the same key can tell. */
export class OutcomeUnknown extends Error {}

const sha256hex = (s: string) => hex(sha256(s))
const utf8 = new TextDecoder()

/** The record's key: JSON keeps ("a:b","c") and ("a","b:c") apart, and one client's keys from another's. */
export const recordKey = (client: string, key: string) => sha256hex(JSON.stringify([client, key]))

/** KV create, first writer wins: a concurrent retry that got there first has the answer. */
async function create(kv: KV, key: string, mine: Recorded): Promise<Recorded> {
  try {
    await createValue(kv, kvKey(key), JSON.stringify(mine))
    return mine
  } catch (err) {
    const theirs = await getJson<Recorded>(kv, key)
    if (!theirs) throw err
    return theirs
  }
}

/** A publish the server answered with an error was not stored; any other failure leaves the outcome unknown. */
function refused(err: unknown): NotRecorded | undefined {
  const message = (err as Error)?.message ?? String(err)
  if (apiCode(err) === ApiCode.StoreFull) {
    return new NotRecorded(`the routing log is full (${message}); routes cannot be recorded until an operator raises its limits`, 60)
  }
  if (isNoResponders(err)) return new NotRecorded(`no stream records routes (${message}); run \`logiflow provision\``, 30)
  if (apiCode(err) !== undefined || isPermissionDenied(err)) return new NotRecorded(`NATS refused the route: ${message}`)
  return undefined
}

type Where = {
  js: Runtime["js"]
  stream: string /** the stream stores a truck's routes under its subject plus layout tokens */
  partitioned: boolean
  /** the stream answers DIRECT.GET (allow_direct): the truck's last sequence is read that way beside the record */
  direct: boolean
  /** a sequence the stream is known to hold: its last when asked, raised by every sequence seen since. A route
   * recorded from now on is stored after it */
  floor: number
}

/**
 * The stream routing's routes are stored in (ROUTING, or EDGE_ROUTING at an edge site) and whether it is partitioned:
 * asked once per runtime, and again after a guard refusal (a layout may have changed).
 */
const streams = new WeakMap<Runtime, Promise<Where>>()
function routesStream(rt: Runtime, fresh = false) {
  let found = fresh ? undefined : streams.get(rt)
  if (!found) {
    found = (async () => {
      const jsm = await rt.js.jetstreamManager(false)
      for (const stream of ["ROUTING", edgeStream("ROUTING")]) {
        const info = await jsm.streams.info(stream).catch((err) => (isNotFound(err) ? null : Promise.reject(err)))
        if (info) {
          const partitioned = !!info.config.subject_transform
          return { js: rt.js, stream, partitioned, direct: !!info.config.allow_direct, floor: info.state.last_seq }
        }
      }
      throw new NotRecorded("no stream records routes (neither ROUTING nor EDGE_ROUTING); run `logiflow provision`", 30)
    })()
    found.catch(() => streams.delete(rt))
    streams.set(rt, found)
  }
  return found
}

// a truck's routes are stored under its subject, or, in a partitioned stream, under it plus generation and partition;
// an older layout's routes of the truck are older than any the current one stores, so one form is enough
const formOf = (w: Where, subject: string) => (w.partitioned ? `${subject}.>` : subject)
const forms = (subject: string) => [subject, `${subject}.>`]

/**
 * The last sequence stored for the truck's subject, in the form its routes are stored under now. `direct`: read
 * through DIRECT.GET where the stream allows it, from any replica, so possibly a little behind: only for a guard, which
 * refuses a stale sequence, and the retry after such a refusal reads the leader's.
 */
async function lastOf(w: Where, subject: string, direct = false): Promise<{ last: number; form: string }> {
  const form = formOf(w, subject)
  const m = await getStoredMessage(w.js, w.stream, { last_by_subj: form }, { direct: direct && w.direct })
  if (m && m.seq > w.floor) w.floor = m.seq
  return { last: m?.seq ?? 0, form }
}

/** Whether `routeId` is stored for the truck's subject after sequence `since`. */
async function landed(w: Where, subject: string, since: number, routeId: string): Promise<boolean> {
  for (const form of forms(subject)) {
    for (let seq = since + 1; ; ) {
      const m = await getStoredMessage(w.js, w.stream, { seq, next_by_subj: form })
      if (!m) break
      if ((JSON.parse(utf8.decode(m.data)) as { routeId?: string }).routeId === routeId) return true
      seq = m.seq + 1
    }
  }
  return false
}

/**
 * Appends the route to its truck's subject exactly once, whatever the duplicate window: each attempt is guarded by the
 * subject's last sequence as last seen (`Nats-Expected-Last-Subject-Sequence`), so an earlier attempt landing late is
 * refused once anything came after what it saw, and a retry first looks for its route after `since`.
 */
async function append(rt: Runtime, rec: Recorded, seen: { last: number; form: string } | undefined, traceparent?: string): Promise<void> {
  const subject = subjectOf("RouteCalculated", rec.route.truckId)
  for (let attempt = 0; attempt < 20; attempt++) {
    const w = await routesStream(rt, attempt > 1)
    // a record this request just made has nothing to look for: no attempt of it was made before this one
    if (!(seen && attempt === 0) && (await landed(w, subject, rec.since, rec.route.routeId))) return
    // a fresh record's first attempt is guarded by the truck's last sequence as read beside the record's create.
    // The guard names the form the truck's routes are stored under: checked on the stored subject alone, a
    // partitioned stream's would never match (2.9 ignores the name and checks the subject, the only form it has)
    const { last, form } = seen && attempt === 0 ? seen : await lastOf(w, subject)
    try {
      // the msg id is derived from the routeId too: within the duplicate window the stream also dedupes by it
      const ack = await rt.publish("RouteCalculated", rec.route, {
        id: `routing:${rec.route.routeId}`,
        traceparent,
        expectLastSubjectSequence: last,
        expectLastSubjectSequenceSubject: form,
      })
      if (ack.seq > w.floor) w.floor = ack.seq
      return
    } catch (err) {
      // another route of this truck (or this one) was appended in between: look again. On a replicated stream
      // another route of the truck may still be on its way into the stream: look again once it is in
      const code = apiCode(err)
      if (code === ApiCode.SubjectInFlight) await sleep(Math.min(50, 2 ** attempt))
      else if (code !== ApiCode.WrongLastSequence) throw err
    }
  }
  throw new OutcomeUnknown("the truck's routes kept changing while this one was appended")
}

export type RecordOptions = {
  request: unknown
  client: string
  key: string
  plan(routeId: string): RouteCalculated
  traceparent?: string
  timeoutMs: number
  site: string
}

/** How far one request got, for the answer its deadline gives (read by recordRoute's timeout). */
type Progress = { phase: "recording" | "publishing" | "published"; answered: boolean }

async function record(rt: Runtime, o: RecordOptions, p: Progress): Promise<RouteCalculated> {
  const kv = await rt.kv(ROUTING_REQUESTS)
  const id = recordKey(o.client, o.key)
  const print = sha256hex(JSON.stringify(o.request))
  const route = o.plan(newId(o.site))
  // a route larger than ROUTING stores is refused before anything is recorded (no record, no publish)
  checkEventSize("RouteCalculated", route, { id: `routing:${route.routeId}`, source: "logiflow/routing" })
  // the usual request is a new one: the record made (first writer wins) and, at the same time, the truck's last
  // sequence read for the publish's guard; no look for an existing record first, a retry finds its record when
  // the create is refused. The record's since is the stream's floor, taken before either
  const w = await routesStream(rt)
  const mine: Recorded = { fingerprint: print, route, since: w.floor }
  const last = lastOf(w, subjectOf("RouteCalculated", route.truckId), true)
  // a direct read that failed (allow_direct turned off since: 2.9 then never answers) reads the stream's config again
  if (w.direct) last.catch(() => routesStream(rt, true).catch(() => {}))
  const [rec, seen] = await Promise.all([create(kv, id, mine), last])
  const fresh = rec === mine
  if (rec.fingerprint !== print)
    throw new StatusError(
      422,
      `Idempotency-Key "${o.key}" was already used for a different request; it stays bound to that one until its record expires`,
    )
  // the client has its answer already ("nothing recorded"): a publish started now would make that answer a lie
  if (p.answered) throw new NotRecorded("answered already")
  // from here on, whatever fails leaves the outcome unknown (a record found may also have been sent by an earlier attempt)
  p.phase = "publishing"
  try {
    await append(rt, rec, fresh ? seen : undefined, o.traceparent)
  } catch (err) {
    // a route that breaks the contract is refused before anything is sent: a bug, not an unknown outcome
    if (err instanceof ContractError || err instanceof NotRecorded || err instanceof OutcomeUnknown || err instanceof TooLarge) throw err
    throw refused(err) ?? new OutcomeUnknown(`NATS did not confirm the route (${(err as Error)?.message ?? err})`)
  }
  // the record is not marked: a retry finds the route on its truck's subject, which keeps it longer than the record
  // lives (the retry horizon is at most ROUTING's age, contracts/topology.ts)
  p.phase = "published"
  return rec.route
}

/**
 * Records the route of one request (see the file's header). Resolves with the route once it is in the routing log;
 * rejects with a StatusError (422: the key is bound to another body), NotRecorded or OutcomeUnknown.
 */
export async function recordRoute(rt: Runtime, o: RecordOptions): Promise<RouteCalculated> {
  const p: Progress = { phase: "recording", answered: false }
  try {
    return await withTimeout(record(rt, o, p), o.timeoutMs, () => {
      p.answered = true
      return p.phase === "publishing"
        ? new OutcomeUnknown(`NATS did not acknowledge the route within ${o.timeoutMs} ms`)
        : new NotRecorded(`NATS did not answer within ${o.timeoutMs} ms; nothing was recorded`)
    })
  } catch (err) {
    if (err instanceof TooLarge) throw new StatusError(413, `${err.message}: send fewer stops or shorter ids`)
    if (err instanceof StatusError || err instanceof ContractError || err instanceof NotRecorded || err instanceof OutcomeUnknown) throw err
    // the record could not be read or written: the route was not published
    throw new NotRecorded(`the route could not be recorded: ${(err as Error)?.message ?? err}`)
  }
}
