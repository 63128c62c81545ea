// mesh/partitioning.ts — from a stream's partition layout (contracts/partitions.ts) to the concrete durable consumers
// of each worker: what provision creates and removes, and what a worker binds to.
import type { StreamConfig } from "@nats-io/jetstream"
import {
  type ConsumerSpec,
  eventNames,
  MAX_PARTITIONS,
  streamOf,
  parsePartitioning,
  partitionConsumer,
  partitionFilter,
  partitionTransform,
  type StreamSpec,
} from "../contracts/mod.ts"

/** Whether a stream may be partitioned: one that stores events (not REPLAY, DLQ, ADVISORIES). */
export const partitionable = (stream: string) => eventNames.some((e) => streamOf(e) === stream)

/** A partitioned stream's generation and partition count; undefined: unpartitioned. */
export type Layout = { generation: number; partitions: number } | undefined

export const layoutOf = (config: Partial<StreamConfig> | undefined): Layout => parsePartitioning(config?.subject_transform?.dest)

/** The layout `spec` wants next to what exists: the same generation while the partition count stays, else the next. */
export function nextLayout(existing: Layout, spec: StreamSpec): Layout {
  const wanted = spec.partitions ?? 1
  if (wanted <= 1) return undefined
  if (existing?.partitions === wanted) return existing
  return { generation: (existing?.generation ?? 0) + 1, partitions: wanted }
}

/** The one event type a partitioned stream stores (its subject pattern): the transform and the filters derive from it. */
function eventSubjects(stream: StreamSpec): string {
  if (stream.subjects.length !== 1)
    throw new Error(`stream ${stream.name}: partitions need exactly one event type, it has ${stream.subjects.join(", ")}`)
  return stream.subjects[0]!
}

export const transformOf = (stream: StreamSpec, layout: Layout) =>
  layout ? partitionTransform(eventSubjects(stream), layout.partitions, layout.generation) : undefined

export type Concrete = ConsumerSpec & { partition?: { generation: number; index: number } }

/** The durables of consumer `c` under its stream's layout: one per partition, or the worker's own. */
export function concreteConsumers(c: ConsumerSpec, stream: StreamSpec | undefined, layout: Layout): Concrete[] {
  if (!layout || !stream || !partitionable(c.stream)) return [c]
  const subjects = eventSubjects(stream)
  return Array.from({ length: layout.partitions }, (_, index) => ({
    ...c,
    durable: partitionConsumer(c.worker, layout.generation, index),
    filterSubjects: [partitionFilter(subjects, layout.generation, index)],
    partition: { generation: layout.generation, index },
  }))
}

/** Every durable name `worker` may have on a partitioned or unpartitioned stream (nats.conf allows exactly these). */
export const durableNames = (worker: string): string[] => [
  worker,
  ...[1, 2].flatMap((generation) => Array.from({ length: MAX_PARTITIONS }, (_, p) => partitionConsumer(worker, generation, p))),
]

/** A durable of a worker's that belongs to an earlier layout of its stream: drained, then removed by provision. */
export const isStale = (durable: string, current: Concrete[]) => !current.some((c) => c.durable === durable)
