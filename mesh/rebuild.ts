// mesh/rebuild.ts — a read model rebuilt from the streams (`logiflow rebuild <worker>`, mesh/cli/rebuild.ts), as the
// worker sees it. The CLI marks each of the worker's consumers (their `description`: every server keeps it, and a
// worker may read its own consumers' info), empties the worker's buckets, resets the consumers to the start of their
// streams under the same names and lets them replay. The worker polls its consumers: from the first mark it serves no
// data as complete (it says `rebuilding`, with progress), and once every consumer has replayed up to where its stream
// stood at the reset it loads the rebuilt model and serves again. Nothing is renamed: a renamed durable would replay
// too, but leave the old one's position and permissions behind.
import { type ConsumerInfo, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { type ConsumerSpec, consumersOf, topology } from "../contracts/mod.ts"
import { concreteConsumers, layoutOf, partitionable } from "./partitioning.ts"
import type { Runtime } from "./worker.ts"

const PREFIX = "logiflow rebuild "

/**
 * What the CLI writes on each consumer. `startedAt` names the rebuild; `target` (the stream's last sequence when the
 * consumer was reset) and `total` (what it then had to deliver) are set once it is reset, and say when it is done.
 */
export type Mark = { startedAt: string; target?: number; total?: number }

export const markText = (m: Mark) => PREFIX + JSON.stringify(m)

export function markOf(description: string | undefined): Mark | undefined {
  if (!description?.startsWith(PREFIX)) return undefined
  try {
    const m = JSON.parse(description.slice(PREFIX.length)) as Mark
    return typeof m.startedAt === "string" ? m : undefined
  } catch {
    return undefined
  }
}

type Progress = Pick<ConsumerInfo, "num_pending" | "num_ack_pending" | "ack_floor">

/** A reset consumer has replayed its stream up to where it stood at the reset (and all of it was acked). */
export function replayed(m: Mark, c: Progress): boolean {
  if (m.target === undefined) return false
  return (c.num_pending === 0 && c.num_ack_pending === 0) || c.ack_floor.stream_seq >= m.target
}

/** 0..1: how much of what the consumer had to replay at its reset it has delivered. */
export const fraction = (m: Mark, c: Progress) =>
  m.target === undefined ? 0 : replayed(m, c) ? 1 : m.total ? Math.max(0, Math.min(1, 1 - c.num_pending / m.total)) : 0

/** The durables of a worker's consumers as they are now: one per partition of a partitioned stream's current layout. */
export async function durablesOf(jsm: JetStreamManager, worker: string): Promise<ConsumerSpec[]> {
  const t = topology()
  const out: ConsumerSpec[] = []
  for (const c of consumersOf(t, worker).filter((c) => c.events.length > 0)) {
    const layout = partitionable(c.stream) ? layoutOf((await jsm.streams.info(c.stream).catch(() => null))?.config) : undefined
    out.push(
      ...concreteConsumers(
        c,
        t.streams.find((s) => s.name === c.stream),
        layout,
      ),
    )
  }
  return out
}

export type RebuildState = { startedAt: string; progress: number }

export type Follower = {
  /** the rebuild under way, or undefined while the model is served */
  readonly state: RebuildState | undefined
  stop(): void
}

/**
 * Polls the worker's consumers every `everyMs`. `begin` runs when a mark is first seen (drop what is served), `end`
 * once every consumer has replayed (load the rebuilt model; serving resumes when it resolves). The first poll is
 * done before this resolves, so a worker starting mid-rebuild never serves what it found in its buckets.
 */
export async function followRebuild(
  rt: Runtime,
  o: { begin(s: RebuildState): void | Promise<void>; end(): void | Promise<void>; everyMs?: number },
): Promise<Follower> {
  const jsm = await jetstreamManager(rt.nc, { checkAPI: false })
  let state: RebuildState | undefined
  // the marks stay until the CLI has seen the end too: a finished rebuild must not begin again
  let finished: string | undefined
  let busy = false
  const poll = async () => {
    if (busy) return
    busy = true
    try {
      const specs = await durablesOf(jsm, rt.name)
      const infos = await Promise.all(specs.map((c) => jsm.consumers.info(c.stream, c.durable).catch(() => null)))
      const marks = infos.map((i) => markOf(i?.config.description))
      const seen = marks.find((m) => m)
      // a consumer that cannot be read mid-rebuild is being recreated (servers without reset): still rebuilding
      if (!state && seen && seen.startedAt !== finished) {
        state = { startedAt: seen.startedAt, progress: 0 }
        rt.log.warn("read model rebuild: serving nothing as complete until the streams are replayed", { startedAt: seen.startedAt })
        await o.begin(state)
        rt.heartbeat()
      }
      if (!state) return
      const done = infos.every((i, n) => i && (!marks[n] || replayed(marks[n]!, i)))
      const parts = infos.map((i, n) => (i && marks[n] ? fraction(marks[n]!, i) : i ? 1 : 0))
      state.progress = Math.floor((100 * parts.reduce((a, b) => a + b, 0)) / Math.max(1, parts.length)) / 100
      if (done) {
        await o.end()
        rt.log.info("read model rebuilt; serving it", { startedAt: state.startedAt })
        finished = state.startedAt
        state = undefined
        rt.heartbeat()
      }
    } catch (err) {
      rt.log.warn("rebuild state unknown; asking again", { error: err })
    } finally {
      busy = false
    }
  }
  await poll()
  const timer = setInterval(() => void poll(), o.everyMs ?? 1000)
  return {
    get state() {
      return state
    },
    stop: () => clearInterval(timer),
  }
}
