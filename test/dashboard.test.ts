// The ops dashboard in a real headless Chromium: a sign-in form until the operator's link sets a session, then
// entries appear, replay and discard work from the page (recorded under the operator's name), and a payload
// carrying <script> renders as text.
import { existsSync } from "node:fs"
import { mkdtemp } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jetstream, type JetStreamClient } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import { type Browser, chromium } from "playwright-core"
import * as assert from "uvu/assert"
import { type RouteCalculated, topology } from "../contracts/mod.ts"
import { allEntries } from "../mesh/admin/mod.ts"
import { PermanentError } from "../mesh/errors.ts"
import { provision } from "../mesh/provision.ts"
import { newId, publishEvent } from "../mesh/publish.ts"
import { type Running, worker } from "../mesh/worker.ts"
import { opsWorker } from "../workers/ops.ts"
import { connectTo, startServer, type TestServer, testAuth, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const XSS = "<script>window.__pwned=1</script>"

const test = suite("dashboard")
let server: TestServer
let nc: NatsConnection
let js: JetStreamClient
let browser: Browser | undefined
let shots: string
const running: Running[] = []

test.before(async () => {
  server = await startServer()
  nc = await connectTo(server)
  js = jetstream(nc)
  await provision(nc, topology())
  shots = await mkdtemp(join(tmpdir(), "logiflow-dashboard-"))
})
test.after(async () => {
  await browser?.close()
  await Promise.all(running.splice(0).map((r) => r.stop()))
  await nc?.close()
  await server?.close()
})

// in the test, not in before(): uvu reports an error thrown by a hook as 0 of 1 passed with exit code 0
async function launch(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    assert.unreachable(
      `Chromium not found at ${CHROMIUM}: the dashboard test needs it (apt-get update && apt-get install -y chromium; or set CHROMIUM_PATH)`,
    )
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  })
}

const send = (r: RouteCalculated) => publishEvent(js, "RouteCalculated", r, { id: newId(), source: "logiflow/test" })

