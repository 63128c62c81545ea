// The real nats CLI against `logiflow up`: up writes a nats context with its run's URL and admin credentials, and
// `nats --context logiflow …` then subscribes, reports, lists and pages through the mesh. XDG_CONFIG_HOME (and HOME)
// point into a temp dir, so the user's ~/.config is never touched; no `nats --context <name>` runs before the file
// exists (the CLI would create ~/.config/nats for a missing one). The commands here are the table in
// mesh/cli/README.md.
import { existsSync, readFileSync, statSync } from "node:fs"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { delimiter, join } from "node:path"
import * as assert from "uvu/assert"
import { type Child, freePort, lacks, spawnChild, spawnTs, testAuth, waitUntil, suite } from "./harness.ts"

const test = suite("natscli")
const NATS = [...(process.env.PATH ?? "").split(delimiter), "/usr/local/bin"]
  .map((d) => join(d, "nats"))
  .find((p) => existsSync(p) && statSync(p).isFile())
// `nats stream view` pages interactively and needs a terminal: script(1) gives it one
const SCRIPT = ["/usr/bin/script", "/bin/script"].find(existsSync)
if (!NATS) console.log("skipped: no nats CLI on PATH or in /usr/local/bin (bash deploy/nats/install.sh builds the pinned one)")

let dir: string
let up: Child
const ports: Record<string, number> = {}
let env: Record<string, string | undefined>
const context = () => join(dir, "nats", "context", "logiflow.json")

/** `nats --context logiflow <args>`, run as a user would, with the CLI's config in the temp dir. */
function nats(args: string[], name = "nats"): Child {
  assert.ok(existsSync(context()), "never --context a name that does not exist (the CLI would create ~/.config/nats)")
  return spawnChild(NATS!, ["--context", "logiflow", ...args], env, { name })
}
const run = async (args: string[]) => {
  const c = nats(args, `nats ${args.join(" ")}`)
  const code = await c.exited
  return { code, text: c.lines.join("\n") }
}

const postRoute = (customerId: string) =>
  fetch(`http://127.0.0.1:${ports.routing}/routes`, {
    method: "POST",
    headers: { ...testAuth().headers.routes, "content-type": "application/json" },
    body: JSON.stringify({
      truckId: "truck-7",
      customerId,
      depot: { lat: 52.52, lon: 13.405 },
      stops: [{ id: "a", lat: 52.53, lon: 13.41 }],
    }),
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as { routeId: string } }))

