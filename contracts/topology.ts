// contracts/topology.ts — every stream, consumer and KV bucket, as plain data.
// `logiflow provision` applies it idempotently; workers bind to the consumers named here.
// Renaming a consumer creates a new durable that starts from the beginning of its stream: it replays history.
import { type Capacity, limits, maxValueBytes, REFERENCE_FLEET } from "./capacity.ts"
import { type EventName, eventNames, streamOf, subjectsOf } from "./events.ts"
import { MAX_PARTITIONS } from "./partitions.ts"

export type WorkerName = "routing" | "invoice" | "tracking" | "portal" | "ops" | "fleet"

export type WorkerSpec = {
  /** its HTTP port (health, metrics and its own routes); `<NAME>_PORT` overrides */
  port: number
  /** events this worker handles (each through a durable consumer named after the worker) */
  consumes: EventName[]
  /** events this worker may publish (nats.conf allows exactly these subjects) */
  publishes: EventName[]
  /** KV buckets this worker reads and writes, each with how long a key lives unless written again (0: until deleted) */
  buckets: Record<string, { ttlSeconds: number }>
  /**
   * streams whose messages it reads back by sequence or subject (routing: its own routes, so that each is stored once;
   * portal: each truck's last position)
   */
  reads?: string[]
}

/** Every worker, declared once: the runtime, the supervisor, the images and the permissions test read it from here. */
export const workers: Record<WorkerName, WorkerSpec> = {
  // portal-trucks: one key per truck, bounded by the fleet, so kept until deleted; portal-invoices: one key per
  // invoice under its customer, growing with history, so each is shown for 90 days (workers/README.md); the map's
  // last positions are read from POSITIONS itself
  portal: {
    port: 8080,
    consumes: ["RouteCalculated", "EtaUpdated", "InvoiceGenerated"],
    publishes: [],
    buckets: { "portal-trucks": { ttlSeconds: 0 }, "portal-invoices": { ttlSeconds: 90 * 24 * 3600 } },
    reads: ["POSITIONS"],
  },
  // a retry with the same Idempotency-Key gets the same answer while the key's record lives: the retry horizon, a day
  // unless TopologyOptions.retryHorizonSeconds (ROUTING_RETRY_HORIZON_SECONDS) says otherwise
  routing: {
    port: 8081,
    consumes: [],
    publishes: ["RouteCalculated"],
    buckets: { "routing-requests": { ttlSeconds: 24 * 3600 } },
    reads: ["ROUTING", "EDGE_ROUTING"],
  },
  tracking: {
    port: 8082,
    consumes: ["RouteCalculated", "PositionReported"],
    publishes: ["PositionReported", "EtaUpdated"],
    buckets: { "tracking-trucks": { ttlSeconds: 0 } },
  },
  invoice: { port: 8083, consumes: ["RouteCalculated"], publishes: ["InvoiceGenerated"], buckets: {} },
  // dlq-jobs: bulk replays (mesh/admin/jobs.ts), kept a week after they were last written
  ops: {
    port: 8084,
    consumes: [],
    publishes: [],
    buckets: { "dlq-entries": { ttlSeconds: 0 }, "dlq-jobs": { ttlSeconds: 7 * 24 * 3600 } },
  },
  fleet: { port: 8085, consumes: [], publishes: [], buckets: {} },
}

export const workerNames = Object.keys(workers) as WorkerName[]

/** routing's idempotency records: one per Idempotency-Key, for the retry horizon */
export const ROUTING_REQUESTS = "routing-requests"

/**
 * Liveness: every running worker instance writes here every 5 s under `<worker>.<instance>` (mesh/heartbeat.ts) and
 * the max age drops the key of an instance that died without saying so; ops lists the bucket. Not in
 * `workers[w].buckets`: a worker writes only its own keys and reads none (nats.conf: `$KV.heartbeats.<worker>.>`).
 */
export const HEARTBEATS = "heartbeats"
export const HEARTBEAT_TTL_SECONDS = 15

