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
import type { BucketSpec, ConsumerSpec, StreamSpec, Topology } from "../contracts/mod.ts"
import { ApiCode, apiCode, isNotFound, isPermissionDenied } from "./errors.ts"
import { requireFeature, supports } from "./features.ts"
import { sleep } from "./time.ts"
import {
  type Concrete,
  concreteConsumers,
  partitionable,
  durableNames,
  isStale,
  type Layout,
  layoutOf,
  nextLayout,
  transformOf,
} from "./partitioning.ts"

export type Action = {
  kind: "stream" | "consumer" | "bucket"
  name: string
  /** "draining": a consumer of an earlier partition layout that still holds messages (removed once they are handled) */
  action: "created" | "updated" | "unchanged" | "deleted" | "draining"
}

/** The topology cannot be applied without losing data or state; the message says what differs and what to do. */
export class TopologyConflict extends Error {
  override name = "TopologyConflict"
}

export const streamConfig = (s: StreamSpec, replicas: number, layout?: Layout): Partial<StreamConfig> & { name: string } => ({
  name: s.name,
  subjects: s.subjects,
  retention: RetentionPolicy.Limits,
  storage: StorageType.File,
  num_replicas: replicas,
  max_age: nanos(s.maxAgeSeconds * 1000),
  max_bytes: s.maxBytes,
  max_msgs: s.maxMsgs,
  max_msg_size: s.maxMsgSize,
  max_msgs_per_subject: s.maxMsgsPerSubject,
  discard: s.discard === "new" ? DiscardPolicy.New : DiscardPolicy.Old,
  duplicate_window: nanos(s.duplicateWindowSeconds * 1000),
  allow_direct: !!s.allowDirect,
  // in the form the server reports back (what the client makes of `domain`), so a second provision sees no change
  ...(s.sources ? { sources: s.sources.map((x) => ({ name: x.name, external: { api: `$JS.${x.domain}.API`, deliver: "" } })) } : {}),
  // partitions by key: the server adds generation and partition to each stored subject (present as undefined when
  // unpartitioned, so an update removes a transform an earlier layout had)
  subject_transform: transformOf(s, layout),
})

/**
 * One filter as `filter_subject` (what every server takes, and reports back), several as `filter_subjects` (2.10+);
 * `manyFilters` false (2.9): the spec's one fallback pattern instead. The other field is named as undefined so an
 * update replaces it (the server refuses a consumer with both). `backoff` likewise: absent removes it.
 */
export function consumerConfig(c: ConsumerSpec, manyFilters = true): Partial<ConsumerConfig> & { durable_name: string } {
  const filters = c.filterSubjects.length > 1 && !manyFilters && c.fallbackFilter ? [c.fallbackFilter] : c.filterSubjects
  return {
    durable_name: c.durable,
    ...(filters.length === 1
      ? { filter_subject: filters[0], filter_subjects: undefined }
      : { filter_subjects: filters, filter_subject: undefined }),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    // with a backoff, 2.10 and newer take ack_wait from its first wait, which serverBackoff makes ack_wait itself
    ack_wait: nanos(c.ackWaitSeconds * 1000),
    max_deliver: c.maxDeliver,
    max_ack_pending: c.maxAckPending,
    backoff: c.backoffSeconds.length ? c.backoffSeconds.map((s) => nanos(s * 1000)) : undefined,
  }
}

// another stream already stores these subjects (at an edge site, EDGE_ROUTING holds routing.events.>)
const overlaps = (err: unknown) => apiCode(err) === ApiCode.SubjectsOverlap

/** Fields that differ between what exists and what is wanted (only the wanted fields are compared). */
function diff(existing: Record<string, unknown>, wanted: Record<string, unknown>): string[] {
  return Object.entries(wanted)
    .filter(([k, v]) => JSON.stringify(existing[k]) !== JSON.stringify(v))
    .map(([k, v]) => `${k}: ${JSON.stringify(existing[k])} → ${JSON.stringify(v)}`)
}

type Resource = {
  kind: Action["kind"]
  name: string
  wanted: Record<string, unknown>
  info(): Promise<{ config: unknown } | null>
  create(): Promise<unknown>
  update(existing: Record<string, unknown>): Promise<unknown>
  /** fields the server cannot change in place, and what an operator should do instead */
  fixed: RegExp
  conflict: string
}

