// bench/scale.ts — scale-out by partitions: the same backlog drained by 1, 2 and 3 invoice instances (real processes,
// 8 partitions), side by side in one run on one server. Invoice waits on I/O here (INVOICE_SLOW_MS, 4 handlers at
// once per instance): on 2 cores CPU-bound work cannot show scaling, latency-bound work can. Then, with 2 instances
// draining, one is killed with -9: the time until each of its partitions is drained again (the survivor takes the
// lease once it expires, and starts once the dead one's unacked messages can no longer be outstanding).
//   npm run bench -- scale [--quick]
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { partitionConsumer, topology } from "../contracts/mod.ts"
import { isMain } from "../mesh/main.ts"
import { provision } from "../mesh/provision.ts"
import { findNatsServer, natsServerVersion } from "../mesh/cli/natsd.ts"
import { FEATURES, versionSupports } from "../mesh/features.ts"
import {
  args,
  benchServer,
  type Child,
  int,
  type Opts,
  preload,
  print,
  progress,
  ratio,
  round,
  type Section,
  sleep,
  startWorker,
} from "./lib.ts"

const P = 8
const ACK_WAIT_SECONDS = 5
const LEASE_MS = 3000
const worker = (url: string) =>
  startWorker("workers/invoice.ts", url, { INVOICE_SLOW_MS: "20", CONCURRENCY: "4", PARTITION_LEASE_MS: String(LEASE_MS) })

/** Routes acknowledged by invoice over every partition consumer. */
async function handled(jsm: JetStreamManager): Promise<{ acked: number; pending: number }> {
  let acked = 0
  let pending = 0
  for (let p = 0; p < P; p++) {
    const c = await jsm.consumers.info("ROUTING", partitionConsumer("invoice", 1, p))
    acked += c.ack_floor.consumer_seq
    pending += c.num_pending + c.num_ack_pending
  }
  return { acked, pending }
}

async function drainWith(instances: number, events: number): Promise<{ instances: number; seconds: number; eventsPerSec: number }> {
  const server = await benchServer()
  const nc = await connect({ servers: server.url })
  const children: Child[] = []
  try {
    await provision(nc, topology({ partitions: P, ackWaitSeconds: ACK_WAIT_SECONDS }))
    const { jetstream } = await import("@nats-io/jetstream")
    await preload(jetstream(nc), events, { label: `preload ${instances}` })
    const jsm = await jetstreamManager(nc)
    for (let i = 0; i < instances; i++) children.push(await worker(server.url))
    const started = performance.now()
    const p = progress(`${instances} instance${instances > 1 ? "s" : ""}`)
    for (;;) {
      await sleep(250)
      const h = await handled(jsm)
      p.update(`${int(h.acked)}/${int(events)}`)
      if (h.pending === 0 && h.acked >= events) break
      if (performance.now() - started > 600_000) throw new Error(`${instances} instances: not drained within 10 min`)
    }
    const seconds = (performance.now() - started) / 1000
    p.done(`${int(events)} in ${seconds.toFixed(1)} s`)
    return { instances, seconds, eventsPerSec: events / seconds }
  } finally {
    await Promise.all(children.map((c) => c.stop("SIGKILL")))
    await nc.close()
    await server.close()
  }
}

