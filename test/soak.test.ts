// A small fleet soak (bench/fleet-soak.ts, `npm run soak -- fleet` at full size): the same workers as child processes,
// the same load and checks, a few thousand events. The noisy truck is held to its per-truck cap (shrunk here through
// CAPACITY_POSITION_RETENTION_HOURS so a short run reaches it); RSS flatness needs the long run and is only reported.
import * as assert from "uvu/assert"
import { fleetSoak } from "../bench/fleet-soak.ts"
import { machine } from "../bench/lib.ts"
import { soakMarkdown } from "../bench/soak-report.ts"
import { limits, REFERENCE_FLEET } from "../contracts/mod.ts"
import { suite } from "./harness.ts"

const test = suite("soak")

test("fleet, short - every route invoiced once per customer, nothing refused or lost, the noisy truck capped", async () => {
  const capacityEnv = { CAPACITY_POSITION_RETENTION_HOURS: "0.2" }
  const cap = limits({ ...REFERENCE_FLEET, positionRetentionHours: 0.2 }).POSITIONS.maxMsgsPerSubject
  const r = await fleetSoak({
    trucks: 40,
    positions: 400,
    routes: 260,
    customers: 3,
    noisyFactor: 100,
    capacityEnv,
    sampleMs: 1000,
    maxPending: 2000,
    log: () => {},
  })
  for (const [what, ok] of r.checks) assert.ok(ok, what)
  assert.is(r.rounds, 10)
  assert.equal(r.noisy, { sent: 1000, stored: cap, cap })
  // 260 routes, big 10 of every 13: 200 for big, 20 for each other customer
  assert.equal(r.routesPerCustomer, { big: 200, c01: 20, c02: 20, c03: 20 })
  assert.equal(r.invoicesPerCustomer, r.routesPerCustomer)
  assert.equal(r.statuses.routes, { 202: 260 })
  assert.is(r.streams.POSITIONS!.messages, 400 + cap)
  assert.ok(r.portal.idle.count === 200 && r.samples.length > 0)
  const md = soakMarkdown(r, machine(), "test", 0)
  assert.ok(md.includes("| the noisy truck held to its cap"), md)
})

test.run()
