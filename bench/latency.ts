// bench/latency.ts — end-to-end latency at fixed offered rates, open loop: POST /routes to routing (child process) →
// RouteCalculated → invoice (child process) → InvoiceGenerated, seen by a core subscriber here. Compared with the
// floor at the same rate on the same server: a raw js.publish → raw consume() of the same body, one hop.
// Latency is measured from when a request was due, not from when it was sent, so a sender that falls behind shows up.
//   npm run bench -- latency [--quick]
import http from "node:http"
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { subjectsOf } from "../contracts/mod.ts"
import { isMain } from "../mesh/main.ts"
import { testAuth } from "../test/credentials.ts"
import { route } from "../test/fixtures/events.ts"
import {
  args,
  benchServer,
  cpuMeter,
  histogram,
  type Latency,
  median,
  ms,
  type Opts,
  openLoop,
  print,
  progress,
  type Section,
  sleep,
  startWorker,
} from "./lib.ts"

type Run = {
  system: string
  /** the round (1…) of the fixed-rate runs; 0 for the saturation ladder */
  round: number
  rate: number
  seconds: number
  sent: number
  achievedRate: number
  lagMs: number
  completed: number
  failed: number
  /** failed requests by status (0 = no answer) */
  failures?: Record<string, number>
  latency: Latency
  /** CPU ms per event of the routing and invoice processes, of nats-server and of this process (load generator,
   * subscriber, the raw floor's client): all their threads, from /proc */
  cpu?: { routing?: number; invoice?: number; server: number; bench: number }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 512 })

/** POST JSON; resolves with the status and body (never rejects: a failure is status 0, the error in `body`). */
export function post(
  port: number,
  path: string,
  body: unknown,
  timeoutMs = 15_000,
  retry = true,
): Promise<{ status: number; body: string }> {
  const data = JSON.stringify(body)
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: "POST",
        agent,
        timeout: timeoutMs,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data), ...testAuth().headers.routes },
      },
      (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (c: string) => (text += c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }))
        res.on("error", () => resolve({ status: 0, body: "" }))
      },
    )
    req.on("timeout", () => req.destroy(new Error("timeout")))
    // a kept-alive socket the server closed just as it was reused: the request never reached the server (Node's
    // documented case for one retry), not a failure of the system under test
    req.on("error", (err: NodeJS.ErrnoException) =>
      resolve(
        retry && req.reusedSocket && err.code === "ECONNRESET"
          ? post(port, path, body, timeoutMs, false)
          : { status: 0, body: String(err.message) },
      ),
    )
    req.end(data)
  })
}

export const routeRequest = (truckId: string) => ({
  truckId,
  customerId: "acme",
  depot: { lat: 52.52, lon: 13.405 },
  stops: [
    { id: "a", lat: 52.53, lon: 13.41 },
    { id: "b", lat: 52.5, lon: 13.39 },
    { id: "c", lat: 52.51, lon: 13.45 },
  ],
})

async function waitFor(done: () => boolean, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs
  while (!done() && Date.now() < deadline) await sleep(50)
}

