// mesh/pull.ts against a real nats-server: the header fast path reads exactly what the client's MsgHdrs decodes, on
// real wire data (generated headers, bodies from empty to larger than one socket read); the puller's count of what
// it asked for stays exact across requests that expire.
import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream"
import { headers as natsHeaders, type Msg, type NatsConnection } from "@nats-io/transport-node"
import fc from "fast-check"
import * as assert from "uvu/assert"
import { AckBatch } from "../mesh/ack-batch.ts"
import { logger } from "../mesh/log.ts"
import { type Puller, puller } from "../mesh/pull.ts"
import { PulledMsg, rawHeaders } from "../mesh/pulled.ts"
import { natsFixture, sleep, type TestServer, waitUntil, suite } from "./harness.ts"

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

/** a puller on `<stream>/c` that holds what it gets, up to `room` messages */
function pullInto(conn: NatsConnection, stream: string, room: number): { held: PulledMsg[]; p: Puller } {
  const held: PulledMsg[] = []
  let p: Puller | undefined
  p = puller(conn, {
    stream,
    durable: "c",
    minBatch: 1,
    room: () => room - held.length - (p?.outstanding ?? 0),
    deliver: (m) => held.push(m),
    log: logger({ worker: stream.toLowerCase() }),
  })
  return { held, p }
}

test("AckBatch - a turn's acks go out as one command: each message acked once, the client's counts kept", async () => {
  const { jsm, js } = fixture
  await jsm.streams.add({ name: "ACKTEST", subjects: ["acktest.>"] })
  await jsm.consumers.add("ACKTEST", { durable_name: "c", ack_policy: AckPolicy.Explicit, ack_wait: 2_000_000_000 })
  for (let i = 0; i < 300; i++) await js.publish(`acktest.${i}`, new Uint8Array([i % 256]))
  const { held, p } = pullInto(nc, "ACKTEST", 300)
  try {
    await waitUntil(() => held.length === 300, { what: "300 held" })
    const batch = new AckBatch(logger({ worker: "acktest" }), nc)
    const before = nc.stats().outMsgs
    // the first 10 were nak'ed already: the batch leaves them alone; the rest are added twice, acked once
    for (const m of held.slice(0, 10)) m.nak()
    for (const m of held) batch.add(m)
    for (const m of held.slice(100, 150)) batch.add(m)
    batch.flush()
    assert.is(nc.stats().outMsgs - before, 10 + 290, "one publish counted per nak and per ack")
    await waitUntil(async () => (await jsm.consumers.info("ACKTEST", "c")).num_ack_pending <= 10, { what: "290 acked" })
    const info = await jsm.consumers.info("ACKTEST", "c")
    assert.is(info.num_ack_pending + info.num_pending, 10, "the 10 nak'ed are back to be delivered, nothing else")
    assert.is(info.ack_floor.stream_seq, 0, "the floor waits for the nak'ed ones")
  } finally {
    await p.stop()
  }
})

test("AckBatch - on a closed connection the acks are not sent and nothing throws", async () => {
  const { connectTo } = await import("./harness.ts")
  const other = await connectTo(server)
  const { jsm, js } = fixture
  await jsm.streams.add({ name: "ACKCLOSED", subjects: ["ackclosed.>"] })
  await jsm.consumers.add("ACKCLOSED", { durable_name: "c", ack_policy: AckPolicy.Explicit })
  await js.publish("ackclosed.1", new Uint8Array([1]))
  const { held, p } = pullInto(other, "ACKCLOSED", 1)
  await waitUntil(() => held.length === 1, { what: "1 held" })
  await p.stop()
  await other.close()
  const batch = new AckBatch(logger({ worker: "ackclosed" }), other)
  batch.add(held[0]!)
  batch.flush()
  assert.is((await jsm.consumers.info("ACKCLOSED", "c")).num_ack_pending, 1, "still pending: redelivered after ack_wait")
})

test.run()
