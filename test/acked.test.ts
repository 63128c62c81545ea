// mesh/acked.ts against a real nats-server: a publish through the shared ack subscription ends exactly as
// js.publish would: stored, a duplicate by msg id, refused by the once guard (10071), no stream (no responders),
// no answer (TimeoutError), and many at once each get their own ack. The same inbox carries a stored message's read
// (getStoredMessage) and a KV create (mesh/kv.ts createValue).
import { jetstream } from "@nats-io/jetstream"
import { TimeoutError } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { Kvm } from "@nats-io/kv"
import { getStoredMessage, publishAcked } from "../mesh/acked.ts"
import { ApiCode, apiCode, isNoResponders } from "../mesh/errors.ts"
import { atLeast, serverVersion } from "../mesh/features.ts"
import { OutgoingHeaders } from "../mesh/headers.ts"
import { createValue } from "../mesh/kv.ts"
import { natsSuite, suite } from "./harness.ts"

const test = suite("acked")
const f = natsSuite(test, { reset: (x) => x.jsm.streams.add({ name: "ACKED", subjects: ["acked.>"] }) })
const body = new TextEncoder().encode("{}")
const headers = () => new OutgoingHeaders({ "ce-id": "x" })

test("acked - stored, then the same msg id is a duplicate of the same sequence", async () => {
  const a = await publishAcked(f.js, "acked.a", body, "id-1", headers())
  const b = await publishAcked(f.js, "acked.a", body, "id-1", headers())
  assert.equal([a.stream, a.seq, a.duplicate], ["ACKED", 1, false])
  assert.equal([b.stream, b.seq, b.duplicate], ["ACKED", 1, true])
  const stored = (await f.jsm.streams.getMessage("ACKED", { seq: 1 }))!
  assert.is(stored.header.get("Nats-Msg-Id"), "id-1")
  assert.is(stored.header.get("ce-id"), "x")
})

test("acked - the once guard refuses a second message on the subject with the server's code 10071", async () => {
  await publishAcked(f.js, "acked.once", body, "o-1", headers(), { lastSubjectSequence: 0 })
  const err = await publishAcked(f.js, "acked.once", body, "o-2", headers(), { lastSubjectSequence: 0 }).catch((e) => e)
  assert.is(apiCode(err), ApiCode.WrongLastSequence)
  assert.is((await f.jsm.streams.info("ACKED")).state.messages, 1)
})

test("acked - a subject no stream stores fails as no responders", async () => {
  const err = await publishAcked(f.js, "nowhere.x", body, "n-1", headers()).catch((e) => e)
  assert.ok(isNoResponders(err), String(err))
})

test("acked - a subject answered by nobody times out with the client's TimeoutError", async () => {
  const sub = f.nc.subscribe("silent.x", { callback: () => {} })
  const js = jetstream(f.nc, { timeout: 300 })
  const err = await publishAcked(js, "silent.x", body, "s-1", headers()).catch((e) => e)
  sub.unsubscribe()
  assert.instance(err, TimeoutError)
})

test("acked - 500 publishes at once each get their own ack", async () => {
  const acks = await Promise.all(Array.from({ length: 500 }, (_, i) => publishAcked(f.js, `acked.m.${i}`, body, `m-${i}`, headers())))
  assert.equal(new Set(acks.map((a) => a.seq)).size, 500)
  assert.equal(
    acks.every((a) => !a.duplicate),
    true,
  )
})

