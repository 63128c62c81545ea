// The core on Debian's nats-server 2.9.10 (`apt-get install nats-server`): `logiflow up` names what that server
// lacks, every worker says so once, a route is invoiced once, a no-tariff route reaches ops' DLQ, and what needs a
// newer server answers with the feature's name at once (never a 5 s timeout, never a silent misbehaviour).
import { existsSync, readFileSync } from "node:fs"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jetstreamManager } from "@nats-io/jetstream"
import { connect, nanos, type NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { serverBackoff } from "../contracts/mod.ts"
import { natsServerVersion } from "../mesh/cli/natsd.ts"
import { atLeast, FEATURES } from "../mesh/features.ts"
import { type Child, freePort, spawnTs, testAuth, waitUntil, suite } from "./harness.ts"

const OLD = "/usr/sbin/nats-server"
const test = suite("compat")
const version = existsSync(OLD) ? natsServerVersion(OLD) : undefined
if (!version) console.log(`skipped: no ${OLD} here (Debian/Ubuntu: apt-get install nats-server, 2.9.10)`)

const WORKERS = ["routing", "invoice", "tracking", "portal", "ops"] as const
let dir: string
let up: Child
let nc: NatsConnection
const ports: Record<string, number> = {}
const url = (w: string, path: string) => `http://127.0.0.1:${ports[w]}${path}`
const opsApi = (path: string, init: RequestInit = {}) =>
  fetch(url("ops", path), {
    ...init,
    headers: { ...testAuth().operator.headers, ...(init.body ? { "content-type": "application/json" } : {}) },
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }))
const postRoute = (customerId: string) =>
  fetch(url("routing", "/routes"), {
    method: "POST",
    headers: { ...testAuth().headers.routes, "content-type": "application/json" },
    body: JSON.stringify({
      truckId: "truck-9",
      customerId,
      depot: { lat: 52.52, lon: 13.405 },
      stops: [{ id: "a", lat: 52.53, lon: 13.41 }],
    }),
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as { routeId: string } }))

