// mesh/worker.ts — `worker({...})`: binds a worker's durable consumers, feeds messages through per-key lanes into
// delivery.ts, serves /healthz /readyz /metrics (+ the worker's own routes), and drains on SIGTERM (rule 8).
import { type Consumer, type JetStreamClient, jetstream, type JsMsg, type PubAck, jetstreamManager } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import { AutoRouter, type IRequest, type RouterType, StatusError } from "itty-router"
import { type EventData, type EventName, type Meta, consumersOf, streamOf, topology, type TopologyOptions, workers, type WorkerSpec } from "../contracts/mod.ts"
import { type Backoff, defaultBackoff } from "./backoff.ts"
import { type Connection, connect } from "./connect.ts"
import { deliver, type DeliveryDeps, type Handlers, type HandlerContext, type Outcome, type RawHandler } from "./delivery.ts"
import { env, envInt } from "./env.ts"
import { heartbeat as beating, heartbeatsBucket, instanceId } from "./heartbeat.ts"
import { StartupError } from "./errors.ts"
import { sleep, withTimeout } from "./time.ts"
import { serve, type Server } from "./http.ts"
import { once } from "./kv.ts"
import { lanes } from "./lanes.ts"
import { type Logger, logger } from "./log.ts"
import { type Registry, registry } from "./metrics.ts"
import { provision } from "./provision.ts"
import { rateLimit } from "./rate.ts"
import { type PulledMsg, type Puller, puller } from "./pull.ts"
import { childTraceparent, newId, publishTraced } from "./publish.ts"
import { contextOf, endServerSpan, exportSpans, type PublishObserver, serverSpan, spansOn } from "./tracing.ts"

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
  publish<N extends EventName>(name: N, data: EventData<N>, meta?: { id?: string; key?: string; traceparent?: string }): Promise<PubAck>
  kv(bucket: string): Promise<KV>
}

