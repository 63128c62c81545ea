// bench/fleet-soak.ts — the reference fleet, time-compressed, through the real workers as child processes (as
// `npm start` runs them, each with its own NATS user on a server from nats.conf): trucks post position batches to
// tracking, dispatchers post routes to routing, invoice, tracking and portal consume, ops watches. One customer has
// 10× each other's volume; one truck pings 100× too often. Afterwards every route must have exactly one invoice, no
// business event may have been refused, and the noisy truck must be held to its per-truck cap.
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import { limits, REFERENCE_FLEET, topology } from "../contracts/mod.ts"
import { capacity } from "../mesh/capacity.ts"
import { provision } from "../mesh/provision.ts"
import { connectTo, startServer } from "../test/harness.ts"
import { testAuth } from "../test/credentials.ts"
import { type Child, cpuMsOf, histogram, type Latency, rssMiB, sleep, startWorker } from "./lib.ts"

export type SoakOptions = {
  trucks: number
  /** positions from the well-behaved trucks (rounds = positions / trucks, one ping per truck per round) */
  positions: number
  routes: number
  /** customers besides the big one, which sends 10× each of theirs */
  customers: number
  /** the noisy truck's pings per round (100: a hundred times too often) */
  noisyFactor: number
  /** CAPACITY_* given to provisioning and every worker (a short run shrinks the per-truck cap to reach it) */
  capacityEnv: Record<string, string>
  sampleMs: number
  /** stop offering load after this many seconds (the drain and checks still run): a shared machine may be too slow */
  budgetSeconds?: number
  /**
   * the load waits while the consumers have more than this many events pending in total: the fleet is compressed in
   * time, so without it ingestion (cheap) runs ahead of projection (dear) and the run measures a backlog instead
   */
  maxPending?: number
  log(line: string): void
}

export const WORKERS = ["routing", "invoice", "tracking", "portal", "ops"] as const
type Name = (typeof WORKERS)[number]
const CONSUMERS: [string, string][] = [
  ["ROUTING", "invoice"],
  ["ROUTING", "tracking"],
  ["ROUTING", "portal"],
  ["POSITIONS", "tracking"],
  ["INVOICE", "portal"],
  ["TRACKING", "portal"],
]
const BUSINESS = ["ROUTING", "INVOICE", "TRACKING", "POSITIONS"] as const
const BATCH = 500
const ROUTES_IN_FLIGHT = 32
const BATCHES_IN_FLIGHT = 4

export type Sample = { t: number; rss: Record<string, number>; cpuMs: Record<string, number>; pending: Record<string, number> }

const truckId = (i: number) => `truck-${String(i).padStart(5, "0")}`
export const NOISY = "truck-noisy"
const customerOf = (i: number, n: number) => {
  // the big customer has weight 10, every other weight 1: out of every 10 + n routes, 10 are big's
  const k = i % (10 + n)
  return k < 10 ? "big" : `c${String(k - 10 + 1).padStart(2, "0")}`
}
const base = (i: number) => ({ lat: 52.3 + (i % 100) * 0.004, lon: 13.1 + Math.floor(i / 100) * 0.004 })

/** Runs `fn` over 0…n-1 with at most `width` at once. */
async function pool(n: number, width: number, fn: (i: number) => Promise<void>) {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) await fn(next++)
    }),
  )
}