/**
 * Partition leases and members of scaled-out workers (mesh/partitions.ts), under `<worker>.lease.…` and
 * `<worker>.member.…`; each worker writes only its own keys. Liveness is by each entry's time, renewed every few
 * seconds; the bucket's age only clears what instances long gone left behind.
 */
export const PARTITIONS_BUCKET = "partitions"

export type StreamSpec = {
  name: string
  subjects: string[]
  /** 0 = forever */
  maxAgeSeconds: number
  /** -1 = unlimited */
  maxBytes: number
  maxMsgs: number
  /** the largest message the stream stores (the server refuses bigger ones) */
  maxMsgSize: number
  /** -1 = unlimited; positions keep at most this many per truck */
  maxMsgsPerSubject: number
  /** "new": a full stream refuses publishes (the publisher sees the error); "old": drops the oldest */
  discard: "new" | "old"
  duplicateWindowSeconds: number
  /** streams in other JetStream domains this one also stores (the hub's ROUTING sources an edge's EDGE_ROUTING) */
  sources?: { name: string; domain: string }[]
  /** a worker reads its messages back by subject (`workers[w].reads`): the stream answers DIRECT.GET too */
  allowDirect?: boolean
  /** more than 1: events are stored partitioned by key (contracts/partitions.ts), for workers scaled out */
  partitions?: number
}

export type ConsumerSpec = {
  stream: string
  /** the durable name: the worker's name */
  durable: string
  worker: WorkerName
  /** what it reads of its stream: one subject pattern, or several (a server ≥ 2.10 takes them as filter_subjects) */
  filterSubjects: string[]
  /** events arriving on this consumer */
  events: EventName[]
  ackWaitSeconds: number
  maxDeliver: number
  maxAckPending: number
  /**
   * the server's waits before each redelivery after an ack timeout (a crash, a hang), in seconds (`serverBackoff`);
   * a handler's error is retried by the client's nak(delay) instead (mesh/backoff.ts)
   */
  backoffSeconds: number[]
  /** on a server without several filter subjects (2.9): this one pattern instead, and the handler skips the rest */
  fallbackFilter?: string
}

export type BucketSpec = {
  bucket: string
  history: number
  /** how long a key lives unless written again; 0: until deleted (the bucket's README line says why) */
  ttlSeconds: number
  /** the largest value it stores (contracts/capacity.ts MAX_VALUE_BYTES) */
  maxValueBytes: number
}

export type TopologyOptions = {
  replicas?: number
  /** the fleet the limits of every stream are sized for (default: the reference fleet, contracts/capacity.ts) */
  capacity?: Partial<Capacity>
  maxDeliver?: number
  ackWaitSeconds?: number
  maxAckPending?: number
  /** a leafnode setup (deploy/edge): without it, one site holds everything */
  edge?: EdgeOptions
  /**
   * partitions of every business stream (1 to MAX_PARTITIONS, default 1): how many instances of one consuming worker
   * can share its work while each key stays with one instance (contracts/partitions.ts); more than 1 needs 2.10+
   */
  partitions?: number
  /** how long routing keeps an Idempotency-Key bound to its request (the routing-requests bucket's TTL); default a day */
  retryHorizonSeconds?: number
}

/**
 * "edge": the server of an edge site (its own JetStream domain), where the edge workers run: it holds only their
 * streams, renamed EDGE_<S>, and their buckets. "hub": the full topology, each such stream also sourcing EDGE_<S>
 * from the edge's domain. The leafnode's deny lists (deploy/edge/edge.conf) keep the hub stream from also
 * capturing edge publishes live.
 */
export type EdgeOptions = { role: "edge" | "hub" /** the edge server's JetStream domain */; domain?: string }

/** What runs at an edge site: it must keep taking requests while the link to the hub is down. */
export const EDGE_WORKERS: WorkerName[] = ["routing"]
export const EDGE_DOMAIN = "edge"
/** `EDGE_ROUTING`: the edge site's copy of a domain stream. */
export const edgeStream = (stream: string) => `EDGE_${stream}`

