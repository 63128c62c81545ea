// The long variants of test/chaos.test.ts and test/history.test.ts: `npm run test:chaos -- --events 100000 [--seed 7]
// [--only crash,cluster,history] [--nats-server <bin>]`. Same scenarios (test/fixtures/faults.ts), many more events,
// kills and rounds, on the newest nats-server found or the one --nats-server (or NATS_SERVER_BIN) names. Prints the
// markdown table, writes bench/results/chaos-<time>-nats-<version>.md (and .json), and exits 1 when any fault lost or
// duplicated an event.
import { mkdirSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { findNatsServer, natsServerVersion, pinNatsServer } from "../mesh/cli/natsd.ts"
import { type Row, rowText, TABLE_HEAD } from "./fixtures/chaos.ts"
import { brokerCrash, clusterNodeLoss, crashLoop, gracefulShutdown, hungConsumer, slowConsumer, streamFull } from "./fixtures/faults.ts"
import { history } from "./fixtures/history.ts"
import { ROOT } from "./harness.ts"

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "100000" },
    seed: { type: "string" },
    only: { type: "string" },
    "nats-server": { type: "string" },
  },
})
if (values["nats-server"]) {
  try {
    pinNatsServer(values["nats-server"])
  } catch (err) {
    console.error(`test:chaos: --nats-server ${(err as Error).message}`)
    process.exit(2)
  }
}
const bin = findNatsServer()
const serverVersion = (bin && natsServerVersion(bin)?.join(".")) || "unknown"
const load = Math.round(loadavg()[0]! * 100) / 100
const startedAt = new Date()
console.log(`chaos soak on nats-server ${serverVersion} (${bin ?? "none found"}), 1-min load average at start ${load}`)
const events = Number(values.events)
if (!(events >= 100)) throw new Error(`--events must be a number ≥ 100, got ${values.events}`)
const seed = Number(values.seed ?? Date.now() % 1_000_000)
const only = values.only?.split(",")

type Outcome = { name: string; row: Row; ok: boolean; failures: string[]; seconds: number; detail: unknown }

// each check: [what must hold, whether it does]; a fault passes when all do
const faults: Record<string, () => Promise<{ row: Row; checks: [string, boolean][]; detail: unknown }>> = {
  crash: async () => {
    const r = await crashLoop({
      events,
      seed,
      maxKills: Math.max(10, Math.round(events / 1000)),
      publishSeconds: Math.max(10, events / 1000),
      timeoutMs: 120_000 + events * 5,
    })
    return {
      row: r.row,
      detail: { ...r, row: undefined },
      checks: [
        [`${events} invoiced once each`, r.distinct === events && r.total === events],
        ["DLQ empty", r.dlq === 0],
      ],
    }
  },
  broker: async () => {
    const requests = Math.min(20_000, Math.max(400, Math.round(events / 10)))
    const r = await brokerCrash({ requests, seed, outageMs: 5000, parallel: 8, paceMs: 5 })
    const counts = [...r.invoicesForAccepted.values()]
    return {
      row: r.row,
      detail: { ...r, invoicesForAccepted: undefined, row: undefined },
      checks: [
        ["every 202 invoiced exactly once", counts.every((c) => c === 1)],
        ["no 503 (nothing recorded) stored after all", r.notRecordedButStored === 0],
        ["one invoice per request after retries", r.afterRetry.total === requests && r.afterRetry.distinct === requests],
        [
          "readiness 503 during the outage, 200 after",
          Object.values(r.readiness).every((x) => x.duringOutage.includes(503) && !x.duringOutage.includes(200) && x.after === 200),
        ],
      ],
    }
  },
  cluster: async () => {
    const r = await clusterNodeLoss({ events, seed, rounds: 3, ratePerSecond: 500, downMs: 5000 })
    return {
      row: r.row,
      detail: { ...r, row: undefined },
      checks: [
        [
          "every acked event invoiced once",
          r.invoicesForAcked.missing === 0 && r.invoicesForAcked.twice === 0 && r.invoices.total === r.invoices.distinct,
        ],
        ["longest stall < 15 s", r.longestGapMs < 15_000],
      ],
    }
  },
  hung: async () => {
    const r = await hungConsumer()
    return {
      row: r.row,
      detail: { ...r, row: undefined },
      checks: [
        ["one DLQ entry, max-deliveries", r.dlq.count === 1 && r.dlq.reason === "max-deliveries"],
        ["exit 0", r.exits.every((c) => c === 0)],
      ],
    }
  },
  slow: async () => {
    const requests = Math.min(5000, Math.max(100, Math.round(events / 20)))
    const r = await slowConsumer({ requests, maxSlowMs: 2000 })
    return {
      row: r.row,
      detail: { ...r, row: undefined },
      checks: [
        ["routing all 202", r.phases.every((p) => p.statuses[202] === requests)],
        ["portal all 200", r.phases.every((p) => Object.keys(p.portal).join() === "200")],
        ["every route invoiced once", r.invoices.lost === 0 && r.invoices.duplicated === 0],
      ],
    }
  },
  shutdown: async () => {
    const r = await gracefulShutdown({ events, drainTimeoutMs: 20_000 })
    return {
      row: r.row,
      detail: { ...r, row: undefined },
      checks: [
        ["exit 0 within the deadline", r.exitCode === 0 && r.exitMs < 22_000],
        ["nothing acked twice, nothing stranded", r.ackedTwice.length === 0 && r.lateRedeliveries === 0],
        ["every event invoiced once", r.invoices.lost === 0 && r.invoices.duplicated === 0],
      ],
    }
  },
  history: async () => {
    const routes = Math.min(20_000, Math.max(2000, Math.round(events / 20)))
    const r = await history({ routes, seed, loadSeconds: Math.max(30, routes / 40) })
    const v = r.verdict.figures
    return {
      row: r.row,
      detail: { ...r, row: undefined },
      checks: [
        ["no violation in the streams' history", r.verdict.violations.length === 0],
        [`${routes} accepted, each billed once or with one open entry`, v.accepted === routes && v.invoiced + v.open === routes],
        ["every kind of fault happened", Object.values(r.faults).every((c) => c > 0)],
      ],
    }
  },
  full: async () => {
    const r = await streamFull({ maxMsgs: 1000, requests: 1500 })
    return {
      row: r.row,
      detail: { ...r, row: undefined },
      checks: [
        ["202s == stored", r.accepted === r.stored],
        ["retries stored once", r.afterRaise.distinct === 1500 && r.afterRaise.stored === 1500],
      ],
    }
  },
}

