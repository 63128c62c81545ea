// bench/cascade.ts — what a failing invoice does to routing, side by side: the synchronous chain (bench/sync-chain.ts:
// routing calls invoice over HTTP with a 2 s timeout, as the old system did) and the mesh (routing → NATS → invoice).
// Phases under the same open-loop load: healthy, invoice killed, invoice hung (takes work, never finishes), invoice
// slow (1 s per event), invoice back, with a healthy phase after each failure (the noise floor). For each: routing's
// success rate and latency. For the mesh, afterwards: every accepted route has exactly one invoice (distinct
// routeIds in INVOICE).
//   npm run bench -- cascade [--quick]
import { jetstream } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { topology } from "../contracts/mod.ts"
import { isMain } from "../mesh/main.ts"
import { freePort } from "../mesh/cli/natsd.ts"
import { provision } from "../mesh/provision.ts"
import { post, routeRequest } from "./latency.ts"
import {
  args,
  benchServer,
  type Child,
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
  spawnTs,
  startWorker,
} from "./lib.ts"

const RATE = 100
const SLOW_MS = 1000
const SYNC_TIMEOUT_MS = 2000
// what a killed or hung invoice held comes back after ack_wait: 10 s instead of the default 30 s keeps recovery short
const ACK_WAIT_SECONDS = 10
// the mesh's invoice runs at nice 10: on 2 shared cores a restarted invoice catching up would otherwise take CPU
// from routing (co-location, not coupling). Only the mesh can do that: nobody waits on its invoice, while the sync
// chain's routing waits on every answer, so a deprioritised sync invoice would slow routing itself.
const INVOICE_NICE = 10
// and its catch-up is capped at 2× the offered rate (MAX_RATE, events/s): a backlog of ~1,500 events drains in about
// one phase, without a burst of NATS and CPU work landing on the cores routing shares with it
const CATCH_UP_RATE = 2 * RATE
type Mode = "ok" | "hang" | "slow" | "down"
// healthy phases between the failures: on a shared machine routing's p99 moves between two healthy runs too, and
// that spread is the floor any "p99 vs healthy" has to be read against
const STEPS: { phase: string; invoice: Mode }[] = [
  { phase: "healthy", invoice: "ok" },
  { phase: "invoice killed", invoice: "down" },
  { phase: "healthy (invoice restarted)", invoice: "ok" },
  { phase: "invoice hung", invoice: "hang" },
  { phase: "healthy (invoice restarted)", invoice: "ok" },
  { phase: "invoice slow", invoice: "slow" },
  { phase: "invoice back", invoice: "ok" },
]

type PhaseResult = { system: "sync" | "mesh"; phase: string; sent: number; ok: number; statuses: Record<string, number>; latency: Latency }
type Histogram = ReturnType<typeof histogram>

let requests = 0

/** `healthy`: also records each latency there (the healthy phases pooled: one p99 over all of them is the baseline) */
async function load(
  system: "sync" | "mesh",
  phase: string,
  port: number,
  seconds: number,
  accepted?: string[],
  healthy?: Histogram,
): Promise<PhaseResult> {
  const lat = histogram()
  const statuses: Record<string, number> = {}
  let ok = 0
  const { total } = await openLoop(
    RATE,
    seconds,
    async (_i, due) => {
      const r = await post(port, "/routes", routeRequest(`${system}-${requests++}`), 10_000)
      const took = performance.now() - due
      lat.record(took)
      healthy?.record(took)
      const status = r.status ? String(r.status) : `error: ${r.body}`
      statuses[status] = (statuses[status] ?? 0) + 1
      if (r.status === 201 || r.status === 202) {
        ok++
        if (accepted) accepted.push((JSON.parse(r.body) as { routeId: string }).routeId)
      }
    },
    `cascade ${system}: ${phase}`,
  )
  return { system, phase, sent: total, ok, statuses, latency: lat.summary() }
}

