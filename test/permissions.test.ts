// nats.conf against contracts/topology.ts: each worker user may do exactly what its worker needs, on a real server.
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { Kvm } from "@nats-io/kv"
import { nanos, type NatsConnection, PermissionViolationError, RequestError } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import {
  ADVISORY_SUBJECTS,
  consumersOf,
  dlqSubject,
  type EventName,
  eventNames,
  replaySubject,
  streamOf,
  keyOf,
  maxValueBytes,
  subjectOf,
  topology,
  type WorkerName,
  workerNames,
  workers,
} from "../contracts/mod.ts"
import { type Connection, connect } from "../mesh/connect.ts"
import type { Handlers } from "../mesh/handler.ts"
import { PermanentError, StartupError } from "../mesh/errors.ts"
import { getJson, kvKey } from "../mesh/kv.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { type Running, worker } from "../mesh/worker.ts"
import { invoice, route } from "./fixtures/events.ts"
import { lacks, passwords, ROOT, startServer, type TestServer, waitUntil, suite } from "./harness.ts"

const test = suite("permissions")
const topo = topology()
let server: TestServer
let admin: Connection
let jsm: JetStreamManager
const users = {} as Record<WorkerName, Connection>
const denials = {} as Record<WorkerName, string[]>
const running: Running[] = []

const pass = (user: string) => server.env[`${user.toUpperCase()}_PASSWORD`]!

/** Every permissions violation the server reports on `nc`, including ones no call sees (acks, flow control). */
function violations(nc: NatsConnection): string[] {
  const seen: string[] = []
  ;(async () => {
    for await (const s of nc.status()) {
      if (s.type === "error" && s.error instanceof PermissionViolationError) seen.push(`${s.error.operation} ${s.error.subject}`)
    }
  })().catch(() => {})
  return seen
}
// mesh/connect.ts, so each connection uses the worker's private inbox prefix, exactly as a worker does
const as = (user: string) => connect({ name: user, url: server.url, user, pass: pass(user) })

test.before(async () => {
  server = await startServer({ auth: true })
  admin = await as("admin")
  jsm = await jetstreamManager(admin)
  for (const w of workerNames) denials[w] = violations((users[w] = await as(w)))
})
test.after(async () => {
  await Promise.allSettled([admin, ...Object.values(users)].map((nc) => nc?.close()))
  await server?.close()
})
// every test starts from the provisioned topology with empty streams and buckets
test.before.each(async () => {
  for await (const s of jsm.streams.list()) await jsm.streams.delete(s.config.name)
  await provision(admin, topo)
})
test.after.each(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()))
})

/** The promise fails with the v3 client's shape of a denied request: RequestError caused by the server's -ERR. */
async function denied(p: Promise<unknown>, subject: string, what = subject) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  assert.ok(err !== undefined, `${what}: expected a permissions violation, but it succeeded`)
  assert.instance(err, RequestError, `${what}: ${String(err)}`)
  const cause = (err as Error).cause
  assert.instance(cause, PermissionViolationError, `${what}: cause ${String(cause)}`)
  assert.is((cause as PermissionViolationError).operation, "publish", what)
  assert.is((cause as PermissionViolationError).subject, subject, what)
}

const apiRequest = (nc: Connection, subject: string) => nc.request(subject, "{}", { timeout: 3000 })

const EVENT_DATA: { [N in EventName]: unknown } = {
  RouteCalculated: route(1),
  InvoiceGenerated: invoice(),
  PositionReported: { truckId: "truck-1", lat: 52.5, lon: 13.4, at: "2026-11-25T10:00:00.000Z" },
  EtaUpdated: {
    truckId: "truck-1",
    routeId: "route-1",
    eta: "2026-11-25T12:05:00.000Z",
    previousEta: "2026-11-25T12:00:00.000Z",
    remainingKm: 10,
    updatedAt: "2026-11-25T10:00:00.000Z",
  },
}

const publishAs = (w: WorkerName, name: EventName, id: string) =>
  publishEvent(jetstream(users[w]), name, EVENT_DATA[name] as never, { id, source: `logiflow/${w}` })