async function apply(r: Resource, createMissing: boolean): Promise<Action> {
  const info = await r.info().catch((err) => {
    if (isNotFound(err)) return null
    // a worker user may not be allowed to look: its bind will say clearly if the thing is really missing
    if (createMissing && isPermissionDenied(err)) return undefined
    throw err
  })
  if (info === undefined) return { kind: r.kind, name: r.name, action: "unchanged" }
  if (!info) {
    const created = await placed(() => r.create()).then(
      () => true,
      (err) => {
        // a worker publishing there only needs its subjects stored; a consumer on the missing stream fails its bind
        if (createMissing && r.kind === "stream" && overlaps(err)) return false
        throw err
      },
    )
    return { kind: r.kind, name: r.name, action: created ? "created" : "unchanged" }
  }
  if (createMissing) return { kind: r.kind, name: r.name, action: "unchanged" }
  const existing = info.config as Record<string, unknown>
  const changes = diff(existing, r.wanted)
  if (changes.length === 0) return { kind: r.kind, name: r.name, action: "unchanged" }
  const fixed = changes.filter((c) => r.fixed.test(c))
  if (fixed.length) throw new TopologyConflict(`${r.kind} ${r.name} exists with a different ${fixed.join(", ")}; ${r.conflict}`)
  await placed(() => r.update(existing))
  return { kind: r.kind, name: r.name, action: "updated" }
}

/** How long a create or update waits for a cluster to place its replicas. */
const PLACEMENT_WAIT_MS = 30_000

/**
 * `op`, again while the server finds no peers for its replicas: right after a cluster forms, the meta leader has
 * elected itself but not yet heard every node's statistics, and while a node restarts it counts as offline. Both pass
 * in seconds; a cluster that is really too small still fails, after the wait, with the server's own words.
 */
async function placed<T>(op: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + PLACEMENT_WAIT_MS
  for (let attempt = 1; ; attempt++) {
    try {
      return await op()
    } catch (err) {
      if (apiCode(err) !== ApiCode.ClusterNoPeers || Date.now() >= deadline) throw err
      await sleep(Math.min(2_000, 100 * 2 ** attempt))
    }
  }
}

const streamResource = (jsm: JetStreamManager, s: StreamSpec, replicas: number, layout: Layout): Resource => {
  const wanted = streamConfig(s, replicas, layout)
  return {
    kind: "stream",
    name: s.name,
    wanted,
    info: () => jsm.streams.info(s.name),
    create: () => jsm.streams.add(wanted),
    update: () => jsm.streams.update(s.name, wanted),
    fixed: /^(retention|storage):/,
    conflict:
      "the server cannot change that in place. " +
      `Back up its messages, delete the stream (nats stream rm ${s.name}), then run logiflow provision again.`,
  }
}

const consumerResource = (nc: NatsConnection, jsm: JetStreamManager, c: ConsumerSpec): Resource => {
  // 2.10 and newer take several filters and change a consumer's filter in place; 2.9 does neither, and a raw request
  // with several would make an unfiltered consumer: the spec's fallback pattern, or a refusal naming the feature
  const movable = supports(nc, "filterSubjects")
  if (c.filterSubjects.length > 1 && !c.fallbackFilter) requireFeature(nc, "filterSubjects")
  const wanted = consumerConfig(c, movable)
  return {
    kind: "consumer",
    name: `${c.stream}/${c.durable}`,
    wanted,
    info: () => jsm.consumers.info(c.stream, c.durable),
    create: () => jsm.consumers.add(c.stream, wanted),
    update: () => jsm.consumers.update(c.stream, c.durable, wanted),
    fixed: movable ? /^(ack_policy|deliver_policy):/ : /^(ack_policy|deliver_policy|filter_subjects?):/,
    conflict:
      "it cannot be changed in place on this server. " +
      `Deleting it (nats consumer rm ${c.stream} ${c.durable}) loses its position: the worker would replay the stream.`,
  }
}