export type Topology = { replicas: number; streams: StreamSpec[]; consumers: ConsumerSpec[]; buckets: BucketSpec[] }

export const DAY = 24 * 3600
const ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER"
/**
 * What the ADVISORIES stream keeps: a message that used up its deliveries (ops files it, rule 4), each dead-lettered
 * one (with its reason on 2.10.4+), and each pause and resume of a consumer (2.11+).
 */
export const ADVISORY_SUBJECTS = [`${ADVISORY}.MAX_DELIVERIES.>`, `${ADVISORY}.MSG_TERMINATED.>`, `${ADVISORY}.PAUSE.>`]
/** What ops reads of them: MSG_TERMINATED follows a DLQ entry a worker already filed, so it stays in the stream only. */
export const OPS_ADVISORIES = [`${ADVISORY}.MAX_DELIVERIES.>`, `${ADVISORY}.PAUSE.>`]

/**
 * Server-side backoff after ack timeouts: ack_wait × 1, 2, 4, 8, one wait per redelivery, so a crashing or hanging
 * handler's message comes back ever later instead of every ack_wait. At most max_deliver − 1 waits: every server
 * refuses a consumer whose max_deliver is not above the list's length (and 2.9 refuses it with an unlimited one).
 */
export const serverBackoff = (ackWaitSeconds: number, maxDeliver: number): number[] =>
  maxDeliver > 1 ? [1, 2, 4, 8].slice(0, maxDeliver - 1).map((f) => f * ackWaitSeconds) : []

/** `dlq.ROUTING.invoice`: where the invoice consumer of ROUTING dead-letters. */
export const dlqSubject = (stream: string, consumer: string) => `dlq.${stream}.${consumer}`
/** `replay.invoice.ROUTING`: a replayed event reaches only the worker that failed it. */
export const replaySubject = (worker: string, stream: string) => `replay.${worker}.${stream}`
export const REPLAY_STREAM = "REPLAY"