test("publish matrix - each worker publishes exactly its own event subjects; every other event subject is refused and not stored", async () => {
  for (const w of workerNames) {
    for (const name of eventNames) {
      const id = `${w}-${name}`
      if (workers[w].publishes.includes(name)) {
        const ack = await publishAs(w, name, id)
        assert.is(ack.stream, streamOf(name), `${w} → ${name}`)
        assert.is(ack.duplicate, false)
      } else {
        await denied(publishAs(w, name, id), subjectOf(name, keyOf(name, EVENT_DATA[name] as never)), `${w} → ${name}`)
      }
    }
  }
  for (const s of ["ROUTING", "INVOICE", "TRACKING"]) {
    const expected = workerNames.flatMap((w) => workers[w].publishes.filter((n) => streamOf(n) === s)).length
    assert.is((await jsm.streams.info(s)).state.messages, expected, `${s} holds only the allowed publishes`)
  }
})

test("publish matrix - DLQ subjects only for a worker's own consumers (ops: any), replay subjects only for ops", async () => {
  for (const w of workerNames) {
    const js = jetstream(users[w])
    const own = new Set(consumersOf(topo, w).map((c) => c.stream))
    for (const c of topo.consumers) {
      const subject = dlqSubject(c.stream, c.durable)
      if (c.worker === w || w === "ops") assert.is((await js.publish(subject, "entry")).stream, "DLQ", `${w} → ${subject}`)
      else await denied(js.publish(subject, "entry"), subject, `${w} → ${subject}`)
    }
    // a worker without consumers has nothing to dead-letter
    if (own.size === 0 && w !== "ops") await denied(js.publish(dlqSubject("ROUTING", w), "x"), dlqSubject("ROUTING", w))
    const replay = replaySubject("invoice", "ROUTING")
    if (w === "ops") assert.is((await js.publish(replay, "x")).stream, "REPLAY")
    else await denied(js.publish(replay, "x"), replay, `${w} → ${replay}`)
  }
})

const noopHandlers = (w: WorkerName): Handlers => Object.fromEntries(workers[w].consumes.map((n) => [n, () => {}]))

test("workers - each worker started as its own user binds all its consumers and reports ready", async () => {
  for (const w of workerNames) {
    const r = await worker({
      name: w,
      consumes: noopHandlers(w),
      raw: w === "ops" ? { ADVISORIES: () => {}, DLQ: () => {} } : undefined,
    }).start({ url: server.url, user: w, pass: pass(w), port: 0, drainTimeoutMs: 2000 })
    running.push(r)
    assert.is(r.runtime.ready, true, w)
    const res = await fetch(`http://127.0.0.1:${r.port}/readyz`)
    assert.is(res.status, 200, `${w} /readyz`)
  }
  // every consumer of the topology is bound by its worker (a pull request waiting on it)
  for (const c of topo.consumers) {
    const info = await waitUntil(
      async () => {
        const i = await jsm.consumers.info(c.stream, c.durable)
        return i.num_waiting > 0 ? i : null
      },
      { timeoutMs: 5000, what: `${c.stream}/${c.durable} pulled` },
    )
    assert.ok(info.num_waiting > 0)
  }
})