test("stored message - the last on a subject, the next on it from a sequence, null where there is none, as jsm reads them", async () => {
  for (const [i, subject] of ["acked.t.a", "acked.t.b", "acked.t.a", "acked.t.b"].entries()) {
    await publishAcked(f.js, subject, new TextEncoder().encode(JSON.stringify({ i })), `t-${i}`, headers())
  }
  const last = (await getStoredMessage(f.js, "ACKED", { last_by_subj: "acked.t.a" }))!
  assert.equal([last.subject, last.seq, JSON.parse(new TextDecoder().decode(last.data))], ["acked.t.a", 3, { i: 2 }])
  const viaClient = (await f.jsm.streams.getMessage("ACKED", { last_by_subj: "acked.t.a" }))!
  assert.equal([...last.data], [...viaClient.data])
  const next = (await getStoredMessage(f.js, "ACKED", { seq: 3, next_by_subj: "acked.t.b" }))!
  assert.equal([next.subject, next.seq], ["acked.t.b", 4])
  assert.is(await getStoredMessage(f.js, "ACKED", { seq: 5, next_by_subj: "acked.t.b" }), null)
  assert.is(await getStoredMessage(f.js, "ACKED", { last_by_subj: "acked.t.none" }), null)
  const err = await getStoredMessage(f.js, "NO_SUCH_STREAM", { last_by_subj: "x" }).catch((e) => e)
  assert.is(apiCode(err), ApiCode.StreamNotFound)
})

test("stored message, direct - DIRECT.GET gives what STREAM.MSG.GET gives, wildcards too; a stream without it is asked the other way", async () => {
  await f.jsm.streams.add({ name: "DIRECT", subjects: ["direct.>"], allow_direct: true })
  for (const [i, subject] of ["direct.t.a", "direct.t.b.1", "direct.t.a", "direct.t.b.2"].entries()) {
    const h = new OutgoingHeaders({ "ce-id": `x-${i}`, "Nats-Sequence-Like": "99" })
    await publishAcked(f.js, subject, new TextEncoder().encode(JSON.stringify({ i })), `d-${i}`, h)
  }
  const read = (stream: string, q: Parameters<typeof getStoredMessage>[2], direct: boolean) =>
    getStoredMessage(f.js, stream, q, { direct }).then((m) => m && [m.subject, m.seq, JSON.parse(new TextDecoder().decode(m.data))])
  for (const q of [{ last_by_subj: "direct.t.a" }, { last_by_subj: "direct.t.b.>" }, { seq: 2, next_by_subj: "direct.t.a" }]) {
    assert.equal(await read("DIRECT", q, true), await read("DIRECT", q, false), JSON.stringify(q))
  }
  assert.equal(await read("DIRECT", { last_by_subj: "direct.t.b.>" }, true), ["direct.t.b.2", 4, { i: 3 }])
  assert.is(await read("DIRECT", { last_by_subj: "direct.t.none" }, true), null)
  // ACKED has no allow_direct: on 2.10+ nothing answers DIRECT.GET, and the read goes to the leader (2.9's API
  // takes the request and never answers: a caller there must not ask a stream without allow_direct)
  if (atLeast(serverVersion(f.nc), [2, 10, 0]) >= 0) {
    await publishAcked(f.js, "acked.d.a", body, "dd-1", headers())
    const viaLeader = (await getStoredMessage(f.js, "ACKED", { last_by_subj: "acked.d.a" }, { direct: true }))!
    assert.equal([viaLeader.subject, viaLeader.seq], ["acked.d.a", (await f.jsm.streams.info("ACKED")).state.last_seq])
  }
  // a request the server refuses is an error, not a message
  const err = await getStoredMessage(f.js, "DIRECT", { seq: 0 } as never, { direct: true }).catch((e) => e)
  assert.instance(err, Error)
  assert.match(String(err.message), /direct get refused/)
})

test("createValue - the first create wins, a second is refused (10071) as kv.create refuses it, a deleted key is taken again", async () => {
  const kv = await new Kvm(f.js).create("acked-create", { history: 1 })
  const rev = await createValue(kv, "k1", "first")
  assert.is((await kv.get("k1"))?.string(), "first")
  assert.is((await kv.get("k1"))?.revision, rev)
  const err = await createValue(kv, "k1", "second").catch((e) => e)
  assert.is(apiCode(err), ApiCode.WrongLastSequence)
  assert.is((await kv.get("k1"))?.string(), "first")
  await kv.delete("k1")
  await createValue(kv, "k1", "third")
  assert.is((await kv.get("k1"))?.string(), "third")
})

test.run()
