// bench/run.ts — `npm run bench [-- <scenario>…] [--quick] [--nats-server <bin>]`: runs the scenarios (all by
// default, in this order), prints one markdown report and writes it to
// bench/results/<date>-nats-<version>[-quick][-<scenarios>].md, with the raw numbers next to it as .json. --quick is
// the ~1 minute smoke CI may run: small sizes, one round. --nats-server (or NATS_SERVER_BIN) picks the server binary
// every scenario starts (default: the newest found), so two releases can be measured one after the other.
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { cascade } from "./cascade.ts"
import { consume } from "./consume.ts"
import { drain } from "./drain.ts"
import { latency } from "./latency.ts"
import { pinNatsServer } from "../mesh/cli/natsd.ts"
import { args, machine, markdown, ROOT, type Scenario, type Section } from "./lib.ts"
import { publish } from "./publish.ts"
import { scale } from "./scale.ts"

const scenarios: Record<string, Scenario> = { consume, publish, latency, drain, cascade, scale }

const { quick, names, flags } = args()
const pinned = flags.get("nats-server")
if (pinned) {
  try {
    pinNatsServer(pinned)
  } catch (err) {
    console.error(`bench: --nats-server ${(err as Error).message}`)
    process.exit(2)
  }
}
const unknown = names.filter((n) => !(n in scenarios))
if (unknown.length) {
  console.error(`unknown scenario ${unknown.join(", ")}; choose from ${Object.keys(scenarios).join(", ")}`)
  process.exit(2)
}
const chosen = names.length ? Object.keys(scenarios).filter((n) => names.includes(n)) : Object.keys(scenarios)
const m = machine()
const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`
console.error(
  `bench: ${chosen.join(", ")}${quick ? " (quick)" : ""} — ${m.natsServer} (${m.natsServerBin}), ${m.cores} cores, load average ${m.loadavg1m}`,
)

const started = Date.now()
const sections: Section[] = []
let failed = false
for (const name of chosen) {
  const t = Date.now()
  try {
    sections.push(await scenarios[name]!({ quick }))
  } catch (err) {
    failed = true
    console.error(`bench ${name} failed:`, err)
    sections.push({ name, title: `${name}: FAILED`, tables: [], notes: [String((err as Error)?.stack ?? err)], data: null })
  }
  console.error(`bench ${name}: ${((Date.now() - t) / 1000).toFixed(0)} s`)
}
const minutes = ((Date.now() - started) / 60_000).toFixed(1)
const report = `${markdown(sections, m, command)}\nTotal ${minutes} min.\n`
console.log(`\n${report}`)

const dir = join(ROOT, "bench", "results")
mkdirSync(dir, { recursive: true })
const base = `${m.at.slice(0, 10)}-nats-${m.natsServerVersion}${quick ? "-quick" : ""}${names.length ? `-${chosen.join("-")}` : ""}`
writeFileSync(join(dir, `${base}.md`), report)
writeFileSync(join(dir, `${base}.json`), `${JSON.stringify({ machine: m, command, minutes: Number(minutes), sections }, null, 2)}\n`)
console.error(`wrote bench/results/${base}.md and .json`)
process.exit(failed ? 1 : 0)