export type WorkerOptions = {
  name: string
  consumes?: Handlers
  /** handlers for consumers whose stream carries no domain events, by stream name (ops: ADVISORIES, DLQ) */
  raw?: Record<string, RawHandler>
  /** the worker's own HTTP routes, next to /healthz /readyz /metrics */
  routes?: (router: RouterType<IRequest>, rt: Runtime) => void
  /** default port; `<NAME>_PORT` overrides, `start({ port })` overrides both */
  port?: number
  /** handlers running at once (default CONCURRENCY or 16); one key never runs twice at once */
  concurrency?: number
  /** messages this process holds at most, running or waiting for their key (default PREFETCH or 16 × concurrency) */
  prefetch?: number
  /** events per second this process pulls at most, all its consumers together (default MAX_RATE; 0 = no limit) */
  maxRate?: number
  backoff?: Partial<Backoff>
  topology?: TopologyOptions
  /** runs after NATS is connected and consumers are bound, before the worker reports ready */
  onStart?: (rt: Runtime) => void | Promise<void>
  onStop?: (rt: Runtime) => void | Promise<void>
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

/** `deadline`: when a running handler has outlived ack_wait (the sweep then lets its lane move on; 0: running, the
 * sweep has not set it yet); `slot`: its index in the HeldSet (-1 once it is not held) */
type Held = { msg: PulledMsg; started: boolean; stream: string; deadline: number; slot: number; abandon?: () => void }

/**
 * The messages a process holds (running, or waiting for their key). An array with swap-remove: a Map keyed by the
 * message cost a hash, and a table rehash every so often, for every message (~2 % of the consume path).
 */
class HeldSet {
  #items: Held[] = []
  get size() {
    return this.#items.length
  }
  add(h: Held) {
    h.slot = this.#items.push(h) - 1
  }
  delete(h: Held) {
    const i = h.slot
    if (i < 0 || this.#items[i] !== h) return
    const last = this.#items.pop()!
    if (last !== h) (this.#items[i] = last), (last.slot = i)
    h.slot = -1
  }
  /** a copy: what the caller does may free (and so move) others */
  values(): Held[] {
    return this.#items.slice()
  }
}

async function start(o: WorkerOptions, so: StartOptions = {}): Promise<Running> {
  const name = o.name
  const instance = instanceId()
  const log = logger({ worker: name })
  const metrics = registry()
  const flushSpans = exportSpans(name, log)
  const concurrency = o.concurrency ?? envInt("CONCURRENCY", 16)
  const backoff = { ...defaultBackoff, ...o.backoff }
  const drainTimeoutMs = so.drainTimeoutMs ?? envInt("DRAIN_TIMEOUT_MS", 20_000)
  const topo = topology({ replicas: envInt("STREAM_REPLICAS", 1), ...o.topology })
  const specs = consumersOf(topo, name)

  const events = metrics.counter("logiflow_events_total", "Events handled, by stream, type and outcome (ack, nak, dlq)", ["stream", "type", "outcome"])
  const handlerSeconds = metrics.histogram("logiflow_handler_seconds", "Time from pickup to ack/nak/dlq, by stream", { labelNames: ["stream"] })
  const publishSeconds = metrics.histogram("logiflow_publish_seconds", "Time for JetStream to store a publish (events and DLQ entries), by subject and outcome (ok, duplicate, error)", {
    labelNames: ["subject", "outcome"],
  })
  const observePublish: PublishObserver = (subject, outcome, seconds) => publishSeconds.observe(seconds, { subject, outcome })
  const held = new HeldSet()
  metrics.gauge("logiflow_inflight", "Messages held by this worker (running or waiting for their key)", { collect: () => held.size })
  metrics.gauge("logiflow_nats_connected", "1 while connected to NATS", { collect: () => (nc?.connected ? 1 : 0) })
  const natsEvents = metrics.counter("logiflow_nats_connection_events_total", "NATS connection changes, by event (disconnect, reconnect)", ["event"])
  const consumerGauges = (field: "num_pending" | "num_ack_pending") => async (): Promise<[Record<string, string>, number][]> => {
    if (!js || !nc?.connected) return []
    const rows = await Promise.all(
      specs.map(async (c) => {
        const info = await withTimeout(js!.consumers.get(c.stream, c.durable).then((x) => x.info(false)), 1000).catch(() => undefined)
        return info ? ([{ stream: c.stream, consumer: c.durable }, info[field]] as [Record<string, string>, number]) : undefined
      }),
    )
    return rows.filter((r) => r !== undefined)
  }
  const sampled = { labelNames: ["stream", "consumer"] }
  metrics.gauge("logiflow_consumer_pending", "Messages not yet delivered to the consumer (sampled at scrape)", { ...sampled, collect: consumerGauges("num_pending") })
  metrics.gauge("logiflow_consumer_ack_pending", "Messages delivered but not yet acked (sampled at scrape)", { ...sampled, collect: consumerGauges("num_ack_pending") })
  const http = { labelNames: ["method", "route", "status"] }
  const httpRequests = metrics.counter("logiflow_http_requests_total", "HTTP requests answered, by method, route pattern and status", http.labelNames)
  const httpSeconds = metrics.histogram("logiflow_http_request_seconds", "Time to answer an HTTP request, by method, route pattern and status", http)

  let nc: Connection | undefined
  let js: JetStreamClient | undefined
  let bound = false
  /** `<stream>/<durable>` → why the server refuses it (deleted at runtime, JetStream unavailable): /readyz says 503 */
  const unbound = new Map<string, string>()
  let stopping = false
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
      return !!nc?.connected && bound && unbound.size === 0 && !stopping
    },
    instance,
    publish(event, data, meta = {}) {
      const id = meta.id ?? newId(env("SITE_ID") ?? "")
      // the event carries the publish span's traceparent when an SDK records spans, else a new span id under the
      // caller's (never the caller's own: two hops would look like one span)
      const traceparent = childTraceparent(meta.traceparent)
      return publishTraced(rt.js, event, data, { id, source: `logiflow/${name}`, key: meta.key, traceparent }, contextOf(meta.traceparent), observePublish)
    },
    kv(bucket) {
      let kv = buckets.get(bucket)
      if (!kv) {
        kv = new Kvm(rt.js).open(bucket)
        buckets.set(bucket, kv)
      }
      return kv
    },
  }

  // HTTP first: /healthz answers while NATS is still being dialled, /readyz says 503 until bound
  const router = AutoRouter({
    catch: (err: unknown) => {
      // a StatusError is an answer a route chose; anything else is a bug, logged here and never shown to the client
      if (!(err instanceof StatusError)) {
        log.error("http handler failed", { error: err, stack: (err as Error)?.stack })
        return Response.json({ status: 500, error: "internal error" }, { status: 500 })
      }
      const status = err.status
      const issues = (err as unknown as { issues?: unknown }).issues
      const body = { status, error: err.message, ...(issues ? { issues } : {}) }
      return Response.json(body, { status })
    },
  })
  router.get("/healthz", () => ({ status: "ok", worker: name }))
  router.get("/readyz", () =>
    rt.ready
      ? { status: "ready", worker: name }
      : Response.json(
          { status: "not-ready", worker: name, connected: rt.connected, bound: bound && unbound.size === 0, stopping, ...(unbound.size ? { consumers: Object.fromEntries(unbound) } : {}) },
          { status: 503 },
        ),
  )
  router.get("/metrics", async () => new Response(await metrics.render(), { headers: { "content-type": metrics.contentType } }))
  o.routes?.(router, rt)
  // labelled by the route pattern that answered (`/api/trucks/:id`), never the raw path: ids would make a series each
  const fetch = async (request: Request) => {
    const started = performance.now()
    let status = 500
    // with an SDK, a server span (child of the caller's traceparent) is the parent of whatever the route publishes:
    // routes read it with requestTraceparent(request)
    const span = spansOn() ? serverSpan(request) : undefined
    try {
      const response: Response = await router.fetch(request)
      status = response.status
      return response
    } finally {
      const route = (request as IRequest).route ?? "unmatched"
      const labels = { method: request.method, route, status: String(status) }
      httpRequests.inc(labels)
      httpSeconds.observe((performance.now() - started) / 1000, labels)
      if (span) endServerSpan(span, request.method, route, status)
    }
  }
  const port = so.port ?? envInt(`${name.toUpperCase()}_PORT`, o.port ?? 0)
  const refused = metrics.counter("logiflow_http_refused_total", "Requests refused before routing (malformed, too large, too slow), by status", ["status"])
  const server: Server = await serve(fetch, {
    port,
    hostname: so.hostname ?? env("HTTP_HOST") ?? "0.0.0.0",
    onRefused: (status, why) => (refused.inc({ status: String(status) }), log.debug("http request refused", { status, why })),
    onError: (err) => log.error("http handler failed", { error: err }),
  })
  log.info("http listening", { port: server.port, instance })

  nc = await connect({ name, url: so.url, user: so.user, pass: so.pass, waitForServer: true, log })
  js = jetstream(nc)
  ;(async () => {
    for await (const s of nc.status()) if (s.type === "disconnect" || s.type === "reconnect") natsEvents.inc({ event: s.type })
  })().catch(() => {})

  // a class, not an object literal: one per message, and a literal's arrow functions were a closure each
  class Context implements HandlerContext {
    readonly worker = name
    readonly log = log
    readonly kv = rt.kv
    constructor(
      readonly meta: Meta,
      private readonly h: Held,
    ) {}
    get deliveries() {
      return this.h.msg.info.deliveryCount
    }
    working() {
      this.h.msg.working()
      this.h.deadline = Date.now() + (ackWaitMs.get(this.h.stream) ?? 30_000)
    }
    async once<T>(key: string, fn: () => T | Promise<T>): Promise<T> {
      return once(await rt.kv(`${name}-once`), key, fn)
    }
  }

  // what this worker needs is created here only where its user may (a dev server without auth); with least-privilege
  // users `logiflow provision` (admin) must have run, and a missing piece stops the start with that advice
  const mine = (workers as Record<string, WorkerSpec | undefined>)[name]
  const own = mine?.buckets ?? []
  const needed = new Set([...specs.map((c) => c.stream), ...(mine?.publishes ?? []).map(streamOf), ...(specs.length ? ["DLQ"] : [])])
  const fail = async (message: string): Promise<never> => {
    await Promise.allSettled([nc!.close(), server.close()])
    throw new StartupError(`${name}: ${message}. Run \`logiflow provision\` (npm run provision) as the admin user first.`)
  }
  // a server with auth means per-worker users, which may not even look at streams: skip straight to binding
  if (!nc.info?.auth_required) await provision(nc, topo, {
    createMissing: true,
    streams: (s) => needed.has(s.name),
    consumers: (c) => c.worker === name,
    buckets: (b) => own.includes(b.bucket),
  }).catch((err) => fail(`its streams, consumers or buckets are missing and could not be created (${(err as Error).message})`))
  else {
    // its buckets' info is the one look every worker user may take (nats.conf): a missing bucket stops the start here,
    // not at the first event that needs it
    const jsm = await jetstreamManager(nc, { checkAPI: false })
    for (const b of own) await jsm.streams.info(`KV_${b}`).catch((err) => fail(`KV bucket ${b} is not usable (${(err as Error).message})`))
  }

  const ackWaitMs = new Map<string, number>()
  const maxDeliver = new Map<string, number>()
  const consumers: { spec: (typeof specs)[number]; consumer: Consumer; maxAckPending: number }[] = []
  for (const c of specs) {
    const consumer = await js.consumers.get(c.stream, c.durable).catch((err) => fail(`cannot bind consumer ${c.stream}/${c.durable} (${(err as Error).message})`))
    const info = await consumer.info(true)
    ackWaitMs.set(c.stream, Math.round((info.config.ack_wait ?? 30e9) / 1e6))
    const md = info.config.max_deliver ?? -1
    maxDeliver.set(c.stream, md > 0 ? md : Infinity)
    consumers.push({ spec: c, consumer, maxAckPending: info.config.max_ack_pending ?? 1000 })
  }

  // A process holds at most `prefetch` messages (running or waiting for their key) and pulls more as they finish.
  // The server charges a delivery to every message a process holds when it dies: holding the consumer's whole
  // max_ack_pending (1000) at once, a few crashes in a row used up max_deliver of events that never ran, and the
  // server then drops them from the consumer (test/chaos.test.ts, crash loop). consume() cannot be held back — it
  // pulls again as messages arrive, not as they finish — so mesh/pull.ts asks for the room that is free.
  const prefetch = Math.max(1, Math.min(o.prefetch ?? envInt("PREFETCH", concurrency * 16), ...consumers.map((c) => (c.maxAckPending > 0 ? c.maxAckPending : Infinity))))
  const pullers: Puller[] = []
  // the client writes its buffer out in a microtask, and handlers finish in different microtasks: acked one by one,
  // each ack was its own socket write. Acks are collected and leave once per turn of the event loop, together with
  // the pull requests for the room they freed: one write, and one request sized to everything that finished.
  let acks: JsMsg[] = []
  const flushAcks = () => {
    const batch = acks
    acks = []
    // an ack after the connection closed (a handler the drain deadline gave up on) must not throw out of a timer:
    // that message is redelivered, as intended
    for (const m of batch) {
      try {
        m.ack()
      } catch (err) {
        log.warn("ack not sent; the server redelivers after ack_wait", { seq: m.seq, error: err })
      }
    }
  }
  const later: (f: () => void) => void = (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? ((f) => setTimeout(f, 0))
  let turnQueued = false
  let first = 0
  const turn = () => {
    turnQueued = false
    flushAcks()
    // the consumer asked first gets the room first: take turns, or a backlog on one starves the others
    first = (first + 1) % Math.max(1, pullers.length)
    for (let i = 0; i < pullers.length; i++) pullers[(first + i) % pullers.length]!.wake()
  }
  function roomFreed() {
    if (!turnQueued) (turnQueued = true), later(turn)
  }
  const ack = (msg: JsMsg) => {
    if (acks.push(msg) >= 256) flushAcks()
  }

  // the metric series of each (stream, type, outcome), bound once: labels are checked and hashed on first use only
  const observer = (stream: string) => {
    const seconds = handlerSeconds.bind({ stream })
    // by type, then outcome: a key built per message (`${type} ${outcome}`) had to be flattened and hashed each time
    const counts = new Map<string, Partial<Record<Outcome, { inc(by?: number): void }>>>()
    return (outcome: Outcome, type: string, s: number) => {
      let byOutcome = counts.get(type)
      if (!byOutcome) counts.set(type, (byOutcome = {}))
      ;(byOutcome[outcome] ??= events.bind({ stream, type, outcome })).inc()
      seconds.observe(s)
    }
  }

  /** the Held whose message deliver() is handling right now (synchronously, inside run()) */
  let current: Held | undefined
  // one set of delivery deps per stream, not a fresh object and closures per message
  const deps = new Map<string, DeliveryDeps>()
  for (const c of specs) {
    deps.set(c.stream, {
      worker: name,
      js,
      stream: c.stream,
      consumer: name,
      maxDeliver: maxDeliver.get(c.stream) ?? Infinity,
      handlers: o.consumes ?? {},
      raw: o.raw?.[c.stream],
      backoff,
      log,
      // context() is called inside deliver(), while run() has the message's Held in `current`
      context: (msg, meta) => new Context(meta, current?.msg === msg ? current : { msg: msg as PulledMsg, started: true, stream: c.stream, deadline: Infinity, slot: -1 }),
      observe: observer(c.stream),
      observePublish,
      ack,
    })
  }

  // done() frees the message's lane: when delivery ends, or when the sweep gives up on a handler past ack_wait
  // deliver() settles every message itself; a throw out of it is a runtime bug, and the server redelivers
  const finished = (h: Held, done: () => void, err?: unknown) => {
    if (err !== undefined) log.error("delivery failed unexpectedly; the server redelivers after ack_wait", { stream: h.stream, seq: h.msg.seq, error: err })
    held.delete(h)
    roomFreed()
    done()
  }
  const run = (h: Held, done: () => void) => {
    h.started = true
    // set by the next sweep (at most one sweep interval late): a clock read per message showed in the profile
    h.deadline = 0
    h.abandon = done
    let outcome
    const outer = current
    current = h
    try {
      outcome = deliver(h.msg, deps.get(h.stream)!)
    } catch (err) {
      return finished(h, done, err ?? "thrown undefined")
    } finally {
      current = outer
    }
    if (outcome instanceof Promise) outcome.then(() => finished(h, done), (err) => finished(h, done, err ?? "rejected with undefined"))
    else finished(h, done)
  }

  const work = lanes<Held>(concurrency, (h) => h.msg.header("ce-subject"), run)

  // messages waiting for their key's turn are not the handler's fault: keep the server from redelivering them
  const minAckWait = Math.min(...ackWaitMs.values(), 30_000)
  const heartbeat = setInterval(() => {
    for (const h of held.values()) if (!h.started) h.msg.working()
  }, Math.max(1000, Math.floor(minAckWait / 3)))
  // a handler still running after ack_wait is redelivered by the server, so its lane moves on: checked here rather
  // than by a timer per message
  const sweep = setInterval(() => {
    const now = Date.now()
    for (const h of held.values()) {
      if (h.started && h.deadline === 0) h.deadline = now + (ackWaitMs.get(h.stream) ?? 30_000)
      if (!h.started || now <= h.deadline) continue
      h.deadline = Infinity
      log.warn("handler still running after ack_wait; its lane moves on and the server redelivers", { stream: h.stream, seq: h.msg.seq })
      h.abandon?.()
    }
  }, Math.min(1000, Math.max(100, Math.floor(minAckWait / 4))))

  const maxRate = o.maxRate ?? envInt("MAX_RATE", 0)
  const rate = maxRate > 0 ? rateLimit(maxRate) : undefined
  let rateTimer: ReturnType<typeof setTimeout> | undefined
  // a pull smaller than this waits for more room (a request per freed message would cost a round trip each); it is
  // also what an idle consumer's long poll reserves, so a worker's quiet consumers (its REPLAY) take little room
  // from its busy one
  const minBatch = Math.max(1, Math.min(Math.ceil(prefetch / (4 * Math.max(1, consumers.length))), rate?.burst ?? Infinity))
  for (const { spec } of consumers) {
    const stream = spec.stream
    pullers.push(
      puller(nc, {
        stream,
        durable: spec.durable,
        log,
        minBatch,
        room: () => {
          let asked = 0
          for (const p of pullers) asked += p.outstanding
          const room = prefetch - held.size - asked
          if (!rate || room < minBatch) return room
          const allowed = rate.available()
          // held back by the rate alone: pull again when enough has accrued
          if (allowed < minBatch && !rateTimer) rateTimer = setTimeout(() => ((rateTimer = undefined), roomFreed()), rate.msUntil(minBatch))
          return Math.min(room, allowed)
        },
        deliver(msg) {
          rate?.take(1)
          const h: Held = { msg, started: false, stream, deadline: Infinity, slot: -1 }
          held.add(h)
          work.push(h)
        },
        bound(ok, why) {
          if (ok) unbound.delete(`${stream}/${spec.durable}`)
          else unbound.set(`${stream}/${spec.durable}`, why)
          if (ok) log.info("consumer bound again", { stream, consumer: spec.durable })
          else log.error("consumer not usable; pulling again every second", { stream, consumer: spec.durable, why })
        },
      }),
    )
  }
  bound = true
  await o.onStart?.(rt)
  const beats = beating({
    worker: name,
    instance,
    js,
    log,
    state: () => ({ ready: rt.ready, inflight: held.size }),
    provision: () => provision(nc!, { ...topo, buckets: [heartbeatsBucket] }, { createMissing: true, streams: () => false, consumers: () => false }).then(() => {}),
  })
  log.info("ready", { consumers: specs.map((c) => `${c.stream}/${c.durable}`), concurrency, port: server.port })

  let stopped: Promise<void> | undefined
  const stop = () =>
    (stopped ??= (async () => {
      stopping = true
      log.info("draining", { inflight: held.size })
      const deadline = Date.now() + drainTimeoutMs
      // stop pulling without losing what is already on the wire: drain (UNSUB + flush round trip) delivers every
      // message the server sent before it saw the UNSUB; a plain unsubscribe would strand those until ack_wait
      await Promise.allSettled(pullers.map((p) => p.stop()))
      // not started yet: hand back at once so another instance can take them now, not after ack_wait
      for (const h of work.takeWaiting()) (h.msg.nak(), held.delete(h))
      let timer: ReturnType<typeof setTimeout> | undefined
      const expired = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), Math.max(0, deadline - Date.now()))))
      // the timer is cleared either way: left running it would keep an embedding process alive until the deadline
      const finished = await Promise.race([work.idle().then(() => true), expired]).finally(() => clearTimeout(timer))
      if (!finished) log.warn("drain deadline passed; unfinished messages will be redelivered", { inflight: held.size })
      flushAcks()
      clearInterval(heartbeat)
      clearInterval(sweep)
      clearTimeout(rateTimer)
      await beats.stop()
      await o.onStop?.(rt)
      await withTimeout(nc!.drain(), Math.max(1000, deadline - Date.now())).catch(() => nc!.close())
      await server.close()
      await withTimeout(flushSpans.then((flush) => flush?.()), 2000).catch(() => {})
      log.info("stopped", { drained: finished })
    })())

  return { port: server.port, runtime: rt, stop }
}



