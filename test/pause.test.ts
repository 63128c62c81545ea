// The circuit breaker (nats-server 2.11+): an operator pauses a consumer while what it calls is down, its events wait
// in the stream instead of using up deliveries into the DLQ, and a resume delivers them at once. Through the ops API
// (real routing, invoice and ops processes), `logiflow consumer`, and the dashboard's buttons in headless Chromium.
// On 2.9.10 the same requests answer with the feature's name: test/compat.test.ts.
import { existsSync } from "node:fs"
import { chromium } from "playwright-core"
import * as assert from "uvu/assert"
import { opsWorker } from "../workers/ops.ts"
import { type Child, lacks, natsSuite, sleep, spawnTs, startReady, testAuth, waitUntil, suite } from "./harness.ts"

/** a time as the mesh shows it (JavaScript's ISO form); the server trims trailing zeros of the fraction (.69Z) */
const iso = (serverTime: string | undefined) => new Date(serverTime!).toISOString()
const test = suite("pause")
const why = lacks("pause")
if (why) console.log(`skipped: ${why}`)

const children: Child[] = []
test.after.each(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop("SIGKILL")))
})
const f = natsSuite(test)
const operator = testAuth().operator

type Api = { status: number; body: any }
async function post(base: string, path: string, body?: unknown, headers: Record<string, string> = operator.headers): Promise<Api> {
  const r = await fetch(base + path, {
    method: "POST",
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  return { status: r.status, body: await r.json() }
}
const statusOf = async (base: string, consumer: string) =>
  (
    (await (await fetch(`${base}/api/status`, { headers: operator.headers })).json()) as {
      consumers: { stream: string; name: string; paused?: true; pauseUntil?: string }[]
    }
  ).consumers.find((c) => `${c.stream}/${c.name}` === consumer)!

const spawnWorker = (name: "ops" | "invoice" | "routing") =>
  startReady(`workers/${name}.ts`, `${name.toUpperCase()}_PORT`, { NATS_URL: f.server.url }, children)

async function inProcessOps(): Promise<string> {
  const ops = await opsWorker().start({ url: f.server.url, port: 0, drainTimeoutMs: 1000 })
  f.running.push(ops)
  return `http://127.0.0.1:${ops.port}`
}

/** `logiflow <args>` as a process: exit code, stdout and stderr lines. */
async function logiflow(args: string[], env: Record<string, string> = {}) {
  const c = spawnTs("mesh/cli/main.ts", { NATS_URL: f.server.url, LOGIFLOW_OPERATOR: "alice", ...env }, args)
  let out = ""
  let err = ""
  c.proc.stdout!.on("data", (b: Buffer) => (out += b.toString()))
  c.proc.stderr!.on("data", (b: Buffer) => (err += b.toString()))
  const code = await new Promise<number | null>((r) => c.proc.once("close", r))
  const lines = (s: string) => (s ? s.replace(/\n$/, "").split("\n") : [])
  return { code, out: lines(out), err: lines(err) }
}

if (!why) {
  test("breaker - invoice paused through the ops API: 20 routes posted to routing wait in ROUTING (none invoiced, none redelivered, no DLQ entry); resumed, each is invoiced once", async () => {
    const [ops, invoice, routing] = await Promise.all([spawnWorker("ops"), spawnWorker("invoice"), spawnWorker("routing")])
    const paused = await post(ops.url, "/api/consumers/ROUTING/invoice/pause", { for: "30m" })
    assert.is(paused.status, 200, JSON.stringify(paused.body))
    assert.equal([paused.body.stream, paused.body.consumer, paused.body.paused, paused.body.by], ["ROUTING", "invoice", true, "tester"])
    assert.ok(Math.abs(Date.parse(paused.body.pauseUntil) - (Date.now() + 30 * 60_000)) < 10_000, paused.body.pauseUntil)
    const posted: string[] = []
    for (let i = 0; i < 20; i++) {
      const r = await fetch(`${routing.url}/routes`, {
        method: "POST",
        headers: { ...testAuth().headers.routes, "content-type": "application/json" },
        body: JSON.stringify({
          truckId: `truck-${i % 5}`,
          customerId: "acme",
          depot: { lat: 52.52, lon: 13.405 },
          stops: [{ id: `s${i}`, lat: 52.53, lon: 13.41 }],
        }),
      })
      assert.is(r.status, 202, "routing answers while invoice is paused")
      posted.push(((await r.json()) as { routeId: string }).routeId)
    }
    // long enough for invoice's pull requests to come and go (heartbeats every 5 s on a paused consumer too)
    await sleep(6000)
    const waiting = await f.jsm.consumers.info("ROUTING", "invoice")
    assert.equal([waiting.paused, waiting.num_pending, waiting.num_ack_pending, waiting.num_redelivered], [true, 20, 0, 0])
    assert.is((await f.jsm.streams.info("INVOICE")).state.messages, 0, "nothing invoiced while paused")
    assert.is((await f.jsm.streams.info("DLQ")).state.messages, 0, "no delivery used up, nothing dead-lettered")
    assert.is((await fetch(`${invoice.url}/readyz`)).status, 200, "a paused consumer is not a broken worker")
    const st = await statusOf(ops.url, "ROUTING/invoice")
    assert.equal([st.paused, st.pauseUntil], [true, paused.body.pauseUntil])
    // who acted, and the server's own record (its PAUSE advisory, which ops reads from ADVISORIES)
    await ops.child.waitFor(/"msg":"consumer pause requested".*"by":"tester"/)
    await ops.child.waitFor(/"msg":"consumer paused","stream":"ROUTING","consumer":"invoice","until":"/)

    const resumed = await post(ops.url, "/api/consumers/ROUTING/invoice/resume")
    assert.equal([resumed.status, resumed.body], [200, { stream: "ROUTING", consumer: "invoice", paused: false, by: "tester" }])
    await waitUntil(async () => (await f.jsm.streams.info("INVOICE")).state.messages === 20 || null, {
      what: "20 invoices",
      timeoutMs: 15_000,
    })
    await sleep(500)
    const done = await f.jsm.consumers.info("ROUTING", "invoice")
    assert.equal([done.paused ?? false, done.num_pending, done.num_ack_pending, done.num_redelivered], [false, 0, 0, 0])
    const invoiced = new Set<string>()
    for (let seq = 1; seq <= 20; seq++)
      invoiced.add((await f.jsm.streams.getMessage("INVOICE", { seq }))!.json<{ routeId: string }>().routeId)
    assert.equal([...invoiced].sort(), posted.sort(), "each posted route once")
    assert.is((await f.jsm.streams.info("INVOICE")).state.messages, 20)
    assert.is((await f.jsm.streams.info("DLQ")).state.messages, 0)
    assert.is((await statusOf(ops.url, "ROUTING/invoice")).paused, undefined)
    await ops.child.waitFor(/"msg":"consumer resumed","stream":"ROUTING","consumer":"invoice"/)
    await ops.child.waitFor(/"msg":"consumer resume requested".*"by":"tester"/)
  })

  test("API - until, the default hour, and precise refusals: 400 bad times and names, 404 no consumer, 401 no operator", async () => {
    const base = await inProcessOps()
    const until = new Date(Date.now() + 2 * 3600_000).toISOString()
    const a = await post(base, "/api/consumers/ROUTING/tracking/pause", { until })
    assert.equal([a.status, a.body.pauseUntil], [200, until])
    // the server writes its own RFC 3339 (no trailing zeros in the fraction: .69Z for .690Z): the same instant
    assert.is(Date.parse((await f.jsm.consumers.info("ROUTING", "tracking")).config.pause_until!), Date.parse(until))
    const d = await post(base, "/api/consumers/INVOICE/portal/pause", {})
    assert.ok(Math.abs(Date.parse(d.body.pauseUntil) - (Date.now() + 3600_000)) < 10_000, `default: an hour, got ${d.body.pauseUntil}`)
    const past = new Date(Date.now() - 1000).toISOString()
    const cases: [string, unknown, number, string | RegExp][] = [
      ["ROUTING/invoice", { for: "0m" }, 400, 'for must be a duration such as 90s, 30m, 2h or 1d, got "0m"'],
      ["ROUTING/invoice", { for: "soon" }, 400, 'for must be a duration such as 90s, 30m, 2h or 1d, got "soon"'],
      ["ROUTING/invoice", { for: "30m", until }, 400, "give for or until, not both"],
      ["ROUTING/invoice", { until: past }, 400, `until ${past} has passed`],
      ["ROUTING/invoice", { until: "tomorrow" }, 400, 'until must be an RFC 3339 time, got "tomorrow"'],
      [
        "ROUTING/invoice",
        { for: "8d" },
        400,
        "a pause may last 7 days at most (the outage budget): longer, the stream would fill up and refuse new events",
      ],
      ["ROUTING/invoice", { reason: "x" }, 400, 'unknown field "reason" (give for or until)'],
      ["ROUTING/invoice", [], 400, 'body must be a JSON object: { "for": "30m" } or { "until": "<RFC 3339>" }'],
      ["ROUTING/nobody", { for: "1m" }, 404, "no consumer ROUTING/nobody"],
      ["ROUTING/in.voice", { for: "1m" }, 400, '"ROUTING/in.voice" is not a consumer (STREAM/consumer: letters, digits, _ and -)'],
    ]
    for (const [ref, body, status, error] of cases) {
      const r = await post(base, `/api/consumers/${ref.split("/").map(encodeURIComponent).join("/")}/pause`, body)
      assert.is(r.status, status, `${ref} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`)
      assert.is(r.body.error, error)
    }
    assert.is((await f.jsm.consumers.info("ROUTING", "invoice")).paused ?? false, false, "none of those paused it")
    const anon = await post(base, "/api/consumers/ROUTING/invoice/pause", { for: "1m" }, {})
    assert.is(anon.status, 401)
    assert.is((await post(base, "/api/consumers/ROUTING/tracking/resume")).body.paused, false)
  })

  test("CLI - logiflow consumer pause --for / --until, the PAUSED section of logiflow status, resume; one-line errors", async () => {
    const p = await logiflow(["consumer", "pause", "ROUTING/invoice", "--for", "45m"])
    assert.is(p.code, 0, p.err.join("\n"))
    const info = await f.jsm.consumers.info("ROUTING", "invoice")
    assert.equal(p.out, [
      `paused ROUTING/invoice until ${iso(info.config.pause_until)} (by alice): its events wait in ROUTING; logiflow consumer resume ROUTING/invoice delivers them at once`,
    ])
    assert.ok(Math.abs(Date.parse(info.config.pause_until!) - (Date.now() + 45 * 60_000)) < 15_000)
    const until = new Date(Date.now() + 26 * 3600_000).toISOString()
    assert.is((await logiflow(["consumer", "pause", "TRACKING/portal", "--until", until])).code, 0)
    const st = await logiflow(["status"])
    const section = st.out
      .join("\n")
      .split("\n\n")
      .find((s) => s.startsWith("PAUSED"))!
      .split("\n")
      .map((l) => l.split(/\s{2,}/))
    assert.equal(section, [
      ["PAUSED", "UNTIL", "LEFT"],
      ["ROUTING/invoice", iso(info.config.pause_until), "45m"],
      ["TRACKING/portal", until, "1d"],
    ])
    const r = await logiflow(["consumer", "resume", "ROUTING/invoice"])
    assert.equal([r.code, r.out], [0, ["resumed ROUTING/invoice (by alice)"]])
    assert.is((await f.jsm.consumers.info("ROUTING", "invoice")).paused ?? false, false)
    const errors: [string[], string][] = [
      [["consumer", "pause", "ROUTING"], '"ROUTING/" is not a consumer (STREAM/consumer: letters, digits, _ and -)'],
      [["consumer", "pause", "ROUTING/invoice", "--for", "30m", "--until", until], "give for or until, not both"],
      [["consumer", "resume", "ROUTING/nobody"], "no consumer ROUTING/nobody"],
      [
        ["consumer", "stop", "ROUTING/invoice"],
        'unknown consumer command "stop" (pause, resume); usage: logiflow consumer pause <STREAM>/<consumer> [--for 30m | --until <RFC 3339>] | resume <STREAM>/<consumer>',
      ],
    ]
    for (const [args, message] of errors) {
      const e = await logiflow(args)
      assert.equal([e.code, e.out, e.err], [1, [], [`logiflow consumer: ${message}`]], args.join(" "))
    }
  })

  test("dashboard - a pause button per consumer pauses for the chosen time, the row says until when, resume resumes", async () => {
    const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
    if (!existsSync(chromiumPath))
      assert.unreachable(`Chromium not found at ${chromiumPath} (apt-get install -y chromium; or set CHROMIUM_PATH)`)
    const base = await inProcessOps()
    const browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    })
    try {
      const page = await browser.newPage()
      const errors: string[] = []
      page.on("pageerror", (e) => errors.push(e.message))
      await page.goto(`${base}/login?token=${operator.token}`)
      const bar = page.locator('.bar[data-consumer="ROUTING/invoice"]')
      await bar.locator("button.pause").waitFor()
      await page.locator("#pause-for").selectOption("4h")
      await bar.locator("button.pause").click()
      await page.locator('.bar.paused[data-consumer="ROUTING/invoice"] button.resume').waitFor()
      const info = await f.jsm.consumers.info("ROUTING", "invoice")
      assert.ok(
        info.paused && Math.abs(info.pause_remaining / 1e6 - 4 * 3600_000) < 15_000,
        `paused for 4 h: ${info.pause_remaining / 1e9} s left`,
      )
      assert.is(await page.locator("#message").textContent(), `ROUTING/invoice paused until ${iso(info.config.pause_until)} by tester`)
      assert.is(await bar.locator(".paused-until").textContent(), `paused until ${iso(info.config.pause_until)}`)
      assert.is(await page.locator(".bar.paused").count(), 1, "only that one")
      await bar.locator("button.resume").click()
      await page.locator('.bar:not(.paused)[data-consumer="ROUTING/invoice"] button.pause').waitFor()
      assert.is((await f.jsm.consumers.info("ROUTING", "invoice")).paused ?? false, false)
      assert.is(await page.locator("#message").textContent(), "ROUTING/invoice resumed by tester")
      assert.equal(errors, [])
    } finally {
      await browser.close()
    }
  })
}

test.run()