export async function fleetSoak(o: SoakOptions) {
  const auth = testAuth()
  const c = capacity((k) => o.capacityEnv[k])
  const model = limits(c)
  const rounds = Math.ceil(o.positions / o.trucks)
  const names = ["big", ...Array.from({ length: o.customers }, (_, i) => `c${String(i + 1).padStart(2, "0")}`)]
  const tariffs = Object.fromEntries(names.map((n) => [n, { baseCents: 4500, perKmCents: 120, perStopCents: 800, currency: "EUR" }]))
  const server = await startServer({ auth: true })
  const children: Child[] = []
  let admin: NatsConnection | undefined
  try {
    admin = await connectTo(server, { user: "admin", pass: server.env.ADMIN_PASSWORD! })
    const jsm = await jetstreamManager(admin)
    await provision(admin, topology({ capacity: c }))
    const ports = {} as Record<Name, number>
    const pids = {} as Record<Name, number>
    for (const w of WORKERS) {
      const child = await startWorker(`workers/${w}.ts`, server.url, {
        NATS_USER: w,
        NATS_PASSWORD: server.env[`${w.toUpperCase()}_PASSWORD`]!,
        INVOICE_TARIFFS: JSON.stringify(tariffs),
        ...o.capacityEnv,
      })
      children.push(child)
      ports[w] = child.port
      pids[w] = child.pid
    }
    o.log(`workers up: ${WORKERS.map((w) => `${w} pid ${pids[w]}`).join(", ")}`)

    // --- sampling --------------------------------------------------------------------------------------------
    const samples: Sample[] = []
    const t0 = Date.now()
    const sample = async () => {
      const pending: Record<string, number> = {}
      for (const [s, d] of CONSUMERS) {
        const i = await jsm.consumers.info(s, d).catch(() => undefined)
        pending[`${s}/${d}`] = i ? i.num_pending + i.num_ack_pending : -1
      }
      samples.push({
        t: (Date.now() - t0) / 1000,
        rss: Object.fromEntries(WORKERS.map((w) => [w, rssMiB(pids[w]) ?? 0])),
        cpuMs: Object.fromEntries(WORKERS.map((w) => [w, cpuMsOf(pids[w])])),
        pending,
      })
    }
    let sampling = true
    const sampler = (async () => {
      while (sampling) await Promise.all([sample(), sleep(o.sampleMs)])
    })()

    // the portal's first page for one ordinary customer, and for the big one, probed throughout
    const portalLatency = { ordinary: histogram(), big: histogram(), idle: histogram() }
    // valid for a day: a link expiring mid-run would turn every later probe into a 401
    const day = { expiresAt: Math.floor(Date.now() / 1000) + 24 * 3600 }
    const tokens = { ordinary: await auth.customerToken("c01", day), big: await auth.customerToken("big", day) }
    const firstPage = async (who: "ordinary" | "big", into = portalLatency[who]) => {
      const started = performance.now()
      const res = await fetch(`http://127.0.0.1:${ports.portal}/api/invoices?customerId=${who === "big" ? "big" : "c01"}&limit=50`, {
        headers: { authorization: `Bearer ${tokens[who]}` },
      })
      await res.arrayBuffer()
      if (res.status === 200) into.record(performance.now() - started)
    }
    let probing = true
    const prober = (async () => {
      while (probing) await Promise.all([firstPage("ordinary").catch(() => {}), firstPage("big").catch(() => {}), sleep(1000)])
    })()

    // --- load --------------------------------------------------------------------------------------------------
    const statuses = { routes: new Map<number, number>(), positions: new Map<number, number>() }
    const count = (m: Map<number, number>, s: number) => m.set(s, (m.get(s) ?? 0) + 1)
    const routesPerCustomer = new Map<string, number>()
    const interval = c.positionIntervalSeconds * 1000
    // simulated time runs behind the clock, so no ping is ahead of it (tracking refuses those)
    const simStart = Date.now() - rounds * interval - 600_000
    let routesSent = 0
    let positionsSent = 0
    let noisySent = 0
    const retried = new Map<number, number>()
    const retriedPositions = new Map<number, number>()
    /**
     * As a client following the API: a 503 (nothing recorded) or 504 (maybe recorded) is sent again after its
     * Retry-After with the Idempotency-Key the answer carries, so it is recorded once; the final status is returned.
     */
    const post = async (port: number, path: string, body: unknown, key: string, again = retried): Promise<number> => {
      const text = JSON.stringify(body)
      let idempotencyKey: string | undefined
      for (let attempt = 1; ; attempt++) {
        const r = await fetch(`http://127.0.0.1:${port}${path}`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${key}`,
            ...(idempotencyKey ? { "idempotency-key": idempotencyKey } : {}),
          },
          body: text,
        }).catch(() => undefined)
        const status = r?.status ?? 0
        await r?.arrayBuffer()
        if ((status !== 503 && status !== 504) || attempt >= 30) return status
        count(again, status)
        idempotencyKey ??= r?.headers.get("idempotency-key") ?? undefined
        await sleep(Math.min(2000, 1000 * Number(r?.headers.get("retry-after") ?? 1)))
      }
    }
    const loadStart = Date.now()
    let roundsDone = 0
    let pausedMs = 0
    for (let r = 0; r < rounds; r++) {
      if (o.budgetSeconds && Date.now() - loadStart > o.budgetSeconds * 1000) {
        o.log(`time budget of ${o.budgetSeconds} s used up after ${r} of ${rounds} rounds: stopping the load`)
        break
      }
      const at = simStart + r * interval
      const pings: unknown[] = []
      for (let i = 0; i < o.trucks && positionsSent + pings.length < o.positions; i++) {
        const b = base(i)
        pings.push({ truckId: truckId(i), lat: b.lat, lon: b.lon + r * 0.0002, speedKmh: 40, at: new Date(at + (i % 1000)).toISOString() })
      }
      positionsSent += pings.length
      for (let k = 0; k < o.noisyFactor; k++) {
        pings.push({ truckId: NOISY, lat: 52.5, lon: 13.4, at: new Date(at + Math.floor((k * interval) / o.noisyFactor)).toISOString() })
      }
      noisySent += o.noisyFactor
      const batches = Math.ceil(pings.length / BATCH)
      const routesNow = Math.round(((r + 1) * o.routes) / rounds) - routesSent
      const first = routesSent
      routesSent += routesNow
      await Promise.all([
        pool(batches, BATCHES_IN_FLIGHT, async (b) => {
          count(
            statuses.positions,
            await post(
              ports.tracking,
              "/positions",
              { positions: pings.slice(b * BATCH, (b + 1) * BATCH) },
              auth.keys.positions,
              retriedPositions,
            ),
          )
        }),
        pool(routesNow, ROUTES_IN_FLIGHT, async (k) => {
          const i = first + k
          const customerId = customerOf(i, o.customers)
          const truck = (i * 7919) % o.trucks
          const b = base(truck)
          const stops = Array.from({ length: 10 }, (_, s) => ({ id: `s${s}`, lat: b.lat + 0.01 * (s + 1), lon: b.lon + 0.005 * s }))
          const status = await post(ports.routing, "/routes", { truckId: truckId(truck), customerId, depot: b, stops }, auth.keys.routes)
          count(statuses.routes, status)
          if (status === 202) routesPerCustomer.set(customerId, (routesPerCustomer.get(customerId) ?? 0) + 1)
        }),
      ])
      roundsDone = r + 1
      for (;;) {
        let left = 0
        for (const [s, d] of CONSUMERS) {
          const i = await jsm.consumers.info(s, d)
          left += i.num_pending + i.num_ack_pending
        }
        if (left <= (o.maxPending ?? 20_000)) break
        pausedMs += 500
        await sleep(500)
      }
      if (r % Math.max(1, Math.floor(rounds / 20)) === 0 || r === rounds - 1) {
        o.log(
          `round ${r + 1}/${rounds}: ${positionsSent} positions, ${routesSent} routes sent, ${Math.round((Date.now() - loadStart) / 1000)} s`,
        )
      }
    }
    const loadSeconds = (Date.now() - loadStart) / 1000

    // --- drain -------------------------------------------------------------------------------------------------
    const drainStart = Date.now()
    for (let last = 0; ; ) {
      let left = 0
      for (const [s, d] of CONSUMERS) {
        const i = await jsm.consumers.info(s, d)
        left += i.num_pending + i.num_ack_pending
      }
      if (left === 0) break
      if (Date.now() - last > 30_000) (last = Date.now()), o.log(`draining: ${left} events pending`)
      await sleep(1000)
    }
    const drainSeconds = (Date.now() - drainStart) / 1000
    probing = false
    await prober
    sampling = false
    await sampler
    await sample()
    for (let i = 0; i < 200; i++) await firstPage("ordinary", portalLatency.idle)

    const report = await verify(jsm, admin, {
      model,
      routesPerCustomer,
      statuses,
      positionsSent,
      noisySent,
      retried,
      retriedPositions,
      trucks: o.trucks,
      rounds: roundsDone,
    })
    return {
      options: { ...o, log: undefined },
      capacity: c,
      rounds: roundsDone,
      plannedRounds: rounds,
      loadSeconds,
      pausedSeconds: pausedMs / 1000,
      drainSeconds,
      sent: { routes: routesSent, positions: positionsSent, noisy: noisySent },
      samples,
      rss: rssTrend(samples),
      portal: {
        ordinary: portalLatency.ordinary.summary(),
        big: portalLatency.big.summary(),
        idle: portalLatency.idle.summary(),
      } satisfies Record<string, Latency>,
      ...report,
    }
  } finally {
    for (const ch of children) await ch.stop()
    await admin?.close()
    await server.close()
  }
}

/** Mean RSS per worker in each quarter of the run; `ratio` = last quarter ÷ second quarter (flat: ≤ 1.2). */
export function rssTrend(samples: Sample[]) {
  const out: Record<string, { quarters: number[]; ratio: number }> = {}
  const end = samples.at(-1)?.t ?? 0
  for (const w of WORKERS) {
    const quarters = [0, 1, 2, 3].map((q) => {
      const xs = samples.filter((s) => s.t >= (q * end) / 4 && s.t <= ((q + 1) * end) / 4).map((s) => s.rss[w]!)
      return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN
    })
    out[w] = { quarters, ratio: quarters[3]! / quarters[1]! }
  }
  return out
}

type Verify = {
  model: ReturnType<typeof limits>
  routesPerCustomer: Map<string, number>
  statuses: { routes: Map<number, number>; positions: Map<number, number> }
  /** 503 and 504 answers sent again (with the Idempotency-Key) before the final one */
  retried: Map<number, number>
  retriedPositions: Map<number, number>
  positionsSent: number
  noisySent: number
  trucks: number
  rounds: number
}

async function verify(jsm: JetStreamManager, nc: NatsConnection, v: Verify) {
  const accepted = v.statuses.routes.get(202) ?? 0
  const streams: Record<string, { messages: number; bytes: number; maxBytes: number; perMessage: number }> = {}
  for (const s of [...BUSINESS, "DLQ"]) {
    const i = await jsm.streams.info(s)
    streams[s] = {
      messages: i.state.messages,
      bytes: i.state.bytes,
      maxBytes: i.config.max_bytes,
      perMessage: i.state.messages ? i.state.bytes / i.state.messages : 0,
    }
  }
  // every invoice, read back: one per accepted route, per customer
  const invoices = new Map<string, number>()
  const routeIds = new Set<string>()
  let duplicates = 0
  const consumer = await jetstream(nc).consumers.get("INVOICE")
  const total = streams.INVOICE!.messages
  for (let seen = 0; seen < total; ) {
    const batch = await consumer.fetch({ max_messages: 1000, expires: 5000 })
    for await (const m of batch) {
      seen++
      const inv = m.json<{ customerId: string; routeId: string }>()
      if (routeIds.has(inv.routeId)) duplicates++
      routeIds.add(inv.routeId)
      invoices.set(inv.customerId, (invoices.get(inv.customerId) ?? 0) + 1)
    }
  }
  const perSubject = (await jsm.streams.info("POSITIONS", { subjects_filter: ">" })).state.subjects ?? {}
  const noisyStored = Object.entries(perSubject)
    .filter(([s]) => s.includes(NOISY))
    .reduce((a, [, n]) => a + n, 0)
  const others = Object.entries(perSubject).filter(([s]) => !s.includes(NOISY))
  const cap = v.model.POSITIONS.maxMsgsPerSubject
  const checks: [string, boolean][] = [
    [
      `every route request accepted (${accepted} of ${[...v.statuses.routes.values()].reduce((a, b) => a + b, 0)})`,
      accepted === sum(v.statuses.routes),
    ],
    [`every position batch accepted`, (v.statuses.positions.get(202) ?? 0) === sum(v.statuses.positions)],
    [`ROUTING holds every accepted route (${streams.ROUTING!.messages})`, streams.ROUTING!.messages === accepted],
    [`one invoice per route (${routeIds.size} distinct, ${duplicates} duplicates)`, routeIds.size === accepted && duplicates === 0],
    [
      "invoices per customer = routes per customer",
      [...v.routesPerCustomer].every(([c, n]) => invoices.get(c) === n) && invoices.size === v.routesPerCustomer.size,
    ],
    [`DLQ empty (${streams.DLQ!.messages})`, streams.DLQ!.messages === 0],
    [
      `every ordinary truck's ${v.rounds} positions kept (${others.length} trucks)`,
      others.length === v.trucks && others.every(([, n]) => n === Math.min(v.rounds, cap)),
    ],
    [`the noisy truck held to its cap (${noisyStored} of ${v.noisySent} sent, cap ${cap})`, noisyStored === Math.min(cap, v.noisySent)],
  ]
  return {
    streams,
    invoicesPerCustomer: Object.fromEntries(invoices),
    routesPerCustomer: Object.fromEntries(v.routesPerCustomer),
    statuses: { routes: Object.fromEntries(v.statuses.routes), positions: Object.fromEntries(v.statuses.positions) },
    retried: { routes: Object.fromEntries(v.retried), positions: Object.fromEntries(v.retriedPositions) },
    noisy: { sent: v.noisySent, stored: noisyStored, cap },
    checks,
  }
}

const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0)

export const REFERENCE = REFERENCE_FLEET
