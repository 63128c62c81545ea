// contracts/capacity.ts — the capacity model: from the fleet a deployment serves to the limits of every stream and
// bucket. Defaults are the reference fleet (5,000 trucks, a position every 10 s, 200,000 routes a day, one 3-node
// cluster). The mesh reads overrides from CAPACITY_* variables or a JSON file (mesh/capacity.ts).

export type Capacity = {
  /** trucks reporting positions */
  trucks: number
  /** seconds between two positions of one truck */
  positionIntervalSeconds: number
  routesPerDay: number
  /** EtaUpdated events per truck per hour (an ETA that moves past the threshold) */
  etaUpdatesPerTruckHour: number
  /**
   * How long a consumer of business events (routes, invoices, ETAs) may be down before anything is lost or refused:
   * the streams keep this many days, sized for it. Alerts fire long before (capacity.alerts).
   */
  outageBudgetDays: number
  /** positions are telemetry: kept this long, then old ones make room (a consumer down longer misses the oldest) */
  positionRetentionHours: number
  /** room above the expected volume (a busy day, bigger routes) */
  headroom: number
  /** stored bytes of one event, subject, headers and store overhead included (measured with 10-stop routes) */
  bytes: { route: number; invoice: number; position: number; eta: number }
}

export const REFERENCE_FLEET: Capacity = {
  trucks: 5_000,
  positionIntervalSeconds: 10,
  routesPerDay: 200_000,
  etaUpdatesPerTruckHour: 6,
  outageBudgetDays: 7,
  positionRetentionHours: 6,
  headroom: 1.5,
  bytes: { route: 1_200, invoice: 900, position: 550, eta: 700 },
}

/** The largest event each stream stores; a bigger one is refused with a clear reason (HTTP 413, DLQ `too-large`). */
export const MAX_EVENT_BYTES = { ROUTING: 64 * 1024, INVOICE: 32 * 1024, TRACKING: 4 * 1024, POSITIONS: 4 * 1024 } as const

/** What a DLQ entry adds to the original: its logiflow-dlq-* headers (the error text is cut at 1 KiB). */
export const DLQ_HEADER_BYTES = 4 * 1024

export type StreamLimits = { maxAgeSeconds: number; maxBytes: number; maxMsgs: number; maxMsgSize: number; maxMsgsPerSubject: number }

const DAY = 24 * 3600
const GiB = 1024 ** 3
const MiB = 1024 ** 2
const roundUp = (bytes: number, unit: number) => Math.ceil(bytes / unit) * unit

/**
 * Each store's limits. Business streams keep the outage budget and refuse (discard new) only past it, sized so that
 * `outageBudgetDays` of the expected volume times `headroom` fit; positions keep `positionRetentionHours` with a
 * per-truck cap twice a truck's share, so one truck sending far too often drops its own oldest, never others'.
 */
export function limits(c: Capacity) {
  const keep = c.outageBudgetDays * DAY
  const business = (perDay: number, bytes: number, stream: keyof typeof MAX_EVENT_BYTES): StreamLimits => ({
    maxAgeSeconds: keep,
    maxBytes: roundUp(perDay * c.outageBudgetDays * bytes * c.headroom, 64 * MiB),
    maxMsgs: -1,
    maxMsgSize: MAX_EVENT_BYTES[stream],
    maxMsgsPerSubject: -1,
  })
  const positionsKept = c.positionRetentionHours * 3600
  const perTruck = Math.ceil(positionsKept / c.positionIntervalSeconds)
  const etaPerDay = c.trucks * c.etaUpdatesPerTruckHour * 24
  return {
    ROUTING: business(c.routesPerDay, c.bytes.route, "ROUTING"),
    INVOICE: business(c.routesPerDay, c.bytes.invoice, "INVOICE"),
    TRACKING: business(etaPerDay, c.bytes.eta, "TRACKING"),
    POSITIONS: {
      maxAgeSeconds: positionsKept,
      maxBytes: roundUp(c.trucks * perTruck * c.bytes.position * c.headroom, 64 * MiB),
      maxMsgs: -1,
      maxMsgSize: MAX_EVENT_BYTES.POSITIONS,
      maxMsgsPerSubject: 2 * perTruck,
    },
    // entries are never dropped: a full DLQ refuses, the worker naks and retries, and the alert says so long before
    DLQ: {
      maxAgeSeconds: 90 * DAY,
      maxBytes: 4 * GiB,
      maxMsgs: -1,
      maxMsgSize: MAX_EVENT_BYTES.ROUTING + DLQ_HEADER_BYTES,
      maxMsgsPerSubject: -1,
    },
    // the safety net's input: once ops has filed an advisory it is history
    ADVISORIES: { maxAgeSeconds: 30 * DAY, maxBytes: 256 * MiB, maxMsgs: -1, maxMsgSize: 64 * 1024, maxMsgsPerSubject: -1 },
    REPLAY: {
      maxAgeSeconds: 30 * DAY,
      maxBytes: 1 * GiB,
      maxMsgs: -1,
      maxMsgSize: MAX_EVENT_BYTES.ROUTING + DLQ_HEADER_BYTES,
      maxMsgsPerSubject: -1,
    },
  } satisfies Record<string, StreamLimits>
}

/**
 * The largest value each KV bucket stores (the bucket's max_msg_size; a bigger write is refused by the server). A
 * value holds at most one event and a little state, so each is its largest event's cap plus room; a bucket not named
 * here (a new one) gets DEFAULT_VALUE_BYTES until it is.
 */
export const MAX_VALUE_BYTES: Record<string, number> = {
  // the request's fingerprint and its planned route
  "routing-requests": MAX_EVENT_BYTES.ROUTING + 16 * 1024,
  // a truck's route (its stops) and projection; its last ping alone is far smaller
  "tracking-trucks": MAX_EVENT_BYTES.ROUTING + 16 * 1024,
  "portal-trucks": MAX_EVENT_BYTES.ROUTING + 16 * 1024,
  "portal-invoices": MAX_EVENT_BYTES.INVOICE + 16 * 1024,
  // an entry's state and its history of actions
  "dlq-entries": 64 * 1024,
  heartbeats: 4 * 1024,
  partitions: 4 * 1024,
}
export const DEFAULT_VALUE_BYTES = 128 * 1024
export const maxValueBytes = (bucket: string) => MAX_VALUE_BYTES[bucket] ?? DEFAULT_VALUE_BYTES

/**
 * The share of a limit at which an alert fires (deploy/alerts/logiflow.rules.yaml): long before a business stream
 * refuses, or a consumer's oldest unacked event reaches its stream's max_age (the outage budget) and is dropped.
 */
export const ALERT_FULLNESS = { warn: 0.6, critical: 0.8 } as const
/** A consumer whose oldest unacked event is older than this is behind (a warning: down, paused, stuck or slow). */
export const ALERT_BEHIND_SECONDS = 10 * 60
