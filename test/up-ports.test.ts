// `npm start` beside another program on its ports: a busy default moves to the next free port, and the printed
// links, the nats context, the session and the CLI follow; a busy port set by its variable ends the run with one
// line before anything starts. The other program is a real listening socket on 8080 and on ops' 8084.
import { randomBytes } from "node:crypto"
import { readdirSync, readFileSync } from "node:fs"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { createServer, type Server } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as assert from "uvu/assert"
import { workers as specs } from "../contracts/mod.ts"
import { portInUse } from "../mesh/cli/natsd.ts"
import { freePort, spawnTs, waitUntil, suite } from "./harness.ts"

const test = suite("up-ports")
let dir: string
const occupiers: Server[] = []
/** ports this test holds; a default one someone else holds is still busy, just not answered by us */
const held = new Set<number>()

/** A plain HTTP server on 127.0.0.1:port answering "occupier", as another development server would. */
async function occupy(port: number): Promise<void> {
  const s = createServer((_, res) => res.end("occupier"))
  const ok = await new Promise<boolean>((resolve) => {
    s.once("error", () => resolve(false))
    s.listen(port, "127.0.0.1", () => resolve(true))
  })
  if (ok) {
    occupiers.push(s)
    held.add(port)
  } else assert.ok(await portInUse(port), `could not listen on ${port}, yet it is free`)
}

