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
  cpuMsOf,
  histogram,
  type Latency,
  ms,
  type Opts,
  openLoop,
  print,
  progress,
  ratio,
  type Section,
  sleep,
  startWorker,
} from "./lib.ts"

type Run = {
  system: string
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
  /** CPU ms per event of the routing and invoice processes (all their threads, from /proc) */
  cpu?: { routing: number; invoice: number }
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
  const rates = o.quick ? [200, 1000] : [200, 1000, 3000]
  const seconds = o.quick ? 3 : 8
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

    const mesh = async (rate: number, secs: number, label: string, record: boolean) => {
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
      const cpu0 = [cpuMsOf(routing!.pid), cpuMsOf(invoice!.pid)]
      const load = await openLoop(
        rate,
        secs,
        async (i, dueAt) => {
          const truckId = `${label}-${i}`
          due.set(truckId, dueAt)
          const r = await post(routing!.port, "/routes", routeRequest(truckId))
          if (r.status === 202) accepted.record(performance.now() - dueAt)
          else failed++, due.delete(truckId), (failures[r.status] = (failures[r.status] ?? 0) + 1)
        },
        `latency mesh ${label}`,
      )
      await waitFor(() => due.size === 0, 20_000)
      const n = Math.max(1, e2e.count)
      const cpu = { routing: (cpuMsOf(routing!.pid) - cpu0[0]!) / n, invoice: (cpuMsOf(invoice!.pid) - cpu0[1]!) / n }
      const lost = due.size
      due.clear()
      if (record) {
        const base = { rate, seconds: secs, sent: load.total, achievedRate: load.achievedRate, lagMs: load.lagMs, failed, failures }
        runs.push({ system: "mesh: POST /routes → InvoiceGenerated", ...base, completed: e2e.count, latency: e2e.summary(), cpu })
        runs.push({ system: "mesh: POST /routes → 202", ...base, completed: accepted.count, latency: accepted.summary() })
        if (lost) process.stderr.write(`  ${lost} invoices not seen within 20 s\n`)
      }
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
    const raw = async (rate: number, secs: number, label: string) => {
      const lat = histogram()
      let failed = 0
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
      rawDue.clear()
      runs.push({
        system: "raw: js.publish → consume()",
        rate,
        seconds: secs,
        sent: load.total,
        achievedRate: load.achievedRate,
        lagMs: load.lagMs,
        completed: lat.count,
        failed,
        latency: lat.summary(),
      })
    }

    const warm = progress("latency: warm-up (100/s for 2 s, not recorded)")
    await mesh(100, 2, "warm", false)
    warm.done()
    for (const rate of rates) {
      await raw(rate, seconds, `r${rate}`)
      await mesh(rate, seconds, `m${rate}`, true)
    }
    await sub.close()
  } finally {
    await Promise.allSettled([routing?.stop(), invoice?.stop()])
    await nc.close()
    await server.close()
    agent.destroy()
  }
  return report(runs, seconds)
}

function report(runs: Run[], seconds: number): Section {
  const notes: string[] = []
  const rows = runs.map((r) => {
    const floor = runs.find((x) => x.rate === r.rate && x.system.startsWith("raw"))!
    const perRun = !r.system.endsWith("202") // the → 202 row shares its run with the → InvoiceGenerated row
    if (perRun && r.achievedRate < 0.95 * r.rate)
      notes.push(`${r.system} at ${r.rate}/s: the offered rate was not achieved (the sender reached ${Math.round(r.achievedRate)}/s).`)
    if (perRun && r.failures && r.failed)
      notes.push(
        `${r.system} at ${r.rate}/s: ${r.failed} requests failed (${Object.entries(r.failures)
          .map(([k, n]) => `${n}× ${k === "0" ? "no answer" : k}`)
          .join(", ")}).`,
      )
    if (perRun && r.completed + r.failed < r.sent)
      notes.push(`${r.system} at ${r.rate}/s: ${r.sent - r.completed - r.failed} of ${r.sent} not completed within 20 s of the last send.`)
    return [
      r.system,
      r.rate,
      Math.round(r.achievedRate),
      Math.round(r.lagMs),
      `${r.completed}/${r.sent}${r.failed ? ` (${r.failed} failed)` : ""}`,
      ms(r.latency.p50),
      ms(r.latency.p95),
      ms(r.latency.p99),
      ms(r.latency.max),
      r === floor ? "1.00×" : ratio(r.latency.p50, floor.latency.p50),
      r === floor ? "1.00×" : ratio(r.latency.p99, floor.latency.p99),
      r.cpu ? `${r.cpu.routing.toFixed(2)} / ${r.cpu.invoice.toFixed(2)}` : "",
    ]
  })
  return {
    name: "latency",
    title: "End-to-end latency",
    tables: [
      {
        title: `Open-loop latency, ${seconds} s per rate (ms, from when each request was due)`,
        columns: [
          "path",
          "offered /s",
          "sent /s",
          "sender late ≤ ms",
          "completed",
          "p50",
          "p95",
          "p99",
          "max",
          "p50 vs raw",
          "p99 vs raw",
          "CPU ms/event routing / invoice",
        ],
        rows,
      },
    ],
    notes: [
      "routing and invoice run as their own processes (workers/routing.ts, workers/invoice.ts, defaults: concurrency 16); load generator, subscriber and the raw floor share the bench process; everything shares 2 cores with nats-server.",
      "The mesh path is HTTP + two JetStream hops + invoice's exactly-once KV (get + create) + two awaited publish acks; the raw floor is one hop. Their ratio is the price of the whole chain, not of the runtime alone.",
      ...notes,
    ],
    data: { runs },
  }
}

if (isMain(import.meta)) {
  const { quick } = args()
  print([await latency({ quick })])
  process.exit(0)
}
