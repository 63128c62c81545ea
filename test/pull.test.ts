// mesh/pull.ts against a real nats-server: the header fast path reads exactly what the client's MsgHdrs decodes, on
// real wire data (generated headers, bodies from empty to larger than one socket read); the puller's count of what
// it asked for stays exact across requests that expire.
import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream"
import { headers as natsHeaders, type Msg, type NatsConnection } from "@nats-io/transport-node"
import fc from "fast-check"
import { suite } from "uvu"
import * as assert from "uvu/assert"
import { logger } from "../mesh/log.ts"
import { type Puller, puller } from "../mesh/pull.ts"
import { PulledMsg, rawHeaders } from "../mesh/pulled.ts"
import { natsFixture, sleep, type TestServer, waitUntil } from "./harness.ts"

const test = suite("pull")
const SEED = Number(process.env.FUZZ_SEED ?? 4242)
let server: TestServer
let nc: NatsConnection
let fixture: Awaited<ReturnType<typeof natsFixture>>

test.before(async () => {
  fixture = await natsFixture()
  ;({ server, nc } = fixture)
})
test.after(async () => {
  await nc.close()
  await server.close()
})

// header names: visible ASCII without ':' (NATS rules); values: printable text incl. spaces and non-ASCII, no CR/LF
const name = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,20}$/)
const value = fc.string({ unit: fc.constantFrom(..."abcXYZ 019-_:/.=é€漢"), minLength: 0, maxLength: 40 })
const bodySize = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 70_000, max: 200_000 }))

test("PulledMsg.header - the same first value as MsgHdrs.get for every header, on real messages of any size", async () => {
  const received: Msg[] = []
  const sub = nc.subscribe("hdr.test", { callback: (_err, m) => void received.push(m) })
  const cases = fc.sample(fc.record({ pairs: fc.array(fc.tuple(name, value), { minLength: 1, maxLength: 12 }), size: bodySize }), {
    seed: SEED,
    numRuns: 120,
  })
  for (const c of cases) {
    const h = natsHeaders()
    for (const [k, v] of c.pairs) h.append(k, v)
    nc.publish("hdr.test", new Uint8Array(c.size).fill(120), { headers: h })
  }
  await nc.flush()
  await waitUntil(() => received.length === cases.length, { what: `${cases.length} messages` })
  sub.unsubscribe()
  let fast = 0
  received.forEach((m, i) => {
    const pm = new PulledMsg(m, nc)
    for (const [k] of cases[i]!.pairs) assert.is(pm.header(k), m.headers?.get(k) || undefined, `case ${i}: header ${k}`)
    assert.is(pm.header("absent-header"), undefined)
    assert.is(pm.data.length, cases[i]!.size)
    // the fast path is the raw block; null (the fallback to MsgHdrs) would pass the comparison too, so count it
    if (rawHeaders(m) !== null) fast++
  })
  assert.is(fast, cases.length, "every message read through the raw header block")
})

test("puller - holds no more than its room, accounts for requests that expire, and takes the rest as room frees", async () => {
  const { jsm, js } = fixture
  await jsm.streams.add({ name: "PULLTEST", subjects: ["pulltest.>"] })
  await jsm.consumers.add("PULLTEST", { durable_name: "c", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All })
  const held: PulledMsg[] = []
  let room = 5
  let p: Puller | undefined
  p = puller(nc, {
    stream: "PULLTEST",
    durable: "c",
    minBatch: 1,
    room: () => room - held.length - (p?.outstanding ?? 0),
    deliver: (m) => held.push(m),
    log: logger({ worker: "pulltest" }),
    expiresMs: 1000, // requests expire while the stream is empty: each 408 must give its room back
    heartbeatMs: 500,
  })
  try {
    await sleep(2500)
    assert.is(held.length, 0)
    for (let i = 0; i < 20; i++) await js.publish(`pulltest.${i}`, new Uint8Array([i]))
    await waitUntil(() => held.length === 5, { what: "5 held" })
    await sleep(300)
    assert.is(held.length, 5, "no more than the room")
    assert.is((await jsm.consumers.info("PULLTEST", "c")).num_ack_pending, 5)
    // ack them one at a time: each freed slot is pulled again
    let acked = 0
    while (acked < 20) {
      const m = held.shift()
      if (!m) {
        await sleep(20)
        continue
      }
      m.ack()
      acked++
      p.wake()
    }
    await waitUntil(async () => (await jsm.consumers.info("PULLTEST", "c")).ack_floor.stream_seq === 20, { what: "20 acked" })
    room = 0
  } finally {
    await p.stop()
  }
  const info = await jsm.consumers.info("PULLTEST", "c")
  assert.is(info.num_redelivered, 0)
  assert.is(info.num_ack_pending, 0)
})

test.run()