test("workers - consume, publish, ack and KV work end to end, each under its own user, without allow_responses", async () => {
  let priced = 0
  const seen: string[] = []
  const refused: Record<string, string[]> = {}
  const start = async (name: WorkerName, consumes: Handlers) => {
    const r = await worker({ name, consumes }).start({ url: server.url, user: name, pass: pass(name), port: 0, drainTimeoutMs: 2000 })
    running.push(r)
    refused[name] = violations(r.runtime.nc)
    return r
  }
  const routing = await start("routing", {})
  await start("invoice", {
    RouteCalculated: (r) => {
      priced++
      const invoice = {
        ...(EVENT_DATA.InvoiceGenerated as object),
        invoiceId: `inv-${r.routeId}-${priced}`,
        routeId: r.routeId,
        truckId: r.truckId,
      }
      return [{ name: "InvoiceGenerated", id: `invoice:${r.routeId}:${priced}`, data: invoice as never, once: true }]
    },
  })
  await start("tracking", {
    RouteCalculated: async (r, ctx) => {
      await (await ctx.kv("tracking-trucks")).put(kvKey(r.truckId), JSON.stringify({ routeId: r.routeId }))
      return [{ name: "EtaUpdated", data: { ...(EVENT_DATA.EtaUpdated as object), truckId: r.truckId, routeId: r.routeId } as never }]
    },
    PositionReported: () => {},
  })
  await start("portal", {
    RouteCalculated: () => void seen.push("RouteCalculated"),
    EtaUpdated: async (e, ctx) => {
      seen.push("EtaUpdated")
      await (await ctx.kv("portal-trucks")).put(kvKey(e.truckId), JSON.stringify(e))
    },
    InvoiceGenerated: async (e, ctx) => {
      seen.push("InvoiceGenerated")
      await (await ctx.kv("portal-invoices")).put(kvKey(e.invoiceId), JSON.stringify(e))
    },
  })

  // the same route twice under two event ids: priced twice, invoiced once (the once-guard on the route's subject, not
  // the msg id, which differs), seen twice by the others
  await (await routing.runtime.kv("routing-requests")).put("req-1", "{}")
  await routing.runtime.publish("RouteCalculated", route(1), { id: "rc-a" })
  await routing.runtime.publish("RouteCalculated", route(1), { id: "rc-b" })

  const count = (n: string) => seen.filter((s) => s === n).length
  await waitUntil(() => count("RouteCalculated") === 2 && count("EtaUpdated") === 2 && count("InvoiceGenerated") === 1, {
    timeoutMs: 10_000,
    what: `portal sees 2 routes, 2 ETAs, 1 invoice (seen ${seen.join(",")})`,
  })
  assert.is(priced, 2)
  for (const c of topo.consumers) {
    const info = await waitUntil(
      async () => {
        const i = await jsm.consumers.info(c.stream, c.durable)
        return i.num_ack_pending === 0 && i.num_pending === 0 ? i : null
      },
      { timeoutMs: 5000, what: `${c.stream}/${c.durable} fully acked` },
    )
    assert.is(info.ack_floor.stream_seq, info.delivered.stream_seq, `${c.stream}/${c.durable}`)
  }
  assert.is((await jsm.streams.info("INVOICE")).state.messages, 1)
  assert.is((await jsm.streams.info("DLQ")).state.messages, 0, "nothing was dead-lettered")
  const kvm = new Kvm(admin)
  assert.is(
    (await jsm.streams.getMessage("INVOICE", { last_by_subj: subjectOf("InvoiceGenerated", "route-1") }))?.json<{ invoiceId: string }>()
      .invoiceId,
    "inv-route-1-1",
  )
  assert.is((await getJson<{ routeId: string }>(await kvm.open("tracking-trucks"), "truck-1"))?.routeId, "route-1")
  assert.is((await getJson<{ routeId: string }>(await kvm.open("portal-trucks"), "truck-1"))?.routeId, "route-1")
  assert.is((await getJson<{ routeId: string }>(await kvm.open("portal-invoices"), "inv-route-1-1"))?.routeId, "route-1")
  // a refused ack would not throw anywhere: the server's -ERR is the only trace
  assert.equal(refused, { routing: [], invoice: [], tracking: [], portal: [] })
})

