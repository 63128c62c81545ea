// The nats-server `npm start` runs is supervised like the workers: killed with SIGKILL it is started again on the
// same store and ports, up says so in words, the workers reconnect on their own, and nothing stored before the
// crash is lost (JetStream file store). Real processes throughout: up, its nats-server, its workers.
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import * as assert from "uvu/assert"
import { restartBackoff } from "../mesh/cli/up-workers.ts"
import { type Child, connectTo, freePort, spawnTs, testAuth, waitUntil, suite } from "./harness.ts"

const test = suite("up-supervise")
let dir: string
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "logiflow-up-supervise-"))
})
test.after(async () => {
  await rm(dir, { recursive: true, force: true })
})

const ADMIN = "pUpSuperviseAdmin1"

test("restart backoff - 0.5 s doubling to the cap; a run of a minute starts it afresh", () => {
  const b = restartBackoff(10_000)
  assert.equal(
    [0, 0, 0, 0, 0, 0, 0].map((ran) => b.next(ran)),
    [500, 1000, 2000, 4000, 8000, 10_000, 10_000],
  )
  assert.is(b.next(59_000), 10_000, "a run shorter than a minute keeps the backoff")
  assert.is(b.next(60_000), 500)
  assert.is(b.next(1_000), 1000)
})

async function upWithPorts(args: string[], extra: Record<string, string | undefined> = {}) {
  const ports = { routing: await freePort(), invoice: await freePort() }
  const env: Record<string, string | undefined> = {
    NATS_URL: undefined,
    LOG_LEVEL: "info",
    ADMIN_PASSWORD: ADMIN,
    XDG_CONFIG_HOME: dir,
    LOGIFLOW_DATA_DIR: undefined,
    ROUTING_PORT: String(ports.routing),
    INVOICE_PORT: String(ports.invoice),
    ...Object.fromEntries(["TRACKING", "PORTAL", "OPS"].map((w) => [`${w}_PORT`, "0"])),
    ...extra,
  }
  return { ports, up: spawnTs("mesh/cli/main.ts", env, ["up", "--no-fleet", ...args]) }
}

/**
 * POST /routes as a careful client does: a 503 or 504 is sent again with the Idempotency-Key routing gave back
 * (503: nothing recorded; 504: maybe, and the key makes it once), until routing says 202. Returns the routeId and
 * how many answers were not 202.
 */
async function postRoute(port: number, truckId: string): Promise<{ routeId: string; retries: number }> {
  let key: string | undefined
  let retries = 0
  const body = JSON.stringify({
    truckId,
    customerId: "acme",
    depot: { lat: 52.52, lon: 13.405 },
    stops: [{ id: "a", lat: 52.53, lon: 13.41 }],
  })
  return waitUntil(
    async () => {
      const r = await fetch(`http://127.0.0.1:${port}/routes`, {
        method: "POST",
        headers: { ...testAuth().headers.routes, "content-type": "application/json", ...(key ? { "idempotency-key": key } : {}) },
        body,
      })
      const answer = (await r.json()) as { routeId: string }
      if (r.status === 202) return { routeId: answer.routeId, retries }
      assert.ok(r.status === 503 || r.status === 504, `routing answered ${r.status}: ${JSON.stringify(answer)}`)
      key = r.headers.get("idempotency-key")!
      retries++
      return undefined
    },
    { what: `routing to take ${truckId}'s route`, timeoutMs: 60_000, every: 250 },
  )
}

const ready = (port: number, what: string) =>
  waitUntil(
    () =>
      fetch(`http://127.0.0.1:${port}/readyz`).then(
        (r) => r.ok,
        () => false,
      ),
    { what, timeoutMs: 90_000 },
  )

/** Every routeId stored in `stream`, in stream order. */
async function routeIds(jsm: JetStreamManager, stream: string): Promise<string[]> {
  const { messages, first_seq } = (await jsm.streams.info(stream)).state
  const ids: string[] = []
  for (let seq = first_seq; seq < first_seq + messages; seq++) {
    ids.push((await jsm.streams.getMessage(stream, { seq }))!.json<{ routeId: string }>().routeId)
  }
  return ids
}

/**
 * Waits until ROUTING and INVOICE both hold exactly `expected` routes, each once. A cluster answers JetStream API
 * requests again only once it has its leaders back: until then a request that times out counts as "not yet".
 */