/** Pids of live processes whose environment holds `mark`: whatever an up run started, detached or not. */
function processesMarked(mark: string): number[] {
  const found: number[] = []
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/environ`, "latin1").includes(mark)) found.push(Number(pid))
    } catch {} // gone, or not ours
  }
  return found.filter((p) => p !== process.pid)
}

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "logiflow-up-ports-"))
  await occupy(specs.portal.port)
  await occupy(specs.ops.port)
})
test.after(async () => {
  await Promise.all(occupiers.map((s) => new Promise((r) => s.close(r))))
  await rm(dir, { recursive: true, force: true })
})

const baseEnv = async (mark: string) => ({
  NATS_URL: undefined,
  NATS_PORT: String(await freePort()),
  NATS_MONITOR_PORT: String(await freePort()),
  ROUTING_PORT: String(await freePort()),
  INVOICE_PORT: String(await freePort()),
  TRACKING_PORT: String(await freePort()),
  // the defaults: 8080 and 8084, both taken above
  PORTAL_PORT: undefined,
  OPS_PORT: undefined,
  PORTAL_SECRET: undefined,
  LOGIFLOW_OPERATORS: undefined,
  XDG_CONFIG_HOME: dir,
  LOGIFLOW_NATS_CONTEXT: undefined,
  LOGIFLOW_DATA_DIR: dir,
  UP_PORTS_TEST_MARK: mark,
})

test("up - 8080 and 8084 taken: portal and ops move to free ports; links, session, context and `logiflow token --link` follow; the occupier keeps its port", async () => {
  const mark = randomBytes(8).toString("hex")
  const env = await baseEnv(mark)
  const up = spawnTs("mesh/cli/main.ts", env, ["up", "--no-fleet", "--data-dir", dir])
  let moved: { portal: number; ops: number }
  try {
    await up.waitFor(/Ctrl-C stops everything/, 90_000)
    const said = (re: RegExp) => up.lines.map((l) => re.exec(l)).find((m) => m)
    const movedTo = (w: string, from: number, variable: string) =>
      Number(said(new RegExp(`│ ${w}: port ${from} is in use, so it listens on (\\d+) \\(${variable} sets it\\)$`))?.[1])
    moved = { portal: movedTo("portal", 8080, "PORTAL_PORT"), ops: movedTo("ops", 8084, "OPS_PORT") }
    assert.ok(moved.portal > 8080 && moved.ops > 8084 && moved.portal !== moved.ops, JSON.stringify(moved))
    // the moved ports are not another part's either
    assert.not.ok([env.ROUTING_PORT, env.INVOICE_PORT, env.TRACKING_PORT].includes(String(moved.portal)))
    assert.ok(said(new RegExp(`│ workers: .*portal :${moved.portal}, ops :${moved.ops}$`)), up.lines.join("\n"))
    // the printed links are the mesh's: acme's signs in at the portal, the operator's at ops
    const portalLink = said(/│ portal for acme: (http:\/\/127\.0\.0\.1:(\d+)\/login\?token=\S+)$/)!
    assert.is(Number(portalLink[2]), moved.portal)
    const opsLink = said(/│ ops dashboard: (http:\/\/127\.0\.0\.1:(\d+)\/login\?token=\S+)/)!
    assert.is(Number(opsLink[2]), moved.ops)
    await waitUntil(
      () =>
        fetch(`http://127.0.0.1:${moved.portal}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      {
        what: "portal ready",
        timeoutMs: 60_000,
      },
    )
    const login = await fetch(portalLink[1]!, { redirect: "manual" })
    assert.is(login.status, 303, "the portal signs in (the occupier would answer 200)")
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!
    const invoices = await fetch(`http://127.0.0.1:${moved.portal}/api/invoices`, { headers: { cookie } })
    assert.equal([invoices.status, ((await invoices.json()) as { invoices: unknown[] }).invoices], [200, []])
    await waitUntil(
      () =>
        fetch(`http://127.0.0.1:${moved.ops}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      { what: "ops ready" },
    )
    assert.is((await fetch(opsLink[1]!, { redirect: "manual" })).status, 303)
    // the other program still has its ports
    for (const p of held) assert.is(await (await fetch(`http://127.0.0.1:${p}/`)).text(), "occupier")
    // the CLI finds the run through its session: NATS and each worker's URL where it really is
    const session = await readFile(join(dir, "session.env"), "utf8")
    assert.ok(session.includes(`\nPORTAL_URL=http://127.0.0.1:${moved.portal}\n`), session)
    assert.ok(session.includes(`\nOPS_URL=http://127.0.0.1:${moved.ops}\n`), session)
    assert.ok(session.startsWith(`NATS_URL=nats://127.0.0.1:${env.NATS_PORT}\n`), session)
    const context = JSON.parse(await readFile(join(dir, "nats", "context", "logiflow.json"), "utf8")) as { url: string }
    assert.is(context.url, `nats://127.0.0.1:${env.NATS_PORT}`)
    const cli = spawnTs(
      "mesh/cli/main.ts",
      { PORTAL_SECRET: undefined, PORTAL_URL: undefined, PORTAL_PORT: undefined, LOGIFLOW_DATA_DIR: dir },
      ["token", "customer", "globex", "--link"],
    )
    assert.is(await cli.exited, 0, cli.lines.join("\n"))
    assert.is(cli.lines.length, 1, cli.lines.join("\n"))
    assert.match(cli.lines[0]!, new RegExp(`^http://127\\.0\\.0\\.1:${moved.portal}/login\\?token=\\S+$`))
    assert.is((await fetch(cli.lines[0]!, { redirect: "manual" })).status, 303, "the CLI's link signs in at the moved portal")
    const status = spawnTs(
      "mesh/cli/main.ts",
      { NATS_URL: undefined, NATS_USER: undefined, ADMIN_PASSWORD: undefined, LOGIFLOW_DATA_DIR: dir },
      ["status"],
    )
    assert.is(await status.exited, 0, status.lines.join("\n"))

    // a program that takes a worker's port after the check: up says so with each restart (the first exit may be
    // seen before the port is taken, the next start then fails on it), and the worker is back once it is free again
    const portalPid = Number(said(/│ portal started \(pid (\d+)\)$/)![1])
    process.kill(portalPid, "SIGKILL")
    const thief = createServer((_, res) => res.end("thief"))
    await waitUntil(
      () =>
        new Promise<boolean>((resolve) => {
          thief.once("error", () => resolve(false))
          thief.listen(moved.portal, "127.0.0.1", () => resolve(true))
        }),
      { what: "the portal's port free after its kill", every: 10 },
    )
    try {
      await up.waitFor(
        new RegExp(
          `│ portal exited \\((SIGKILL|code 1)\\); port ${moved.portal} is now taken by another program \\(PORTAL_PORT sets it\\); restarting in \\d+ ms$`,
        ),
        30_000,
      )
    } finally {
      await new Promise((r) => thief.close(r))
    }
    await waitUntil(
      () =>
        fetch(`http://127.0.0.1:${moved.portal}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      {
        what: "portal back on its port",
        timeoutMs: 60_000,
      },
    )
  } finally {
    assert.is(await up.stop("SIGTERM"), 0, up.lines.slice(-5).join("\n"))
  }
  await waitUntil(() => processesMarked(mark).length === 0, { what: "every process of the run gone" })
  for (const p of held) assert.is(await (await fetch(`http://127.0.0.1:${p}/`)).text(), "occupier")
})

test("up - PORTAL_PORT set to a busy port: one line naming the port and the variable, exit 1, nothing started", async () => {
  const mark = randomBytes(8).toString("hex")
  const env = { ...(await baseEnv(mark)), PORTAL_PORT: "8080" }
  const up = spawnTs("mesh/cli/main.ts", env, ["up", "--no-fleet", "--data-dir", dir])
  assert.is(await up.exited, 1)
  assert.equal(up.lines, [
    "logiflow up: port 8080 is in use, and PORTAL_PORT=8080 asks for it (portal): free it, set PORTAL_PORT to a free port, or unset it to take the next free one; nothing was started",
  ])
  assert.equal(processesMarked(mark), [], "no nats-server, no worker")
  assert.not.ok(await portInUse(Number(env.NATS_PORT)), "no nats-server")
  if (held.has(8080)) assert.is(await (await fetch("http://127.0.0.1:8080/")).text(), "occupier")
})

test("up - NATS_PORT set to a busy port: the same, for the server", async () => {
  const mark = randomBytes(8).toString("hex")
  const busy = await freePort()
  const holder = createServer().listen(busy, "127.0.0.1")
  await new Promise((r) => holder.once("listening", r))
  try {
    const env = { ...(await baseEnv(mark)), NATS_PORT: String(busy) }
    const up = spawnTs("mesh/cli/main.ts", env, ["up", "--no-fleet", "--data-dir", dir])
    assert.is(await up.exited, 1)
    assert.equal(up.lines, [
      `logiflow up: port ${busy} is in use, and NATS_PORT=${busy} asks for it (nats-server): free it, set NATS_PORT to a free port, or unset it to take the next free one; nothing was started`,
    ])
    assert.equal(processesMarked(mark), [])
  } finally {
    await new Promise((r) => holder.close(r))
  }
})

test.run()
