// mesh/worker.ts — `worker({...})`: what a worker is, and its life: HTTP front first (mesh/front.ts), then NATS,
// its handlers checked and its consumers bound (mesh/bind.ts), the consume engine (mesh/consume.ts), a heartbeat in
// the heartbeats bucket, and on stop the drain of delivery rule 8.
import { type JetStreamClient, jetstream, jetstreamManager, type PubAck } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import { type IRequest, type RouterType, StatusError } from "itty-router"
import { consumersOf, type EventData, type EventName, topology, type TopologyOptions, type WorkerSpec, workers } from "../contracts/mod.ts"
import { type Backoff, defaultBackoff } from "./backoff.ts"
import { bind, handlerMismatch } from "./bind.ts"
import { type Connection, connect } from "./connect.ts"
import { consume, type Consuming } from "./consume.ts"
import type { Handlers, RawHandler } from "./handler.ts"
import { env, envInt } from "./env.ts"
import { topologyEnv } from "./topology-env.ts"
import { StartupError } from "./errors.ts"
import { missingFeatures } from "./features.ts"
import { front, isReady, type Readiness } from "./front.ts"
import { heartbeat, heartbeatsBucket, instanceId } from "./heartbeat.ts"
import { serve, type Server } from "./http.ts"
import { type Logger, logger } from "./log.ts"
import { type Registry, registry } from "./metrics.ts"
import { workerMetrics } from "./worker-metrics.ts"
import { leases, PARTITIONS_BUCKET } from "./partitions.ts"
import { provision } from "./provision.ts"
import { childTraceparent, newId, publishTraced } from "./publish.ts"
import { rateLimit } from "./rate.ts"
import { withTimeout } from "./time.ts"
import { contextOf, exportSpans } from "./tracing.ts"

export type Runtime = {
  readonly name: string
  readonly log: Logger
  readonly metrics: Registry
  /** set once connected; routes that need NATS check `connected` first */
  readonly nc: Connection
  readonly js: JetStreamClient
  readonly connected: boolean
  readonly ready: boolean
  /** `<HOSTNAME>-<random>`: this instance's key in the heartbeats bucket */
  readonly instance: string
  /**
   * publishes one event from outside a handler (an HTTP route); id defaults to a fresh UUIDv7. `traceparent` is
   * the parent of the publish span, and what the event carries when no tracing SDK is registered
   */
  publish<N extends EventName>(
    name: N,
    data: EventData<N>,
    meta?: { id?: string; traceparent?: string; expectLastSubjectSequence?: number; expectLastSubjectSequenceSubject?: string },
  ): Promise<PubAck>
  kv(bucket: string): Promise<KV>
  /** writes this instance's heartbeat now, not at the next tick: a state others wait on has changed */
  heartbeat(): void
}

export type WorkerOptions = {
  name: string
  consumes?: Handlers
  /** handlers for consumers whose stream carries no domain events, by stream name (ops: ADVISORIES, DLQ) */
  raw?: Record<string, RawHandler>
  /** the worker's own HTTP routes, next to /healthz /readyz /metrics */
  routes?: (router: RouterType<IRequest>, rt: Runtime) => void
  /** default port (default: the worker's spec in contracts/topology.ts); `<NAME>_PORT` overrides, `start({ port })` both */
  port?: number
  /** handlers running at once (default CONCURRENCY or 64); one key never runs twice at once */
  concurrency?: number
  /** messages this process holds at most, running or waiting for their key (default PREFETCH, else 16 × concurrency up to 256) */
  prefetch?: number
  /** events per second this process pulls at most, all its consumers together (default MAX_RATE; 0 = no limit) */
  maxRate?: number
  backoff?: Partial<Backoff>
  topology?: TopologyOptions
  /** runs after NATS is connected and consumers are bound, before the worker reports ready */
  onStart?: (rt: Runtime) => void | Promise<void>
  onStop?: (rt: Runtime) => void | Promise<void>
  /** more to say in each heartbeat (a read model's rebuild, mesh/rebuild.ts) */
  beat?: (rt: Runtime) => Record<string, unknown>
}

export type StartOptions = {
  port?: number
  hostname?: string
  url?: string
  user?: string
  pass?: string
  /** how long a drain may take before in-flight work is abandoned to redelivery (default DRAIN_TIMEOUT_MS or 20 s) */
  drainTimeoutMs?: number
}

export type Running = { port: number; runtime: Runtime; stop(): Promise<void> }

