// `logiflow up` (npm start) as a user runs it: nats-server from nats.conf, every worker under its own user,
// a route in at routing comes out as an invoice at the portal, and one SIGTERM stops it all.
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { suite } from "uvu"
import * as assert from "uvu/assert"
import { portInUse } from "../mesh/cli/natsd.ts"
import { freePort, spawnTs, waitUntil } from "./harness.ts"

const test = suite("up")
let dir: string
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "logiflow-up-"))
})
test.after(async () => {
  await rm(dir, { recursive: true, force: true })
})

const workers = ["routing", "invoice", "tracking", "portal", "ops"] as const

test("up - nats-server + every worker, a route becomes an invoice on the portal, SIGTERM stops everything", async () => {
  const ports = Object.fromEntries(await Promise.all(workers.map(async (w) => [w, await freePort()] as const)))
  const natsPort = await freePort()
  const env: Record<string, string | undefined> = {
    NATS_URL: undefined,
    NATS_PORT: String(natsPort),
    NATS_MONITOR_PORT: String(await freePort()),
    LOG_LEVEL: "info",
    ...Object.fromEntries(workers.map((w) => [`${w.toUpperCase()}_PORT`, String(ports[w])])),
  }
  const up = spawnTs("mesh/cli/main.ts", env, ["up", "--no-fleet", "--data-dir", dir])
  try {
    await up.waitFor(/ops token/, 60_000)
    assert.ok(up.lines.some((l) => l.includes(`nats-server on nats://127.0.0.1:${natsPort}`)), "started its own server on the given port")
    for (const w of workers) {
      await waitUntil(() => fetch(`http://127.0.0.1:${ports[w]}/readyz`).then((r) => r.status === 200, () => false), { what: `${w} ready`, timeoutMs: 60_000 })
    }
    const res = await fetch(`http://127.0.0.1:${ports.routing}/routes`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ truckId: "truck-up", customerId: "acme", depot: { lat: 52.52, lon: 13.405 }, stops: [{ id: "a", lat: 52.53, lon: 13.41 }] }),
    })
    assert.is(res.status, 202)
    const { routeId } = (await res.json()) as { routeId: string }
    const invoices = await waitUntil(
      async () => {
        const r = await fetch(`http://127.0.0.1:${ports.portal}/api/invoices?customerId=acme`)
        const body = (await r.json()) as { invoices: { routeId: string }[] }
        return body.invoices.length ? body.invoices : null
      },
      { what: "the invoice on the portal", timeoutMs: 30_000 },
    )
    assert.equal(invoices.map((i) => i.routeId), [routeId])
    // each worker runs as its own nats.conf user, not as admin
    assert.ok(up.lines.some((l) => /routing\s*│.*ready/.test(l)))
  } finally {
    assert.is(await up.stop("SIGTERM"), 0, up.lines.slice(-5).join("\n"))
  }
  assert.ok(up.lines.some((l) => l.includes("stopped")))
  assert.not.ok(await portInUse(natsPort), "nats-server stopped")
  for (const w of workers) assert.not.ok(await portInUse(ports[w]!, "0.0.0.0"), `${w} stopped`)
})

test("up - without a nats-server binary or NATS_URL: one line saying how to get one, exit 1", async () => {
  const up = spawnTs("mesh/cli/main.ts", { NATS_URL: undefined, NATS_SERVER_BIN: join(dir, "missing", "nats-server") }, ["up", "--data-dir", dir])
  const code = await up.exited
  assert.is(code, 1)
  const out = up.lines.filter((l) => l.trim())
  assert.is(out.length, 1, out.join("\n"))
  assert.match(out[0]!, /^logiflow up: no nats-server found: build the pinned newest one with Go \(bash deploy\/nats\/install.sh\), or install one \(Debian\/Ubuntu: apt-get install nats-server/)
})

test.run()