test("KV - each worker can get/put/create/delete/keys/watch its own buckets, and cannot read or write another's", async () => {
  const allBuckets = topo.buckets.map((b) => b.bucket)
  for (const w of workerNames) {
    const kvm = new Kvm(jetstream(users[w]))
    denials[w]!.length = 0
    for (const bucket of Object.keys(workers[w].buckets)) {
      const kv = await kvm.open(bucket)
      await kv.put("a", "1")
      assert.is((await kv.get("a"))?.string(), "1", `${w}/${bucket} get`)
      await kv.create("b", "2")
      await kv.delete("a")
      const keys: string[] = []
      for await (const k of await kv.keys()) keys.push(k)
      assert.equal(keys, ["b"], `${w}/${bucket} keys`)
      const watched: string[] = []
      for await (const e of await kv.watch()) if (watched.push(`${e.key}:${e.operation}`) === 2) break
      assert.equal(watched.sort(), ["a:DEL", "b:PUT"], `${w}/${bucket} watch`)
      assert.is((await kv.status()).values, 2, `${w}/${bucket} status (history 1: a's delete marker and b)`)
      // a watch over ~2.5 MB gets flow-control requests mid-stream; a refused $JS.FC reply shows only as an -ERR,
      // which arrives before the flush's PONG
      // (each value under the bucket's own cap, MAX_VALUE_BYTES)
      const big = "x".repeat(Math.min(64 * 1024, maxValueBytes(bucket) - 1024))
      await Promise.all(Array.from({ length: 40 }, (_, i) => kv.put(`big.${i}`, big)))
      const watch = await kv.watch({ key: "big.>" })
      let n = 0
      const done = (async () => {
        for await (const e of watch) if (e.length === big.length && ++n === 40) return
      })()
      // an unanswered flow-control request stalls the watch instead of failing it
      const stalled = setTimeout(() => watch.stop(), 5000)
      await done.finally(() => clearTimeout(stalled))
      assert.is(n, 40, `${w}/${bucket} watched every value (a stall means a refused flow-control reply)`)
      await users[w].flush()
      assert.equal(denials[w], [], `${w}/${bucket}: no permissions violation`)
    }
    const foreign = allBuckets.find((b) => !Object.hasOwn(workers[w].buckets, b))!
    const other = await kvm.open(foreign)
    await denied(other.get("a"), `$JS.API.STREAM.MSG.GET.KV_${foreign}`, `${w} reads ${foreign}`)
    await denied(other.put("a", "x"), `$KV.${foreign}.a`, `${w} writes ${foreign}`)
  }
})

test("isolation - no worker subscribes to domain events or another's inbox, or manages streams and consumers", async () => {
  for (const w of workerNames) {
    const nc = users[w]
    const other = workerNames.find((x) => x !== w)!
    for (const subject of ["routing.events.>", "invoice.events.>", "tracking.events.>", "_INBOX.>", `_INBOX_${other}.>`, ">"]) {
      const sub = nc.subscribe(subject)
      await nc.flush()
      assert.ok(sub.isClosed(), `${w} may not subscribe to ${subject}`)
      const err = await sub.closed
      assert.instance(err, PermissionViolationError, `${w} ${subject}`)
      assert.is((err as PermissionViolationError).operation, "subscription")
      assert.is((err as PermissionViolationError).subject, subject)
    }
    for (const subject of [
      "$JS.API.STREAM.CREATE.ROGUE",
      "$JS.API.STREAM.UPDATE.ROUTING",
      "$JS.API.STREAM.DELETE.ROUTING",
      "$JS.API.STREAM.PURGE.ROUTING",
      "$JS.API.CONSUMER.CREATE.ROUTING",
      `$JS.API.CONSUMER.CREATE.ROUTING.${w}.routing.events.>`,
      `$JS.API.CONSUMER.DURABLE.CREATE.ROUTING.${w}`,
      "$JS.API.CONSUMER.DELETE.ROUTING.invoice",
      `$JS.API.CONSUMER.DELETE.ROUTING.${w}`,
      "$JS.API.STREAM.MSG.DELETE.ROUTING",
    ]) {
      await denied(apiRequest(nc, subject), subject, `${w} → ${subject}`)
    }
    // pausing a consumer is ops' alone (the breaker), on every consumer
    if (w !== "ops")
      await denied(apiRequest(nc, "$JS.API.CONSUMER.PAUSE.ROUTING.invoice"), "$JS.API.CONSUMER.PAUSE.ROUTING.invoice", `${w} pauses`)
    // another worker's durable: binding it would steal that worker's messages
    for (const c of topo.consumers.filter((c) => c.worker !== w)) {
      const next = `$JS.API.CONSUMER.MSG.NEXT.${c.stream}.${c.durable}`
      await denied(apiRequest(nc, next), next, `${w} → ${next}`)
      if (w !== "ops") {
        const info = `$JS.API.CONSUMER.INFO.${c.stream}.${c.durable}`
        await denied(apiRequest(nc, info), info, `${w} → ${info}`)
      }
    }
  }
  const names: string[] = []
  for await (const s of jsm.streams.list()) names.push(s.config.name)
  assert.equal(names.sort(), [...topo.streams.map((s) => s.name), ...topo.buckets.map((b) => `KV_${b.bucket}`)].sort())
  assert.is((await jsm.consumers.info("ROUTING", "invoice")).name, "invoice")
})

