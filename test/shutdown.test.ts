// Delivery rule 8: SIGTERM drains a worker process under load — nothing processed twice, nothing lost.
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { freePort, spawnTs, startServer, type TestServer, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const test = suite("shutdown")
let server: TestServer
let nc: NatsConnection

test.before(async () => {
  server = await startServer()
  nc = await (await import("./harness.ts")).connectTo(server)
  await provision(nc, topology())
})
test.after(async () => {
  await nc.close()
  await server.close()
})

const lines = (file: string) => readFileSync(file, "utf8").split("\n").filter(Boolean)

test("SIGTERM under load - in-flight events finish and are acked, the rest go to the next instance, none twice", async () => {
  const file = join(server.storeDir, "handled.log")
  writeFileSync(file, "")
  const js = jetstream(nc)
  const N = 2000
  for (let i = 0; i < N; i += 200) {
    await Promise.all(
      Array.from({ length: 200 }, (_, k) =>
        publishEvent(js, "RouteCalculated", route(i + k, { truckId: `truck-${(i + k) % 50}` }), {
          id: `rc-${i + k}`,
          source: "logiflow/test",
        }),
      ),
    )
  }
  const env = { NATS_URL: server.url, RECORD_FILE: file, RECORD_SLOW_MS: "5", INVOICE_PORT: String(await freePort()), CONCURRENCY: "16" }
  const first = spawnTs("test/fixtures/recorder.ts", env)
  await waitUntil(() => lines(file).length >= 300, { what: "300 handled", timeoutMs: 30_000 })
  const t0 = Date.now()
  const code = await first.stop("SIGTERM")
  const drainMs = Date.now() - t0
  assert.is(code, 0, `exit code; output: ${first.lines.slice(-5).join(" | ")}`)
  assert.ok(drainMs < 10_000, `drained in ${drainMs} ms`)
  assert.ok(
    first.lines.some((l) => l.includes('"msg":"stopped"') && l.includes('"drained":true')),
    "logged a complete drain",
  )
  const handledByFirst = lines(file).length
  assert.ok(handledByFirst < N, "stopped before the end")

  const second = spawnTs("test/fixtures/recorder.ts", { ...env, INVOICE_PORT: String(await freePort()) })
  await waitUntil(() => lines(file).length >= N, { what: `${N} handled`, timeoutMs: 60_000 })
  const ci = await waitUntil(async () => {
    const c = await (await jetstreamManager(nc)).consumers.info("ROUTING", "invoice")
    return c.num_pending === 0 && c.num_ack_pending === 0 ? c : null
  })
  assert.is(ci.num_redelivered, 0, "nothing the first instance acked came back")
  assert.is(await second.stop("SIGTERM"), 0)
  const all = lines(file)
  assert.is(all.length, N, "each event handled exactly once")
  assert.is(new Set(all).size, N)
})

test("SIGTERM while still dialling NATS - the worker exits 0 at once instead of ignoring it", async () => {
  const dead = `nats://127.0.0.1:${await freePort()}`
  const child = spawnTs("test/fixtures/recorder.ts", {
    NATS_URL: dead,
    RECORD_FILE: join(server.storeDir, "never.log"),
    INVOICE_PORT: String(await freePort()),
  })
  await child.waitFor(/http listening/)
  const t0 = Date.now()
  assert.is(await child.stop("SIGTERM"), 0)
  assert.ok(Date.now() - t0 < 5000, "did not wait for the connection")
  assert.not.ok(child.lines.some((l) => l.includes('"msg":"ready"')))
})

test.run()