export async function latency(o: Opts): Promise<Section> {
  const rates = [200, 1000]
  const seconds = o.quick ? 3 : 6
  // five: on a shared 2-core box one round's p99 can be twice the next one's
  const rounds = o.quick ? 1 : 5
  const ladder = o.quick ? [1000, 2000, 4000] : [1000, 1500, 2000, 3000, 4000, 6000, 8000]
  const ladderSeconds = o.quick ? 2 : 4
  const ladderRuns: Run[] = []
  const server = await benchServer()
  const nc = await connect({ servers: server.url })
  const js = jetstream(nc)
  const jsm = await jetstreamManager(nc)
  const runs: Run[] = []
  let routing, invoice
  try {
    routing = await startWorker("workers/routing.ts", server.url)
    invoice = await startWorker("workers/invoice.ts", server.url)

    // mesh: due time per truck id (unique per request), completed when its InvoiceGenerated goes by
    const due = new Map<string, number>()
    let onInvoice: (truckId: string, at: number) => void = () => {}
    const dec = new TextDecoder()
    nc.subscribe(subjectsOf("InvoiceGenerated"), {
      callback: (_e, m) => onInvoice((JSON.parse(dec.decode(m.data)) as { truckId: string }).truckId, performance.now()),
    })

    const mesh = async (rate: number, secs: number, label: string, record: boolean, round = 0): Promise<Run | undefined> => {
      const e2e = histogram()
      const accepted = histogram()
      let failed = 0
      const failures: Record<string, number> = {}
      onInvoice = (truckId, at) => {
        const t = due.get(truckId)
        if (t === undefined) return
        due.delete(truckId)
        e2e.record(at - t)
      }
      const meter = cpuMeter({ routing: routing!.pid, invoice: invoice!.pid, server: server.process.pid!, bench: process.pid })
      const load = await openLoop(
        rate,
        secs,
        async (i, dueAt) => {
          const truckId = `${label}-${i}`
          due.set(truckId, dueAt)
          const r = await post(routing!.port, "/routes", routeRequest(truckId))
          if (r.status === 202) accepted.record(performance.now() - dueAt)
          else {
            failed++
            due.delete(truckId)
            failures[r.status] = (failures[r.status] ?? 0) + 1
            // what went wrong, for the first few: a status says it, a request without an answer only its error
            if (failed <= 3) process.stderr.write(`  ${label}: request ${i} failed: ${r.status || "no answer"} ${r.body.slice(0, 200)}\n`)
          }
        },
        `latency mesh ${label}`,
      )
      await waitFor(() => due.size === 0, 20_000)
      const n = Math.max(1, e2e.count)
      const cpu = meter(n)
      const lost = due.size
      due.clear()
      if (lost) process.stderr.write(`  ${lost} invoices not seen within 20 s\n`)
      if (!record) return undefined
      const base = { round, rate, seconds: secs, sent: load.total, achievedRate: load.achievedRate, lagMs: load.lagMs, failed, failures }
      const run = { system: MESH, ...base, completed: e2e.count, latency: e2e.summary(), cpu }
      if (round > 0) runs.push(run, { system: "mesh: POST /routes → 202", ...base, completed: accepted.count, latency: accepted.summary() })
      return run
    }

    // raw floor: the same RouteCalculated body, js.publish with a msg id → stream → consume() callback → ack
    await jsm.streams.add({ name: "BENCH_RAW", subjects: ["bench.raw.>"] })
    await jsm.consumers.add("BENCH_RAW", {
      durable_name: "raw",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      max_ack_pending: 1000,
    })
    const rawDue = new Map<number, number>()
    let onRaw: (i: number, at: number) => void = () => {}
    const sub = await (await js.consumers.get("BENCH_RAW", "raw")).consume({
      max_messages: 1000,
      callback: (m) => {
        onRaw(m.json<{ i: number }>().i, performance.now())
        m.ack()
      },
    })
    const enc = new TextEncoder()
    const raw = async (rate: number, secs: number, label: string, round = 0): Promise<Run> => {
      const lat = histogram()
      let failed = 0
      const meter = cpuMeter({ server: server.process.pid!, bench: process.pid })
      onRaw = (i, at) => {
        const t = rawDue.get(i)
        if (t === undefined) return
        rawDue.delete(i)
        lat.record(at - t)
      }
      const load = await openLoop(
        rate,
        secs,
        async (i, dueAt) => {
          rawDue.set(i, dueAt)
          await js
            .publish(`bench.raw.${label}`, enc.encode(JSON.stringify({ i, ...route(i) })), { msgID: `raw-${label}-${i}` })
            .catch(() => (failed++, rawDue.delete(i)))
        },
        `latency raw ${label}`,
      )
      await waitFor(() => rawDue.size === 0, 20_000)
      const cpu = meter(Math.max(1, lat.count))
      rawDue.clear()
      const run: Run = {
        system: RAW,
        round,
        rate,
        seconds: secs,
        sent: load.total,
        achievedRate: load.achievedRate,
        lagMs: load.lagMs,
        completed: lat.count,
        failed,
        latency: lat.summary(),
        cpu,
      }
      if (round > 0) runs.push(run)
      return run
    }

    // both paths warm at the highest fixed rate first: a worker's first few thousand requests also compile its hot
    // functions (a few hundred TurboFan jobs on these 2 cores), which is start-up, not the steady state measured here
    const top = Math.max(...rates)
    const WARM_SECONDS = o.quick ? 2 : 4
    const warm = progress(`latency: warm-up (mesh 100/s for 2 s, then raw and mesh ${top}/s for ${WARM_SECONDS} s each; not recorded)`)
    await mesh(100, 2, "warm", false)
    await raw(top, WARM_SECONDS, "warm-raw")
    await mesh(top, WARM_SECONDS, "warm-top", false)
    warm.done()
    // rounds of raw and mesh in turn at each rate (ABAB): drift in the neighbours' load hits both alike
    for (let r = 1; r <= rounds; r++)
      for (const rate of rates) {
        await raw(rate, seconds, `r${rate}-${r}`, r)
        await mesh(rate, seconds, `m${rate}-${r}`, true, r)
      }
    // saturation: the offered rate climbs until a system no longer keeps up (see keepsUp); raw and mesh in turn
    const alive = { raw: true, mesh: true }
    for (const rate of ladder) {
      if (!alive.raw && !alive.mesh) break
      if (alive.raw) {
        const run = await raw(rate, ladderSeconds, `sr${rate}`)
        ladderRuns.push(run)
        alive.raw = keepsUp(run)
      }
      if (alive.mesh) {
        const run = (await mesh(rate, ladderSeconds, `sm${rate}`, true))!
        ladderRuns.push(run)
        alive.mesh = keepsUp(run)
        // a saturated mesh leaves a backlog behind: let it drain before the next step
        if (!alive.mesh) await sleep(2000)
      }
    }
    await sub.close()
  } finally {
    await Promise.allSettled([routing?.stop(), invoice?.stop()])
    await nc.close()
    await server.close()
    agent.destroy()
  }
  return report(runs, seconds, rounds, ladderRuns, ladder)
}

