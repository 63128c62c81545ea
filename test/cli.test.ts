// `logiflow` operator commands (mesh/cli/ops.ts), each run as its own process against a live nats-server,
// with exact output and exit codes.
import { writeFile } from "node:fs/promises"
import { userInfo } from "node:os"
import { join } from "node:path"
import * as assert from "uvu/assert"
import { type RouteCalculated, topology } from "../contracts/mod.ts"
import { allEntries, type DlqEntry } from "../mesh/admin/mod.ts"
import { PermanentError } from "../mesh/errors.ts"
import { newId, publishEvent } from "../mesh/publish.ts"
import { worker } from "../mesh/worker.ts"
import { opsWorker } from "../workers/ops.ts"
import { freePort, natsSuite, spawnTs, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const test = suite("cli")
const f = natsSuite(test)

type Run = { code: number | null; out: string[]; err: string[] }

/** Runs `logiflow <args>` as a process; stdout and stderr apart, so the exact output can be checked. */
function logiflow(args: string[], env: Record<string, string> = {}): Promise<Run> & { err: string[] } {
  const child = spawnTs("mesh/cli/main.ts", { NATS_URL: f.server.url, ...env }, args)
  const out: string[] = []
  const err: string[] = []
  const collect = (into: string[]) => {
    let rest = ""
    return (b: Buffer) => {
      const parts = (rest + b.toString()).split("\n")
      rest = parts.pop()!
      into.push(...parts)
    }
  }
  child.proc.stdout!.on("data", collect(out))
  child.proc.stderr!.on("data", collect(err))
  const done = new Promise<Run>((resolve) => child.proc.once("close", (code) => resolve({ code, out, err })))
  return Object.assign(done, { err })
}

const send = (r: RouteCalculated) => publishEvent(f.js, "RouteCalculated", r, { id: newId(), source: "logiflow/test" })

const cells = (line: string) => line.split(/\s{2,}/)

const routeLine = async (seq: number) => {
  const m = (await f.jsm.streams.getMessage("ROUTING", { seq }))!
  return `${m.header.get("ce-time")} RouteCalculated ${m.header.get("ce-subject")} ${m.header.get("ce-id")} ${new TextDecoder().decode(m.data)}`
}

test("publish → tail - a live tail prints each published event as one line, and exits after --count", async () => {
  const tail = logiflow(["tail", "routing.events.>", "--count", "2"])
  await waitUntil(() => tail.err.some((l) => l === "tail: listening on routing.events.> (Ctrl-C to stop)"), { what: "tail listening" })
  const file = join(f.server.storeDir, "route.json")
  await writeFile(file, JSON.stringify(route(2)))
  const p1 = await logiflow(["publish", "RouteCalculated", JSON.stringify(route(1))])
  const p2 = await logiflow(["publish", "RouteCalculated", `@${file}`])
  for (const [p, seq] of [
    [p1, 1],
    [p2, 2],
  ] as const) {
    assert.is(p.code, 0, p.err.join("\n"))
    assert.is(p.out.length, 1)
    assert.match(
      p.out[0]!,
      new RegExp(
        `^published RouteCalculated [0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12} \\(key truck-${seq}\\) to ROUTING seq ${seq}$`,
      ),
    )
    const stored = (await f.jsm.streams.getMessage("ROUTING", { seq }))!
    assert.is(p.out[0]!.split(" ")[2], stored.header.get("ce-id"))
    assert.is(stored.header.get("Nats-Msg-Id"), stored.header.get("ce-id"))
    assert.is(stored.header.get("ce-source"), "logiflow/cli")
    assert.is(stored.header.get("ce-subject"), route(seq).truckId)
  }
  const t = await tail
  assert.is(t.code, 0)
  assert.equal(t.out, [await routeLine(1), await routeLine(2)])
  assert.equal(JSON.parse(t.out[1]!.split(" ").slice(4).join(" ")), route(2))

  // without --count it runs until Ctrl-C, then exits 0
  const child = spawnTs("mesh/cli/main.ts", { NATS_URL: f.server.url }, ["tail", "invoice.events.>"])
  await child.waitFor(/^tail: listening on invoice\.events\.>/)
  assert.is(await child.stop("SIGINT"), 0)
  assert.equal(child.lines, ["tail: listening on invoice.events.> (Ctrl-C to stop)"])
})

test("tail --since - starts from the stream with an ordered consumer; --raw prints subject, headers and body", async () => {
  await send(route(1))
  await send(route(2))
  const t = await logiflow(["tail", "*.events.RouteCalculated", "--since", "10m", "--count", "2"])
  assert.is(t.code, 0, t.err.join("\n"))
  assert.equal(t.out, [await routeLine(1), await routeLine(2)])
  // an event type without a key means every key: the pattern is widened by one token
  assert.match(t.err[0]!, /^tail: listening on \*\.events\.RouteCalculated\.\* since \d{4}-\d\d-\d\dT/)
  const raw = await logiflow([
    "tail",
    "routing.events.RouteCalculated",
    "--since",
    new Date(Date.now() - 60_000).toISOString(),
    "--count",
    "1",
    "--raw",
  ])
  const m = (await f.jsm.streams.getMessage("ROUTING", { seq: 1 }))!
  const headerLines = [...m.header].flatMap(([k, vs]) => vs.map((v) => `${k}: ${v}`))
  assert.equal(raw.out, ["routing.events.RouteCalculated.truck-1", ...headerLines, "", new TextDecoder().decode(m.data), ""])
  assert.ok(headerLines.some((l) => l.startsWith("ce-type: logiflow.routing.RouteCalculated.v1")))
})

test("status - streams, consumers with their lag, open DLQ entries by consumer and reason", async () => {
  await send(route(1))
  const empty = await logiflow(["status"])
  assert.is(empty.code, 0, empty.err.join("\n"))
  const [workers, streams, consumers, dlq] = empty.out
    .join("\n")
    .split("\n\n")
    .map((s) => s.split("\n"))
  assert.equal(workers, ["WORKERS: no heartbeats (none running, or the heartbeats bucket is missing)"])
  assert.equal(cells(streams![0]!), ["STREAM", "MESSAGES", "BYTES", "CONSUMERS", "SUBJECTS"])
  const routing = streams!.map(cells).find((r) => r[0] === "ROUTING")!
  assert.equal([routing[1], routing[3], routing[4]], ["1", "3", "routing.events.RouteCalculated.*"])
  assert.match(routing[2]!, /^\d+ B$/)
  assert.equal(
    streams!.slice(1).map((r) => cells(r)[0]),
    [...topology().streams.map((t) => t.name), ...topology().buckets.map((b) => `KV_${b.bucket}`)].sort((a, b) => a.localeCompare(b)),
  )
  assert.equal(cells(consumers![0]!), ["CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED", "WAITING", "LAST ACTIVE"])
  const rows = Object.fromEntries(consumers!.slice(1).map((r) => [cells(r)[0], cells(r).slice(1)]))
  assert.equal(
    Object.keys(rows),
    topology()
      .consumers.map((c) => `${c.stream}/${c.durable}`)
      .sort(),
  )
  assert.equal(rows["ROUTING/invoice"], ["1", "0", "0", "0", "never"])
  assert.equal(rows["INVOICE/portal"], ["0", "0", "0", "0", "never"])
  assert.equal(dlq, ["DLQ: no open entries"])

  await startOps()
  await startNoTariff()
  await send(route(2, { customerId: "nobody" }))
  await send(route(3, { customerId: "nobody" }))
  await untilEntries(2)
  const after = await logiflow(["status"])
  const sections = after.out.join("\n").split("\n\n")
  const beats = sections[0]!.split("\n").map(cells)
  assert.equal(beats[0], ["WORKER", "INSTANCE", "READY", "IN FLIGHT", "VERSION", "STARTED", "LAST BEAT"])
  assert.equal(
    beats.slice(1).map((r) => [r[0], r[2], r[3]]),
    [
      ["invoice", "yes", "0"],
      ["ops", "yes", "0"],
    ],
  )
  assert.equal(sections[3]!.split("\n"), ["DLQ OPEN  CONSUMER  REASON", "2         invoice   no-tariff"])
  const invoice = cells(sections[2]!.split("\n").find((l) => l.startsWith("ROUTING/invoice "))!)
  assert.equal(invoice.slice(1, 5), ["0", "0", "0", "1"], "all handled; one pull waiting")
  assert.match(invoice[5]!, /^\d+s ago$/)
})

async function startOps() {
  f.running.push(await opsWorker().start({ url: f.server.url, port: 0, drainTimeoutMs: 1000 }))
}
async function startNoTariff() {
  const w = worker({
    name: "invoice",
    consumes: {
      RouteCalculated: (r) => {
        if (r.customerId === "nobody") throw new PermanentError("no-tariff", `no tariff for customer ${r.customerId}`)
      },
    },
  })
  f.running.push(await w.start({ url: f.server.url, port: 0, drainTimeoutMs: 1000 }))
}
const untilEntries = (n: number) =>
  waitUntil(
    async () => {
      const e = await allEntries({ js: f.js })
      return e.length >= n ? e : null
    },
    { what: `${n} entries` },
  )

test("dlq list / show / replay / discard - the same operations as the API, one line per outcome", async () => {
  await startOps()
  await startNoTariff()
  await send(route(1, { customerId: "nobody" }))
  await send(route(2, { customerId: "nobody" }))
  const [e2, e1] = (await untilEntries(2)) as [DlqEntry, DlqEntry]
  const row = (e: DlqEntry, state = e.state) => [
    e.id,
    state,
    "invoice",
    "no-tariff",
    e.routeId!,
    e.key!,
    "1",
    e.failedAt,
    `no tariff for customer nobody`,
  ]

  const list = await logiflow(["dlq", "list"])
  assert.is(list.code, 0, list.err.join("\n"))
  assert.equal(list.out.map(cells), [
    ["ID", "STATE", "CONSUMER", "REASON", "EVENT", "KEY", "DELIVERIES", "FAILED AT", "ERROR"],
    row(e2),
    row(e1),
    ["2 entries"],
  ])
  assert.equal((await logiflow(["dlq", "list", "--consumer", "tracking"])).out, ["no entries"])
  assert.equal((await logiflow(["dlq", "list", "--limit", "1"])).out.at(-1), `showing 1 of 2 entries; next page: --cursor ${e2.dlqSeq}`)
  assert.equal((await logiflow(["dlq", "ls", "--limit", "1", "--cursor", String(e2.dlqSeq)])).out.map(cells), [
    ["ID", "STATE", "CONSUMER", "REASON", "EVENT", "KEY", "DELIVERIES", "FAILED AT", "ERROR"],
    row(e1),
    ["showing 1 of 2 entries (last page)"],
  ])
  assert.equal((await logiflow(["dlq", "ls", "--event-id", "route-2"])).out.slice(1).map(cells), [row(e2), ["1 entry"]])
  assert.equal((await logiflow(["dlq", "ls", "--key", "truck-1", "--state", "open"])).out.slice(1).map(cells), [row(e1), ["1 entry"]])

  const show = await logiflow(["dlq", "show", e1.id])
  assert.is(show.code, 0)
  const dlqMsg = (await f.jsm.streams.getMessage("DLQ", { seq: e1.dlqSeq }))!
  assert.equal(show.out, [
    `id:          ${e1.id}`,
    "state:       open",
    "consumer:    invoice",
    `stream:      ROUTING seq ${e1.seq}`,
    "subject:     routing.events.RouteCalculated.truck-1",
    `event id:    ${e1.eventId}`,
    "route:       route-1",
    "key:         truck-1",
    "reason:      no-tariff",
    "error:       no tariff for customer nobody",
    "deliveries:  1",
    `failed at:   ${e1.failedAt}`,
    "replays:     0",
    `dlq seq:     ${e1.dlqSeq}`,
    "headers:",
    ...[...dlqMsg.header].map(([k, vs]) => `  ${k}: ${vs.join(", ")}`),
    "payload:",
    ...JSON.stringify(route(1, { customerId: "nobody" }), null, 2)
      .split("\n")
      .map((l) => `  ${l}`),
    "timeline:",
    `  ${e1.failedAt} dead-lettered by invoice`,
  ])

  // the CLI's authority is its admin NATS connection; the history names LOGIFLOW_OPERATOR (else the OS user)
  const token = { LOGIFLOW_OPERATOR: "alice" }
  const replay = await logiflow(["dlq", "replay", e1.id], token)
  assert.equal([replay.code, replay.out], [0, [`replayed ${e1.id} to replay.invoice.ROUTING (replay 1)`]])
  // invoice still has no tariff: the replay fails again, a new entry
  const three = await untilEntries(3)
  const again = three.find((e) => e.replayOf === e1.id)!
  assert.ok(again)
  // a bulk replay is a job that ops runs; --wait follows it to its end
  const bulk = await logiflow(["dlq", "replay", "--consumer", "invoice", "--reason", "no-tariff", "--rate", "50", "--wait"], token)
  assert.is(bulk.code, 0, bulk.err.join("\n"))
  assert.match(bulk.out[0]!, /^started job-\S+ running: 0 done, 0 failed, 0 skipped of 2 at 50\/s \(by alice, started /)
  assert.match(bulk.out.at(-1)!, /^job-\S+ done: 2 done, 0 failed, 0 skipped of 2 at 50\/s \(by alice, started /)
  const discard = await logiflow(["dlq", "discard", e2.id], { LOGIFLOW_OPERATOR: "" })
  assert.equal([discard.code, discard.out], [0, [`discarded ${e2.id}`]])
  const twice = await logiflow(["dlq", "discard", e2.id], token)
  assert.equal([twice.code, twice.out, twice.err], [1, [], [`logiflow dlq: entry ${e2.id} is already discarded`]])
  const shown = await logiflow(["dlq", "show", e2.id])
  assert.equal(shown.out.slice(-4), ["timeline:", `  ${e2.failedAt} dead-lettered by invoice`, shown.out.at(-2)!, shown.out.at(-1)!])
  assert.match(shown.out.at(-2)!, /^ {2}\S+ replayed by alice \(job job-\S+\)$/)
  assert.match(shown.out.at(-1)!, new RegExp(`^ {2}\\S+ discarded by ${userInfo().username}$`), "without LOGIFLOW_OPERATOR: the OS user")
  const open = await logiflow(["dlq", "list", "--state", "open"])
  assert.equal(
    open.out.slice(1, -1).map((l) => cells(l)[0]),
    (await allEntries({ js: f.js })).filter((e) => e.state === "open").map((e) => e.id),
  )
  assert.ok(!open.out.some((l) => l.startsWith(`${e2.id} `)))
})

test("errors - one line, exit code 1, no stack trace unless --debug", async () => {
  const dead = `nats://127.0.0.1:${await freePort()}`
  const cases: [string[], RegExp | string, Record<string, string>?][] = [
    [
      ["publish", "Foo", "{}"],
      'logiflow publish: unknown event "Foo" (known: RouteCalculated, InvoiceGenerated, PositionReported, EtaUpdated)',
    ],
    [["publish", "RouteCalculated", "{not json"], /^logiflow publish: invalid JSON: .+$/],
    [
      ["publish", "RouteCalculated", JSON.stringify({ ...route(1), stops: [{ id: "x", lat: 91, lon: 0 }] })],
      /^logiflow publish: breaks the contract: RouteCalculated: stops\.0\.lat: /,
    ],
    [["publish", "RouteCalculated", "@/nonexistent/route.json"], "logiflow publish: cannot read /nonexistent/route.json: ENOENT"],
    [["tail", "routing..RouteCalculated"], /^logiflow tail: "routing\.\.RouteCalculated" is not a valid subject pattern/],
    [
      ["tail", "routing.RouteCalculated"],
      /^logiflow tail: no stream stores "routing\.RouteCalculated"; stored subjects: .*routing\.events\.RouteCalculated\.\*/,
    ],
    [["tail", "routing.events.>", "--since", "bogus"], 'logiflow tail: "bogus" is neither a duration (5m, 2h, 1d) nor an ISO time'],
    [["dlq", "show", "ROUTING.invoice.404"], 'logiflow dlq: no DLQ entry "ROUTING.invoice.404"'],
    [["dlq", "list", "--state", "bogus"], "logiflow dlq: state must be one of open, replayed, discarded, resolved"],
    [["status"], `logiflow status: cannot reach NATS at ${dead}: connection refused`, { NATS_URL: dead }],
  ]
  const runs = await Promise.all(cases.map(([args, , env]) => logiflow(args, env)))
  runs.forEach((r, i) => {
    const [args, expected] = cases[i]!
    const what = args.join(" ")
    assert.is(r.code, 1, what)
    assert.equal(r.out, [], what)
    assert.is(r.err.length, 1, `${what}: ${r.err.join(" | ")}`)
    if (typeof expected === "string") assert.is(r.err[0], expected, what)
    else assert.match(r.err[0]!, expected, what)
  })
  const debug = await logiflow(["status", "--debug"], { NATS_URL: dead })
  assert.is(debug.code, 1)
  assert.ok(
    debug.err.some((l) => /^\s+at /.test(l)),
    "a stack trace with --debug",
  )
  const unknown = await logiflow(["frobnicate"])
  assert.equal(
    [unknown.code, unknown.err],
    [2, ['logiflow: unknown command "frobnicate" (try: up, provision, tail, status, dlq, publish, trace, rebuild, consumer, token)']],
  )
})

test.run()