if (version) {
  test.before(async () => {
    dir = await mkdtemp(join(tmpdir(), "logiflow-compat-"))
    for (const w of [...WORKERS, "nats", "monitor"]) ports[w] = await freePort()
    up = spawnTs(
      "mesh/cli/main.ts",
      {
        NATS_SERVER_BIN: OLD,
        NATS_URL: undefined,
        NATS_PORT: String(ports.nats),
        NATS_MONITOR_PORT: String(ports.monitor),
        XDG_CONFIG_HOME: dir,
        LOGIFLOW_NATS_CONTEXT: undefined,
        ...Object.fromEntries(WORKERS.map((w) => [`${w.toUpperCase()}_PORT`, String(ports[w])])),
      },
      ["up", "--no-fleet", "--data-dir", join(dir, "data")],
    )
    // the harness prints a failed hook's error; this adds what up said before it
    try {
      await up.waitFor(/Ctrl-C stops everything/, 90_000)
      for (const w of WORKERS)
        await waitUntil(
          () =>
            fetch(url(w, "/readyz")).then(
              (r) => r.status === 200,
              () => false,
            ),
          { what: `${w} ready`, timeoutMs: 60_000 },
        )
    } catch (err) {
      console.error(`compat: logiflow up did not get ready: ${(err as Error).message}\n${up.lines.slice(-40).join("\n")}`)
      throw err
    }
    // as admin, with what up wrote for the nats CLI
    const c = JSON.parse(readFileSync(join(dir, "nats", "context", "logiflow.json"), "utf8")) as {
      url: string
      user: string
      password: string
    }
    nc = await connect({ servers: c.url, user: c.user, pass: c.password })
  })
  test.after(async () => {
    await nc?.close()
    await up?.stop("SIGTERM")
    await rm(dir, { recursive: true, force: true })
  })

  test("up - runs the given 2.9.10, names it, and names each feature it lacks, one line each; every worker warns once", async () => {
    const said = up.lines.filter((l) => l.startsWith("logiflow│ ")).map((l) => l.slice("logiflow│ ".length))
    assert.match(
      said[0]!,
      new RegExp(`^nats-server v${version!.join("\\.")} \\(${OLD}\\) on nats://127\\.0\\.0\\.1:${ports.nats} \\(monitoring `),
    )
    // one line per feature mesh/features.ts dates after 2.9.10, in its order
    const newer = Object.values(FEATURES).filter((f) => atLeast(version!, f.since) < 0)
    assert.equal(
      said.filter((l) => l.startsWith("without ")),
      newer.map((f) => `without ${f.what} (needs ${f.since.join(".")})`),
    )
    assert.ok(said.includes("without pausing and resuming a consumer (needs 2.11.0)"))
    assert.ok(said.includes("without the dead-letter reason in MSG_TERMINATED advisories (needs 2.10.4)"))
    assert.ok(newer.length >= 5, newer.map((f) => f.what).join(" | "))
    for (const w of WORKERS) {
      const warned = up.lines.filter((l) =>
        new RegExp(`^${w}\\s*│.* warn  nats-server lacks features server=2\\.9\\.10 missing=\\[`).test(l),
      )
      assert.is(warned.length, 1, `${w}: ${warned.join(" | ")}`)
      assert.match(warned[0]!, '"pausing and resuming a consumer (needs 2.11.0)"')
    }
  })

  test("provision - the older paths: ops reads ADVISORIES through one '>' filter, every consumer has the server-side backoff", async () => {
    const jsm = await jetstreamManager(nc)
    const adv = await jsm.consumers.info("ADVISORIES", "ops")
    assert.equal([adv.config.filter_subject, adv.config.filter_subjects], [">", undefined])
    const inv = await jsm.consumers.info("ROUTING", "invoice")
    assert.equal(
      [inv.config.backoff, inv.config.ack_wait, inv.config.max_deliver],
      [serverBackoff(30, 5).map((s) => nanos(s * 1000)), nanos(30_000), 5],
    )
  })

  test("core - a route posted over HTTP is invoiced once; a no-tariff route is one DLQ entry at ops, terminated (plain term), not redelivered", async () => {
    const jsm = await jetstreamManager(nc)
    const ok = await postRoute("acme")
    assert.is(ok.status, 202)
    const invoice = await waitUntil(
      () => jsm.streams.getMessage("INVOICE", { last_by_subj: `invoice.events.InvoiceGenerated.${ok.body.routeId}` }).catch(() => null),
      { what: "the invoice" },
    )
    assert.is(invoice.json<{ routeId: string }>().routeId, ok.body.routeId)
    const bad = await postRoute("nobody")
    assert.is(bad.status, 202)
    const entries = await waitUntil(
      async () => {
        const r = await opsApi("/api/dlq")
        return r.body.total === 1 ? r.body.entries : null
      },
      { what: "the DLQ entry at ops" },
    )
    assert.equal([entries[0].consumer, entries[0].reason, entries[0].deliveries, entries[0].state], ["invoice", "no-tariff", 1, "open"])
    await new Promise((r) => setTimeout(r, 1500))
    const c = await jsm.consumers.info("ROUTING", "invoice")
    assert.equal(
      [c.num_redelivered, c.num_ack_pending, c.num_pending],
      [0, 0, 0],
      "a plain term: not redelivered (2.9 would redeliver a term with a reason)",
    )
    assert.is((await jsm.streams.info("INVOICE")).state.messages, 1, "invoiced once")
    assert.is((await opsApi("/api/dlq")).body.total, 1)
  })

  test("pause - the API answers 501 naming the version it needs, at once; the CLI says the same in one line", async () => {
    const message = "pausing and resuming a consumer needs nats-server 2.11.0 or newer; this server is 2.9.10"
    for (const action of ["pause", "resume"]) {
      const t = Date.now()
      const r = await opsApi(`/api/consumers/ROUTING/invoice/${action}`, { method: "POST", body: JSON.stringify({ for: "10m" }) })
      assert.equal([r.status, r.body.error], [501, message], action)
      assert.ok(Date.now() - t < 1000, `answered in ${Date.now() - t} ms, not after the client's 5 s timeout`)
    }
    const c = JSON.parse(readFileSync(join(dir, "nats", "context", "logiflow.json"), "utf8")) as { url: string; password: string }
    const cli = spawnTs("mesh/cli/main.ts", { NATS_URL: c.url, NATS_USER: "admin", NATS_PASSWORD: c.password }, [
      "consumer",
      "pause",
      "ROUTING/invoice",
      "--for",
      "10m",
    ])
    assert.is(await cli.exited, 1)
    assert.equal(cli.lines, [`logiflow consumer: ${message}`])
  })

  test("stop - SIGTERM drains and stops it all, exit 0", async () => {
    await nc.close()
    assert.is(await up.stop("SIGTERM"), 0, up.lines.slice(-5).join("\n"))
    assert.not.ok(existsSync(join(dir, "nats", "context", "logiflow.json")))
  })
}

test.run()
