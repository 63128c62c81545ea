// The dashboard's dead-letter desk in a real headless Chromium, against ops and the real invoice worker as child
// processes: the filter finds an entry by key and by route id and links it to its story; the editor, opened and used
// from the keyboard, shows the schema's issues as the operator types, saves the correction, dry-runs it (the exact
// invoice it would emit) and only then replays it, which bills the route. All under the page's strict CSP (no
// violation, no page error). A screenshot is kept in test/artifacts/.
import { existsSync } from "node:fs"
import { mkdir } from "node:fs/promises"
import { join } from "node:path"
import { type Browser, chromium } from "playwright-core"
import * as assert from "uvu/assert"
import { publishEvent } from "../mesh/publish.ts"
import { type Child, freePort, natsSuite, ROOT, spawnTs, testAuth, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const ARTIFACTS = join(ROOT, "test", "artifacts")

const test = suite("dlq-page")
const children: Child[] = []
let browser: Browser | undefined
test.after.each(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop("SIGKILL")))
})
test.after(async () => {
  await browser?.close()
})
const f = natsSuite(test)

async function start(file: string, portVar: string): Promise<{ child: Child; url: string }> {
  const port = await freePort()
  const child = spawnTs(file, { NATS_URL: f.server.url, [portVar]: String(port) })
  children.push(child)
  await child.waitFor(/"msg":"ready"/)
  return { child, url: `http://127.0.0.1:${port}` }
}

test("dlq page - filter by key and route, story link, keyboard edit with issues, dry run, replay; strict CSP holds", async () => {
  if (!existsSync(CHROMIUM)) assert.unreachable(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium; or set CHROMIUM_PATH)`)
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
  })
  const ops = await start("workers/ops.ts", "OPS_PORT")
  await start("workers/invoice.ts", "INVOICE_PORT")
  const acks: { seq: number }[] = []
  for (let i = 1; i <= 4; i++)
    acks.push(await publishEvent(f.js, "RouteCalculated", route(i, { customerId: "nobody" }), { id: `rc-${i}`, source: "logiflow/test" }))
  const id3 = `ROUTING.invoice.${acks[2]!.seq}`

  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } })
  const problems: string[] = []
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`))
  page.on("console", (m) => /Content.Security.Policy|Refused to/i.test(m.text()) && problems.push(`csp: ${m.text()}`))
  await page.goto(`${ops.url}/login?token=${testAuth().operator.token}`)
  await page.locator("#who", { hasText: "signed in as tester" }).waitFor()
  const rows = page.locator("#entries tbody tr")
  await waitUntil(async () => ((await rows.count()) === 4 ? true : null), { what: "4 rows" })

  // find by key, then by route id: exactly that entry, with its event, key and story link
  await page.locator('#filter input[name="key"]').fill("truck-3")
  await waitUntil(async () => ((await rows.count()) === 1 ? true : null), { what: "one row for truck-3" })
  assert.is(await rows.first().getAttribute("data-id"), id3)
  await page.locator('#filter input[name="key"]').fill("")
  await page.locator('#filter input[name="eventId"]').fill("route-3")
  await waitUntil(async () => ((await rows.count()) === 1 && (await rows.first().getAttribute("data-id")) === id3 ? true : null), {
    what: "one row for route-3",
  })
  assert.is(await rows.first().locator("td.key").textContent(), "truck-3")
  assert.is(await rows.first().locator("a.story").getAttribute("href"), "/story/route-3")
  await page.locator('#filter select[name="state"]').selectOption("replayed")
  await waitUntil(async () => ((await rows.count()) === 0 ? true : null), { what: "no replayed entry" })
  await page.locator('#filter select[name="state"]').selectOption("open")
  await waitUntil(async () => ((await rows.count()) === 1 ? true : null), { what: "the open one again" })

  // the editor, from the keyboard: focus the edit button, Enter; the first field gets the focus
  await rows.first().locator("button.edit").focus()
  await page.keyboard.press("Enter")
  await page.locator("#dlq-editor").waitFor()
  assert.is(await page.evaluate(() => document.activeElement?.getAttribute("data-path")), "routeId")
  const customer = page.locator('#dlq-editor input[data-path="customerId"]')
  assert.is(await customer.inputValue(), "nobody")
  assert.is(await page.locator('#dlq-editor input[data-path="stops.1.lat"]').inputValue(), "52.53")
  // typing an invalid value: the schema's issue, on the field
  await customer.focus()
  await page.keyboard.press("Control+A")
  await page.keyboard.press("Backspace")
  await page.locator('#dlq-editor [data-issue="customerId"]', { hasText: "Invalid length" }).waitFor()
  assert.is(await customer.getAttribute("aria-invalid"), "true")
  assert.is(await page.locator("#dlq-replay").isDisabled(), true)
  await page.keyboard.type("acme")
  await page.locator("#dlq-valid", { hasText: "valid" }).waitFor()
  assert.is(await page.locator("#dlq-issues li").count(), 0)

  // save, dry run, and only then replay
  await page.locator("#dlq-save").focus()
  await page.keyboard.press("Enter")
  await page.locator("#dlq-said", { hasText: "saved as edit 1 by tester" }).waitFor()
  assert.is(await page.locator("#dlq-replay").isDisabled(), true, "not before the dry run")
  await page.locator("#dlq-dry-run").focus()
  await page.keyboard.press("Enter")
  await page.locator("#dlq-dry .outcome", { hasText: "invoice handles RouteCalculated: emits" }).waitFor()
  assert.is(
    await page.locator("#dlq-dry .emitted p").textContent(),
    "would emit InvoiceGenerated on invoice.events.InvoiceGenerated.route-3 (msg id invoice:route-3)",
  )
  const emitted = JSON.parse((await page.locator("#dlq-dry .emitted pre").textContent())!)
  assert.equal([emitted.routeId, emitted.customerId, emitted.currency], ["route-3", "acme", "EUR"])
  assert.is(await page.locator("#dlq-replay").isDisabled(), false)
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, "dlq-editor.png"), fullPage: true })
  await page.locator("#dlq-replay").focus()
  await page.keyboard.press("Enter")
  await page.locator("#dlq-said", { hasText: `${id3} replayed by tester; the original stays in its history` }).waitFor()
  const billed = await waitUntil(() => f.jsm.streams.getMessage("INVOICE", { last_by_subj: "invoice.events.InvoiceGenerated.route-3" }), {
    what: "the invoice of the corrected route",
  })
  assert.is(billed.json<{ customerId: string }>().customerId, "acme")
  await page.keyboard.press("Escape")
  await page.locator("#dlq-editor").waitFor({ state: "detached" })
  await page.locator('#filter select[name="state"]').selectOption("replayed")
  await page.locator(`tr[data-id="${id3}"] td.state`, { hasText: "replayed" }).waitFor()
  await page.screenshot({ path: join(ARTIFACTS, "dlq-find.png"), fullPage: true })
  assert.equal(problems, [])
})

test.run()
