// mesh/bind.ts — what a worker checks and binds at start: its handlers against the topology, what it needs on the
// server (created here only where its user may: a dev server without auth), and its durable consumers.
import { jetstreamManager, type JetStreamClient } from "@nats-io/jetstream"
import {
  type ConsumerSpec,
  type EventName,
  PARTITIONS_BUCKET,
  streamOf,
  type Topology,
  type WorkerSpec,
  workers,
} from "../contracts/mod.ts"
import type { Connection } from "./connect.ts"
import type { BoundConsumer } from "./consume.ts"
import type { Handlers, RawHandler } from "./handler.ts"
import { StartupError } from "./errors.ts"
import { concreteConsumers, durableNames, isStale, layoutOf, partitionable } from "./partitioning.ts"
import type { Unit } from "./partitions.ts"
import { provision } from "./provision.ts"

const specOf = (name: string): WorkerSpec | undefined => (workers as Record<string, WorkerSpec | undefined>)[name]

/**
 * Why the handlers do not fit the topology, or undefined when they do. A handler the topology does not route to this
 * worker would never run; an event it routes here without a handler would be dead-lettered (`unhandled-type`).
 */
export function handlerMismatch(
  name: string,
  specs: ConsumerSpec[],
  handlers: Handlers,
  raw: Record<string, RawHandler>,
): string | undefined {
  const routed = new Set<string>(specs.flatMap((c) => c.events))
  const given = Object.keys(handlers)
  const stray = given.filter((e) => !routed.has(e))
  if (stray.length) {
    return `handler${stray.length > 1 ? "s" : ""} for ${stray.join(", ")} would never run: contracts/topology.ts does not route ${stray.length > 1 ? "them" : "it"} to ${name} (add ${stray.length > 1 ? "them" : "it"} to workers.${name}.consumes)`
  }
  const missing = [...routed].filter((e) => !given.includes(e))
  if (missing.length) {
    return `contracts/topology.ts routes ${missing.join(", ")} to ${name}, which has no handler for ${missing.length > 1 ? "them" : "it"}: every such event would be dead-lettered`
  }
  const rawStreams = new Set(specs.filter((c) => c.events.length === 0).map((c) => c.stream))
  const strayRaw = Object.keys(raw).filter((s) => !rawStreams.has(s))
  if (strayRaw.length)
    return `raw handler${strayRaw.length > 1 ? "s" : ""} for ${strayRaw.join(", ")}: ${name} has no consumer on ${strayRaw.length > 1 ? "those streams" : "that stream"}`
  const missingRaw = [...rawStreams].filter((s) => !raw[s])
  if (missingRaw.length)
    return `${name} consumes ${missingRaw.join(", ")} but has no raw handler for ${missingRaw.length > 1 ? "them" : "it"}`
  return undefined
}

export type BindOptions = { name: string; nc: Connection; js: JetStreamClient; topology: Topology; specs: ConsumerSpec[] }

/**
 * Binds the worker's consumers; a StartupError names what is missing and what to run. `units`: the partition
 * consumers, pulled only under a lease (mesh/partitions.ts); the rest are pulled from the start.
 */
export async function bind(o: BindOptions): Promise<{ bound: BoundConsumer[]; units: Unit[] }> {
  const { name, nc, js, specs } = o
  const spec = specOf(name)
  const own = Object.keys(spec?.buckets ?? {})
  const needed = new Set([
    ...specs.map((c) => c.stream),
    ...(spec?.publishes ?? []).map((e: EventName) => streamOf(e)),
    ...(specs.length ? ["DLQ"] : []),
  ])
  const fail = (message: string): never => {
    throw new StartupError(`${name}: ${message}. Run \`logiflow provision\` (npm run provision) as the admin user first.`)
  }
  // a server with auth means per-worker users, which may not even look at streams: skip straight to binding
  if (!nc.info?.auth_required) {
    await provision(nc, o.topology, {
      createMissing: true,
      streams: (s) => needed.has(s.name),
      consumers: (c) => c.worker === name,
      // the partition leases too, for a worker that consumes events (used once its streams are partitioned)
      buckets: (b) => own.includes(b.bucket) || (b.bucket === PARTITIONS_BUCKET && specs.some((c) => c.events.length > 0)),
    }).catch((err) => fail(`its streams, consumers or buckets are missing and could not be created (${(err as Error).message})`))
  } else {
    // its buckets' info is the one look every worker user may take (nats.conf): a missing bucket stops the start here,
    // not at the first event that needs it
    const jsm = await jetstreamManager(nc, { checkAPI: false })
    for (const b of own) await jsm.streams.info(`KV_${b}`).catch((err) => fail(`KV bucket ${b} is not usable (${(err as Error).message})`))
  }
  const jsm = await jetstreamManager(nc, { checkAPI: false })
  const bindOne = async (stream: string, durable: string, later = false): Promise<BoundConsumer> => {
    const consumer = await js.consumers
      .get(stream, durable)
      .catch((err) => fail(`cannot bind consumer ${stream}/${durable} (${(err as Error).message})`))
    const { config } = await consumer.info(true)
    const md = config.max_deliver ?? -1
    return {
      stream,
      durable,
      ackWaitMs: Math.round((config.ack_wait ?? 30e9) / 1e6),
      maxDeliver: md > 0 ? md : Infinity,
      maxAckPending: config.max_ack_pending ?? 1000,
      backoffMs: (config.backoff ?? []).map((ns) => Math.round(ns / 1e6)),
      ...(later ? { later } : {}),
    }
  }
  const streams = new Map(o.topology.streams.map((s) => [s.name, s]))
  const bound: BoundConsumer[] = []
  const units: Unit[] = []
  for (const c of specs) {
    // the server's layout, not this process's configuration: provision decides it, every instance follows it
    const layout = partitionable(c.stream) ? layoutOf((await jsm.streams.info(c.stream).catch(() => null))?.config) : undefined
    const current = concreteConsumers(c, streams.get(c.stream), layout)
    // an earlier layout's consumers that still hold messages are drained first, under leases like the rest
    const stale: BoundConsumer[] = []
    if (partitionable(c.stream)) {
      for (const durable of durableNames(c.worker).filter((d) => isStale(d, current))) {
        const info = await jsm.consumers.info(c.stream, durable).catch(() => null)
        if (info && (info.num_pending > 0 || info.num_ack_pending > 0)) stale.push(await bindOne(c.stream, durable, true))
      }
    }
    if (!layout && stale.length === 0) {
      bound.push(await bindOne(c.stream, c.durable))
      continue
    }
    for (const k of current) {
      const b = await bindOne(k.stream, k.durable, true)
      bound.push(b)
      units.push({ consumer: b, old: false })
    }
    for (const b of stale) bound.push(b), units.push({ consumer: b, old: true })
  }
  return { bound, units }
}
