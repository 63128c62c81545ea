// bench/cascade.ts — what a failing invoice does to routing, side by side: the synchronous chain (bench/sync-chain.ts:
// routing calls invoice over HTTP with a 2 s timeout, as the old system did) and the mesh (routing → NATS → invoice).
// Phases under the same open-loop load: healthy, invoice killed, invoice hung (takes work, never finishes), invoice
// slow (1 s per event), then invoice back. For each: routing's success rate and latency. For the mesh, afterwards:
// every accepted route has exactly one invoice (distinct routeIds in INVOICE).
//   npm run bench -- cascade [--quick]
import { jetstream } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { topology } from "../contracts/mod.ts"
import { isMain } from "../mesh/main.ts"
import { freePort } from "../mesh/natsd.ts"
import { provision } from "../mesh/provision.ts"
import { post, routeRequest } from "./latency.ts"
import { args, benchServer, type Child, histogram, type Latency, ms, type Opts, openLoop, print, progress, ratio, type Section, sleep, spawnTs, startWorker } from "./lib.ts"

const RATE = 100
const SLOW_MS = 1000
const SYNC_TIMEOUT_MS = 2000
// what a killed or hung invoice held comes back after ack_wait: 10 s instead of the default 30 s keeps recovery short
const ACK_WAIT_SECONDS = 10
const PHASES = ["healthy", "invoice killed", "invoice hung", "invoice slow", "invoice back"] as const
type Phase = (typeof PHASES)[number]

type PhaseResult = { system: "sync" | "mesh"; phase: Phase; sent: number; ok: number; statuses: Record<string, number>; latency: Latency }

async function load(system: "sync" | "mesh", phase: Phase | "warm-up", port: number, seconds: number, accepted?: string[]): Promise<PhaseResult> {
  const lat = histogram()
  const statuses: Record<string, number> = {}
  let ok = 0
  const { total } = await openLoop(
    RATE,
    seconds,
    async (i, due) => {
      const r = await post(port, "/routes", routeRequest(`${system}-${phase}-${i}`), 10_000)
      lat.record(performance.now() - due)
      const status = r.status ? String(r.status) : `error: ${r.body}`
      statuses[status] = (statuses[status] ?? 0) + 1
      if (r.status === 201 || r.status === 202) {
        ok++
        if (accepted) accepted.push((JSON.parse(r.body) as { routeId: string }).routeId)
      }
    },
    `cascade ${system}: ${phase}`,
  )
  return { system, phase: phase as Phase, sent: total, ok, statuses, latency: lat.summary() }
}

async function syncChain(seconds: number, warmUp: number): Promise<PhaseResult[]> {
  const routingPort = await freePort()
  const invoicePort = await freePort()
  const startInvoice = async (mode: string) => {
    const c = spawnTs("bench/sync-chain.ts", {}, ["invoice", "--port", String(invoicePort), "--mode", mode, "--slow-ms", String(SLOW_MS)])
    await c.waitFor(/^listening/)
    return c
  }
  let invoice = await startInvoice("ok")
  const routing = spawnTs("bench/sync-chain.ts", {}, ["routing", "--port", String(routingPort), "--invoice", `http://127.0.0.1:${invoicePort}`, "--timeout-ms", String(SYNC_TIMEOUT_MS)])
  const out: PhaseResult[] = []
  try {
    await routing.waitFor(/^listening/)
    await load("sync", "warm-up", routingPort, warmUp)
    out.push(await load("sync", "healthy", routingPort, seconds))
    await invoice.stop("SIGKILL")
    out.push(await load("sync", "invoice killed", routingPort, seconds))
    invoice = await startInvoice("hang")
    out.push(await load("sync", "invoice hung", routingPort, seconds))
    await invoice.stop("SIGKILL")
    invoice = await startInvoice("slow")
    out.push(await load("sync", "invoice slow", routingPort, seconds))
    await invoice.stop("SIGKILL")
    invoice = await startInvoice("ok")
    out.push(await load("sync", "invoice back", routingPort, seconds))
  } finally {
    await Promise.allSettled([invoice.stop("SIGKILL"), routing.stop("SIGKILL")])
  }
  return out
}

/** routeIds of every InvoiceGenerated in the stream, read with an ordered consumer. */
async function invoicedRouteIds(url: string): Promise<string[]> {
  const nc = await connect({ servers: url })
  const js = jetstream(nc)
  const c = await js.consumers.get("INVOICE")
  const ids: string[] = []
  while (true) {
    const batch = await c.fetch({ max_messages: 1000, expires: 2000 })
    let got = 0
    for await (const m of batch) (got++, ids.push(m.json<{ routeId: string }>().routeId))
    if (got === 0) break
  }
  await nc.close()
  return ids
}