async function stored(url: string, expected: string[]) {
  const nc = await connectTo({ url }, { user: "admin", pass: ADMIN })
  const want = JSON.stringify([...expected].sort())
  let seen: unknown
  try {
    await waitUntil(
      async () => {
        try {
          const jsm = await jetstreamManager(nc)
          seen = { ROUTING: (await routeIds(jsm, "ROUTING")).sort(), INVOICE: (await routeIds(jsm, "INVOICE")).sort() }
          const s = seen as { ROUTING: string[]; INVOICE: string[] }
          return JSON.stringify(s.ROUTING) === want && JSON.stringify(s.INVOICE) === want
        } catch (err) {
          seen = (err as Error).message
          return false
        }
      },
      { what: `${expected.length} routes stored and invoiced, each once`, timeoutMs: 90_000 },
    )
  } catch (err) {
    throw new Error(`${(err as Error).message}; want ${want}, last seen ${JSON.stringify(seen)}`)
  } finally {
    await nc.close()
  }
}

/** SIGKILL to `pid`; then waits for up to say it died and is back, and returns the pid it is back with. */
async function killAndWatch(up: Child, pid: number, label: string, meanwhile: string): Promise<number> {
  process.kill(pid, "SIGKILL")
  const esc = label.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
  await up.waitFor(
    new RegExp(
      `│ ${esc} \\(pid ${pid}\\) died \\(SIGKILL\\): ${meanwhile}; starting it again in 500 ms on the same store \\(.+\\) and nats://127\\.0\\.0\\.1:\\d+$`,
    ),
    30_000,
  )
  const back = await up.waitFor(
    new RegExp(
      `│ ${esc} is back \\(pid (\\d+)\\) on nats://127\\.0\\.0\\.1:\\d+, [\\d.]+ s after it died; the workers reconnect on their own$`,
    ),
    60_000,
  )
  const newPid = Number(/is back \(pid (\d+)\)/.exec(back)![1])
  assert.is.not(newPid, pid)
  return newPid
}

test("up - nats-server killed with SIGKILL: started again on the same store and port, said in words; routes posted before are all there, and a route after it comes out as an invoice", async () => {
  const natsPort = await freePort()
  const { ports, up } = await upWithPorts(["--data-dir", join(dir, "single")], {
    NATS_PORT: String(natsPort),
    NATS_MONITOR_PORT: String(await freePort()),
  })
  const url = `nats://127.0.0.1:${natsPort}`
  try {
    const line = await up.waitFor(/│ nats-server v\S+ .* on nats:\/\/127\.0\.0\.1:\d+ \(monitoring .*, pid (\d+)\)$/, 90_000)
    const pid = Number(/, pid (\d+)\)$/.exec(line)![1])
    await up.waitFor(/Ctrl-C stops everything/, 90_000)
    await ready(ports.routing, "routing ready")
    await ready(ports.invoice, "invoice ready")
    const before: string[] = []
    for (const truck of ["truck-1", "truck-2", "truck-3"]) {
      const r = await postRoute(ports.routing, truck)
      assert.is(r.retries, 0, "a running mesh takes a route at once")
      before.push(r.routeId)
    }
    await stored(url, before)

    await killAndWatch(up, pid, "nats-server", "the workers wait for it")
    // the workers reconnect: routing takes a route again, and invoice prices it
    await ready(ports.routing, "routing ready again")
    const after = await postRoute(ports.routing, "truck-4")
    await stored(url, [...before, after.routeId])
    assert.equal(up.lines.filter((l) => /│ nats-server .*(died|is back|did not start)/.test(l)).length, 2, "one death, one return")
  } finally {
    assert.is(await up.stop("SIGTERM"), 0, up.lines.slice(-5).join("\n"))
  }
})

test("up --cluster - a node killed with SIGKILL is started again on its store and ports and rejoins; the mesh keeps invoicing", async () => {
  const { ports, up } = await upWithPorts(["--cluster", "--data-dir", join(dir, "cluster")], { STREAM_REPLICAS: undefined })
  try {
    const line = await up.waitFor(/│ 3-node JetStream cluster .* on (\S+) \(meta leader .*, pids (\d+),(\d+),(\d+)\)$/, 120_000)
    const m = /on (\S+) \(meta leader .*, pids (\d+),(\d+),(\d+)\)$/.exec(line)!
    const url = m[1]!
    await up.waitFor(/Ctrl-C stops everything/, 120_000)
    await ready(ports.routing, "routing ready")
    await ready(ports.invoice, "invoice ready")
    const first = await postRoute(ports.routing, "truck-1")
    await stored(url, [first.routeId])

    await killAndWatch(up, Number(m[3]), "nats-server n2", "the workers carry on with the other nodes")
    // while the streams' leaders move, routing may answer 503 (nothing recorded): the client's retry gets through
    const after = await postRoute(ports.routing, "truck-2")
    await stored(url, [first.routeId, after.routeId])
  } finally {
    assert.is(await up.stop("SIGTERM"), 0, up.lines.slice(-5).join("\n"))
  }
})

test.run()
