// The capacity model from configuration (mesh/capacity.ts): `logiflow provision` run as its own process with CAPACITY_*
// variables and a LOGIFLOW_CAPACITY_FILE gives every stream exactly the model's limits, changes them in place when
// the configuration changes, caps every bucket's values; a bad value stops the start naming the variable.
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as assert from "uvu/assert"
import { type Capacity, limits, maxValueBytes, REFERENCE_FLEET, topology } from "../contracts/mod.ts"
import { capacityTable, outageWithDefaults, tableInReadme } from "../bench/capacity-table.ts"
import { CapacityError, capacityOverrides } from "../mesh/capacity.ts"
import { natsFixture, spawnTs, suite } from "./harness.ts"

const test = suite("capacity")
let f: Awaited<ReturnType<typeof natsFixture>>
test.before(async () => void (f = await natsFixture()))
test.after(async () => (await f.nc.close(), await f.server.close()))

type Run = { code: number | null; lines: string[] }
async function run(file: string, env: Record<string, string>, args: string[] = []): Promise<Run> {
  const child = spawnTs(file, { NATS_URL: f.server.url, LOG_LEVEL: "error", ...env }, args)
  const code = await child.exited
  return { code, lines: child.lines }
}

const NS = 1_000_000_000
/** What the server holds for each business and telemetry stream, in the model's terms. */
async function held(name: string) {
  const c = (await f.jsm.streams.info(name)).config
  return {
    maxAgeSeconds: c.max_age / NS,
    maxBytes: c.max_bytes,
    maxMsgs: c.max_msgs,
    maxMsgSize: c.max_msg_size,
    maxMsgsPerSubject: c.max_msgs_per_subject,
    discard: c.discard,
  }
}
const STREAMS = ["ROUTING", "INVOICE", "TRACKING", "POSITIONS", "DLQ", "ADVISORIES", "REPLAY"] as const
const DISCARD = { ROUTING: "new", INVOICE: "new", TRACKING: "new", POSITIONS: "old", DLQ: "new", ADVISORIES: "old", REPLAY: "new" }

async function assertModel(c: Capacity) {
  const l = limits(c)
  for (const s of STREAMS) assert.equal(await held(s), { ...l[s], discard: DISCARD[s] }, s)
}

test("provision - a custom fleet from the file and variables gives every stream the model's limits, updated in place", async () => {
  const file = join(f.server.storeDir, "capacity.json")
  await writeFile(file, JSON.stringify({ trucks: 800, routesPerDay: 30_000, bytes: { route: 2000 } }))
  const first = await run("mesh/cli/main.ts", { LOGIFLOW_CAPACITY_FILE: file, CAPACITY_OUTAGE_BUDGET_DAYS: "3" }, ["provision"])
  assert.is(first.code, 0, first.lines.join("\n"))
  const custom: Capacity = {
    ...REFERENCE_FLEET,
    trucks: 800,
    routesPerDay: 30_000,
    outageBudgetDays: 3,
    bytes: { ...REFERENCE_FLEET.bytes, route: 2000 },
  }
  await assertModel(custom)
  // a variable wins over the file
  const bigger = { ...custom, trucks: 6000, positionIntervalSeconds: 8 }
  const second = await run(
    "mesh/cli/main.ts",
    { LOGIFLOW_CAPACITY_FILE: file, CAPACITY_OUTAGE_BUDGET_DAYS: "3", CAPACITY_TRUCKS: "6000", CAPACITY_POSITION_INTERVAL_SECONDS: "8" },
    ["provision"],
  )
  assert.is(second.code, 0, second.lines.join("\n"))
  // only what the change touches is updated, in place: the streams keep their messages and consumers
  assert.ok(second.lines.includes("updated   stream   TRACKING"), second.lines.join("\n"))
  assert.ok(second.lines.includes("updated   stream   POSITIONS"), second.lines.join("\n"))
  assert.ok(second.lines.includes("unchanged stream   ROUTING"), second.lines.join("\n"))
  await assertModel(bigger)
  // back to the defaults
  const third = await run("mesh/cli/main.ts", {}, ["provision"])
  assert.is(third.code, 0)
  await assertModel(REFERENCE_FLEET)
})

