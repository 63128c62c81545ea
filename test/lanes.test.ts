// mesh/lanes.ts on its own: per-key order, the concurrency bound, and keys whose lanes emptied (kept, then pruned)
// still taking new items in order.
import * as assert from "uvu/assert"
import { lanes } from "../mesh/lanes.ts"
import { suite } from "./harness.ts"

const test = suite("lanes")

type Item = { key?: string; n: number }

/** lanes whose items finish only when the test says so */
function manual(concurrency: number) {
  const started: Item[] = []
  const running = new Map<Item, () => void>()
  const l = lanes<Item>(
    concurrency,
    (i) => i.key,
    (item, done) => {
      started.push(item)
      running.set(item, done)
    },
  )
  /** item `n` (running) finishes */
  const finish = (n: number) => {
    const item = [...running.keys()].find((i) => i.n === n)
    assert.ok(item, `item ${n} is running`)
    const done = running.get(item!)!
    running.delete(item!)
    done()
  }
  return { l, started, running, finish }
}

test("one key runs one item at a time, in arrival order; other keys run beside it up to the bound", () => {
  const { l, started, finish } = manual(2)
  l.push({ key: "a", n: 1 })
  l.push({ key: "a", n: 2 })
  l.push({ key: "b", n: 3 })
  l.push({ key: "c", n: 4 })
  assert.equal(
    started.map((i) => i.n),
    [1, 3],
    "a's second waits for its first; c waits for a slot",
  )
  assert.is(l.running, 2)
  assert.is(l.size, 4)
  finish(3)
  assert.equal(
    started.map((i) => i.n),
    [1, 3, 4],
  )
  finish(1)
  assert.equal(
    started.map((i) => i.n),
    [1, 3, 4, 2],
  )
  finish(4)
  finish(2)
  assert.is(l.size, 0)
  assert.is(l.running, 0)
})

test("a done called twice frees one slot; items without a key never wait for each other's key", () => {
  const { l, started, running } = manual(1)
  l.push({ n: 1 })
  l.push({ n: 2 })
  const done = running.get(started[0]!)!
  done()
  done()
  assert.equal(
    started.map((i) => i.n),
    [1, 2],
  )
  assert.is(l.running, 1)
  assert.is(l.size, 1)
})

test("thousands of one-off keys and reused keys: order holds after lanes emptied and were pruned", () => {
  const order: number[] = []
  const l = lanes<Item>(
    4,
    (i) => i.key,
    (item, done) => (order.push(item.n), done()),
  )
  let n = 0
  for (let round = 0; round < 50; round++) {
    for (let k = 0; k < 200; k++) l.push({ key: `once-${round}-${k}`, n: n++ })
    for (let k = 0; k < 5; k++) l.push({ key: `truck-${k}`, n: n++ })
  }
  assert.is(order.length, n, "every item ran")
  assert.equal(
    order,
    [...order].sort((a, b) => a - b),
    "synchronous items run in push order",
  )
  assert.is(l.size, 0)
})

test("takeWaiting hands back what has not started, keeps what runs, and the lanes go on after it", async () => {
  const { l, started, finish } = manual(2)
  for (const [key, n] of [
    ["a", 1],
    ["a", 2],
    ["b", 3],
    ["c", 4],
    ["c", 5],
  ] as const)
    l.push({ key, n })
  assert.equal(
    started.map((i) => i.n),
    [1, 3],
  )
  const taken = l.takeWaiting()
  assert.equal(taken.map((i) => i.n).sort(), [2, 4, 5])
  assert.is(l.size, 2, "the two running items are still held")
  const idle = l.idle()
  finish(1)
  finish(3)
  await idle
  l.push({ key: "a", n: 6 })
  l.push({ key: "c", n: 7 })
  assert.equal(
    started.map((i) => i.n),
    [1, 3, 6, 7],
  )
})

test.run()
