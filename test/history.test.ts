// The history checker, small: 600 routes over HTTP through a seeded fault schedule (every kind at least once), then
// the whole history of the streams checked (test/fixtures/history.ts, history-check.ts). The large run:
// `npm run test:chaos -- --only history [--seed N] [--events M]`, which writes its result to bench/results/.
import * as assert from "uvu/assert"
import { rowText, TABLE_HEAD } from "./fixtures/chaos.ts"
import { history } from "./fixtures/history.ts"
import { suite } from "./harness.ts"

const test = suite("history")
const SEED = Number(process.env.CHAOS_SEED ?? 20261206)

test("history - every accepted route billed once or dead-lettered once with its reason, through kills, a broker restart, ops down, a refusing DLQ and replays", async () => {
  const r = await history({ routes: 600, seed: SEED, loadSeconds: 20 })
  console.log(`\nhistory (seed ${SEED}, ${r.seconds.toFixed(0)} s):\n${TABLE_HEAD}\n${rowText(r.row)}\n`)
  const v = r.verdict.figures
  assert.equal(r.verdict.violations, [], "no violation")
  for (const [fault, count] of Object.entries(r.faults)) assert.ok(count > 0, `${fault} happened`)
  assert.is(v.accepted, 600, "every route accepted in the end, retried with its key")
  assert.is(v.stored, 600)
  assert.is(v.invoiced + v.open, 600, "each route: one invoice or one open entry")
  assert.ok(v.open > 0, "routes without a tariff were dead-lettered")
})

test.run()
