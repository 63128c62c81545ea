// mesh/provision.ts — applies contracts/topology.ts idempotently: creates what is missing, updates what may be
// updated in place, and refuses (with the fix in the message) what the server cannot change in place.
import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream"
import { Kvm } from "@nats-io/kv"
import { type NatsConnection, nanos } from "@nats-io/transport-node"
import type { BucketSpec, ConsumerSpec, StreamSpec, Topology } from "../contracts/topology.ts"

export type Action = { kind: "stream" | "consumer" | "bucket"; name: string; action: "created" | "updated" | "unchanged" }

/** The topology cannot be applied without losing data or state; the message says what differs and what to do. */
export class TopologyConflict extends Error {
  override name = "TopologyConflict"
}

export const streamConfig = (s: StreamSpec, replicas: number): Partial<StreamConfig> & { name: string } => ({
  name: s.name,
  subjects: s.subjects,
  retention: RetentionPolicy.Limits,
  storage: StorageType.File,
  num_replicas: replicas,
  max_age: nanos(s.maxAgeSeconds * 1000),
  max_bytes: s.maxBytes,
  discard: s.discard === "new" ? DiscardPolicy.New : DiscardPolicy.Old,
  duplicate_window: nanos(s.duplicateWindowSeconds * 1000),
})

export const consumerConfig = (c: ConsumerSpec): Partial<ConsumerConfig> & { durable_name: string } => ({
  durable_name: c.durable,
  filter_subject: c.filterSubject,
  ack_policy: AckPolicy.Explicit,
  deliver_policy: DeliverPolicy.All,
  ack_wait: nanos(c.ackWaitSeconds * 1000),
  max_deliver: c.maxDeliver,
  max_ack_pending: c.maxAckPending,
})

const notFound = (err: unknown) => {
  const code = (err as { code?: number }).code
  return code === 10059 || code === 10014 || /not found/i.test(String((err as Error).message))
}

/** Fields that differ between what exists and what is wanted (only the wanted fields are compared). */
function diff(existing: Record<string, unknown>, wanted: Record<string, unknown>): string[] {
  return Object.entries(wanted)
    .filter(([k, v]) => JSON.stringify(existing[k]) !== JSON.stringify(v))
    .map(([k, v]) => `${k}: ${JSON.stringify(existing[k])} → ${JSON.stringify(v)}`)
}

async function applyStream(jsm: JetStreamManager, s: StreamSpec, replicas: number): Promise<Action> {
  const wanted = streamConfig(s, replicas)
  const info = await jsm.streams.info(s.name).catch((err) => {
    if (notFound(err)) return null
    throw err
  })
  if (!info) {
    await jsm.streams.add(wanted)
    return { kind: "stream", name: s.name, action: "created" }
  }
  const changes = diff(info.config as unknown as Record<string, unknown>, wanted)
  if (changes.length === 0) return { kind: "stream", name: s.name, action: "unchanged" }
  const fixed = changes.filter((c) => /^(retention|storage):/.test(c))
  if (fixed.length) {
    throw new TopologyConflict(
      `stream ${s.name} exists with a different ${fixed.join(", ")}; the server cannot change that in place. ` +
        `Back up its messages, delete the stream (nats stream rm ${s.name}), then run logiflow provision again.`,
    )
  }
  await jsm.streams.update(s.name, wanted)
  return { kind: "stream", name: s.name, action: "updated" }
}

async function applyConsumer(jsm: JetStreamManager, c: ConsumerSpec): Promise<Action> {
  const wanted = consumerConfig(c)
  const name = `${c.stream}/${c.durable}`
  const info = await jsm.consumers.info(c.stream, c.durable).catch((err) => {
    if (notFound(err)) return null
    throw err
  })
  if (!info) {
    await jsm.consumers.add(c.stream, wanted)
    return { kind: "consumer", name, action: "created" }
  }
  const changes = diff(info.config as unknown as Record<string, unknown>, wanted)
  if (changes.length === 0) return { kind: "consumer", name, action: "unchanged" }
  const fixed = changes.filter((ch) => /^(ack_policy|deliver_policy|filter_subject):/.test(ch))
  if (fixed.length) {
    throw new TopologyConflict(
      `consumer ${name} exists with a different ${fixed.join(", ")}; it cannot be changed in place on this server. ` +
        `Deleting it (nats consumer rm ${c.stream} ${c.durable}) loses its position: the worker would replay the stream.`,
    )
  }
  await jsm.consumers.update(c.stream, c.durable, wanted)
  return { kind: "consumer", name, action: "updated" }
}

async function applyBucket(nc: NatsConnection, jsm: JetStreamManager, b: BucketSpec, replicas: number): Promise<Action> {
  const stream = `KV_${b.bucket}`
  const wanted = { max_msgs_per_subject: b.history, max_age: nanos(b.ttlSeconds * 1000), num_replicas: replicas }
  const info = await jsm.streams.info(stream).catch((err) => {
    if (notFound(err)) return null
    throw err
  })
  if (!info) {
    await new Kvm(nc).create(b.bucket, { history: b.history, ttl: b.ttlSeconds * 1000, replicas })
    return { kind: "bucket", name: b.bucket, action: "created" }
  }
  const changes = diff(info.config as unknown as Record<string, unknown>, wanted)
  if (changes.length === 0) return { kind: "bucket", name: b.bucket, action: "unchanged" }
  await jsm.streams.update(stream, { ...info.config, ...wanted })
  return { kind: "bucket", name: b.bucket, action: "updated" }
}

export type ProvisionScope = { streams?: (s: StreamSpec) => boolean; consumers?: (c: ConsumerSpec) => boolean; buckets?: (b: BucketSpec) => boolean }

/** Applies the topology (or the part `scope` selects). Running it twice changes nothing the second time. */
export async function provision(nc: NatsConnection, t: Topology, scope: ProvisionScope = {}): Promise<Action[]> {
  const jsm = await jetstreamManager(nc)
  const actions: Action[] = []
  for (const s of t.streams.filter(scope.streams ?? (() => true))) actions.push(await applyStream(jsm, s, t.replicas))
  for (const c of t.consumers.filter(scope.consumers ?? (() => true))) actions.push(await applyConsumer(jsm, c))
  for (const b of t.buckets.filter(scope.buckets ?? (() => true))) actions.push(await applyBucket(nc, jsm, b, t.replicas))
  return actions
}