test("ops - reads status, lag and originals of any stream, files DLQ entries and replays, but changes no stream or consumer", async () => {
  const ops = users.ops
  const ack = await publishAs("routing", "RouteCalculated", "rc-ops")
  const opsJsm = await jetstreamManager(ops)
  const streams: string[] = []
  for await (const s of opsJsm.streams.list()) streams.push(s.config.name)
  assert.ok(streams.includes("ROUTING") && streams.includes("KV_tracking-trucks"), streams.join(","))
  assert.equal((await opsJsm.streams.names().next()).sort(), streams.sort())
  assert.is((await opsJsm.consumers.info("ROUTING", "invoice")).num_pending, 1)
  const lag: string[] = []
  for await (const c of opsJsm.consumers.list("ROUTING")) lag.push(c.name)
  assert.equal(
    lag.sort(),
    topo.consumers
      .filter((c) => c.stream === "ROUTING")
      .map((c) => c.durable)
      .sort(),
  )
  const original = await opsJsm.streams.getMessage("ROUTING", { seq: ack.seq })
  assert.is(original?.header.get("ce-id"), "rc-ops")
  assert.is((await jetstream(ops).publish(dlqSubject("ROUTING", "invoice"), "entry")).stream, "DLQ")
  assert.is((await jetstream(ops).publish(replaySubject("invoice", "ROUTING"), "again")).stream, "REPLAY")
  // other workers' private state stays private, even to ops
  await denied(opsJsm.streams.getMessage("KV_tracking-trucks", { seq: 1 }), "$JS.API.STREAM.MSG.GET.KV_tracking-trucks")
  await denied(opsJsm.streams.delete("DLQ"), "$JS.API.STREAM.DELETE.DLQ")
  await denied(opsJsm.streams.purge("DLQ"), "$JS.API.STREAM.PURGE.DLQ")
  await denied(opsJsm.consumers.delete("ROUTING", "invoice"), "$JS.API.CONSUMER.DELETE.ROUTING.invoice")
  await denied(
    opsJsm.consumers.update("ROUTING", "invoice", { max_ack_pending: 1 }),
    "$JS.API.CONSUMER.CREATE.ROUTING.invoice.routing.events.RouteCalculated.*",
  )
  await denied(publishAs("ops", "RouteCalculated", "rc-x"), subjectOf("RouteCalculated", "truck-1"))
  // it may pause and resume any consumer (2.11+; an older server never answers, and ops refuses before asking)
  if (lacks("pause")) return
  assert.is((await opsJsm.consumers.pause("ROUTING", "invoice", new Date(Date.now() + 60_000))).paused, true)
  assert.is((await jsm.consumers.info("ROUTING", "invoice")).paused, true)
  assert.is((await opsJsm.consumers.resume("ROUTING", "invoice")).paused, false)
})

const pick = ({ stream, consumer, stream_seq }: { stream: string; consumer: string; stream_seq: number }) => ({
  stream,
  consumer,
  stream_seq,
})

test("advisories - MSG_TERMINATED and MAX_DELIVERIES are published in LOGIFLOW and stored by its ADVISORIES stream", async () => {
  assert.equal(topo.streams.find((s) => s.name === "ADVISORIES")?.subjects, ADVISORY_SUBJECTS)
  // a permanent failure under the invoice user: DLQ entry + term() → MSG_TERMINATED
  const r = await worker({
    name: "invoice",
    consumes: {
      RouteCalculated: () => {
        throw new PermanentError("no-tariff")
      },
    },
  }).start({ url: server.url, user: "invoice", pass: pass("invoice"), port: 0, drainTimeoutMs: 2000 })
  running.push(r)
  const sent = await publishAs("routing", "RouteCalculated", "rc-term")
  const terminated = await waitUntil(
    () =>
      jsm.streams
        .getMessage("ADVISORIES", { last_by_subj: "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.ROUTING.invoice" })
        .catch(() => null),
    { timeoutMs: 5000, what: "MSG_TERMINATED advisory in ADVISORIES" },
  )
  assert.equal(pick(terminated.json()), { stream: "ROUTING", consumer: "invoice", stream_seq: sent.seq })
  assert.is((await jsm.streams.info("DLQ")).state.messages, 1)

  // a consumer that gives up after one delivery while a pull is pending → MAX_DELIVERIES
  await jsm.consumers.add("ROUTING", { durable_name: "probe", ack_policy: AckPolicy.Explicit, max_deliver: 1, ack_wait: nanos(500) })
  const probe = await jetstream(admin).consumers.get("ROUTING", "probe")
  const first = await probe.next({ expires: 2000 })
  assert.is(first?.seq, sent.seq)
  // fetch() pulls only once iterated
  const pending = await probe.fetch({ max_messages: 1, expires: 4000 })
  const pulling = (async () => {
    for await (const m of pending) assert.unreachable(`seq ${m.seq} delivered past max_deliver`)
  })()
  const maxed = await waitUntil(
    () =>
      jsm.streams.getMessage("ADVISORIES", { last_by_subj: "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ROUTING.probe" }).catch(() => null),
    { timeoutMs: 5000, what: "MAX_DELIVERIES advisory in ADVISORIES" },
  )
  pending.stop()
  await pulling
  assert.equal(pick(maxed.json()), { stream: "ROUTING", consumer: "probe", stream_seq: sent.seq })
})