/** Runs the steps against routing on `port`, switching invoice (kill -9, then start in the step's mode) between them. */
async function phases(
  system: "sync" | "mesh",
  port: number,
  warmUp: number,
  seconds: number,
  invoice: (mode: Mode) => Promise<Child | undefined>,
  accepted?: string[],
) {
  const out: PhaseResult[] = []
  const healthy = histogram()
  let mode: Mode = "ok"
  let current = await invoice("ok")
  try {
    await load(system, "warm-up", port, warmUp, accepted)
    for (const step of STEPS) {
      if (step.invoice !== mode) {
        await current?.stop("SIGKILL")
        current = await invoice((mode = step.invoice))
      }
      out.push(
        await load(
          system,
          step.phase,
          port,
          seconds,
          accepted,
          step.invoice === "ok" && step.phase !== "invoice back" ? healthy : undefined,
        ),
      )
    }
  } finally {
    await current?.stop("SIGKILL")
  }
  return { phases: out, healthy: healthy.summary() }
}

type Run = { phases: PhaseResult[]; healthy: Latency }

async function syncChain(seconds: number, warmUp: number): Promise<Run> {
  const routingPort = await freePort()
  const invoicePort = await freePort()
  const invoice = async (mode: Mode) => {
    if (mode === "down") return undefined
    const c = spawnTs("bench/sync-chain.ts", {}, ["invoice", "--port", String(invoicePort), "--mode", mode, "--slow-ms", String(SLOW_MS)])
    await c.waitFor(/^listening/)
    return c
  }
  const routing = spawnTs("bench/sync-chain.ts", {}, [
    "routing",
    "--port",
    String(routingPort),
    "--invoice",
    `http://127.0.0.1:${invoicePort}`,
    "--timeout-ms",
    String(SYNC_TIMEOUT_MS),
  ])
  try {
    await routing.waitFor(/^listening/)
    return await phases("sync", routingPort, warmUp, seconds, invoice)
  } finally {
    await routing.stop("SIGKILL")
  }
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
    for await (const m of batch) got++, ids.push(m.json<{ routeId: string }>().routeId)
    if (got === 0) break
  }
  await nc.close()
  return ids
}

async function mesh(
  seconds: number,
  warmUp: number,
): Promise<Run & { accepted: number; invoiced: number; distinct: number; missing: number; extra: number; recoverySeconds: number }> {
  const server = await benchServer()
  const accepted: string[] = []
  let settled: Child | undefined
  let routing: (Child & { port: number }) | undefined
  try {
    const nc = await connect({ servers: server.url })
    await provision(nc, topology({ ackWaitSeconds: ACK_WAIT_SECONDS }))
    await nc.close()
    routing = await startWorker("workers/routing.ts", server.url)
    const env: Record<Mode, Record<string, string>> = {
      ok: {},
      hang: { INVOICE_HANG: "1" },
      slow: { INVOICE_SLOW_MS: String(SLOW_MS) },
      down: {},
    }
    const invoice = (mode: Mode) =>
      mode === "down"
        ? Promise.resolve(undefined)
        : startWorker("workers/invoice.ts", server.url, { MAX_RATE: String(CATCH_UP_RATE), ...env[mode] }, INVOICE_NICE)
    const out = await phases("mesh", routing.port, warmUp, seconds, invoice, accepted)
    const loadEnded = performance.now()
    settled = await invoice("ok")

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
    const recoverySeconds = (performance.now() - loadEnded) / 1000
    await sleep(3000) // a duplicate, if the mesh made one, would show up here
    ids = await invoicedRouteIds(server.url)
    const have = new Set(ids)
    p.done(`${have.size} routes invoiced, ${ids.length} invoices`)
    return {
      ...out,
      accepted: want.size,
      invoiced: ids.length,
      distinct: have.size,
      missing: [...want].filter((id) => !have.has(id)).length,
      extra: [...have].filter((id) => !want.has(id)).length,
      recoverySeconds,
    }
  } finally {
    await Promise.allSettled([settled?.stop("SIGKILL"), routing?.stop("SIGTERM")])
    await server.close()
  }
}

