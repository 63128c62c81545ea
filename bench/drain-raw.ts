// bench/drain-raw.ts — the invoice worker draining a backlog beside two hand-written raw loops on the same backlog,
// same server, rounds interleaved (the order rotates each round so the machine's drift hits all alike):
//   (e1) consume() callback, per event: one publish with a msg id, its ack awaited, then the input's ack;
//   (e2) the same with exactly invoice's JetStream write: the message invoice stores (the priced invoice, its
//        CloudEvents headers, msg id `invoice:<routeId>`, Nats-Expected-Last-Subject-Sequence 0 on the route's own
//        subject), its headers encoded as cheaply as the mesh does it, then the ack;
//   (e2⁻) (e2) without the CloudEvents headers: what they cost, in the loop and in the server.
// Both are pipelined like consume() (every delivered message handled at once; the consumer's max_ack_pending bounds
// what is in flight) and use the client's `noAsyncTraces`, as the mesh does: neither baseline is held back.
// Every variant starts as its own process on a fresh durable from the first event and an empty INVOICE stream; the
// clock runs from its ready line to an empty consumer (the same watch for all three).
//   one variant against a running server: node --import tsx bench/drain-raw.ts --variant e2 --url nats://…
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { connect, nanos, TimeoutError } from "@nats-io/transport-node"
import { ceHeaders, type RouteCalculated, subjectOf, subjectsOf, topology } from "../contracts/mod.ts"
import { freePort } from "../mesh/cli/natsd.ts"
import { OutgoingHeaders } from "../mesh/headers.ts"
import { isMain } from "../mesh/main.ts"
import { provision } from "../mesh/provision.ts"
import { childTraceparent } from "../mesh/publish.ts"
import { demoTariffs, priceRoute } from "../workers/pricing.ts"
import { args, type BenchServer, benchServer, type Child, cpuMeter, int, median, type Opts, preload, round, spawnTs } from "./lib.ts"

const spec = topology().consumers.find((c) => c.stream === "ROUTING" && c.durable === "invoice")!
const RAW = "bench-raw"

export type DrainVariant = { id: "invoice" | "e1" | "e2" | "e2bare"; label: string }
export const DRAIN_VARIANTS: DrainVariant[] = [
  { id: "invoice", label: "invoice worker (defaults: concurrency 64, PREFETCH 256)" },
  { id: "e2", label: "(e2) raw loop, invoice's write: the same message (CloudEvents headers, once-guard) + ack" },
  { id: "e2bare", label: "(e2⁻) = (e2) without the CloudEvents headers" },
  { id: "e1", label: "(e1) raw loop: one publish with msg id + ack" },
]

/** The raw loop, in this process: prints a ready line, drains until killed. */
async function rawLoop(v: DrainVariant, url: string): Promise<void> {
  const nc = await connect({ servers: url, noAsyncTraces: true })
  const js = jetstream(nc)
  const consumer = await js.consumers.get("ROUTING", RAW)
  const enc = new TextEncoder()
  const issuedAt = new Date().toISOString()
  let n = 0
  // a clean exit on SIGTERM, so --cpu-prof writes its profile
  process.once("SIGTERM", () => process.exit(0))
  console.log(JSON.stringify({ msg: "ready" }))
  await consumer.consume({
    max_messages: 256,
    callback: (msg) => {
      const route = msg.json<RouteCalculated>()
      const id = `invoice:${route.routeId}`
      const publish =
        v.id === "e1"
          ? js.publish(subjectOf("InvoiceGenerated", route.routeId), msg.data, { msgID: `e1:${route.routeId}` })
          : js.publish(
              subjectOf("InvoiceGenerated", route.routeId),
              enc.encode(JSON.stringify(priceRoute(route, demoTariffs.acme!, { invoiceId: `inv-${n++}`, issuedAt }))),
              {
                msgID: id,
                expect: { lastSubjectSequence: 0 },
                // the headers invoice writes: the CloudEvents set (ce-time and the traceparent's span fresh per event)
                headers:
                  v.id === "e2"
                    ? new OutgoingHeaders(
                        ceHeaders("InvoiceGenerated", route.routeId, { id, source: "logiflow/invoice", traceparent: childTraceparent() }),
                      )
                    : undefined,
              },
            )
      publish.then(
        () => msg.ack(),
        (err) => (console.error(String(err)), msg.nak()),
      )
    },
  })
}

