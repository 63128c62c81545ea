// bench/soak.ts — `npm run soak -- fleet [--trucks 5000] [--positions 2000000] [--routes 300000] [--customers 11]
// [--noisy 100] [--sample-seconds 5] [--budget-minutes M] [--max-pending N]
// [--nats-server <bin>]`: the fleet soak (bench/fleet-soak.ts) at the reference
// fleet's size by default. Prints the report, writes bench/results/soak-fleet-<time>-nats-<version>.md and .json,
// and exits 1 when a check failed. With --budget-minutes the load stops after M minutes (then drains and checks
// what was sent), for a machine too busy to finish the full size.
import { mkdirSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { join } from "node:path"
import { pinNatsServer } from "../mesh/cli/natsd.ts"
import { fleetSoak } from "./fleet-soak.ts"
import { args, machine, ROOT, round } from "./lib.ts"
import { passed, soakMarkdown } from "./soak-report.ts"

async function main() {
  const { names, flags } = args()
  if (names[0] !== "fleet") {
    console.error("usage: npm run soak -- fleet [--trucks N] [--positions N] [--routes N] [--customers N] [--noisy F]")
    process.exit(2)
  }
  if (flags.has("nats-server")) pinNatsServer(flags.get("nats-server")!)
  const num = (k: string, d: number) => {
    const n = Number(flags.get(k) ?? d)
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`--${k} must be a whole number > 0, got ${flags.get(k)}`)
    return n
  }
  const trucks = num("trucks", 5000)
  const positions = num("positions", 2_000_000)
  if (positions % trucks) throw new Error(`--positions must be a multiple of --trucks (${trucks})`)
  const m = machine()
  const command = `npm run soak -- ${process.argv.slice(2).join(" ")}`
  const r = await fleetSoak({
    trucks,
    positions,
    routes: num("routes", 300_000),
    customers: num("customers", 11),
    noisyFactor: num("noisy", 100),
    capacityEnv: {},
    sampleMs: num("sample-seconds", 5) * 1000,
    maxPending: num("max-pending", 20_000),
    ...(flags.has("budget-minutes") ? { budgetSeconds: num("budget-minutes", 60) * 60 } : {}),
    log: (l) => console.log(`soak│ ${l}`),
  })
  const md = soakMarkdown(r, m, command, round(loadavg()[0]!, 2))
  console.log(`\n${md}`)
  const dir = join(ROOT, "bench", "results")
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `soak-fleet-${m.at.slice(0, 16).replace(/:/g, "")}-nats-${m.natsServerVersion}`)
  writeFileSync(`${file}.md`, md)
  writeFileSync(`${file}.json`, JSON.stringify({ machine: m, command, ...r }, null, 1))
  console.log(`written: ${file}.md, .json`)
  process.exit(passed(r) ? 0 : 1)
}

await main()