export async function cascade(o: Opts): Promise<Section> {
  const seconds = o.quick ? 2 : 15
  const warmUp = o.quick ? 1 : 10
  const sync = await syncChain(seconds, warmUp)
  const m = await mesh(seconds, warmUp)
  // the baseline: one p99 over every request of the healthy phases together (3 × the samples of one phase)
  const base = { sync: sync.healthy.p99, mesh: m.healthy.p99 }
  const rows = [...sync.phases, ...m.phases].map((r) => {
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
      ratio(r.latency.p99, base[r.system]),
    ]
  })
  const spread = (rs: PhaseResult[]) => {
    const p99s = rs.filter((x) => x.phase.startsWith("healthy")).map((x) => x.latency.p99)
    return `${ms(Math.min(...p99s))}–${ms(Math.max(...p99s))} ms (${(Math.max(...p99s) / Math.min(...p99s)).toFixed(2)}×)`
  }
  // the goal's phases are the issue's three failures; "invoice back" (the catch-up) is reported beside them
  const failing = m.phases.filter((x) => x.phase.startsWith("invoice") && x.phase !== "invoice back")
  const worst = Math.max(...failing.map((x) => x.latency.p99 / base.mesh))
  const back = m.phases.find((x) => x.phase === "invoice back")!
  const exact = m.missing === 0 && m.extra === 0 && m.invoiced === m.distinct && m.distinct === m.accepted
  return {
    name: "cascade",
    title: "Cascade: synchronous chain vs mesh",
    tables: [
      {
        title: `Routing under ${RATE} req/s open-loop, ${seconds} s per phase (latency in ms from when each request was due; 201/202 = success)`,
        columns: [
          "system",
          "phase",
          "requests",
          "routing success",
          "p50",
          "p99",
          "max",
          "p99 vs healthy (p99 of the healthy phases pooled)",
        ],
        rows,
      },
    ],
    notes: [
      `Mesh goal — routing p99 ≤ 1.10× healthy while invoice is killed, hung or slow: ${worst <= 1.1 ? "met" : "NOT met"} (worst ${worst.toFixed(2)}×). While the restarted invoice catches up on the slow phase's backlog (invoice back, on the same 2 cores): ${(back.latency.p99 / base.mesh).toFixed(2)}×. Read both against the noise floor: the mesh's healthy phases alone spread ${spread(m.phases)}, the sync chain's ${spread(sync.phases)}. Healthy p99, pooled: mesh ${ms(base.mesh)} ms, sync chain ${ms(base.sync)} ms. Success stayed at ${((100 * m.phases.reduce((a, x) => a + x.ok, 0)) / m.phases.reduce((a, x) => a + x.sent, 0)).toFixed(1)} % for the mesh throughout.`,
      `Mesh after recovery: ${m.accepted} routes accepted, ${m.invoiced} invoices for ${m.distinct} distinct routeIds; missing ${m.missing}, unexpected ${m.extra} — ${exact ? "every invoice exactly once" : "NOT exactly once"} (all invoiced ${m.recoverySeconds.toFixed(0)} s after invoice came back; what the killed and hung processes held returns after ack_wait, ${ACK_WAIT_SECONDS} s here).`,
      `Sync chain: killed → routing fails at once (502); hung → every request waits the ${SYNC_TIMEOUT_MS / 1000} s timeout and fails (504); slow (${SLOW_MS} ms per invoice) → routing answers, ${SLOW_MS} ms later. Nothing retries a failed request, so those routes have no invoice either.`,
      `The mesh's invoice runs at nice ${INVOICE_NICE} and with MAX_RATE=${CATCH_UP_RATE} (2× the offered rate) so that a restarted invoice catching up does not take the CPU routing needs on this 2-core box (co-location, not coupling: on a node of its own it would need neither); the sync chain's invoice runs at normal priority and uncapped, since its routing waits on every invoice answer.`,
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
