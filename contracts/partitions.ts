// contracts/partitions.ts — partitions by key: how several instances of one worker share its work while the events
// of one key (a truck) are handled by one instance at a time, in order.
//
// With P > 1 partitions, each business stream stores an event under its subject plus two tokens the server adds by
// a subject transform (nats-server 2.10+): the generation and the partition, `partition(P, key)`, a hash of the key:
// `routing.events.RouteCalculated.truck-7` is stored as `routing.events.RouteCalculated.truck-7.g1.2`. The hash
// is the same in every stream for the same P, so a truck's route and its positions fall in the same partition.
// Each consuming worker has one durable consumer per partition (`invoice-a2`); an instance holds a partition's lease
// (mesh/partitions.ts) before it pulls from that partition's consumers. Changing P starts a new generation: new
// events go to the new generation's consumers, which no instance pulls until every consumer of the old one is
// drained, so no key is ever handled out of order across the change, and nothing is lost. With P = 1 nothing is
// transformed and each worker has one consumer per stream, named after itself.

/** The most partitions a stream may have (nats.conf enumerates each consumer name a worker may use). */
export const MAX_PARTITIONS = 16

/** `routing.events.RouteCalculated.*` (the stream's one event type) → the transform adding generation and partition. */
export const partitionTransform = (eventSubjects: string, partitions: number, generation: number) => ({
  src: eventSubjects,
  dest: `${eventSubjects.slice(0, -1)}{{wildcard(1)}}.g${generation}.{{partition(${partitions},1)}}`,
})

/** What a stream's transform says: its generation and partition count; undefined for an unpartitioned stream. */
export function parsePartitioning(dest: string | undefined): { generation: number; partitions: number } | undefined {
  const m = /\.g(\d+)\.\{\{\s*partition\(\s*(\d+)\s*,\s*1\s*\)\s*\}\}$/.exec(dest ?? "")
  return m ? { generation: Number(m[1]), partitions: Number(m[2]) } : undefined
}

/**
 * The durable of `worker` for partition `p` of a generation: generations alternate between two name sets (`a`, `b`),
 * so the old generation's consumers can drain while the new one's exist, and a worker's NATS permissions can list
 * every name it may use.
 */
export const partitionConsumer = (worker: string, generation: number, p: number) => `${worker}-${generation % 2 === 1 ? "a" : "b"}${p}`

/** What a partition consumer reads: its partition of one generation, every key. */
export const partitionFilter = (eventSubjects: string, generation: number, p: number) =>
  `${eventSubjects.slice(0, -1)}*.g${generation}.${p}`

/** A stored subject with the generation and partition the server added stripped: the subject it was published on. */
export function publishedSubject(stored: string): string {
  const t = stored.split(".")
  // <domain>.events.<Event>.<key>.g<generation>.<partition>: a key is one token, so only these two can follow it
  return t.length === 6 && /^g\d+$/.test(t[4]!) && /^\d+$/.test(t[5]!) ? t.slice(0, 4).join(".") : stored
}
