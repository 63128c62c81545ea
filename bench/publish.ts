// bench/publish.ts — publish throughput the way routing publishes: a msg id per event, the JetStream ack awaited.
// Sequential (one at a time: what a single HTTP request waits for) and pipelined (a bounded window in flight), via
// mesh publishEvent (schema check, CloudEvents headers) and via the raw client's js.publish (JSON body + msg id).
// Each variant runs in a fresh child process; rounds interleave them.
//   npm run bench -- publish [--quick]
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect, nanos } from "@nats-io/transport-node"
import { subjectOf, topology } from "../contracts/mod.ts"
import { isMain } from "../mesh/main.ts"
import { childTraceparent, publishEvent } from "../mesh/publish.ts"
import { route } from "../test/fixtures/events.ts"
import { args, benchServer, int, median, type Opts, print, progress, round, type Section, spawnTs, stopwatch, variantChild } from "./lib.ts"

const WINDOW = 256
// the raw loop publishes on one truck's subject: the same subject shape as the mesh's, one token longer
const SUBJECT = subjectOf("RouteCalculated", "truck-0")

type Variant = { id: string; label: string; mesh: boolean; window: number }
const VARIANTS: Variant[] = [
  { id: "raw-seq", label: "raw js.publish, sequential", mesh: false, window: 1 },
  { id: "mesh-seq", label: "mesh publishEvent, sequential", mesh: true, window: 1 },
  { id: "raw-pipe", label: `raw js.publish, pipelined (${WINDOW} in flight)`, mesh: false, window: WINDOW },
  { id: "mesh-pipe", label: `mesh publishEvent, pipelined (${WINDOW} in flight)`, mesh: true, window: WINDOW },
]

type Result = { id: string; n: number; msgsPerSec: number; cpuUsPerMsg: number; duplicates: number }

async function runVariant(v: Variant, url: string, n: number, tag: string): Promise<Result> {
  const nc = await connect({ servers: url })
  const js = jetstream(nc)
  const enc = new TextEncoder()
  let duplicates = 0
  const one = async (i: number) => {
    const r = route(i)
    const id = `${tag}:${r.routeId}`
    const ack = v.mesh
      ? await publishEvent(js, "RouteCalculated", r, { id, source: "logiflow/routing", traceparent: childTraceparent() })
      : await js.publish(SUBJECT, enc.encode(JSON.stringify(r)), { msgID: id })
    if (ack.duplicate) duplicates++
  }
  for (let i = 0; i < 200; i++) await one(-1 - i) // warm-up: JIT and the connection, not measured
  let next = 0
  const stop = stopwatch()
  await Promise.all(
    Array.from({ length: v.window }, async () => {
      while (next < n) await one(next++)
    }),
  )
  const t = stop()
  await nc.close()
  return { id: v.id, n, msgsPerSec: (n * 1000) / t.wallMs, cpuUsPerMsg: (t.cpuMs * 1000) / n, duplicates }
}

export async function publish(o: Opts): Promise<Section> {
  const nSeq = o.quick ? 300 : 5000
  const nPipe = o.quick ? 2000 : 20_000
  const rounds = o.quick ? 1 : 2
  const server = await benchServer()
  try {
    const nc = await connect({ servers: server.url })
    const t = topology().streams.find((s) => s.name === "ROUTING")!
    await (await jetstreamManager(nc)).streams.add({
      name: t.name,
      subjects: t.subjects,
      duplicate_window: nanos(t.duplicateWindowSeconds * 1000),
    })
    await nc.close()
    const results: Result[][] = []
    for (let r = 1; r <= rounds; r++) {
      const inRound: Result[] = []
      for (const v of VARIANTS) {
        const n = v.window === 1 ? nSeq : nPipe
        const p = progress(`publish round ${r}/${rounds}: ${v.id} (${n})`)
        const child = spawnTs("bench/publish.ts", { LOG_LEVEL: "error" }, [
          "--variant",
          v.id,
          "--url",
          server.url,
          "--n",
          String(n),
          "--tag",
          `r${r}-${v.id}`,
        ])
        const code = await child.exited
        const line = child.lines.find((l) => l.startsWith("RESULT "))
        if (code !== 0 || !line) throw new Error(`publish ${v.id} failed (exit ${code}): ${child.lines.slice(-8).join(" | ")}`)
        const res = JSON.parse(line.slice(7)) as Result
        p.done(`${int(res.msgsPerSec)} msgs/s, ${round(res.cpuUsPerMsg, 1)} µs CPU/msg`)
        inRound.push(res)
      }
      results.push(inRound)
    }
    const get = (r: Result[], id: string) => r.find((x) => x.id === id)!
    const vs = (id: string, base: string, f: (x: Result) => number) => median(results.map((r) => f(get(r, id)) / f(get(r, base))))
    const rows = VARIANTS.map((v) => {
      const base = v.window === 1 ? "raw-seq" : "raw-pipe"
      const seq = v.mesh ? "mesh-seq" : "raw-seq"
      const rs = results.map((r) => get(r, v.id))
      const rate = median(rs.map((x) => x.msgsPerSec))
      return [
        v.label,
        int(rate),
        `${vs(v.id, base, (x) => x.msgsPerSec).toFixed(2)}×`,
        `${vs(v.id, seq, (x) => x.msgsPerSec).toFixed(2)}×`,
        v.window === 1 ? (1000 / rate).toFixed(2) : "–",
        round(median(rs.map((x) => x.cpuUsPerMsg)), 1),
        `${vs(v.id, base, (x) => x.cpuUsPerMsg).toFixed(2)}×`,
        rs.reduce((a, x) => a + x.duplicates, 0),
      ]
    })
    return {
      name: "publish",
      title: "Publish throughput",
      tables: [
        {
          title: `Publish with msg id and awaited ack (sequential ${nSeq}, pipelined ${nPipe} per run)`,
          columns: [
            "publisher",
            "msgs/s",
            "vs raw, same mode",
            "vs sequential",
            "ms per publish (seq)",
            "CPU µs/msg",
            "CPU/msg vs raw",
            "duplicates",
          ],
          rows,
        },
      ],
      notes: [
        `${rounds} round${rounds > 1 ? "s" : ""}, each variant in a fresh child process after 200 unmeasured publishes; medians of per-round ratios.`,
        "mesh publishEvent = valibot check of the event + nine CloudEvents/trace headers + msg id; raw = JSON body + msg id only. Both wait for the stream's ack (stored, deduplicated by msg id).",
        "Sequential is what one POST /routes waits for; pipelining is how a busy routing process (many requests at once) or a backfill gets throughput.",
      ],
      data: { nSeq, nPipe, window: WINDOW, rounds, results },
    }
  } finally {
    await server.close()
  }
}

if (isMain(import.meta)) {
  const { quick, flags } = args()
  await variantChild(VARIANTS, flags, (v) => runVariant(v, flags.get("url")!, Number(flags.get("n") ?? 1000), flags.get("tag") ?? "x"))
  print([await publish({ quick })])
}