/** A fresh start for the next variant: no invoices stored, the durable it reads from back at the first event. */
async function reset(nc: Parameters<typeof provision>[0], jsm: JetStreamManager, v: DrainVariant) {
  await jsm.streams.delete("INVOICE").catch(() => {})
  await jsm.consumers.delete("ROUTING", "invoice").catch(() => {})
  await jsm.consumers.delete("ROUTING", RAW).catch(() => {})
  await provision(nc, topology())
  if (v.id !== "invoice") {
    await jsm.consumers.delete("ROUTING", "invoice").catch(() => {})
    await jsm.consumers.add("ROUTING", {
      durable_name: RAW,
      filter_subject: subjectsOf("RouteCalculated"),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(spec.ackWaitSeconds * 1000),
      max_deliver: spec.maxDeliver,
      max_ack_pending: spec.maxAckPending,
    })
  }
}

export type DrainRun = {
  id: string
  round: number
  events: number
  seconds: number
  eventsPerSec: number
  /** the drainer's own CPU (all its threads, /proc) from its ready line to the empty consumer, per event */
  cpuUsPerEvent: number
  /** nats-server's CPU over the same span, per event (the bench's own consumer-info polls included, alike for all) */
  serverCpuUsPerEvent: number
  invoices: number
}

/** Polls the variant's consumer every `pollMs` from the child's ready line until it is empty. */
async function timed(child: Child, serverPid: number, jsm: JetStreamManager, durable: string, events: number, pollMs = 50) {
  await child.waitFor(/"msg":"ready"/, 120_000)
  const start = performance.now()
  const meter = cpuMeter({ drainer: child.pid, server: serverPid })
  while (true) {
    if (child.proc.exitCode !== null) throw new Error(`${durable} exited: ${child.lines.slice(-5).join(" | ")}`)
    // an overloaded box can leave one info request unanswered in time: ask again rather than lose the run
    const info = await jsm.consumers
      .info("ROUTING", durable)
      .catch((err) => (err instanceof TimeoutError ? undefined : Promise.reject(err)))
    if (info && info.ack_floor.stream_seq >= events && info.num_ack_pending === 0) break
    if (performance.now() - start > 600_000) throw new Error(`${durable}: not drained within 10 min`)
    await new Promise((r) => setTimeout(r, pollMs))
  }
  const seconds = (performance.now() - start) / 1000
  const cpu = meter(events)
  return { seconds, cpuUsPerEvent: cpu.drainer * 1000, serverCpuUsPerEvent: cpu.server * 1000 }
}

/** One variant drains the whole backlog from a fresh start, as its own process. */
async function drainOnce(server: BenchServer, nc: Parameters<typeof provision>[0], jsm: JetStreamManager, v: DrainVariant, events: number) {
  await reset(nc, jsm, v)
  const url = server.url
  const env = { NATS_URL: url, LOG_LEVEL: "warn" }
  // BENCH_CPU_PROF=<dir>: every variant writes a V8 CPU profile there (node --cpu-prof) for the finding's top frames
  const prof = process.env.BENCH_CPU_PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_CPU_PROF] : []
  const child =
    v.id === "invoice"
      ? spawnTs("workers/invoice.ts", { ...env, LOG_LEVEL: "info", INVOICE_PORT: String(await freePort()) }, [], prof)
      : spawnTs("bench/drain-raw.ts", env, ["--variant", v.id, "--url", url], prof)
  const { seconds, cpuUsPerEvent, serverCpuUsPerEvent } = await timed(
    child,
    server.process.pid!,
    jsm,
    v.id === "invoice" ? "invoice" : RAW,
    events,
  )
  await child.stop("SIGTERM")
  const invoices = (await jsm.streams.info("INVOICE")).state.messages
  return { id: v.id, events, seconds, eventsPerSec: events / seconds, cpuUsPerEvent, serverCpuUsPerEvent, invoices }
}