const bucketResource = (nc: NatsConnection, jsm: JetStreamManager, b: BucketSpec, replicas: number): Resource => {
  const stream = `KV_${b.bucket}`
  const wanted = {
    max_msgs_per_subject: b.history,
    max_age: nanos(b.ttlSeconds * 1000),
    max_msg_size: b.maxValueBytes,
    num_replicas: replicas,
  }
  return {
    kind: "bucket",
    name: b.bucket,
    wanted,
    info: () => jsm.streams.info(stream),
    create: () => new Kvm(nc).create(b.bucket, { history: b.history, ttl: b.ttlSeconds * 1000, replicas, maxValueSize: b.maxValueBytes }),
    update: (existing) => jsm.streams.update(stream, { ...existing, ...wanted }),
    fixed: /^$/,
    conflict: "",
  }
}

export type ProvisionScope = {
  streams?: (s: StreamSpec) => boolean
  consumers?: (c: ConsumerSpec) => boolean
  buckets?: (b: BucketSpec) => boolean
  /** create what is missing and leave what exists alone (a worker at start); default: also update and check */
  createMissing?: boolean
}

/**
 * The partition layout each stream gets: the next one when the topology's partition count differs from what exists
 * (a new generation), what exists otherwise. A worker creating what is missing never changes an existing layout.
 */
async function layouts(nc: NatsConnection, jsm: JetStreamManager, t: Topology, createMissing: boolean): Promise<Map<string, Layout>> {
  const out = new Map<string, Layout>()
  for (const s of t.streams) {
    const info = await jsm.streams.info(s.name).catch(() => null)
    const existing = layoutOf(info?.config)
    const layout = info && createMissing ? existing : nextLayout(existing, s)
    if (layout) requireFeature(nc, "subjectTransform")
    out.set(s.name, layout)
  }
  return out
}

/** A worker's durables on a stream left from an earlier layout: removed once drained, else reported as draining. */
async function staleConsumers(
  jsm: JetStreamManager,
  stream: string,
  wanted: { c: ConsumerSpec; concrete: Concrete[] }[],
): Promise<Action[]> {
  const actions: Action[] = []
  for await (const info of jsm.consumers.list(stream)) {
    const mine = wanted.find(({ c }) => durableNames(c.worker).includes(info.name))
    if (!mine || !isStale(info.name, mine.concrete)) continue
    const name = `${stream}/${info.name}`
    if (info.num_pending > 0 || info.num_ack_pending > 0) actions.push({ kind: "consumer", name, action: "draining" })
    else await jsm.consumers.delete(stream, info.name), actions.push({ kind: "consumer", name, action: "deleted" })
  }
  return actions
}

/** Applies the topology (or the part `scope` selects). Running it twice changes nothing the second time. */
export async function provision(nc: NatsConnection, t: Topology, scope: ProvisionScope = {}): Promise<Action[]> {
  const jsm = await jetstreamManager(nc, { checkAPI: false })
  const all = () => true
  const createMissing = scope.createMissing ?? false
  const layout = await layouts(nc, jsm, t, createMissing)
  const streams = new Map(t.streams.map((s) => [s.name, s]))
  const consumers = t.consumers
    .filter(scope.consumers ?? all)
    .map((c) => ({ c, concrete: concreteConsumers(c, streams.get(c.stream), layout.get(c.stream)) }))
  const resources = [
    ...t.streams.filter(scope.streams ?? all).map((s) => streamResource(jsm, s, t.replicas, layout.get(s.name))),
    ...consumers.flatMap(({ concrete }) => concrete.map((c) => consumerResource(nc, jsm, c))),
    ...t.buckets.filter(scope.buckets ?? all).map((b) => bucketResource(nc, jsm, b, t.replicas)),
  ]
  const actions: Action[] = []
  for (const r of resources) actions.push(await apply(r, createMissing))
  // an earlier layout's consumers go once they hold nothing (the admin's provision only: workers may not delete)
  if (!createMissing) {
    for (const stream of new Set(consumers.filter(({ c }) => partitionable(c.stream)).map(({ c }) => c.stream))) {
      actions.push(
        ...(await staleConsumers(
          jsm,
          stream,
          consumers.filter(({ c }) => c.stream === stream),
        )),
      )
    }
  }
  return actions
}
