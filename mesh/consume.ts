// mesh/consume.ts — the consume engine of one worker process: pulls its bound consumers by credit (mesh/pull.ts),
// feeds each message through per-key lanes (mesh/lanes.ts) into delivery (mesh/delivery.ts), batches the acks,
// keeps waiting messages alive, lets a lane move on once its handler outlives ack_wait, and drains on stop.
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream"
import type { KV } from "@nats-io/kv"
import type { Backoff } from "./backoff.ts"
import type { Connection } from "./connect.ts"
import { AckBatch } from "./ack-batch.ts"
import { deliver } from "./delivery.ts"
import type { DeliveryDeps, Handlers, Outcome, RawHandler } from "./handler.ts"
import { Context } from "./handler-context.ts"
import { type Held, held as holding, HeldSet } from "./held.ts"
import { lanes } from "./lanes.ts"
import type { Logger } from "./log.ts"
import { serverVersion } from "./features.ts"
import { boundPairs, type Counter, type Histogram } from "./metrics.ts"
import { type Puller, puller } from "./pull.ts"
import type { PulledMsg } from "./pulled.ts"
import type { Rate } from "./rate.ts"
import type { PublishObserver } from "./tracing.ts"

/**
 * A durable consumer this worker is bound to, with the settings the server reported for it. `later`: not pulled from
 * the start, only once attached (a partition, when this instance holds its lease).
 */
export type BoundConsumer = {
  stream: string
  durable: string
  ackWaitMs: number
  maxDeliver: number
  maxAckPending: number
  backoffMs: number[]
  later?: boolean
}

export type ConsumeOptions = {
  worker: string
  nc: Connection
  js: JetStreamClient
  log: Logger
  consumers: BoundConsumer[]
  handlers: Handlers
  raw: Record<string, RawHandler>
  backoff: Backoff
  concurrency: number
  /** messages held at most, running or waiting for their key */
  prefetch: number
  rate?: Rate
  kv(bucket: string): Promise<KV>
  metrics: { events: Counter; handlerSeconds: Histogram; observePublish: PublishObserver }
  /** the server refuses a consumer (deleted at runtime, JetStream unavailable), or takes requests for it again */
  onBound(consumer: BoundConsumer, ok: boolean, why: string): void
}

export type Consuming = {
  readonly held: number
  /** starts pulling a consumer (the worker's own at start; a partition once its lease is held) */
  attach(c: BoundConsumer): void
  /**
   * stops pulling a consumer and handles what it holds until `deadline` (what has not started by then is handed
   * back); resolves true when all of it was handled and acked (a partition may then go to another instance cleanly)
   */
  detach(c: BoundConsumer, deadline: number): Promise<boolean>
  /** the consumers being pulled now */
  attached(): BoundConsumer[]
  /** stops pulling, hands back what has not started, waits for what runs until `deadline`; false if it had to give up */
  drain(deadline: number): Promise<boolean>
}

/** `ROUTING/invoice-a3`: one consumer among a worker's. */
export const consumerKey = (c: { stream: string; durable: string }) => `${c.stream}/${c.durable}`