test("startup - a worker whose consumer is missing fails fast under its own user, naming `logiflow provision`, and creates nothing", async () => {
  await jsm.consumers.delete("ROUTING", "invoice")
  const err = await worker({ name: "invoice", consumes: noopHandlers("invoice") })
    .start({ url: server.url, user: "invoice", pass: pass("invoice"), port: 0 })
    .then(
      (r) => (running.push(r), undefined),
      (e: unknown) => e,
    )
  assert.instance(err, StartupError)
  assert.match((err as Error).message, "logiflow provision")
  assert.is(
    await jsm.consumers.info("ROUTING", "invoice").then(
      () => "exists",
      (e: Error) => e.message,
    ),
    "consumer not found",
  )
})

test("streams - admin can delete a stream; no worker user can", async () => {
  await jsm.streams.add({ name: "SCRATCH", subjects: ["scratch.>"] })
  for (const w of workerNames) {
    const m = await jetstreamManager(users[w], { checkAPI: false })
    await denied(m.streams.delete("SCRATCH"), "$JS.API.STREAM.DELETE.SCRATCH", w)
  }
  assert.is(await jsm.streams.delete("SCRATCH"), true)
  assert.is(
    await jsm.streams.info("SCRATCH").then(
      () => "exists",
      (e: Error) => e.message,
    ),
    "stream not found",
  )
})

test("sys - the system account monitors the server over NATS; application users cannot", async () => {
  const sys = await as("sys")
  try {
    const res = await sys.request("$SYS.REQ.SERVER.PING.VARZ", "", { timeout: 3000 })
    assert.is(res.json<{ data: { port: number } }>().data.port, server.port)
  } finally {
    await sys.close()
  }
  await denied(apiRequest(users.ops, "$SYS.REQ.SERVER.PING.VARZ"), "$SYS.REQ.SERVER.PING.VARZ")
})