/** Two instances draining; one killed: how long until each of its partitions moves again, and until all is drained. */
async function takeover(events: number) {
  const server = await benchServer()
  const nc = await connect({ servers: server.url })
  const children: Child[] = []
  try {
    await provision(nc, topology({ partitions: P, ackWaitSeconds: ACK_WAIT_SECONDS }))
    const { jetstream } = await import("@nats-io/jetstream")
    await preload(jetstream(nc), events, { label: "preload takeover" })
    const jsm = await jetstreamManager(nc)
    for (let i = 0; i < 2; i++) children.push(await worker(server.url))
    // let both settle on 4 partitions each and get going
    await sleep(2 * LEASE_MS)
    const victim = children[0]!
    const held = [
      ...new Set(
        victim.lines
          .filter((l) => l.includes("partition lease taken"))
          .map((l) => /invoice-a(\d+)/.exec(l)?.[1])
          .filter((x) => x !== undefined),
      ),
    ]
      .map(Number)
      .filter((p) => !victim.lines.some((l) => l.includes("partition handed over") && l.includes(`invoice-a${p}"`)))
    const floors = async () =>
      Promise.all(held.map(async (p) => (await jsm.consumers.info("ROUTING", partitionConsumer("invoice", 1, p))).ack_floor.consumer_seq))
    victim.proc.kill("SIGKILL")
    const killedAt = performance.now()
    const atKill = await floors()
    // only partitions with work left can move again
    const busy = await Promise.all(
      held.map(async (p) => {
        const c = await jsm.consumers.info("ROUTING", partitionConsumer("invoice", 1, p))
        return c.num_pending + c.num_ack_pending > 0
      }),
    )
    const movedAfter: (number | undefined)[] = held.map(() => undefined)
    for (;;) {
      await sleep(100)
      const now = await floors()
      now.forEach((f, i) => {
        if (movedAfter[i] === undefined && f > atKill[i]!) movedAfter[i] = (performance.now() - killedAt) / 1000
      })
      if (movedAfter.every((m, i) => m !== undefined || !busy[i])) break
      if (performance.now() - killedAt > 300_000) throw new Error("the dead instance's partitions did not move within 5 min")
    }
    const moved = movedAfter.filter((x) => x !== undefined) as number[]
    return { partitions: moved.length, firstMoved: Math.min(...moved), allMoved: Math.max(...moved) }
  } finally {
    await Promise.all(children.map((c) => c.stop("SIGKILL")))
    await nc.close()
    await server.close()
  }
}

export async function scale(o: Opts): Promise<Section> {
  // partitions are stream subject transforms (2.10+): on an older server (--nats-server) there is nothing to measure
  const bin = findNatsServer()
  const v = bin ? natsServerVersion(bin) : undefined
  if (v && !versionSupports(v, "subjectTransform")) {
    const why = `${FEATURES.subjectTransform.what} needs nats-server ${FEATURES.subjectTransform.since.join(".")}; this run's is ${v.join(".")}`
    return { name: "scale", title: "scale-out: not run", tables: [], notes: [why], data: null }
  }
  const events = o.quick ? 1500 : 6000
  const runs = []
  for (const n of [1, 2, 3]) runs.push(await drainWith(n, events))
  const t = await takeover(o.quick ? 6000 : 12_000)
  const base = runs[0]!.eventsPerSec
  return {
    name: "scale",
    title: `scale-out: ${int(events)} routes drained by 1, 2 and 3 invoice instances (${P} partitions, handler waits 20 ms, 4 at once per instance)`,
    tables: [
      {
        title: "throughput by instances (same run, same server)",
        columns: ["instances", "seconds", "events/s", "vs 1 instance"],
        rows: runs.map((r) => [r.instances, round(r.seconds, 1), int(r.eventsPerSec), ratio(r.eventsPerSec, base)]),
      },
      {
        title: `kill -9 of one of 2 draining instances (lease ${LEASE_MS / 1000} s, ack_wait ${ACK_WAIT_SECONDS} s)`,
        columns: ["its partitions with work left", "first one moving again", "all moving again"],
        rows: [[t.partitions, `${round(t.firstMoved, 1)} s`, `${round(t.allMoved, 1)} s`]],
      },
    ],
    notes: [
      "A dead instance's partitions wait for its lease to expire, then for its unacked messages to become redeliverable (ack_wait after its last renewal): the bound is lease + ack_wait.",
    ],
    data: { runs, takeover: t },
  }
}

if (isMain(import.meta)) print([await scale(args())])
