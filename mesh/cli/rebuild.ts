// mesh/cli/rebuild.ts — `logiflow rebuild <worker>`: rebuilds a worker's read model (portal, tracking) from the
// streams, keeping its consumers' names (mesh/rebuild.ts has the worker's side). In order:
//   1. mark every consumer of the worker (its description) and stop deliveries (pause, 2.11+);
//   2. wait until every running instance says, in its heartbeat, that it serves nothing as complete;
//   3. let in-flight work finish (ack pending 0, at most ack_wait); on servers without pause, delete the consumers
//      and wait ack_wait instead;
//   4. empty the worker's buckets;
//   5. one consumer at a time, in the topology's order (routes before the positions tracking projects onto them):
//      reset it to the start of its stream (2.14+; else create it again under the same name), mark where its stream
//      stood, resume it, and wait until it has replayed up to there;
//   6. wait until every instance serves the rebuilt model again (it switches back by itself), then clear the marks.
// Interrupted, it leaves the marks: the worker keeps saying it is rebuilding rather than serve half a model as whole.
import { parseArgs } from "node:util"
import { type ConsumerInfo, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { type ConsumerSpec, consumersOf, HEARTBEATS, topology, workers } from "../../contracts/mod.ts"
import { latestValues } from "../admin/list.ts"
import { supports } from "../features.ts"
import type { Beat } from "../heartbeat.ts"
import { consumerConfig } from "../provision.ts"
import { durableNames } from "../partitioning.ts"
import { durablesOf, fraction, type Mark, markText, replayed } from "../rebuild.ts"
import { sleep } from "../time.ts"
import { CliError, type Command, type Io } from "./io.ts"

const FOREVER = () => new Date(Date.now() + 365 * 86_400_000)

async function until<T>(what: string, deadline: number, fn: () => Promise<T | undefined | null | false>, everyMs = 250): Promise<T> {
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline)
      throw new CliError(
        `timed out waiting for ${what}; the marks stay, so the worker keeps saying it is rebuilding: run the rebuild again`,
      )
    await sleep(everyMs)
  }
}

/** Instances of `worker` whose heartbeat is fresh, and which of them say they are in rebuild `startedAt`. */
async function instances(jsm: JetStreamManager, worker: string, startedAt: string) {
  const beats = (await latestValues<Beat>(jsm.jetstream(), HEARTBEATS).catch(() => [] as Beat[])).filter(
    (b) => b.worker === worker && Date.now() - Date.parse(b.at) < 15_000,
  )
  return { all: beats.map((b) => b.instance), waiting: beats.filter((b) => b.rebuilding !== startedAt).map((b) => b.instance) }
}

