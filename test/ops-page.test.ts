// The ops dashboard and a story page in a real headless Chromium: a lag sparkline per consumer drawn from the samples
// ops keeps, both pages fitting a 1280 px screen and a 375 px phone without horizontal overflow, reachable with the
// keyboard with a visible focus, and rendered under the strict policy ops sends (a nonce for the page's own script
// and style, nothing inline else) with no violation. Screenshots are kept in test/artifacts/ (not committed).
import { existsSync } from "node:fs"
import { mkdir } from "node:fs/promises"
import { join } from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import * as assert from "uvu/assert"
import { type RouteCalculated, topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { newId, publishEvent } from "../mesh/publish.ts"
import { type Proc, spawnWorker } from "./fixtures/chaos.ts"
import { lacks, natsFixture, type NatsFixture, ROOT, testAuth, waitUntil, suite } from "./harness.ts"

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const ARTIFACTS = join(ROOT, "test", "artifacts")
// a customer without a tariff, with an id long enough to stretch the dead letters' error column
const NOBODY = "a-customer-without-any-tariff-whose-identifier-is-long-enough-to-stretch-every-column-0123456789"

const test = suite("ops page")
let f: NatsFixture
let ops: Proc
let browser: Browser | undefined
const procs: Proc[] = []

test.before(async () => {
  f = await natsFixture()
  await provision(f.nc, topology())
  await mkdir(ARTIFACTS, { recursive: true })
})
test.after(async () => {
  await browser?.close()
  await Promise.all(procs.map((p) => p.stop("SIGKILL")))
  await f?.nc.close()
  await f?.server.close()
})

function route(i: number, customerId: string): RouteCalculated {
  return {
    routeId: newId(),
    truckId: `truck-${i % 3}`,
    customerId,
    stops: [{ id: "a", lat: 52.52, lon: 13.405 }],
    distanceKm: 3,
    eta: "2026-12-07T10:00:00.000Z",
    calculatedAt: new Date().toISOString(),
  }
}
const send = (r: RouteCalculated) => publishEvent(f.js, "RouteCalculated", r, { id: `routing:${r.routeId}`, source: "logiflow/test" })

// in the test, not in before(): uvu reports an error thrown by a hook as 0 of 1 passed with exit code 0
async function launch(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) assert.unreachable(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium; or set CHROMIUM_PATH)`)
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] })
}

/** A page that records every CSP violation and console error from its first script on. */
async function watchedPage(b: Browser, width: number) {
  const page = await b.newPage({ viewport: { width, height: 900 } })
  const problems: string[] = []
  await page.addInitScript(() => {
    const w = window as unknown as { __csp: string[] }
    w.__csp = []
    document.addEventListener("securitypolicyviolation", (e) => w.__csp.push(`${e.violatedDirective} ${e.blockedURI}`))
  })
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()))
  page.on("pageerror", (e) => problems.push(e.message))
  const violations = () => page.evaluate(() => (window as unknown as { __csp: string[] }).__csp)
  return { page, problems, violations }
}

const overflow = (page: Page) => page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }))

/** What Tab reaches, in order, up to `n` stops: a description of each focused element and its outline. */
async function tabStops(page: Page, n: number) {
  const stops: { what: string; outline: string }[] = []
  await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur())
  for (let i = 0; i < n; i++) {
    await page.keyboard.press("Tab")
    stops.push(
      await page.evaluate(() => {
        const e = document.activeElement as HTMLElement
        const s = getComputedStyle(e)
        const cls = typeof e.className === "string" && e.className ? `.${e.className.split(" ").join(".")}` : ""
        const what = `${e.tagName.toLowerCase()}${cls}${e.dataset.id ? `[${e.dataset.id}]` : ""}`
        return { what, outline: `${s.outlineStyle} ${s.outlineWidth}` }
      }),
    )
  }
  return stops
}

test("dashboard - a lag sparkline per consumer, fits 1280 px and 375 px, keyboard-usable, no CSP violation", async () => {
  browser = await launch()
  ops = await spawnWorker("ops", { NATS_URL: f.server.url, OPS_LAG_SAMPLE_MS: "300" })
  procs.push(ops)
  const invoice = await spawnWorker("invoice", { NATS_URL: f.server.url })
  const dead = await send(route(0, NOBODY))
  await send(route(1, NOBODY))
  const auth = testAuth().operator.headers
  await waitUntil(async () => (await (await fetch(`${ops.url}/api/dlq`, { headers: auth })).json()).total === 2, {
    what: "two dead letters",
  })
  await invoice.stop("SIGTERM")
  for (let i = 0; i < 12; i++) await send(route(i, "acme"))

  const header = (await fetch(`${ops.url}/`)).headers.get("content-security-policy")!
  assert.match(header, /^default-src 'none'; script-src 'nonce-[A-Za-z0-9+/=]{24}'; style-src 'nonce-[A-Za-z0-9+/=]{24}'; /)
  assert.not.match(header, /unsafe-inline|unsafe-eval/)

  const { page, problems, violations } = await watchedPage(browser, 1280)
  await page.goto(`${ops.url}/login?token=${testAuth().operator.token}`)
  await page.locator(`tr[data-id="ROUTING.invoice.${dead.seq}"]`).waitFor()
  // the sampler has seen the backlog of 12 behind the stopped invoice worker a few times
  const spark = page.locator('svg.spark[data-spark="ROUTING/invoice"]')
  await page.waitForFunction(
    () => Number(document.querySelector('svg.spark[data-spark="ROUTING/invoice"]')?.getAttribute("data-samples")) >= 4,
    undefined,
    { timeout: 20_000 },
  )
  assert.is(await spark.getAttribute("data-max"), "12")
  assert.match((await spark.getAttribute("aria-label"))!, /^ROUTING\/invoice lag over the last \d+ s: \d+ samples, max 12, now 12$/)
  const points = (await spark.locator("polyline").getAttribute("points"))!.split(" ")
  assert.is(points.length, Number(await spark.getAttribute("data-samples")))
  assert.is(points.at(-1)!.split(",")[1], "2.0", "the line ends at the top: the current lag is the window's highest")
  assert.is(await page.locator("svg.spark").count(), await page.locator(".bar").count(), "one sparkline per consumer")

  const wide = await overflow(page)
  assert.ok(wide.scroll <= wide.inner, `1280 px: the page is ${wide.scroll} px wide`)

  // the keyboard: every pause button and each dead letter is a tab stop, with a visible outline; Enter opens a row
  const stops = await tabStops(page, 60)
  const reached = stops.map((s) => s.what)
  assert.ok(reached.includes("button.act.pause"), reached.join(" "))
  const row = stops.find((s) => s.what === `tr[ROUTING.invoice.${dead.seq}]`)
  assert.ok(row, reached.join(" "))
  // (past the last control the focus leaves the page for a moment: the body)
  const controls = stops.filter((s) => s.what !== "body")
  assert.ok(
    controls.every((s) => s.outline === "solid 3px"),
    JSON.stringify(controls.filter((s) => s.outline !== "solid 3px")),
  )
  await page.locator(`tr[data-id="ROUTING.invoice.${dead.seq}"]`).focus()
  await page.keyboard.press("Enter")
  await page.waitForFunction((id) => document.querySelector("#d-id")?.textContent === id, `ROUTING.invoice.${dead.seq}`)

  // the breaker from the keyboard (nats-server 2.11+): the paused bar's "paused until <time>" still fits
  if (!lacks("pause")) {
    await page.locator('.bar[data-consumer="ROUTING/invoice"] button.pause').focus()
    await page.keyboard.press("Enter")
    await page.locator('.bar.paused[data-consumer="ROUTING/invoice"] .paused-until').waitFor()
    const paused = await overflow(page)
    assert.ok(paused.scroll <= paused.inner, `1280 px with a paused consumer: the page is ${paused.scroll} px wide`)
  }
  await page.screenshot({ path: join(ARTIFACTS, "ops-dashboard-1280.png"), fullPage: true })

  await page.setViewportSize({ width: 375, height: 800 })
  await page.locator('#entries td[data-label="reason"]').first().waitFor()
  const narrow = await overflow(page)
  assert.ok(narrow.scroll <= narrow.inner, `375 px: the page is ${narrow.scroll} px wide`)
  await page.screenshot({ path: join(ARTIFACTS, "ops-dashboard-375.png"), fullPage: true })
  assert.equal(await violations(), [])
  assert.equal(problems, [])

  // the listener does see a violation: a script added at run time is refused
  await page.evaluate(() => {
    const s = document.createElement("script")
    s.textContent = "window.__ran = 1"
    document.body.append(s)
  })
  await page.waitForFunction(() => (window as unknown as { __csp: string[] }).__csp.length === 1)
  assert.equal(await violations(), ["script-src-elem inline"])
  assert.is(await page.evaluate(() => (window as { __ran?: number }).__ran), undefined)
  await page.close()
})

test("story page - a dead letter's route at 1280 px and 375 px: its lines, what is missing, keyboard, no CSP violation", async () => {
  const entry = (await (await fetch(`${ops.url}/api/dlq?state=open`, { headers: testAuth().operator.headers })).json()).entries.at(-1)
  const { page, problems, violations } = await watchedPage(browser!, 1280)
  await page.goto(`${ops.url}/story/${encodeURIComponent(entry.id)}`)
  // signed out: the page says where to sign in, and shows nothing
  await page.locator("#message a", { hasText: "open the ops dashboard" }).waitFor()
  // signed in, the dashboard's "story of" field leads there too
  await page.goto(`${ops.url}/login?token=${testAuth().operator.token}`)
  await page.locator('header form.find input[name="id"]').fill(entry.id)
  await page.keyboard.press("Enter")
  await page.waitForURL(`${ops.url}/story/${encodeURIComponent(entry.id)}`)
  await page.locator("#lines li").first().waitFor()
  // its truck was given another route after it: the story says where this route's part ends
  assert.equal(await page.locator("#lines li .event").allTextContents(), ["RouteCalculated", "dead-lettered", "RouteCalculated"])
  assert.match(
    (await page.locator("#lines li .text").last().textContent())!,
    /^truck-0 is given route \S+: positions and ETAs from here on are that route's$/,
  )
  assert.equal(await page.locator("#missing li").allTextContents(), [
    "no invoice: dead-lettered: no-tariff, open",
    "no position from truck-0 since the route was calculated",
  ])
  const wide = await overflow(page)
  assert.ok(wide.scroll <= wide.inner, `1280 px: the story is ${wide.scroll} px wide`)
  await page.screenshot({ path: join(ARTIFACTS, "ops-story-1280.png"), fullPage: true })
  const stops = (await tabStops(page, 3)).map((s) => `${s.what} ${s.outline}`)
  assert.equal(stops, ["a solid 3px", "button solid 3px", "a solid 3px"])
  await page.setViewportSize({ width: 375, height: 800 })
  const narrow = await overflow(page)
  assert.ok(narrow.scroll <= narrow.inner, `375 px: the story is ${narrow.scroll} px wide`)
  await page.screenshot({ path: join(ARTIFACTS, "ops-story-375.png"), fullPage: true })
  assert.equal(await violations(), [])
  assert.equal(
    problems.filter((p) => !/401/.test(p)),
    [],
  )
  await page.close()
})

test.run()
