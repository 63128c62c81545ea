// mesh/worker.ts — `worker({...})`: binds a worker's durable consumers, feeds messages through per-key lanes into
// delivery.ts, serves /healthz /readyz /metrics (+ the worker's own routes), and drains on SIGTERM (rule 8).
import { type Consumer, type ConsumerMessages, type JetStreamClient, jetstream, type JsMsg, type PubAck, jetstreamManager } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import type { Subscription } from "@nats-io/transport-node"
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
import { childTraceparent, newId, publishTraced } from "./publish.ts"
import { contextOf, exportSpans, type PublishObserver } from "./tracing.ts"

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

/** `deadline`: when a running handler has outlived ack_wait (the sweep then lets its lane move on) */
type Held = { msg: JsMsg; started: boolean; stream: string; deadline: number; abandon?: () => void }

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
  const held = new Map<JsMsg, Held>()
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
      return !!nc?.connected && bound && !stopping
    },
    instance,
    publish(event, data, meta = {}) {
      const id = meta.id ?? newId(env("SITE_ID") ?? "")
      const traceparent = meta.traceparent ?? childTraceparent()
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
      const status = (err as StatusError).status ?? 500
      const body = { status, error: (err as Error).message, ...((err as { issues?: unknown }).issues ? { issues: (err as { issues: unknown }).issues } : {}) }
      if (status >= 500) log.error("http handler failed", { error: err })
      return Response.json(body, { status })
    },
  })
  router.get("/healthz", () => ({ status: "ok", worker: name }))
  router.get("/readyz", () =>
    rt.ready
      ? { status: "ready", worker: name }
      : Response.json({ status: "not-ready", worker: name, connected: rt.connected, bound, stopping }, { status: 503 }),
  )
  router.get("/metrics", async () => new Response(await metrics.render(), { headers: { "content-type": metrics.contentType } }))
  o.routes?.(router, rt)
  // labelled by the route pattern that answered (`/api/trucks/:id`), never the raw path: ids would make a series each
  const fetch = async (request: Request) => {
    const started = performance.now()
    let status = 500
    try {
      const response: Response = await router.fetch(request)
      status = response.status
      return response
    } finally {
      const labels = { method: request.method, route: (request as IRequest).route ?? "unmatched", status: String(status) }
      httpRequests.inc(labels)
      httpSeconds.observe((performance.now() - started) / 1000, labels)
    }
  }
  const port = so.port ?? envInt(`${name.toUpperCase()}_PORT`, o.port ?? 0)
  const server: Server = await serve(fetch, { port, hostname: so.hostname ?? env("HTTP_HOST") ?? "0.0.0.0" })
  log.info("http listening", { port: server.port, instance })

  nc = await connect({ name, url: so.url, user: so.user, pass: so.pass, waitForServer: true, log })
  js = jetstream(nc)
  ;(async () => {
    for await (const s of nc.status()) if (s.type === "disconnect" || s.type === "reconnect") natsEvents.inc({ event: s.type })
  })().catch(() => {})

  const context = (msg: JsMsg, meta: Meta, h: Held): HandlerContext => ({
    worker: name,
    meta,
    deliveries: msg.info.deliveryCount,
    log,
    working: () => {
      msg.working()
      h.deadline = Date.now() + (ackWaitMs.get(h.stream) ?? 30_000)
    },
    once: async (key, fn) => once(await rt.kv(`${name}-once`), key, fn),
    kv: rt.kv,
  })

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

  const subscriptions = new Set<ConsumerMessages>()
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
  // pulls again as messages arrive, not as they finish — so each pull is a fetch sized to the room that is free.
  const prefetch = Math.max(1, Math.min(envInt("PREFETCH", concurrency * 4), ...consumers.map((c) => (c.maxAckPending > 0 ? c.maxAckPending : Infinity))))
  let asked = 0
  let sleepers: (() => void)[] = []
  function roomFreed() {
    const s = sleepers
    sleepers = []
    for (const wake of s) wake()
  }

  // the client writes its buffer out in a microtask, and handlers finish in different microtasks (a fetch hands
  // messages over one per tick): acked one by one, each ack was its own socket write; collected, a burst is one
  let acks: JsMsg[] = []
  const flushAcks = () => {
    const batch = acks
    acks = []
    for (const m of batch) m.ack()
  }
  const ack = (msg: JsMsg) => {
    const n = acks.push(msg)
    if (n === 1) setTimeout(flushAcks, 0)
    else if (n >= 64) flushAcks()
  }

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
      context: (msg, meta) => context(msg, meta, held.get(msg)!),
      observe: (outcome: Outcome, type: string, seconds: number) => {
        events.inc({ stream: c.stream, type, outcome })
        handlerSeconds.observe(seconds, { stream: c.stream })
      },
      observePublish,
      ack,
    })
  }

  const run = (h: Held) =>
    new Promise<void>((resolve) => {
      h.started = true
      h.deadline = Date.now() + (ackWaitMs.get(h.stream) ?? 30_000)
      h.abandon = resolve
      deliver(h.msg, deps.get(h.stream)!).finally(() => {
        held.delete(h.msg)
        roomFreed()
        resolve()
      })
    })

  const work = lanes<Held>(concurrency, (h) => h.msg.headers?.get("ce-subject") || undefined, run)

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
      if (!h.started || now <= h.deadline) continue
      h.deadline = Infinity
      log.warn("handler still running after ack_wait; its lane moves on and the server redelivers", { stream: h.stream, seq: h.msg.seq })
      h.abandon?.()
    }
  }, Math.min(1000, Math.max(100, Math.floor(minAckWait / 4))))

  const pull = async (stream: string, consumer: Consumer) => {
    let failing = false
    while (!stopping) {
      // each consumer pulls at most its share: with the whole prefetch, the first consumer's long-poll fetch left no
      // room for the others (tracking's TRACKING, portal's INVOICE), which then waited for that fetch to expire
      const share = Math.max(1, Math.floor(prefetch / consumers.length))
      const room = Math.min(share, prefetch - held.size - asked)
      if (room < Math.ceil(share / 4)) {
        await new Promise<void>((r) => sleepers.push(r))
        continue
      }
      asked += room
      let arrived = 0
      try {
        const batch = await consumer.fetch({ max_messages: room, expires: 30_000 })
        subscriptions.add(batch)
        try {
          for await (const msg of batch) {
            if (arrived < room) (arrived++, asked--)
            const h: Held = { msg, started: false, stream, deadline: Infinity }
            held.set(msg, h)
            work.push(h)
          }
        } finally {
          subscriptions.delete(batch)
        }
        failing = false
      } catch (err) {
        if (!failing) log.warn("pull failed; pulling again", { stream, error: err })
        failing = true
        await sleep(500)
      } finally {
        asked -= room - arrived
      }
    }
  }
  for (const { spec, consumer } of consumers) void pull(spec.stream, consumer)
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
      roomFreed()
      await Promise.allSettled([...subscriptions].map((s) => (s as unknown as { sub?: Subscription }).sub?.drain()))
      await Promise.allSettled([...subscriptions].map((s) => s.close()))
      // not started yet: hand back at once so another instance can take them now, not after ack_wait
      for (const h of work.takeWaiting()) (h.msg.nak(), held.delete(h.msg))
      let timer: ReturnType<typeof setTimeout> | undefined
      const expired = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), Math.max(0, deadline - Date.now()))))
      // the timer is cleared either way: left running it would keep an embedding process alive until the deadline
      const finished = await Promise.race([work.idle().then(() => true), expired]).finally(() => clearTimeout(timer))
      if (!finished) log.warn("drain deadline passed; unfinished messages will be redelivered", { inflight: held.size })
      flushAcks()
      clearInterval(heartbeat)
      clearInterval(sweep)
      await beats.stop()
      await o.onStop?.(rt)
      await withTimeout(nc!.drain(), Math.max(1000, deadline - Date.now())).catch(() => nc!.close())
      await server.close()
      await withTimeout(flushSpans.then((flush) => flush?.()), 2000).catch(() => {})
      log.info("stopped", { drained: finished })
    })())

  return { port: server.port, runtime: rt, stop }
}