test("buckets - every bucket caps its values and has a TTL or is listed as deliberately without one", async () => {
  const t = topology()
  // one record per truck (bounded by the fleet), the portal's read model and the DLQ's entries: see contracts/README.md
  const withoutTtl = new Set(["tracking-trucks", "portal-trucks", "portal-invoices", "dlq-entries"])
  for (const b of t.buckets) {
    const c = (await f.jsm.streams.info(`KV_${b.bucket}`)).config
    assert.is(c.max_msg_size, maxValueBytes(b.bucket), b.bucket)
    assert.ok(c.max_msg_size > 0 && c.max_msg_size <= 128 * 1024, `${b.bucket}: ${c.max_msg_size}`)
    if (c.max_age === 0) assert.ok(withoutTtl.has(b.bucket), `${b.bucket} has no TTL and no stated reason`)
    assert.is(c.max_age, b.ttlSeconds * NS, b.bucket)
  }
})

test("capacity table - deploy/README.md holds what bench/capacity-table.ts computes; the defaults hold the budget", () => {
  assert.is(tableInReadme(), capacityTable())
  const reference = outageWithDefaults(REFERENCE_FLEET.trucks, REFERENCE_FLEET.routesPerDay)
  assert.equal(reference, { days: REFERENCE_FLEET.outageBudgetDays, limitedBy: "max_age (the budget)", positionsHours: 6 })
  // twice the fleet fills TRACKING (its ETAs scale with trucks) in its max_bytes ÷ 10,000 trucks' ETAs a day
  const twice = outageWithDefaults(10_000, 400_000)
  assert.is(twice.limitedBy, "TRACKING full")
  assert.is(twice.days, limits(REFERENCE_FLEET).TRACKING.maxBytes / (10_000 * 6 * 24 * 700))
})

test("bad configuration - a worker and provision stop with a message naming the variable, the file and its field", async () => {
  const worker = await run("workers/invoice.ts", { CAPACITY_TRUCKS: "5k" })
  assert.is(worker.code, 1)
  assert.ok(worker.lines.includes('invoice: CAPACITY_TRUCKS must be a number, got "5k"'), worker.lines.join("\n"))
  const prov = await run("mesh/cli/main.ts", { CAPACITY_HEADROOM: "0.5" }, ["provision"])
  assert.is(prov.code, 1)
  assert.ok(
    prov.lines.some((l) => l.includes('CAPACITY_HEADROOM: headroom must be ≥ 1 (1.5 = half again the expected volume), got "0.5"')),
    prov.lines.join("\n"),
  )
  const file = join(f.server.storeDir, "bad.json")
  await writeFile(file, JSON.stringify({ trucks: -3, routesPerDy: 5 }))
  const e = (() => {
    try {
      capacityOverrides((k) => (k === "LOGIFLOW_CAPACITY_FILE" ? file : undefined))
    } catch (err) {
      return err as Error
    }
  })()
  assert.instance(e, CapacityError)
  assert.match(e!.message, `LOGIFLOW_CAPACITY_FILE (${file}): trucks: trucks must be ≥ 1`)
  assert.match(e!.message, /routesPerDy: Invalid key/)
  assert.throws(
    () => capacityOverrides((k) => (k === "LOGIFLOW_CAPACITY_FILE" ? join(f.server.storeDir, "missing.json") : undefined)),
    /LOGIFLOW_CAPACITY_FILE \(.*missing\.json\) is not readable JSON/,
  )
})

test("retry horizon - provision refuses one longer than ROUTING keeps routes, naming both variables", async () => {
  const week = 7 * 86_400
  assert.is(topology({ retryHorizonSeconds: week }).buckets.find((b) => b.bucket === "routing-requests")!.ttlSeconds, week)
  assert.throws(
    () => topology({ retryHorizonSeconds: week + 1 }),
    /retry horizon \(604801 s\) must not exceed .*ROUTING keeps routes \(604800 s/,
  )
  const prov = await run("mesh/cli/main.ts", { ROUTING_RETRY_HORIZON_SECONDS: String(3 * 86_400), CAPACITY_OUTAGE_BUDGET_DAYS: "2" }, [
    "provision",
  ])
  assert.is(prov.code, 1)
  assert.ok(
    prov.lines.some((l) => l.includes("lower ROUTING_RETRY_HORIZON_SECONDS or raise CAPACITY_OUTAGE_BUDGET_DAYS")),
    prov.lines.join("\n"),
  )
})

test.run()
