// bench/consume.ts — consume throughput on one preloaded stream: the raw @nats-io/jetstream callback loop (the
// practical limit), the mesh worker at several concurrencies, and @moleculer/channels (the closest TypeScript peer).
// Every variant runs in a fresh child process (same JIT and heap start for each) on its own new durable from the
// first message; rounds interleave the variants so drift in the machine's load hits all of them alike.
//   npm run bench -- consume [--quick] [--n 200000] [--rounds 2]
//   one variant against a running server (for --cpu-prof): node --import tsx bench/consume.ts --variant mesh --url nats://… --n 20000
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { connect, type Msg, nanos } from "@nats-io/transport-node"
import { CE, ContractError, decode, parseType, subjectsOf, topology, validate } from "../contracts/mod.ts"
import { isMain } from "../mesh/main.ts"
import { PulledMsg } from "../mesh/pulled.ts"
import { worker } from "../mesh/worker.ts"
import {
  args,
  benchServer,
  type Cpu,
  cpuMeter,
  int,
  median,
  type Opts,
  preload,
  print,
  progress,
  round,
  type Section,
  spawnTs,
  stopwatch,
  variantChild,
} from "./lib.ts"

const STREAM = "ROUTING"
// every key's subject (routing.events.RouteCalculated.<truck>): the raw and peer variants read what the mesh reads
const SUBJECT = subjectsOf("RouteCalculated")
const spec = topology().consumers.find((c) => c.stream === STREAM && c.durable === "invoice")!

/** `share`: the fraction of the preloaded events this variant consumes (the slow concurrency sweep takes a quarter);
 * `once`: runs in the first round only (the full run has to stay under ~15 minutes on 2 cores) */
type Variant = {
  id: string
  label: string
  kind: "raw" | "raw-decode" | "mesh" | "moleculer"
  concurrency?: number
  env?: Record<string, string>
  share?: number
  once?: boolean
}
const VARIANTS: Variant[] = [
  { id: "raw", label: "(a) raw @nats-io/jetstream consume(), callback, max_messages 1000", kind: "raw" },
  {
    id: "raw-decode",
    label:
      "(a′) = (a) + the contract: CloudEvents headers from the raw header block, as the mesh reads them, and the schema check (contracts decode())",
    kind: "raw-decode",
  },
  {
    id: "raw-decode-hdrs",
    label: "(a″) = (a′) reading the headers through the client's MsgHdrs",
    kind: "raw-decode",
    env: { HEADERS: "client" },
    once: true,
  },
  { id: "mesh", label: "(b) mesh worker, defaults: concurrency 64, PREFETCH 256", kind: "mesh" },
  { id: "mesh-c1", label: "(c) mesh worker, concurrency 1 (PREFETCH 16)", kind: "mesh", concurrency: 1, share: 0.25, once: true },
  { id: "mesh-c8", label: "(c) mesh worker, concurrency 8 (PREFETCH 128)", kind: "mesh", concurrency: 8, share: 0.25, once: true },
  { id: "mesh-c16", label: "(c) mesh worker, concurrency 16 (PREFETCH 256)", kind: "mesh", concurrency: 16, share: 0.25, once: true },
  { id: "mesh-p64", label: "(b′) mesh worker, concurrency 64, PREFETCH 64", kind: "mesh", env: { PREFETCH: "64" }, once: true },
  { id: "mesh-p512", label: "(b‴) mesh worker, concurrency 64, PREFETCH 512", kind: "mesh", env: { PREFETCH: "512" }, once: true },
  {
    id: "mesh-p1000",
    label: "(b″) mesh worker, concurrency 64, PREFETCH 1000 (max_ack_pending)",
    kind: "mesh",
    env: { PREFETCH: "1000" },
    once: true,
  },
  { id: "moleculer", label: "(d) @moleculer/channels 0.1.8 NATS adapter, maxInFlight 1000", kind: "moleculer" },
  {
    id: "moleculer-contract",
    label:
      "(d′) = (d) + the contract in its handler: the CloudEvents headers through the client's MsgHdrs, the type parsed, the valibot check of the payload it decoded",
    kind: "moleculer",
    env: { CONTRACT: "1" },
  },
]

type Result = {
  id: string
  n: number
  msgsPerSec: number
  cpuUsPerMsg: number
  /** nats-server's CPU over the same span, per message */
  serverCpuUsPerMsg: number
  wallMs: number
  cpuMs: number
  complete: boolean
}

// --- one variant, in this process -----------------------------------------------------------------------------

/** Counts messages; the clock and CPU meter start at the first message, so connect/bind time is not measured. The
 * server's CPU is read over the same span from /proc (its pid from the parent), so a variant's start is not in it. */