export function topology(opts: TopologyOptions = {}): Topology {
  const { replicas = 1, maxDeliver = 5, ackWaitSeconds = 30, maxAckPending = 1000 } = opts
  const l = limits({ ...REFERENCE_FLEET, ...opts.capacity })
  const events_ = (stream: string) => eventNames.filter((e) => streamOf(e) === stream)
  const partitions = opts.partitions ?? 1
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) {
    throw new Error(`partitions must be a whole number from 1 to ${MAX_PARTITIONS}, got ${partitions}`)
  }
  const readBack = new Set(Object.values(workers).flatMap((w) => w.reads ?? []))
  const stored = (name: "ROUTING" | "INVOICE" | "TRACKING" | "POSITIONS", discard: "new" | "old"): StreamSpec => ({
    name,
    subjects: events_(name).map(subjectsOf),
    ...l[name],
    discard,
    duplicateWindowSeconds: 120,
    ...(readBack.has(name) ? { allowDirect: true } : {}),
    ...(partitions > 1 ? { partitions } : {}),
  })
  const streams: StreamSpec[] = [
    // business events: never dropped; refused only when the outage budget is used up
    stored("ROUTING", "new"),
    stored("INVOICE", "new"),
    stored("TRACKING", "new"),
    // telemetry: old positions make room, and each truck is capped at its own share
    stored("POSITIONS", "old"),
    // append-only: entries are never consumed away; their state lives in the dlq-entries bucket
    { name: "DLQ", subjects: ["dlq.>"], ...l.DLQ, discard: "new", duplicateWindowSeconds: 600 },
    { name: "ADVISORIES", subjects: ADVISORY_SUBJECTS, ...l.ADVISORIES, discard: "old", duplicateWindowSeconds: 120 },
    { name: REPLAY_STREAM, subjects: ["replay.>"], ...l.REPLAY, discard: "new", duplicateWindowSeconds: 120 },
  ]

  const consumers: ConsumerSpec[] = []
  const base = { ackWaitSeconds, maxDeliver, maxAckPending, backoffSeconds: serverBackoff(ackWaitSeconds, maxDeliver) }
  for (const worker of workerNames) {
    const byStream = new Map<string, EventName[]>()
    for (const e of workers[worker].consumes) byStream.set(streamOf(e), [...(byStream.get(streamOf(e)) ?? []), e])
    for (const [stream, evs] of byStream)
      consumers.push({ stream, durable: worker, worker, filterSubjects: evs.map(subjectsOf), events: evs, ...base })
    if (byStream.size > 0) {
      consumers.push({
        stream: REPLAY_STREAM,
        durable: worker,
        worker,
        filterSubjects: [`replay.${worker}.>`],
        events: workers[worker].consumes,
        ...base,
      })
    }
  }
  // ops' own consumers never run out of deliveries: a failure there is retried until it succeeds, because dead-lettering
  // the safety net's input into the queue it serves would hide it where nobody looks (and with no last delivery, no
  // server-side backoff: 2.9 refuses one beside an unlimited max_deliver)
  const net = { ...base, maxDeliver: -1, backoffSeconds: serverBackoff(ackWaitSeconds, -1) }
  consumers.push({
    stream: "ADVISORIES",
    durable: "ops",
    worker: "ops",
    filterSubjects: OPS_ADVISORIES,
    fallbackFilter: ">",
    events: [],
    ...net,
  })
  consumers.push({ stream: "DLQ", durable: "ops", worker: "ops", filterSubjects: [">"], events: [], ...net })

  const ttlOf = (bucket: string, ttlSeconds: number) =>
    bucket === ROUTING_REQUESTS && opts.retryHorizonSeconds ? opts.retryHorizonSeconds : ttlSeconds
  // a retry finds its route on the truck's subject: a key that outlived the route there would record it a second time
  const horizon = ttlOf(ROUTING_REQUESTS, workers.routing.buckets[ROUTING_REQUESTS]!.ttlSeconds)
  if (l.ROUTING.maxAgeSeconds > 0 && horizon > l.ROUTING.maxAgeSeconds) {
    throw new Error(
      `the retry horizon (${horizon} s) must not exceed how long ROUTING keeps routes (${l.ROUTING.maxAgeSeconds} s, the outage budget): lower ROUTING_RETRY_HORIZON_SECONDS or raise CAPACITY_OUTAGE_BUDGET_DAYS`,
    )
  }
  const buckets: BucketSpec[] = [
    ...workerNames.flatMap((w) =>
      Object.entries(workers[w].buckets).map(([bucket, b]) => ({ bucket, history: 1, ttlSeconds: ttlOf(bucket, b.ttlSeconds) })),
    ),
    { bucket: HEARTBEATS, history: 1, ttlSeconds: HEARTBEAT_TTL_SECONDS },
    { bucket: PARTITIONS_BUCKET, history: 1, ttlSeconds: DAY },
  ].map((b) => ({ ...b, maxValueBytes: maxValueBytes(b.bucket) }))

  if (!opts.edge) return { replicas, streams, consumers, buckets }
  const atEdge = new Set(EDGE_WORKERS.flatMap((w) => workers[w].publishes.map(streamOf)))
  if (opts.edge.role === "edge") {
    return {
      replicas,
      streams: streams.filter((s) => atEdge.has(s.name)).map((s) => ({ ...s, name: edgeStream(s.name) })),
      consumers: [],
      // heartbeats too: an edge site's status (logiflow status against it) lists its own workers
      buckets: buckets.filter((b) => b.bucket === HEARTBEATS || EDGE_WORKERS.some((w) => Object.hasOwn(workers[w].buckets, b.bucket))),
    }
  }
  const edgeDomain = opts.edge.domain ?? EDGE_DOMAIN
  const sourced = streams.map((s) => (atEdge.has(s.name) ? { ...s, sources: [{ name: edgeStream(s.name), domain: edgeDomain }] } : s))
  return { replicas, streams: sourced, consumers, buckets }
}

/** Consumers of one worker. */
export const consumersOf = (t: Topology, worker: string) => t.consumers.filter((c) => c.worker === worker)