test("dashboard - shows a dead letter, replays and discards it from the page, renders a <script> payload as text", async () => {
  browser = await launch()
  const ops = await opsWorker().start({ url: server.url, port: 0, drainTimeoutMs: 1000 })
  running.push(ops)
  const invoice = worker({
    name: "invoice",
    consumes: {
      RouteCalculated: (r) => {
        throw new PermanentError("no-tariff", `no tariff for customer ${r.customerId}`)
      },
    },
  })
  running.push(await invoice.start({ url: server.url, port: 0, drainTimeoutMs: 1000 }))
  const plain = await send(route(1, { customerId: "nobody" }))
  const hostile = await send(route(2, { customerId: XSS }))
  await waitUntil(async () => (await allEntries({ js })).length === 2, { what: "two entries" })
  const plainId = `ROUTING.invoice.${plain.seq}`
  const hostileId = `ROUTING.invoice.${hostile.seq}`

  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
  const prompts: string[] = []
  page.on("dialog", (d) => (prompts.push(d.message()), d.dismiss()))
  const pageErrors: string[] = []
  page.on("pageerror", (e) => pageErrors.push(e.message))
  // no session: the page shows the sign-in form and nothing of the desk
  await page.goto(`http://127.0.0.1:${ops.port}/`)
  await page.locator("#signin").waitFor()
  assert.is(await page.locator("section.desk:visible").count(), 0)
  assert.is(await page.locator("#entries tbody tr").count(), 0)
  // a wrong token typed into the form: refused, no session
  await page.locator('#signin input[name="token"]').fill("not-the-operator-token")
  await page.locator("#signin button").click()
  await page.locator("text=That operator token was not accepted").waitFor()
  // the operator's one-click link: a session cookie, then the desk
  await page.goto(`http://127.0.0.1:${ops.port}/login?token=${testAuth().operator.token}`)
  assert.is(new URL(page.url()).pathname, "/")
  await page.locator("#who", { hasText: "signed in as tester" }).waitFor()
  assert.is(await page.evaluate("document.cookie"), "", "the session cookie is HttpOnly")
  const state = (id: string) => page.locator(`tr[data-id="${id}"] td.state`)
  await state(plainId).waitFor()
  assert.is(await state(plainId).textContent(), "open")
  assert.is(await page.locator("#open-count").textContent(), "2 open")
  await page.locator('.bar[data-consumer="ROUTING/invoice"]').waitFor()
  assert.is(await page.locator(`.worker.up[data-worker="ops/${ops.runtime.instance}"]`).count(), 1, "ops shows itself as running")

  // hostile values stay text: in the table, in the detail payload, and nothing ran
  assert.is(await page.locator(`tr[data-id="${hostileId}"] td.error`).textContent(), `no tariff for customer ${XSS}`)
  await page.locator(`tr[data-id="${hostileId}"] td.state`).click()
  await page.locator("#d-payload").waitFor()
  await page.waitForFunction((id) => document.querySelector("#d-id")?.textContent === id, hostileId)
  assert.equal(JSON.parse((await page.locator("#d-payload").textContent())!), route(2, { customerId: XSS }))
  assert.match((await page.locator("#d-payload").textContent())!, `"customerId": "${XSS}"`)
  assert.is(await page.evaluate(() => (window as { __pwned?: number }).__pwned), undefined)
  assert.equal(
    await page.locator("script").evaluateAll((ss) => ss.map((s) => (s as HTMLScriptElement).src.replace(/^https?:\/\/[^/]+/, ""))),
    ["", "/ops-dlq.js"],
    "only the page's own scripts: the dashboard and its DLQ editor",
  )

  await page.locator(`tr[data-id="${plainId}"] button.replay`).click()
  await page.waitForFunction((id) => document.querySelector(`tr[data-id="${id}"] td.state`)?.textContent === "replayed", plainId)
  assert.equal(prompts, [], "no token prompt: the session carries the action")
  assert.is(await page.locator("#message").textContent(), `${plainId} is now replayed`)
  await page.locator(`tr[data-id="${hostileId}"] button.discard`).click()
  await page.waitForFunction((id) => document.querySelector(`tr[data-id="${id}"] td.state`)?.textContent === "discarded", hostileId)
  const all = await allEntries({ js })
  const entries = Object.fromEntries(all.map((e) => [e.id, e.state]))
  assert.equal(
    all.find((e) => e.id === plainId)!.history.map((h) => [h.action, h.by]),
    [
      ["dead-lettered", "invoice"],
      ["replayed", "tester"],
    ],
  )
  assert.equal(
    all.find((e) => e.id === hostileId)!.history.map((h) => [h.action, h.by]),
    [
      ["dead-lettered", "invoice"],
      ["discarded", "tester"],
    ],
  )
  assert.is(entries[plainId], "replayed")
  assert.is(entries[hostileId], "discarded")

  // the replay failed again (invoice still has no tariff): a new open entry shows up on the next refresh
  await page.waitForFunction(() => document.querySelectorAll("#entries tbody tr").length === 3, undefined, { timeout: 10_000 })
  await page.locator("#filter select[name=state]").selectOption("open")
  await page.waitForFunction(() => document.querySelectorAll("#entries tbody tr").length === 1)
  assert.is(await page.locator("#entries tbody tr td.state").textContent(), "open")
  await page.locator("#filter select[name=state]").selectOption("")
  await page.locator(`tr[data-id="${hostileId}"] td.state`).click()
  await page.waitForFunction(() => document.querySelectorAll("#d-timeline li").length === 2)
  const shot = join(shots, "dashboard.png")
  await page.screenshot({ path: shot, fullPage: true })
  console.log(`  screenshot: ${shot}`)
  await page.locator("#signout").click()
  await page.locator("#signin").waitFor()
  assert.equal(pageErrors, [])
})

test.run()