const MESH = "mesh: POST /routes → InvoiceGenerated"
const RAW = "raw: js.publish → consume()"
/** A system keeps up with a rate when the sender reached it, nothing failed or was lost, and p99 stayed under 250 ms
 * (a queue that grows for the whole step shows up as a p99 of seconds). */
const keepsUp = (r: Run) => r.achievedRate >= 0.95 * r.rate && r.failed === 0 && r.completed === r.sent && r.latency.p99 <= 250

function report(runs: Run[], seconds: number, rounds: number, ladderRuns: Run[], ladder: number[]): Section {
  const notes: string[] = []
  for (const r of [...runs, ...ladderRuns]) {
    if (r.system.endsWith("202")) continue // shares its run with the → InvoiceGenerated row
    const at = `${r.system} at ${r.rate}/s${r.round ? ` (round ${r.round})` : " (saturation step)"}`
    if (r.round && r.achievedRate < 0.95 * r.rate) notes.push(`${at}: the sender reached only ${Math.round(r.achievedRate)}/s.`)
    if (r.round && r.failures && r.failed)
      notes.push(
        `${at}: ${r.failed} requests failed (${Object.entries(r.failures)
          .map(([k, n]) => `${n}× ${k === "0" ? "no answer" : k}`)
          .join(", ")}).`,
      )
    if (r.round && r.completed + r.failed < r.sent)
      notes.push(`${at}: ${r.sent - r.completed - r.failed} of ${r.sent} not completed within 20 s.`)
  }
  const span = (xs: number[], f: (x: number) => string) =>
    xs.length > 1 ? `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})` : f(xs[0] ?? NaN)
  const times = (x: number) => `${x.toFixed(2)}×`
  // the ratio to the raw floor of the same rate and round, then the median over the rounds
  const vsFloor = (system: string, rate: number, q: "p50" | "p99") =>
    runs
      .filter((r) => r.system === system && r.rate === rate)
      .map((r) => r.latency[q] / runs.find((x) => x.system === RAW && x.rate === r.rate && x.round === r.round)!.latency[q])
  const systems = [...new Set(runs.map((r) => r.system))]
  const rates = [...new Set(runs.map((r) => r.rate))]
  const rows = rates.flatMap((rate) =>
    systems.map((system) => {
      const rs = runs.filter((r) => r.system === system && r.rate === rate)
      const cpu = rs.filter((r) => r.cpu)
      return [
        system,
        rate,
        Math.round(median(rs.map((r) => r.achievedRate))),
        `${rs.reduce((a, r) => a + r.completed, 0)}/${rs.reduce((a, r) => a + r.sent, 0)}`,
        span(
          rs.map((r) => r.latency.p50),
          ms,
        ),
        span(
          rs.map((r) => r.latency.p99),
          ms,
        ),
        ms(Math.max(...rs.map((r) => r.latency.max))),
        system === RAW ? "1.00×" : span(vsFloor(system, rate, "p50"), times),
        system === RAW ? "1.00×" : span(vsFloor(system, rate, "p99"), times),
        cpu.length
          ? (["routing", "invoice", "server", "bench"] as const)
              .map((k) => (cpu[0]!.cpu![k] === undefined ? "–" : median(cpu.map((r) => r.cpu![k]!)).toFixed(2)))
              .join(" / ")
          : "",
      ]
    }),
  )
  const p99At1000 = median(vsFloor(MESH, 1000, "p99"))
  const step = (system: string, rate: number) => ladderRuns.find((r) => r.system === system && r.rate === rate)
  const saturation = (system: string) => {
    const failed = ladder.find((rate) => {
      const r = step(system, rate)
      return r && !keepsUp(r)
    })
    const kept = ladder.filter((rate) => step(system, rate) && keepsUp(step(system, rate)!))
    return failed
      ? `${failed}/s (kept up with ${kept.length ? `${kept.at(-1)}/s` : "none of the steps"})`
      : `above ${ladder.at(-1)}/s (kept up with every step)`
  }
  const cell = (r: Run | undefined) =>
    r
      ? `${Math.round(r.achievedRate)}/s sent, ${r.completed}/${r.sent} done, p99 ${ms(r.latency.p99)}${keepsUp(r) ? "" : " — saturated"}`
      : "–"
  const ladderRows = ladder
    .filter((rate) => step(RAW, rate) || step(MESH, rate))
    .map((rate) => [rate, cell(step(RAW, rate)), cell(step(MESH, rate))])
  notes.unshift(
    `Goal: mesh p99 at 1,000 req/s ≤ 3× the raw floor's: ${p99At1000 <= 3 ? "met" : "NOT met"} (${p99At1000.toFixed(2)}×, the median of ${rounds} round${rounds > 1 ? "s" : ""}; spread in the table).`,
    `Saturation (the first step of the ladder a system did not keep up with: the sender reached < 95 % of the rate, a request failed or was not completed, or p99 > 250 ms): raw floor ${saturation(RAW)}; mesh ${saturation(MESH)}.`,
  )
  return {
    name: "latency",
    title: "End-to-end latency",
    tables: [
      {
        title: `Open-loop latency, ${seconds} s per rate, ${rounds} round${rounds > 1 ? "s" : ""} of raw then mesh (ms from when each request was due; median (min–max) over the rounds)`,
        columns: [
          "path",
          "offered /s",
          "sent /s",
          "completed",
          "p50",
          "p99",
          "max",
          "p50 vs raw",
          "p99 vs raw",
          "CPU ms/event: routing / invoice / nats-server / bench process",
        ],
        rows,
      },
      {
        title: "Saturation ladder (each step a few seconds; raw and mesh in turn)",
        columns: ["offered /s", "raw floor", "mesh"],
        rows: ladderRows,
      },
    ],
    notes: [
      ...notes,
      "routing and invoice run as their own processes (workers/routing.ts, workers/invoice.ts, defaults: concurrency 64); load generator, subscriber and the raw floor share the bench process; everything shares 2 cores with nats-server. CPU per request is each process's over the round, all threads, from /proc (the bench process's includes its HTTP client in mesh rounds and its publishes and consumer in raw rounds).",
      "The mesh path is HTTP + two JetStream hops (RouteCalculated, then invoice's once-guarded InvoiceGenerated), each publish's ack awaited; the raw floor is one hop. Their ratio is the price of the whole chain, not of the runtime alone.",
    ],
    data: { runs, ladderRuns },
  }
}

if (isMain(import.meta)) {
  const { quick } = args()
  print([await latency({ quick })])
  process.exit(0)
}