if (NATS) {
  test.before(async () => {
    dir = await mkdtemp(join(tmpdir(), "logiflow-natscli-"))
    for (const w of ["routing", "invoice", "tracking", "portal", "ops", "nats", "monitor"]) ports[w] = await freePort()
    // the CLI's config and home in the temp dir; no NATS_* of the caller's that the CLI would read instead
    env = {
      XDG_CONFIG_HOME: dir,
      HOME: dir,
      NATS_URL: undefined,
      NATS_CONTEXT: undefined,
      NATS_USER: undefined,
      NATS_PASSWORD: undefined,
      NATS_CREDS: undefined,
    }
    up = spawnTs(
      "mesh/cli/main.ts",
      {
        ...env,
        HOME: process.env.HOME,
        NATS_PORT: String(ports.nats),
        NATS_MONITOR_PORT: String(ports.monitor),
        ...Object.fromEntries(
          ["routing", "invoice", "tracking", "portal", "ops"].map((w) => [`${w.toUpperCase()}_PORT`, String(ports[w])]),
        ),
        LOGIFLOW_NATS_CONTEXT: undefined,
      },
      ["up", "--no-fleet", "--data-dir", join(dir, "data")],
    )
    await up.waitFor(/Ctrl-C stops everything/, 60_000)
    for (const w of ["routing", "invoice", "ops"]) {
      await waitUntil(
        () =>
          fetch(`http://127.0.0.1:${ports[w]}/readyz`).then(
            (r) => r.status === 200,
            () => false,
          ),
        { what: `${w} ready`, timeoutMs: 60_000 },
      )
    }
  })
  test.after(async () => {
    await up?.stop("SIGTERM")
    await rm(dir, { recursive: true, force: true })
  })

  test("context - up writes $XDG_CONFIG_HOME/nats/context/logiflow.json (mode 0600) with its URL and admin's password, and says so in one line", () => {
    const c = JSON.parse(readFileSync(context(), "utf8")) as Record<string, string>
    assert.equal(
      [c.url, c.user, statSync(context()).mode & 0o777, statSync(join(dir, "nats", "context")).mode & 0o777],
      [`nats://127.0.0.1:${ports.nats}`, "admin", 0o600, 0o700],
    )
    assert.match(c.description!, new RegExp(`^logiflow up \\(pid ${up.pid}\\): removed when it stops`))
    assert.is(up.lines.filter((l) => l.includes("nats CLI: ")).length, 1)
    assert.ok(up.lines.some((l) => l.endsWith("│ nats CLI: nats --context logiflow stream ls")))
  })

  test("sub - nats --context logiflow sub 'routing.events.>' --count 1 receives the route posted to routing", async () => {
    const sub = nats(["sub", "routing.events.>", "--count", "1"], "nats sub")
    await sub.waitFor(/Subscribing on routing\.events\.>/)
    const posted = await postRoute("acme")
    assert.is(posted.status, 202)
    assert.is(await sub.exited, 0, sub.lines.join("\n"))
    const text = sub.lines.join("\n")
    assert.match(text, /Received on "routing\.events\.RouteCalculated\.truck-7"/)
    assert.match(text, `ce-type: logiflow.routing.RouteCalculated.v1`)
    assert.match(text, `"routeId":"${posted.body.routeId}"`)
  })

  test("consumer report ROUTING lists invoice, portal and tracking; kv ls lists every bucket; stream ls every stream", async () => {
    const report = await run(["consumer", "report", "ROUTING"])
    assert.is(report.code, 0, report.text)
    assert.match(report.text, "Consumer report for ROUTING with 3 consumers")
    const rows = (name: string) => report.text.split("\n").filter((l) => new RegExp(`│ ${name}\\s+│ Pull\\s+│ Explicit`).test(l)).length
    assert.equal(["invoice", "portal", "tracking"].map(rows), [1, 1, 1])
    const kv = await run(["kv", "ls"])
    assert.is(kv.code, 0, kv.text)
    for (const b of ["dlq-entries", "heartbeats", "portal-invoices", "portal-trucks", "routing-requests", "tracking-trucks"])
      assert.match(kv.text, new RegExp(`│ ${b}\\s+│`), b)
    const streams = await run(["stream", "ls"])
    for (const s of ["ADVISORIES", "DLQ", "INVOICE", "POSITIONS", "REPLAY", "ROUTING", "TRACKING"])
      assert.match(streams.text, new RegExp(`│ ${s}\\s+│`), s)
  })

  test("stream view DLQ - after a no-tariff route, the entry with its reason headers and the original body", async () => {
    const posted = await postRoute("nobody")
    assert.is(posted.status, 202)
    await waitUntil(
      async () => {
        const r = await fetch(`http://127.0.0.1:${ports.ops}/api/dlq`, { headers: testAuth().operator.headers })
        return ((await r.json()) as { total: number }).total === 1 || null
      },
      { what: "the DLQ entry at ops" },
    )
    let text: string
    if (SCRIPT) {
      // a page larger than the stream: it prints and ends ("Reached apparent end of data") without a prompt
      const view = spawnChild(SCRIPT, ["-qc", "nats --context logiflow stream view DLQ 25", "/dev/null"], env, { name: "nats stream view" })
      assert.is(await view.exited, 0, view.lines.join("\n"))
      text = view.lines.join("\n").replace(/\r/g, "")
      assert.match(text, "Reached apparent end of data")
    } else {
      // no script(1) here: `stream get` shows the same message without paging, so it needs no terminal
      console.log("  (no script(1): nats stream get DLQ 1 instead of stream view)")
      const get = await run(["stream", "get", "DLQ", "1"])
      text = get.text
    }
    assert.match(text, /Subject: dlq\.ROUTING\.invoice/)
    assert.match(text, "logiflow-dlq-reason: no-tariff")
    assert.match(text, 'logiflow-dlq-error: no tariff for customer "nobody"')
    assert.match(text, `"routeId":"${posted.body.routeId}"`)
  })

  if (!lacks("pause")) {
    test("consumer pause / resume from the nats CLI: ops records both from the server's advisories", async () => {
      const pause = await run(["consumer", "pause", "ROUTING", "invoice", "1h", "--force"])
      assert.is(pause.code, 0, pause.text)
      assert.match(pause.text, /Paused ROUTING > invoice until .* \(1h0m0s\)/)
      await up.waitFor(/ops\s*│.*consumer paused stream=ROUTING consumer=invoice until=/)
      const resume = await run(["consumer", "resume", "ROUTING", "invoice", "--force"])
      assert.is(resume.code, 0, resume.text)
      await up.waitFor(/ops\s*│.*consumer resumed stream=ROUTING consumer=invoice/)
    })
  }

  test("stop - SIGTERM ends the run and removes the context: its passwords were this run's", async () => {
    assert.is(await up.stop("SIGTERM"), 0)
    assert.not.ok(existsSync(context()))
    assert.ok(existsSync(join(dir, "nats", "context")), "the directory stays, as nats context save leaves it")
  })
}

test.run()