export type Worker = { readonly name: string; readonly options: WorkerOptions; start(opts?: StartOptions): Promise<Running> }

export function worker(options: WorkerOptions): Worker {
  return { name: options.name, options, start: (opts) => start(options, opts) }
}

/** a partition lease not renewed for this long may be taken by another instance (PARTITION_LEASE_MS) */
const LEASE_MS = envInt("PARTITION_LEASE_MS", 10_000)

const specOf = (name: string): WorkerSpec | undefined => (workers as Record<string, WorkerSpec | undefined>)[name]

async function start(o: WorkerOptions, so: StartOptions = {}): Promise<Running> {
  const name = o.name
  const instance = instanceId()
  const log = logger({ worker: name })
  const metrics = registry()
  const flushSpans = exportSpans(name, log)
  // a handler mostly awaits round trips (a publish's ack, a KV write): 64 at once keep the connection busy where 16
  // left invoice waiting on acks for most of its drain (bench/README.md, "Profile findings")
  const concurrency = o.concurrency ?? envInt("CONCURRENCY", 64)
  const drainTimeoutMs = so.drainTimeoutMs ?? envInt("DRAIN_TIMEOUT_MS", 20_000)
  const topo = topology({ ...topologyEnv(), ...o.topology })
  const specs = consumersOf(topo, name)
  const mismatch = handlerMismatch(name, specs, o.consumes ?? {}, o.raw ?? {})
  if (mismatch) throw new StartupError(`${name}: ${mismatch}`)

  const { events, handlerSeconds, observePublish, natsEvents, refused } = workerMetrics(metrics, {
    held: () => engine?.held ?? 0,
    connected: () => !!nc?.connected,
    consumerInfo: (stream, durable) => (js && nc?.connected ? js.consumers.get(stream, durable).then((x) => x.info(false)) : undefined),
    specs,
  })

  let nc: Connection | undefined
  let js: JetStreamClient | undefined
  let engine: Consuming | undefined
  let beats: ReturnType<typeof heartbeat> | undefined
  const readiness: Readiness = { connected: false, bound: false, stopping: false, refused: new Map() }
  const buckets = new Map<string, Promise<KV>>()

  const rt: Runtime = {
    name,
    log,
    metrics,
    get nc() {
      if (!nc) throw new StatusError(503, "not connected to NATS yet")
      return nc
    },
    get js() {
      if (!js) throw new StatusError(503, "not connected to NATS yet")
      return js
    },
    get connected() {
      return !!nc?.connected
    },
    get ready() {
      return isReady({ ...readiness, connected: !!nc?.connected })
    },
    instance,
    publish(event, data, meta = {}) {
      const id = meta.id ?? newId(env("SITE_ID") ?? "")
      // the event carries the publish span's traceparent when an SDK records spans, else a new span id under the
      // caller's (never the caller's own: two hops would look like one span)
      const traceparent = childTraceparent(meta.traceparent)
      const { expectLastSubjectSequence, expectLastSubjectSequenceSubject } = meta
      const guard = expectLastSubjectSequence === undefined ? {} : { expectLastSubjectSequence, expectLastSubjectSequenceSubject }
      return publishTraced(
        rt.js,
        event,
        data,
        { id, source: `logiflow/${name}`, traceparent, ...guard },
        contextOf(meta.traceparent),
        observePublish,
      )
    },
    kv(bucket) {
      let kv = buckets.get(bucket)
      if (!kv) buckets.set(bucket, (kv = new Kvm(rt.js).open(bucket)))
      return kv
    },
    heartbeat: () => void beats?.beat(),
  }

  // HTTP first: /healthz answers while NATS is still being dialled, /readyz says 503 until bound
  const fetch = front({
    name,
    log,
    metrics,
    readiness: () => ({ ...readiness, connected: !!nc?.connected }),
    routes: (router) => o.routes?.(router, rt),
  })
  const port = so.port ?? envInt(`${name.toUpperCase()}_PORT`, o.port ?? specOf(name)?.port ?? 0)
  const server: Server = await serve(fetch, {
    port,
    hostname: so.hostname ?? env("HTTP_HOST") ?? "0.0.0.0",
    onRefused: (status, why) => (refused.inc({ status: String(status) }), log.debug("http request refused", { status, why })),
    onError: (err) => log.error("http handler failed", { error: err }),
  })
  log.info("http listening", { port: server.port, instance })

  nc = await connect({ name, url: so.url, user: so.user, pass: so.pass, waitForServer: true, log })
  js = jetstream(nc)
  // once per start: each of these takes its older path or is refused by name where the mesh would use it
  const missing = missingFeatures(nc)
  if (missing.length) log.warn("nats-server lacks features", { server: nc.info?.version, missing })
  ;(async () => {
    for await (const s of nc.status()) if (s.type === "disconnect" || s.type === "reconnect") natsEvents.inc({ event: s.type })
  })().catch(() => {})

  const { bound: consumers, units } = await bind({ name, nc, js, topology: topo, specs }).catch(async (err) => {
    await Promise.allSettled([nc!.close(), server.close()])
    throw err
  })

  // A process holds at most `prefetch` messages (running or waiting for their key) and pulls more as they finish.
  // The server charges a delivery to every message a process holds when it dies: holding the consumer's whole
  // max_ack_pending (1000) at once, a few crashes in a row used up max_deliver of events that never ran, and the
  // server then drops them from the consumer (test/chaos.test.ts, crash loop). consume() cannot be held back — it
  // pulls again as messages arrive, not as they finish — so mesh/pull.ts asks for the room that is free.
  const prefetch = Math.max(
    1,
    Math.min(
      o.prefetch ?? envInt("PREFETCH", Math.max(concurrency, Math.min(256, concurrency * 16))),
      ...consumers.map((c) => (c.maxAckPending > 0 ? c.maxAckPending : Infinity)),
    ),
  )
  const maxRate = o.maxRate ?? envInt("MAX_RATE", 0)
  engine = consume({
    worker: name,
    nc,
    js,
    log,
    consumers,
    handlers: o.consumes ?? {},
    raw: o.raw ?? {},
    backoff: { ...defaultBackoff, ...o.backoff },
    concurrency,
    prefetch,
    rate: maxRate > 0 ? rateLimit(maxRate) : undefined,
    kv: rt.kv,
    metrics: { events, handlerSeconds, observePublish },
    onBound(c, ok, why) {
      const key = `${c.stream}/${c.durable}`
      if (ok) readiness.refused.delete(key), log.info("consumer bound again", { stream: c.stream, consumer: c.durable })
      else
        readiness.refused.set(key, why),
          log.error("consumer not usable; pulling again every second", { stream: c.stream, consumer: c.durable, why })
    },
  })
  // a partitioned worker pulls a partition only while it holds its lease: instances share them, one each at a time
  const shared = units.length
    ? leases({
        worker: name,
        instance,
        kv: await rt.kv(PARTITIONS_BUCKET),
        jsm: await jetstreamManager(nc, { checkAPI: false }),
        engine,
        log,
        units,
        leaseMs: LEASE_MS,
        drainMs: drainTimeoutMs,
      })
    : undefined
  const leaseTimer = shared ? setInterval(() => void shared.tick(), LEASE_MS / 4) : undefined
  await shared?.tick()
  // ready once onStart has run too: a read model still loading must not be sent traffic (WorkerOptions.onStart)
  await o.onStart?.(rt)
  readiness.bound = true
  beats = heartbeat({
    worker: name,
    instance,
    js,
    log,
    state: () => ({ ...o.beat?.(rt), ready: rt.ready, inflight: engine?.held ?? 0 }),
    provision: () =>
      provision(nc!, { ...topo, buckets: [heartbeatsBucket] }, { createMissing: true, streams: () => false, consumers: () => false }).then(
        () => {},
      ),
  })
  log.info("ready", { consumers: specs.map((c) => `${c.stream}/${c.durable}`), concurrency, port: server.port })

  let stopped: Promise<void> | undefined
  const stop = () =>
    (stopped ??= (async () => {
      readiness.stopping = true
      log.info("draining", { inflight: engine!.held })
      const deadline = Date.now() + drainTimeoutMs
      // the leases stay renewed while what is held finishes (a drain may outlast a lease), then go back released:
      // the next holder starts at once instead of waiting out lease and ack_wait
      shared?.hold()
      const drained = await engine!.drain(deadline)
      clearInterval(leaseTimer)
      await shared?.stop(drained)
      await beats!.stop()
      await o.onStop?.(rt)
      await withTimeout(nc!.drain(), Math.max(1000, deadline - Date.now())).catch(() => nc!.close())
      await server.close()
      await withTimeout(
        flushSpans.then((flush) => flush?.()),
        2000,
      ).catch(() => {})
      log.info("stopped", { drained })
    })())

  return { port: server.port, runtime: rt, stop }
}