function meter(n: number, serverPid: number) {
  let seen = 0
  let stop: (() => Cpu) | undefined
  let server: ((events: number) => { server: number }) | undefined
  let resolve!: (c: Cpu & { serverCpuMs: number }) => void
  const done = new Promise<Cpu & { serverCpuMs: number }>((r) => (resolve = r))
  return {
    done,
    tick() {
      if (seen++ === 0) (stop = stopwatch()), (server = serverPid ? cpuMeter({ server: serverPid }) : undefined)
      if (seen === n) resolve({ ...stop!(), serverCpuMs: server ? server(1).server : Number.NaN })
    },
  }
}

async function fresh(jsm: JetStreamManager, durable: string) {
  await jsm.consumers.delete(STREAM, durable).catch(() => {})
}

async function runVariant(v: Variant, url: string, n: number): Promise<Result> {
  const nc = await connect({ servers: url })
  const jsm = await jetstreamManager(nc)
  const m = meter(n, Number(process.env.BENCH_SERVER_PID ?? 0))
  let durable: string
  let close: () => Promise<unknown>

  if (v.kind === "raw" || v.kind === "raw-decode") {
    durable = "bench-raw"
    await fresh(jsm, durable)
    await jsm.consumers.add(STREAM, {
      durable_name: durable,
      filter_subject: SUBJECT,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(spec.ackWaitSeconds * 1000),
      max_deliver: spec.maxDeliver,
      max_ack_pending: spec.maxAckPending,
    })
    const rnc = await connect({ servers: url })
    const consumer = await jetstream(rnc).consumers.get(STREAM, durable)
    const sub = await consumer.consume({
      max_messages: 1000,
      callback:
        v.kind === "raw"
          ? (msg) => {
              msg.json()
              msg.ack()
              m.tick()
            }
          : process.env.HEADERS === "client"
            ? (msg) => {
                decode((h) => msg.headers?.get(h) || undefined, msg.data, msg.subject)
                msg.ack()
                m.tick()
              }
            : (msg) => {
                // the client's JsMsg keeps its core message as `msg`; PulledMsg.header reads the raw header block
                const pulled = new PulledMsg((msg as unknown as { msg: Msg }).msg, rnc)
                decode((h) => pulled.header(h), msg.data, msg.subject)
                msg.ack()
                m.tick()
              },
    })
    close = async () => (await sub.close(), await rnc.drain())
  } else if (v.kind === "mesh") {
    durable = "invoice"
    await fresh(jsm, durable)
    const running = await worker({ name: "invoice", concurrency: v.concurrency, consumes: { RouteCalculated: () => m.tick() } }).start({
      url,
      port: 0,
    })
    close = () => running.stop()
  } else {
    durable = "bench-moleculer"
    await fresh(jsm, durable)
    const { ServiceBroker } = (await import("moleculer")).default
    const { Middleware } = (await import("@moleculer/channels")).default
    const broker = new ServiceBroker({
      logger: false,
      middlewares: [
        // the object form: a bare URL string is ignored and the adapter dials localhost:4222 (NATS-FACTS.md)
        Middleware({
          adapter: { type: "NATS", options: { nats: { url, consumerOptions: { config: { deliver_policy: "all" } } }, maxInFlight: 1000 } },
        } as never) as never,
      ],
    })
    // (d′): what a moleculer handler has to do for the same contract; its serializer already parsed the JSON body
    type Raw = { headers?: { get(k: string): string } }
    const contract = (payload: unknown, raw: Raw) => {
      const h = (k: string) => raw.headers?.get(k) || undefined
      const need = (k: string) => h(k) ?? contractError(k)
      const { name, version } = parseType(need(CE.type))
      void [need(CE.id), need(CE.source), h(CE.time), h(CE.subject), h(CE.traceparent)]
      validate(name, payload, version)
      m.tick()
    }
    broker.createService({
      name: "invoice",
      channels: { [SUBJECT]: { group: durable, handler: process.env.CONTRACT ? contract : () => m.tick() } },
    } as never)
    await broker.start()
    close = () => broker.stop()
  }

  const cpu = await m.done
  await sleep(300) // acks are written after the last tick; give them a moment before checking the consumer
  const info = await jsm.consumers.info(STREAM, durable)
  // a variant that takes only part of the stream leaves the rest pending
  const complete = info.ack_floor.stream_seq >= n
  await close()
  await fresh(jsm, durable)
  await nc.close()
  return {
    id: v.id,
    n,
    msgsPerSec: ((n - 1) * 1000) / cpu.wallMs,
    cpuUsPerMsg: (cpu.cpuMs * 1000) / n,
    serverCpuUsPerMsg: (cpu.serverCpuMs * 1000) / n,
    wallMs: cpu.wallMs,
    cpuMs: cpu.cpuMs,
    complete,
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const contractError = (k: string): never => {
  throw new ContractError("missing-header", `missing header ${k}`)
}

// --- the scenario ---------------------------------------------------------------------------------------------

// --quick (a CI smoke): the baseline, the contract cost, the default mesh worker and the peer, one round
const QUICK = ["raw", "raw-decode", "mesh", "moleculer", "moleculer-contract"]

export async function consume(o: Opts, n = o.quick ? 10_000 : 200_000, rounds = o.quick ? 1 : 5): Promise<Section> {
  const variants = o.quick ? VARIANTS.filter((v) => QUICK.includes(v.id)) : VARIANTS
  const server = await benchServer()
  try {
    const nc = await connect({ servers: server.url })
    const jsm = await jetstreamManager(nc)
    const t = topology().streams.find((s) => s.name === STREAM)!
    await jsm.streams.add({ name: STREAM, subjects: t.subjects, duplicate_window: nanos(t.duplicateWindowSeconds * 1000) })
    await preload(jetstream(nc), n, { window: 1000, label: `consume: preloading ${n} RouteCalculated` })
    await nc.close()

    const results: Result[][] = []
    for (let r = 1; r <= rounds; r++) {
      const inRound: Result[] = []
      for (const v of variants) {
        if (v.once && r > 1) continue
        const count = Math.round(n * (v.share ?? 1))
        const p = progress(`consume round ${r}/${rounds}: ${v.id} (${count})`)
        const child = spawnTs("bench/consume.ts", { LOG_LEVEL: "error", BENCH_SERVER_PID: String(server.process.pid), ...v.env }, [
          "--variant",
          v.id,
          "--url",
          server.url,
          "--n",
          String(count),
        ])
        const code = await child.exited
        const line = child.lines.find((l) => l.startsWith("RESULT "))
        if (code !== 0 || !line) throw new Error(`consume ${v.id} failed (exit ${code}): ${child.lines.slice(-8).join(" | ")}`)
        const res = JSON.parse(line.slice(7)) as Result
        p.done(
          `${int(res.msgsPerSec)} msgs/s, ${round(res.cpuUsPerMsg, 1)} µs CPU/msg, nats-server ${round(res.serverCpuUsPerMsg, 1)} µs${res.complete ? "" : " — INCOMPLETE"}`,
        )
        inRound.push(res)
      }
      results.push(inRound)
    }
    return report(n, rounds, variants, results)
  } finally {
    await server.close()
  }
}

function report(n: number, rounds: number, variants: Variant[], results: Result[][]): Section {
  const of = (id: string) => results.flatMap((r) => r.filter((x) => x.id === id))
  // a ratio per round (variants of one round ran minutes apart at most), then the median over the rounds with both
  const vs = (id: string, base: string, f: (x: Result) => number) =>
    median(
      results.flatMap((r) => {
        const a = r.find((x) => x.id === id)
        const b = r.find((x) => x.id === base)
        return a && b ? [f(a) / f(b)] : []
      }),
    )
  // the per-round ratios' median and their spread over the rounds
  const spread = (id: string, base: string) => {
    const xs = results.flatMap((r) => {
      const a = r.find((x) => x.id === id)
      const b = r.find((x) => x.id === base)
      return a && b ? [a.msgsPerSec / b.msgsPerSec] : []
    })
    if (xs.length === 0) return "–"
    const m = `${median(xs).toFixed(2)}×`
    return xs.length > 1 ? `${m} (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})` : m
  }
  const serverCpu = (id: string) => round(median(of(id).map((x) => x.serverCpuUsPerMsg)), 1)
  const rows = variants.map((v) => {
    const rs = of(v.id)
    const rates = rs.map((x) => x.msgsPerSec)
    return [
      v.label,
      `${int(median(rates))}${rs.length > 1 ? ` (${int(Math.min(...rates))}–${int(Math.max(...rates))})` : ""}${v.share ? ` (${int(n * v.share)} events)` : ""}`,
      spread(v.id, "raw"),
      spread(v.id, "raw-decode"),
      spread(v.id, "moleculer"),
      spread(v.id, "moleculer-contract"),
      round(median(rs.map((x) => x.cpuUsPerMsg)), 1),
      `${vs(v.id, "raw", (x) => x.cpuUsPerMsg).toFixed(2)}×`,
      serverCpu(v.id),
      rs.every((x) => x.complete) ? "yes" : "NO",
    ]
  })
  const rate = (x: Result) => x.msgsPerSec
  const meshVsRaw = vs("mesh", "raw", rate)
  const meshVsMol = vs("mesh", "moleculer", rate)
  const meshVsMolContract = vs("mesh", "moleculer-contract", rate)
  const contractVsRaw = vs("raw-decode", "raw", rate)
  const meshVsContract = vs("mesh", "raw-decode", rate)
  const met = (x: number, goal: number) => `${x >= goal ? "met" : "NOT met"} (${x.toFixed(2)}×)`
  const cpuOf = (id: string) => median(of(id).map((x) => x.cpuUsPerMsg))
  const cpu = (id: string) => round(cpuOf(id), 1)
  const notes = [
    `${n} RouteCalculated preloaded; ${rounds} round${rounds > 1 ? "s" : ""} (${rounds > 1 ? "(a), (a′), (b), (d), (d′) in every round, the others in the first; " : ""}each variant in a fresh child process on a fresh durable from the first event; ratios are per round, then the median, with the rounds' min–max). Clock and CPU start at a variant's first message.`,
    `Goals, at the defaults: (b) ≥ 0.90× (a′): ${met(meshVsContract, 0.9)}; (b) ≥ 1.00× (d), plain @moleculer/channels: ${met(meshVsMol, 1)}; (b) ≥ 1.20× (d′), moleculer doing the same contract check: ${met(meshVsMolContract, 1.2)}. Beside them: (b) vs (a) ${meshVsRaw.toFixed(2)}×; the contract alone, (a′) vs (a), ${contractVsRaw.toFixed(2)}×.`,
    `CPU per message, medians: (a) ${cpu("raw")} µs, (a′) ${cpu("raw-decode")} µs, (b) ${cpu("mesh")} µs, (d) ${cpu("moleculer")} µs, (d′) ${cpu("moleculer-contract")} µs: the contract adds ${round(cpuOf("raw-decode") - cpuOf("raw"), 1)} µs, the runtime ${round(cpuOf("mesh") - cpuOf("raw-decode"), 1)} µs. nats-server's, over the same span: (a′) ${serverCpu("raw-decode")} µs, (b) ${serverCpu("mesh")} µs${of("mesh-p512").length ? `, (b‴) ${serverCpu("mesh-p512")} µs` : ""}${of("mesh-p1000").length ? `, (b″) ${serverCpu("mesh-p1000")} µs` : ""}: client and server share the cores, so their sum sets the rate.`,
    "(a) JSON-decodes and acks. (a′) adds what the contract costs wherever it runs, done as cheaply as the mesh does it: six CloudEvents headers read from the raw header block, the envelope, the valibot check; so (b) vs (a′) is the cost of the runtime alone. (a″) reads the same headers through the client's MsgHdrs (which decodes all nine): what a hand-written loop on the client's API pays. (b)–(c) are the mesh runtime doing the same contract work as (a′): one long-lived pull subscription per consumer asking only for free room (PREFETCH, 16 × concurrency up to 256: a crash charges a delivery only to what the process holds), per-key lanes (the fixture has 10 trucks, so at most 10 handlers run at once), Prometheus metrics per message, acks after the handler, batched per event-loop turn. (d) JSON-decodes (its serializer) and acks, on a push consumer with a queue group; it does not read headers or check a schema. (d′) is (d) with the contract in its handler, through the API a moleculer handler has: the nats v2 message's headers, the payload its serializer parsed.",
    "A no-op handler makes these upper bounds: a real handler (invoice: a once-guarded publish with an awaited ack) is slower than any of them; see the drain scenario.",
  ]
  return {
    name: "consume",
    title: "Consume throughput",
    tables: [
      {
        title: `Consume throughput, ${n} events`,
        columns: [
          "consumer",
          "msgs/s",
          "vs (a)",
          "vs (a′)",
          "vs (d)",
          "vs (d′)",
          "CPU µs/msg",
          "CPU/msg vs (a)",
          "nats-server CPU µs/msg",
          "all acked",
        ],
        rows,
      },
    ],
    notes,
    data: { n, rounds, results },
  }
}

if (isMain(import.meta)) {
  const { quick, flags } = args()
  await variantChild(VARIANTS, flags, (v) => runVariant(v, flags.get("url")!, Number(flags.get("n") ?? 20_000)))
  print([
    await consume(
      { quick },
      flags.has("n") ? Number(flags.get("n")) : undefined,
      flags.has("rounds") ? Number(flags.get("rounds")) : undefined,
    ),
  ])
}
