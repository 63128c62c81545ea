// mesh/admin/pause.ts — the circuit breaker for a downstream outage: an operator pauses a consumer, and its events
// wait in the stream instead of using up their deliveries into the DLQ; resuming delivers them at once. Used by the
// ops API and dashboard and by `logiflow consumer`. Needs nats-server 2.11 (mesh/features.ts): an older server never
// answers a pause request (the client would time out after 5 s), so it is refused here at once, by name, with 501.
import type { JetStreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import { StatusError } from "itty-router"
import { parseTime as rfc3339, REFERENCE_FLEET } from "../../contracts/mod.ts"
import { isNotFound } from "../errors.ts"
import { FeatureMissing, serverVersion, supports } from "../features.ts"

/**
 * The server writes times with nanoseconds and trailing zeros cut (…59.79Z); the mesh shows them as JavaScript does
 * (…59.790Z), so one instant always reads the same.
 */
export function isoTime(serverTime: string): string {
  const ms = rfc3339(serverTime)
  return ms === undefined ? serverTime : new Date(ms).toISOString()
}

/** What pausing needs: the JetStream API, and the connection (whose server's version decides). */
export type Breaker = { jsm: JetStreamManager; nc: NatsConnection }

export type PauseState = { stream: string; consumer: string; paused: boolean; pauseUntil?: string; by: string }

/** A pause longer than the outage budget would let the stream fill up, and then refuse new events. */
export const MAX_PAUSE_MS = REFERENCE_FLEET.outageBudgetDays * 86_400_000
/** Without `for` or `until`: long enough to look into an outage, short enough that a forgotten pause ends. */
export const DEFAULT_PAUSE = "1h"

// stream and consumer names become subject tokens: nothing that could add a token or a wildcard
const NAME = /^[A-Za-z0-9_-]{1,255}$/

export function checkNames(stream: string, consumer: string): void {
  if (!NAME.test(stream) || !NAME.test(consumer))
    throw new StatusError(400, `"${stream}/${consumer}" is not a consumer (STREAM/consumer: letters, digits, _ and -)`)
}

/** `ROUTING/invoice` → its stream and consumer. */
export function consumerRef(ref: string): { stream: string; consumer: string } {
  const [stream = "", consumer = "", ...rest] = ref.split("/")
  if (rest.length) throw new StatusError(400, `"${ref}" is not a consumer (STREAM/consumer)`)
  checkNames(stream, consumer)
  return { stream, consumer }
}

/** When a pause ends: `for` a duration (90s, 30m, 2h, 1d) or `until` an RFC 3339 time; neither: DEFAULT_PAUSE. */
export function pauseEnd(o: Record<string, unknown>, now = Date.now()): Date {
  const unknown = Object.keys(o).filter((k) => k !== "for" && k !== "until" && o[k] !== undefined)
  if (unknown.length) throw new StatusError(400, `unknown field "${unknown[0]}" (give for or until)`)
  if (o.for !== undefined && o.until !== undefined) throw new StatusError(400, "give for or until, not both")
  let end: number
  if (o.until !== undefined) {
    const t = typeof o.until === "string" ? rfc3339(o.until.trim()) : undefined
    if (t === undefined) throw new StatusError(400, `until must be an RFC 3339 time, got ${JSON.stringify(o.until)}`)
    if (t <= now) throw new StatusError(400, `until ${o.until} has passed`)
    end = t
  } else {
    const text = o.for ?? DEFAULT_PAUSE
    const m = typeof text === "string" ? /^(\d{1,9})(s|m|h|d)$/.exec(text.trim()) : null
    if (!m || Number(m[1]) === 0)
      throw new StatusError(400, `for must be a duration such as 90s, 30m, 2h or 1d, got ${JSON.stringify(text)}`)
    end = now + Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as "s"]
  }
  if (end - now > MAX_PAUSE_MS) {
    throw new StatusError(
      400,
      `a pause may last ${REFERENCE_FLEET.outageBudgetDays} days at most (the outage budget): longer, the stream would fill up and refuse new events`,
    )
  }
  return new Date(end)
}

function needsPause(b: Breaker): void {
  if (supports(b.nc, "pause")) return
  const missing = new FeatureMissing("pause", serverVersion(b.nc))
  throw Object.assign(new StatusError(501, missing.message), { cause: missing })
}

const notFound =
  (stream: string, consumer: string) =>
  (err: unknown): never => {
    throw isNotFound(err) ? new StatusError(404, `no consumer ${stream}/${consumer}`) : err
  }

/** Pauses `stream/consumer` until `until`; `by` names the operator in the answer (the caller logs it). */
export async function pauseConsumer(b: Breaker, stream: string, consumer: string, until: Date, by: string): Promise<PauseState> {
  checkNames(stream, consumer)
  needsPause(b)
  const r = await b.jsm.consumers.pause(stream, consumer, until).catch(notFound(stream, consumer))
  return { stream, consumer, paused: r.paused, ...(r.paused && r.pause_until ? { pauseUntil: isoTime(r.pause_until) } : {}), by }
}

/** Resumes `stream/consumer`: what waited is delivered at once. */
export async function resumeConsumer(b: Breaker, stream: string, consumer: string, by: string): Promise<PauseState> {
  checkNames(stream, consumer)
  needsPause(b)
  const r = await b.jsm.consumers.resume(stream, consumer).catch(notFound(stream, consumer))
  return { stream, consumer, paused: r.paused, by }
}

/** `$JS.EVENT.ADVISORY.CONSUMER.PAUSE.<stream>.<consumer>`: sent on every pause and resume, whoever asked. */
export type PauseAdvisory = { stream: string; consumer: string; paused: boolean; pause_until?: string; timestamp?: string }

export function parsePauseAdvisory(data: Uint8Array): PauseAdvisory | undefined {
  try {
    const a = JSON.parse(new TextDecoder().decode(data)) as Partial<PauseAdvisory> & { type?: unknown }
    const ok =
      a.type === "io.nats.jetstream.advisory.v1.consumer_pause" &&
      typeof a.stream === "string" &&
      typeof a.consumer === "string" &&
      typeof a.paused === "boolean"
    return ok ? (a as PauseAdvisory) : undefined
  } catch {
    return undefined
  }
}