export async function drainVsRaw(
  o: Opts,
  events = o.quick ? 10_000 : 40_000,
  rounds = o.quick ? 1 : 5,
  trucks = Number(args().flags.get("trucks") ?? 5000),
) {
  const server = await benchServer()
  const runs: DrainRun[] = []
  try {
    const nc = await connect({ servers: server.url })
    const js = jetstream(nc)
    const jsm = await jetstreamManager(nc)
    await provision(nc, topology())
    // the reference fleet's 5,000 trucks (ARCHITECTURE.md): per-key order lets the worker run one truck's routes at a
    // time. --trucks 10 for 2.9.10: there the invoice consumer over 5,000 subjects crawled (~140 messages/s)
    await preload(js, events, { label: `drain vs raw: ${int(events)} events pile up`, trucks })
    // one unmeasured drain first: the first drainer on a fresh server paid for its warm-up (the stream's blocks read
    // from disk, the server's buffers grown) and ran ~25 % slower than the same variant later, so round 1 was
    // skewed against whichever variant came first
    await drainOnce(server, nc, jsm, DRAIN_VARIANTS.find((v) => v.id === "e1")!, events)
    for (let r = 0; r < rounds; r++) {
      // rotate: round 1 invoice, e2, e1; round 2 e2, e1, invoice; …
      const order = DRAIN_VARIANTS.map((_, i) => DRAIN_VARIANTS[(i + r) % DRAIN_VARIANTS.length]!)
      for (const v of order) {
        const run = { round: r + 1, ...(await drainOnce(server, nc, jsm, v, events)) }
        process.stderr.write(
          `  drain vs raw round ${r + 1}/${rounds}: ${v.id} ${int(run.eventsPerSec)} events/s, ${round(run.cpuUsPerEvent)} µs CPU/event (server ${round(run.serverCpuUsPerEvent)}), ${int(run.invoices)} stored\n`,
        )
        runs.push(run)
      }
    }
    await nc.close()
  } finally {
    await server.close()
  }
  return report(events, rounds, runs, trucks)
}

function report(events: number, rounds: number, runs: DrainRun[], trucks: number) {
  const of = (id: string) => runs.filter((x) => x.id === id)
  const ratios = (id: string, base: string) =>
    Array.from({ length: rounds }, (_, r) => {
      const a = runs.find((x) => x.id === id && x.round === r + 1)
      const b = runs.find((x) => x.id === base && x.round === r + 1)
      return a && b ? a.eventsPerSec / b.eventsPerSec : NaN
    })
  const spread = (xs: number[]) => `${median(xs).toFixed(2)}× (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})`
  const rows = DRAIN_VARIANTS.map((v) => {
    const rs = of(v.id).map((x) => x.eventsPerSec)
    return [
      v.label,
      `${int(median(rs))} (${int(Math.min(...rs))}–${int(Math.max(...rs))})`,
      spread(ratios(v.id, "e1")),
      spread(ratios(v.id, "e2")),
      int(median(of(v.id).map((x) => x.cpuUsPerEvent))),
      int(median(of(v.id).map((x) => x.serverCpuUsPerEvent))),
      of(v.id).every((x) => x.invoices === events)
        ? `${int(events)} each run`
        : of(v.id)
            .map((x) => int(x.invoices))
            .join(" / "),
    ]
  })
  const vsE1 = median(ratios("invoice", "e1"))
  const vsE2 = median(ratios("invoice", "e2"))
  const vsBare = median(ratios("invoice", "e2bare"))
  const server = (id: string) => round(median(of(id).map((x) => x.serverCpuUsPerEvent)))
  return {
    table: {
      title: `Invoice draining ${int(events)} events of ${int(trucks)} trucks beside raw loops (${rounds} round${rounds > 1 ? "s" : ""}, interleaved; median (min–max))`,
      columns: ["drainer", "events/s", "vs (e1)", "vs (e2)", "CPU µs/event", "server CPU µs/event", "messages stored in INVOICE"],
      rows,
    },
    notes: [
      `Goals: invoice ≥ 0.90× (e2): ${vsE2 >= 0.9 ? "met" : "NOT met"} (${round(vsE2, 2)}×); ≥ 0.80× (e1): ${vsE1 >= 0.8 ? "met" : "NOT met"} (${round(vsE1, 2)}×). Ratios are per round, then the median.`,
      `Without the CloudEvents headers the same write (e2⁻) leaves invoice at ${round(vsBare, 2)}×: the headers cost nats-server ${server("e2")} against ${server("e2bare")} µs of CPU per event, for the same messages stored and delivered.`,
      "(e1), (e2) and (e2⁻) are consume() callbacks (max_messages 256) that start each event's publish at once and ack the input when its publish is acked: up to max_ack_pending (1000) events in flight, no per-key order. The invoice worker keeps its contract: CloudEvents headers and the valibot check on the way in and out, one truck's routes in order, at most PREFETCH held.",
    ],
    data: { events, rounds, trucks, runs },
  }
}

if (isMain(import.meta)) {
  const { flags, quick } = args()
  const id = flags.get("variant")
  if (id) {
    const v = DRAIN_VARIANTS.find((x) => x.id === id)
    if (!v || v.id === "invoice") throw new Error(`--variant e1, e2 or e2bare, got ${id}`)
    await rawLoop(v, flags.get("url")!)
  } else {
    const n = flags.has("n") ? Number(flags.get("n")) : undefined
    const r = await drainVsRaw({ quick }, n, flags.has("rounds") ? Number(flags.get("rounds")) : undefined)
    console.log(JSON.stringify(r, null, 2))
    process.exit(0)
  }
}