/** `password: <value>` settings whose value is not a `$VARIABLE` (a literal password, quoted or not). */
function literalPasswords(text: string): string[] {
  const found: string[] = []
  for (const m of text.matchAll(/\b(?:password|pass|token)\s*[:=]\s*("[^"]*"|'[^']*'|[^\s,}\]]+)/gi)) {
    if (!/^\$[A-Za-z_][A-Za-z0-9_]*$/.test(m[1]!)) found.push(m[0])
  }
  return found
}

test("config - no tracked server config holds a literal password; nats.conf reads one variable per user", () => {
  assert.equal(literalPasswords(`{ user: a, password: "s3cret" }\n{ user: b, pass: 'x' }\n{ user: c, password: hunter2 }`), [
    'password: "s3cret"',
    "pass: 'x'",
    "password: hunter2",
  ])
  assert.equal(literalPasswords("{ user: a, password: $A_PASSWORD }"), [])
  const tracked = execFileSync("git", ["ls-files", "-z"], { cwd: ROOT, encoding: "utf8" }).split("\0").filter(Boolean)
  const configs = [...new Set(["nats.conf", ...tracked.filter((f) => f.endsWith(".conf"))])]
  for (const file of configs) assert.equal(literalPasswords(readFileSync(join(ROOT, file), "utf8")), [], file)

  // nats.conf takes its users from the shared accounts file
  const conf = ["nats.conf", "deploy/nats/accounts.conf"].map((f) => readFileSync(join(ROOT, f), "utf8")).join("\n")
  assert.match(readFileSync(join(ROOT, "nats.conf"), "utf8"), /^include "deploy\/nats\/accounts\.conf"$/m)
  const pairs = [...conf.matchAll(/\buser:\s*(\w+),\s*password:\s*\$(\w+)/g)].map((m) => [m[1]!, m[2]!] as const)
  assert.equal(pairs.map(([u]) => u).sort(), [...workerNames, "admin", "sys"].sort())
  for (const [u, v] of pairs) assert.is(v, `${u.toUpperCase()}_PASSWORD`)
  // pull consumers reply to nothing; allow_responses would let a worker publish to any reply subject it receives
  assert.not.match(conf.replace(/#.*$/gm, ""), "allow_responses")
  assert.equal(pairs.map(([, v]) => v).sort(), Object.keys(passwords()).sort())
})

/**
 * `NAME=value` / `NAME: value` settings of the HTTP credentials whose value is a literal, not a `$`/`${…}` reference;
 * in code (`quoted`) only a string literal counts, since `{ PORTAL_SECRET: portalSecret }` passes a variable on.
 */
function literalSecrets(text: string, quoted = false): string[] {
  const names = "LOGIFLOW_API_KEYS|LOGIFLOW_OPERATORS|PORTAL_SECRET|FLEET_API_KEY|LOGIFLOW_OPS_TOKEN"
  const re = new RegExp(`\\b(?:${names})\\s*[:=]\\s*${quoted ? "[\"'`]" : "[\"']?"}[A-Za-z0-9._~+/=:-]{8,}`, "g")
  return [...text.matchAll(re)].map((m) => m[0])
}

test("config - no tracked file outside the tests sets an operator token, API key or portal secret; deploy/secrets/ and .env are never tracked", () => {
  assert.equal(literalSecrets("LOGIFLOW_API_KEYS=a:b:routes:1\nPORTAL_SECRET: 'abcdefgh0123'\n"), [
    "LOGIFLOW_API_KEYS=a:b:routes:1",
    "PORTAL_SECRET: 'abcdefgh0123",
  ])
  assert.equal(
    literalSecrets(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a compose file spells an interpolation this way
      'PORTAL_SECRET_FILE: /run/secrets/x\nPORTAL_SECRET=${creds.portalSecret}\nLOGIFLOW_OPERATORS: "$OPS"\nno PORTAL_SECRET: set it',
    ),
    [],
  )
  assert.equal(literalSecrets('const env = { PORTAL_SECRET: "0123456789abcdef", FLEET_API_KEY: fleetKey }', true), [
    'PORTAL_SECRET: "0123456789abcdef',
  ])
  const tracked = execFileSync("git", ["ls-files", "-z"], { cwd: ROOT, encoding: "utf8" }).split("\0").filter(Boolean)
  for (const file of tracked.filter((f) => !f.startsWith("test/") && !/\.(png|jpg|lock)$|package-lock\.json$/.test(f))) {
    assert.equal(literalSecrets(readFileSync(join(ROOT, file), "utf8"), file.endsWith(".ts")), [], file)
  }
  assert.equal(
    tracked.filter((f) => f.startsWith("deploy/secrets/") || /(^|\/)\.env$/.test(f)),
    [],
  )
  for (const f of ["deploy/secrets/operators", "deploy/.env", ".logiflow/session.env"]) {
    assert.is(execFileSync("git", ["check-ignore", "-q", f, "--no-index"], { cwd: ROOT, encoding: "utf8" }), "", `${f} is git-ignored`)
  }
})

test("accounts.conf - is what `npm run accounts` derives from contracts/topology.ts now", async () => {
  const { ACCOUNTS_FILE, render } = await import("../mesh/cli/accounts.ts")
  const { readFile } = await import("node:fs/promises")
  assert.ok(
    (await readFile(ACCOUNTS_FILE, "utf8")) === render(),
    "deploy/nats/accounts.conf is stale: run `npm run accounts` and commit it",
  )
})

test.run()