const outcomes: Outcome[] = []
for (const [name, run] of Object.entries(faults)) {
  if (only && !only.includes(name)) continue
  const t = Date.now()
  console.log(`── ${name} (${events} events, seed ${seed})`)
  try {
    const { row, checks, detail } = await run()
    const failures = checks.filter(([, ok]) => !ok).map(([what]) => what)
    const ok = failures.length === 0 && row.lost === 0 && row.duplicated === 0
    outcomes.push({ name, row, ok, failures, seconds: (Date.now() - t) / 1000, detail })
    console.log(`${rowText(row)}${ok ? "" : `\n   FAILED: ${failures.join("; ") || "lost or duplicated"}`}`)
  } catch (err) {
    const row: Row = {
      fault: name,
      load: `${events}`,
      lost: -1,
      duplicated: -1,
      recoveryMs: null,
      notes: `crashed: ${(err as Error).message}`,
    }
    outcomes.push({ name, row, ok: false, failures: [(err as Error).message], seconds: (Date.now() - t) / 1000, detail: null })
    console.log(`   FAILED: ${(err as Error).stack}`)
  }
}

const table = `${TABLE_HEAD}\n${outcomes.map((o) => rowText(o.row)).join("\n")}`
console.log(`\nchaos soak (${events} events, seed ${seed}):\n${table}\n`)
const dir = join(ROOT, "bench", "results")
mkdirSync(dir, { recursive: true })
const base = join(dir, `chaos-${startedAt.toISOString().slice(0, 16).replace(/:/g, "")}-nats-${serverVersion}`)
const json = JSON.stringify(
  {
    events,
    seed,
    at: startedAt.toISOString(),
    node: process.version,
    natsServer: { bin, version: serverVersion },
    loadavg1m: load,
    outcomes,
  },
  (_k, v) => (v instanceof Map ? Object.fromEntries(v) : v),
  2,
)
writeFileSync(`${base}.json`, json)
const argv = process.argv.slice(2).join(" ")
const md = [
  `# Chaos soak — ${startedAt.toISOString().slice(0, 10)}, nats-server ${serverVersion}`,
  "",
  `${events} events, seed ${seed}; nats-server ${serverVersion} (${bin}), Node ${process.version}, 1-min load average at start ${load}` +
    " (the machine is shared); " +
    `${((Date.now() - startedAt.getTime()) / 60_000).toFixed(1)} min.`,
  "",
  `Command: \`npm run test:chaos${argv ? ` -- ${argv}` : ""}\``,
  "",
  table,
  "",
  ...outcomes.map((o) => `- ${o.name}: ${o.ok ? "passed" : `FAILED (${o.failures.join("; ")})`} in ${o.seconds.toFixed(0)} s`),
  "",
].join("\n")
writeFileSync(`${base}.md`, md)
console.log(`written ${base}.md and .json`)
const failed = outcomes.filter((o) => !o.ok).length
console.log(`${outcomes.length - failed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