async function mesh(seconds: number, warmUp: number): Promise<{ phases: PhaseResult[]; accepted: number; invoiced: number; distinct: number; missing: number; extra: number; recoverySeconds: number }> {
  const server = await benchServer()
  const accepted: string[] = []
  const out: PhaseResult[] = []
  let invoice: Child | undefined
  let routing: (Child & { port: number }) | undefined
  try {
    const nc = await connect({ servers: server.url })
    await provision(nc, topology({ ackWaitSeconds: ACK_WAIT_SECONDS }))
    await nc.close()
    routing = await startWorker("workers/routing.ts", server.url)
    const startInvoice = (env: Record<string, string> = {}) => startWorker("workers/invoice.ts", server.url, env)
    invoice = await startInvoice()
    const port = routing.port
    await load("mesh", "warm-up", port, warmUp, accepted)
    out.push(await load("mesh", "healthy", port, seconds, accepted))
    await invoice.stop("SIGKILL")
    out.push(await load("mesh", "invoice killed", port, seconds, accepted))
    invoice = await startInvoice({ INVOICE_HANG: "1" })
    out.push(await load("mesh", "invoice hung", port, seconds, accepted))
    await invoice.stop("SIGKILL")
    invoice = await startInvoice({ INVOICE_SLOW_MS: String(SLOW_MS) })
    out.push(await load("mesh", "invoice slow", port, seconds, accepted))
    await invoice.stop("SIGKILL")
    invoice = await startInvoice()
    const back = performance.now()
    out.push(await load("mesh", "invoice back", port, seconds, accepted))

    // what a killed or hung process held comes back after ack_wait; wait for every accepted route
    const p = progress("cascade mesh: waiting until every accepted route is invoiced")
    const want = new Set(accepted)
    let ids: string[] = []
    const deadline = Date.now() + 120_000
    while (Date.now() < deadline) {
      ids = await invoicedRouteIds(server.url)
      const have = new Set(ids)
      const missing = [...want].filter((id) => !have.has(id)).length
      p.update(`${have.size}/${want.size} routes invoiced`)
      if (missing === 0) break
      await sleep(2000)
    }
    const recoverySeconds = (performance.now() - back) / 1000
    await sleep(3000) // a duplicate, if the mesh made one, would show up here
    ids = await invoicedRouteIds(server.url)
    const have = new Set(ids)
    p.done(`${have.size} routes invoiced, ${ids.length} invoices`)
    return {
      phases: out,
      accepted: want.size,
      invoiced: ids.length,
      distinct: have.size,
      missing: [...want].filter((id) => !have.has(id)).length,
      extra: [...have].filter((id) => !want.has(id)).length,
      recoverySeconds,
    }
  } finally {
    await Promise.allSettled([invoice?.stop("SIGKILL"), routing?.stop("SIGTERM")])
    await server.close()
  }
}

export async function cascade(o: Opts): Promise<Section> {
  const seconds = o.quick ? 2 : 8
  const warmUp = o.quick ? 1 : 5
  const sync = await syncChain(seconds, warmUp)
  const m = await mesh(seconds, warmUp)
  const rows = [...sync, ...m.phases].map((r) => {
    const healthy = (r.system === "sync" ? sync : m.phases).find((x) => x.phase === "healthy")!
    const failures = Object.entries(r.statuses)
      .filter(([s]) => s !== "201" && s !== "202")
      .map(([s, n]) => `${n}× ${s}`)
      .join(", ")
    return [
      r.system === "sync" ? "sync chain (HTTP, 2 s timeout)" : "mesh (routing → NATS → invoice)",
      r.phase,
      r.sent,
      `${((100 * r.ok) / r.sent).toFixed(1)} %${failures ? ` (${failures})` : ""}`,
      ms(r.latency.p50),
      ms(r.latency.p99),
      ms(r.latency.max),
      ratio(r.latency.p99, healthy.latency.p99),
    ]
  })
  const healthy = m.phases.find((x) => x.phase === "healthy")!
  const worst = Math.max(...m.phases.map((x) => x.latency.p99 / healthy.latency.p99))
  const exact = m.missing === 0 && m.extra === 0 && m.invoiced === m.distinct && m.distinct === m.accepted
  return {
    name: "cascade",
    title: "Cascade: synchronous chain vs mesh",
    tables: [
      {
        title: `Routing under ${RATE} req/s open-loop, ${seconds} s per phase (latency in ms from when each request was due; 201/202 = success)`,
        columns: ["system", "phase", "requests", "routing success", "p50", "p99", "max", "p99 vs healthy"],
        rows,
      },
    ],
    notes: [
      `Mesh goal — routing p99 ≤ 1.10× healthy in every phase: ${worst <= 1.1 ? "met" : "NOT met"} (worst ${worst.toFixed(2)}×).`,
      `Mesh after recovery: ${m.accepted} routes accepted, ${m.invoiced} invoices for ${m.distinct} distinct routeIds; missing ${m.missing}, unexpected ${m.extra} — ${exact ? "every invoice exactly once" : "NOT exactly once"} (all invoiced ${m.recoverySeconds.toFixed(0)} s after invoice came back; what the killed and hung processes held returns after ack_wait, ${ACK_WAIT_SECONDS} s here).`,
      `Sync chain: killed → routing fails at once (502); hung → every request waits the ${SYNC_TIMEOUT_MS / 1000} s timeout and fails (504); slow (${SLOW_MS} ms per invoice) → routing answers, ${SLOW_MS} ms later. Nothing retries a failed request, so those routes have no invoice either.`,
      `Mesh: invoice hung = INVOICE_HANG=1 (handlers never return; the process holds PREFETCH events), slow = INVOICE_SLOW_MS=${SLOW_MS}; routing only waits for the RouteCalculated ack from the stream.`,
    ],
    data: { sync, mesh: m },
  }
}

if (isMain(import.meta)) {
  const { quick } = args()
  print([await cascade({ quick })])
  process.exit(0)
}