export function consume(o: ConsumeOptions): Consuming {
  const { log } = o
  const held = new HeldSet()
  /** by consumerKey: the consumers pulled now, with their puller and the delivery deps of their messages */
  const bound = new Map<string, { c: BoundConsumer; puller: Puller; deps: DeliveryDeps }>()
  let pullers: Puller[] = []

  // acks leave once per turn of the event loop, with the pull requests for the room they freed (mesh/ack-batch.ts)
  const acks = new AckBatch(log, o.nc)
  const flushAcks = () => acks.flush()
  const later: (f: () => void) => void =
    (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? ((f) => setTimeout(f, 0))
  let turnQueued = false
  let first = 0
  // the consumer asked first gets the room first: take turns, or a backlog on one starves the others
  const wakeAll = () => {
    first = (first + 1) % Math.max(1, pullers.length)
    for (let i = 0; i < pullers.length; i++) pullers[(first + i) % pullers.length]!.wake()
  }
  const turn = () => {
    turnQueued = false
    flushAcks()
    wakeAll()
  }
  // also after each socket read: the pull for room freed early in a poll phase need not wait for the check phase
  let wakeQueued = false
  const wakeNow = () => {
    wakeQueued = false
    wakeAll()
  }
  const roomFreed = () => {
    if (!turnQueued) (turnQueued = true), later(turn)
    if (!wakeQueued) (wakeQueued = true), queueMicrotask(wakeNow)
  }
  const ack = (msg: JsMsg) => acks.add(msg)

  // the metric series of each (stream, type, outcome), bound once: labels are checked and hashed on first use only
  const observer = (stream: string) => {
    const seconds = o.metrics.handlerSeconds.bind({ stream })
    const count = boundPairs((type: string, outcome: Outcome) => o.metrics.events.bind({ stream, type, outcome }))
    return (outcome: Outcome, type: string, s: number) => {
      count(type, outcome).inc()
      seconds.observe(s)
    }
  }

  /** the Held whose message deliver() is handling right now (synchronously, inside run()) */
  let current: Held | undefined
  // one set of delivery deps per consumer, not a fresh object and closures per message; the DLQ files a failure
  // under the worker's name whichever of its consumers (a partition, its replays) it came through
  const depsFor = (c: BoundConsumer): DeliveryDeps => ({
    worker: o.worker,
    js: o.js,
    stream: c.stream,
    consumer: o.worker,
    maxDeliver: c.maxDeliver,
    handlers: o.handlers,
    raw: o.raw[c.stream],
    backoff: o.backoff,
    redelivery: { ackWaitMs: c.ackWaitMs, backoffMs: c.backoffMs },
    // asked when it matters (a dead letter): a reconnect may land on a server of another version
    serverVersion: () => serverVersion(o.nc),
    log,
    // context() is called inside deliver(), while run() has the message's Held in `current`
    context: (msg, meta) =>
      new Context(
        o.worker,
        meta,
        log,
        o.kv,
        current?.msg === msg ? current : { ...holding(msg as PulledMsg, c.stream, consumerKey(c)), started: true },
        c.ackWaitMs,
      ),
    observe: observer(c.stream),
    observePublish: o.metrics.observePublish,
    ack,
  })

  // done() frees the message's lane: when delivery ends, or when the sweep gives up on a handler past ack_wait.
  // deliver() settles every message itself; a throw out of it is a runtime bug, and the server redelivers
  const finished = (h: Held, done: () => void, err?: unknown) => {
    if (err !== undefined)
      log.error("delivery failed unexpectedly; the server redelivers after ack_wait", { stream: h.stream, seq: h.msg.seq, error: err })
    held.delete(h)
    roomFreed()
    done()
    // a detached consumer waits for its last message (a partition handed over only once it holds nothing)
    if (emptied.size > 0 && emptied.has(h.consumer) && heldOf(h.consumer) === 0) emptied.get(h.consumer)!()
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
      outcome = deliver(h.msg, h.deps!)
    } catch (err) {
      return finished(h, done, err ?? "thrown undefined")
    } finally {
      current = outer
    }
    if (outcome instanceof Promise)
      outcome.then(
        () => finished(h, done),
        (err) => finished(h, done, err ?? "rejected with undefined"),
      )
    else finished(h, done)
  }

  const work = lanes<Held>(o.concurrency, (h) => h.msg.header("ce-subject"), run)

  // messages waiting for their key's turn are not the handler's fault: "work in progress" keeps the server from
  // redelivering them
  const minAckWait = Math.min(...o.consumers.map((c) => c.ackWaitMs), 30_000)
  const inProgress = setInterval(
    () => {
      for (const h of held.values()) if (!h.started) h.msg.working()
    },
    Math.max(1000, Math.floor(minAckWait / 3)),
  )
  // a handler still running after ack_wait is redelivered by the server, so its lane moves on: checked here rather
  // than by a timer per message
  const sweep = setInterval(
    () => {
      const now = Date.now()
      for (const h of held.values()) {
        if (h.started && h.deadline === 0) h.deadline = now + h.ackWaitMs
        if (!h.started || now <= h.deadline) continue
        h.deadline = Infinity
        log.warn("handler still running after ack_wait; its lane moves on and the server redelivers", { stream: h.stream, seq: h.msg.seq })
        h.abandon?.()
      }
    },
    Math.min(1000, Math.max(100, Math.floor(minAckWait / 4))),
  )

  const { rate, prefetch } = o
  let rateTimer: ReturnType<typeof setTimeout> | undefined
  // a pull smaller than this waits for more room (a request per freed message would cost a round trip each); it is
  // also what an idle consumer's long poll reserves, so a worker's quiet consumers (its REPLAY) take little room
  // from its busy ones. Sized once, for the consumers a worker has at start (a partitioned worker: all it may hold)
  const minBatch = Math.max(1, Math.min(Math.ceil(prefetch / (4 * Math.max(1, o.consumers.length))), rate?.burst ?? Infinity))
  const room = () => {
    let asked = 0
    for (const p of pullers) asked += p.outstanding
    const free = prefetch - held.size - asked
    if (!rate || free < minBatch) return free
    const allowed = rate.available()
    // held back by the rate alone: pull again when enough has accrued
    if (allowed < minBatch && !rateTimer) rateTimer = setTimeout(() => ((rateTimer = undefined), roomFreed()), rate.msUntil(minBatch))
    return Math.min(free, allowed)
  }
  /** per consumerKey: resolved when the last message of a detached consumer leaves */
  const emptied = new Map<string, () => void>()
  const heldOf = (key: string) => held.values().filter((h) => h.consumer === key).length

  const attach = (c: BoundConsumer) => {
    const key = consumerKey(c)
    if (bound.has(key)) return
    const deps = depsFor(c)
    const puller_ = puller(o.nc, {
      stream: c.stream,
      durable: c.durable,
      log,
      minBatch,
      room,
      deliver(msg) {
        rate?.take(1)
        const h = holding(msg, c.stream, key, deps, c.ackWaitMs)
        held.add(h)
        work.push(h)
      },
      bound: (ok, why) => o.onBound(c, ok, why),
    })
    bound.set(key, { c, puller: puller_, deps })
    pullers = [...bound.values()].map((b) => b.puller)
  }
  for (const c of o.consumers) if (!c.later) attach(c)

  /** until `key`'s held messages are gone or `deadline`; true if they are gone */
  const untilEmpty = (key: string, deadline: number) =>
    heldOf(key) === 0
      ? Promise.resolve(true)
      : new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => (emptied.delete(key), resolve(false)), Math.max(0, deadline - Date.now()))
          emptied.set(key, () => (clearTimeout(timer), emptied.delete(key), resolve(true)))
        })

  return {
    get held() {
      return held.size
    },
    attach,
    attached: () => [...bound.values()].map((b) => b.c),
    async detach(c, deadline) {
      const key = consumerKey(c)
      const b = bound.get(key)
      if (!b) return heldOf(key) === 0
      bound.delete(key)
      pullers = [...bound.values()].map((x) => x.puller)
      // everything the server sends until its requests end is delivered, and all of it is handled here, not handed
      // back: a nak would charge each held message a delivery on every handover (max_deliver would drop them)
      await b.puller.stop()
      const gone = await untilEmpty(key, deadline)
      if (!gone) for (const h of work.takeWaiting((h) => h.consumer === key)) h.msg.nak(), held.delete(h)
      flushAcks()
      return gone
    },
    async drain(deadline) {
      // stop pulling without losing what is already on the wire: drain (UNSUB + flush round trip) delivers every
      // message the server sent before it saw the UNSUB; a plain unsubscribe would strand those until ack_wait
      await Promise.allSettled(pullers.map((p) => p.stop()))
      bound.clear()
      // not started yet: hand back at once so another instance can take them now, not after ack_wait
      for (const h of work.takeWaiting()) h.msg.nak(), held.delete(h)
      let timer: ReturnType<typeof setTimeout> | undefined
      const expired = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), Math.max(0, deadline - Date.now()))))
      // the timer is cleared either way: left running it would keep an embedding process alive until the deadline
      const done = await Promise.race([work.idle().then(() => true), expired]).finally(() => clearTimeout(timer))
      if (!done) log.warn("drain deadline passed; unfinished messages will be redelivered", { inflight: held.size })
      flushAcks()
      clearInterval(inProgress)
      clearInterval(sweep)
      clearTimeout(rateTimer)
      return done
    },
  }
}