async function rebuildWorker(io: Io, worker: string, timeoutMs: number): Promise<void> {
  const topo = topology()
  // a worker's read model is what its event consumers build; ops' index (dlq-entries) holds operators' decisions,
  // which no stream has, and is not rebuilt
  const logical = consumersOf(topo, worker).filter((c) => c.events.length > 0)
  const buckets = Object.keys((workers as Record<string, { buckets: Record<string, unknown> } | undefined>)[worker]?.buckets ?? {})
  if (logical.length === 0 || buckets.length === 0) {
    const models = Object.entries(workers)
      .filter(([w, s]) => Object.keys(s.buckets).length && consumersOf(topo, w).some((c) => c.events.length))
      .map(([w]) => w)
    throw new CliError(`${worker} has no read model built from the streams; these have: ${models.join(", ")}`)
  }
  const deadline = Date.now() + timeoutMs
  const nc = await io.connect()
  try {
    const jsm = await jetstreamManager(nc)
    // partitioned streams: every partition's durable (they are reset together, one stream after the other)
    const specs = await durablesOf(jsm, worker)
    for (const c of logical) {
      for await (const info of jsm.consumers.list(c.stream)) {
        if (durableNames(worker).includes(info.name) && !specs.some((s) => s.stream === c.stream && s.durable === info.name)) {
          throw new CliError(
            `${c.stream}/${info.name} is left from an earlier partition layout and still draining; rebuild once \`logiflow provision\` has removed it`,
          )
        }
      }
    }
    const canPause = supports(nc, "pause")
    const canReset = supports(nc, "consumerReset")
    const infos = new Map<ConsumerSpec, ConsumerInfo>()
    for (const c of specs) {
      const info = await jsm.consumers.info(c.stream, c.durable).catch(() => null)
      if (!info) throw new CliError(`consumer ${c.stream}/${c.durable} is missing; run \`logiflow provision\` first`)
      infos.set(c, info)
    }
    const startedAt = new Date().toISOString()
    const mark = (c: ConsumerSpec, m: Mark) => jsm.consumers.update(c.stream, c.durable, { description: markText(m) })

    // 1–2: nothing more is delivered, and no instance serves what is about to be emptied
    for (const c of specs) {
      if (canPause) await jsm.consumers.pause(c.stream, c.durable, FOREVER())
      await mark(c, { startedAt })
    }
    const { all } = await instances(jsm, worker, startedAt)
    io.out(
      `marked ${specs.length} consumers of ${worker}; waiting for ${all.length} running instance${all.length === 1 ? "" : "s"} to stop serving the model`,
    )
    await until(
      `every instance of ${worker} to report the rebuild in its heartbeat`,
      Math.min(deadline, Date.now() + 30_000),
      async () => (await instances(jsm, worker, startedAt)).waiting.length === 0,
    )

    // 3: what is in flight finishes before the buckets are emptied
    const ackWaitMs = Math.max(...[...infos.values()].map((i) => (i.config.ack_wait ?? 30e9) / 1e6))
    if (canPause) {
      await until("in-flight events to be acked", Date.now() + ackWaitMs + 2000, async () => {
        for (const c of specs) if ((await jsm.consumers.info(c.stream, c.durable)).num_ack_pending > 0) return false
        return true
      }).catch(() => io.out(`some in-flight events were not acked within ${ackWaitMs} ms; they are replayed like the rest`))
    } else {
      for (const c of specs) await jsm.consumers.delete(c.stream, c.durable)
      io.out(`consumers removed (this server cannot pause them); waiting ${ackWaitMs / 1000} s (ack_wait) for in-flight work`)
      await sleep(ackWaitMs)
    }

    // 4
    for (const b of buckets) await jsm.streams.purge(`KV_${b}`)
    io.out(`emptied ${buckets.join(", ")}`)

    // 5: a stream at a time (all its partitions together), in the topology's order
    let replayedEvents = 0
    for (const stream of [...new Set(specs.map((c) => c.stream))]) {
      const target = (await jsm.streams.info(stream)).state.last_seq
      const marks = new Map<ConsumerSpec, Mark>()
      for (const c of specs.filter((x) => x.stream === stream)) {
        if (canReset) await jsm.consumers.reset(c.stream, c.durable, 1)
        else {
          if (canPause) await jsm.consumers.delete(c.stream, c.durable)
          await jsm.consumers.add(c.stream, { ...consumerConfig(c), description: markText({ startedAt, target }) })
        }
        const m: Mark = { startedAt, target, total: (await jsm.consumers.info(c.stream, c.durable)).num_pending }
        await mark(c, m)
        marks.set(c, m)
      }
      if (canPause) for (const c of marks.keys()) await jsm.consumers.resume(c.stream, c.durable)
      const total = [...marks.values()].reduce((a, m) => a + (m.total ?? 0), 0)
      let said = 0
      await until(`${stream} to replay ${total} events`, deadline, async () => {
        const infos = await Promise.all([...marks].map(async ([c, m]) => [m, await jsm.consumers.info(c.stream, c.durable)] as const))
        if (Date.now() - said > 2000)
          (said = Date.now()),
            io.out(
              `${stream}/${worker}: ${Math.round((100 * infos.reduce((a, [m, i]) => a + fraction(m, i) * (m.total ?? 0), 0)) / Math.max(1, total))}% of ${total}`,
            )
        return infos.every(([m, i]) => replayed(m, i))
      })
      replayedEvents += total
    }

    // 6: each instance switches back by itself once it has loaded the rebuilt model; said here when they have
    await until(`every instance of ${worker} to serve the rebuilt model`, deadline, async () => {
      const beats = (await latestValues<Beat>(jsm.jetstream(), HEARTBEATS).catch(() => [] as Beat[])).filter(
        (b) => b.worker === worker && Date.now() - Date.parse(b.at) < 15_000,
      )
      return beats.every((b) => b.rebuilding !== startedAt)
    })
    for (const c of specs) await jsm.consumers.update(c.stream, c.durable, { description: "" })
    io.out(
      `rebuilt ${worker}: ${replayedEvents} events replayed in ${((Date.now() - Date.parse(startedAt)) / 1000).toFixed(1)} s, consumers kept their names`,
    )
  } finally {
    await nc.close()
  }
}

export const rebuild: Command = {
  summary: "rebuild a worker's read model (portal, tracking) from the streams, under the same consumer names",
  usage: "logiflow rebuild <portal|tracking> [--timeout 600]",
  async run(args, io) {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { timeout: { type: "string", default: "600" } } })
    if (positionals.length !== 1) throw new CliError(`usage: ${rebuild.usage}`)
    const seconds = Number(values.timeout)
    if (!(seconds > 0)) throw new CliError(`--timeout is a number of seconds, got "${values.timeout}"`)
    await rebuildWorker(io, positionals[0]!, seconds * 1000)
  },
}
