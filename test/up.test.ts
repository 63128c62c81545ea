// `logiflow up` (npm start) as a user runs it: nats-server from nats.conf, every worker under its own user,
// a route in at routing comes out as an invoice at the portal, and one SIGTERM stops it all.
import { execFileSync, spawnSync } from "node:child_process"
import { existsSync, readFileSync, statSync } from "node:fs"
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir, userInfo } from "node:os"
import { dirname, join } from "node:path"
import * as assert from "uvu/assert"
import { findNatsServer, natsServerVersion, portInUse } from "../mesh/cli/natsd.ts"
import { contextName, removeContext, writeContext } from "../mesh/cli/context.ts"
import { operatorName } from "../mesh/cli/up.ts"
import { jetstreamManager } from "@nats-io/jetstream"
import { connectTo, freePort, spawnChild, spawnTs, startServer, waitUntil, suite } from "./harness.ts"

const test = suite("up")
let dir: string
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "logiflow-up-"))
})
test.after(async () => {
  await rm(dir, { recursive: true, force: true })
})

const workers = ["routing", "invoice", "tracking", "portal", "ops"] as const

/** Every process below `pid`, parents before their children. */
function descendants(pid: number): number[] {
  const r = spawnSync("pgrep", ["-P", String(pid)])
  const children = r.stdout.toString().trim().split("\n").filter(Boolean).map(Number)
  return children.flatMap((c) => [c, ...descendants(c)])
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A run of its own: free ports for the server and every worker, no test credentials, the nats context under `dir`. */
async function ownRun() {
  const ports = Object.fromEntries(await Promise.all(workers.map(async (w) => [w, await freePort()] as const)))
  const natsPort = await freePort()
  const env: Record<string, string | undefined> = {
    NATS_URL: undefined,
    NATS_PORT: String(natsPort),
    NATS_MONITOR_PORT: String(await freePort()),
    LOG_LEVEL: "info",
    ...Object.fromEntries(workers.map((w) => [`${w.toUpperCase()}_PORT`, String(ports[w])])),
    // none of the test credentials: `npm start` generates its own and prints them as links
    PORTAL_SECRET: undefined,
    LOGIFLOW_OPERATORS: undefined,
    LOGIFLOW_API_KEYS: undefined,
    FLEET_API_KEY: undefined,
    // the nats CLI context goes here, never into the user's ~/.config
    XDG_CONFIG_HOME: dir,
    LOGIFLOW_NATS_CONTEXT: undefined,
  }
  return { ports, natsPort, env }
}

test("up - nats-server + every worker, generated credentials: the printed curl line's route becomes an invoice on acme's one-click portal link; SIGTERM stops everything", async () => {
  const { ports, natsPort, env } = await ownRun()
  const up = spawnTs("mesh/cli/main.ts", env, ["up", "--no-fleet", "--data-dir", dir])
  try {
    await up.waitFor(/Ctrl-C stops everything/, 60_000)
    // which binary, and the version the server announced: the newest found (NATS_SERVER_BIN overrides)
    const bin = findNatsServer()!
    const started = up.lines
      .map((l) => /nats-server v(\d+\.\d+\.\d+) \((.+)\) on nats:\/\/127\.0\.0\.1:(\d+) \(monitoring /.exec(l))
      .find((m) => m)
    assert.ok(started, up.lines.slice(0, 5).join("\n"))
    assert.equal(
      started!.slice(1),
      [natsServerVersion(bin)!.join("."), bin, String(natsPort)],
      "started its own server, the newest, on the given port",
    )
    // the newest lacks nothing the mesh knows of
    assert.equal(
      up.lines.filter((l) => /│ without /.test(l)),
      [],
    )
    // the nats CLI context: this run's URL and admin credentials, mode 0600, announced in one line
    const context = join(dir, "nats", "context", "logiflow.json")
    assert.ok(up.lines.some((l) => l.endsWith("│ nats CLI: nats --context logiflow stream ls")))
    const saved = JSON.parse(await readFile(context, "utf8")) as Record<string, string>
    assert.equal([saved.url, saved.user, statSync(context).mode & 0o777], [`nats://127.0.0.1:${natsPort}`, "admin", 0o600])
    assert.match(saved.password!, /^p[0-9a-f]{32}$/)
    for (const w of workers) {
      // a worker that never gets ready is reported with what /readyz said last and its own last lines
      let readyz = ""
      await waitUntil(
        () =>
          fetch(`http://127.0.0.1:${ports[w]}/readyz`).then(
            async (r) => ((readyz = `${r.status} ${await r.text()}`), r.status === 200),
            (err) => ((readyz = String(err?.cause ?? err)), false),
          ),
        { what: `${w} ready`, timeoutMs: 60_000 },
      ).catch((err: Error) => {
        const own = up.lines.filter((l) => l.startsWith(w)).slice(-20)
        throw new Error(`${err.message}; /readyz: ${readyz}; its last lines:\n${own.join("\n")}`)
      })
    }
    const said = (re: RegExp) => up.lines.map((l) => re.exec(l)).find((m) => m)
    // the printed curl line, run as printed
    const curl = said(/try it \(API key "dispatcher"\): (curl .*)$/)![1]!
    const { routeId } = JSON.parse(execFileSync("sh", ["-c", curl], { encoding: "utf8" })) as { routeId: string }
    assert.match(routeId, /^[0-9a-f-]{36}$/)
    assert.ok(said(/try it .*-X POST http:\/\/127\.0\.0\.1:(\d+)\/routes/)![1] === String(ports.routing))
    // one link per customer with a tariff; acme's signs in (a cookie) and shows acme's invoice
    const portalLinks = Object.fromEntries(
      ["acme", "globex", "initech"].map((c) => [
        c,
        said(new RegExp(`portal for ${c}: (http://127\\.0\\.0\\.1:${ports.portal}/login\\?token=\\S+)$`))?.[1],
      ]),
    )
    assert.ok(Object.values(portalLinks).every(Boolean), JSON.stringify(portalLinks))
    const login = await fetch(portalLinks.acme!, { redirect: "manual" })
    assert.is(login.status, 303)
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!
    const invoices = await waitUntil(
      async () => {
        const r = await fetch(`http://127.0.0.1:${ports.portal}/api/invoices`, { headers: { cookie } })
        const body = (await r.json()) as { invoices: { routeId: string }[] }
        return body.invoices.length ? body.invoices : null
      },
      { what: "the invoice on the portal", timeoutMs: 30_000 },
    )
    assert.equal(
      invoices.map((i) => i.routeId),
      [routeId],
    )
    // the ops link signs in as the OS user
    const opsLink = said(new RegExp(`ops dashboard: (http://127\\.0\\.0\\.1:${ports.ops}/login\\?token=\\S+)`))![1]!
    const opsLogin = await fetch(opsLink, { redirect: "manual" })
    assert.is(opsLogin.status, 303)
    const session = await fetch(`http://127.0.0.1:${ports.ops}/api/session`, {
      headers: { cookie: opsLogin.headers.get("set-cookie")!.split(";")[0]! },
    })
    assert.equal(await session.json(), { operator: operatorName(userInfo().username) })
    // nothing without a credential
    assert.is((await fetch(`http://127.0.0.1:${ports.portal}/api/invoices`)).status, 401)
    assert.is((await fetch(`http://127.0.0.1:${ports.routing}/routes`, { method: "POST" })).status, 401)
    // each worker runs as its own nats.conf user, not as admin
    assert.ok(up.lines.some((l) => /routing\s*│.*ready/.test(l)))
  } finally {
    assert.is(await up.stop("SIGTERM"), 0, up.lines.slice(-5).join("\n"))
  }
  assert.ok(up.lines.some((l) => l.includes("stopped")))
  assert.not.ok(existsSync(join(dir, "nats", "context", "logiflow.json")), "the context is removed with the run's passwords")
  assert.not.ok(await portInUse(natsPort), "nats-server stopped")
  for (const w of workers) assert.not.ok(await portInUse(ports[w]!, "0.0.0.0"), `${w} stopped`)
})

test("up - with NATS_URL: the version that server announces, and no nats context (its credentials are not the run's)", async () => {
  const server = await startServer()
  const ports = Object.fromEntries(
    await Promise.all(workers.map(async (w) => [`${w.toUpperCase()}_PORT`, String(await freePort())] as const)),
  )
  const up = spawnTs("mesh/cli/main.ts", { NATS_URL: server.url, XDG_CONFIG_HOME: join(dir, "external"), ...ports }, [
    "up",
    "--no-fleet",
    "--data-dir",
    join(dir, "external"),
  ])
  try {
    await up.waitFor(/Ctrl-C stops everything/, 60_000)
    const said = up.lines.filter((l) => l.startsWith("logiflow│ ")).map((l) => l.slice("logiflow│ ".length))
    assert.is(said[0], `using NATS at ${server.url}: nats-server v${natsServerVersion(findNatsServer()!)!.join(".")}`)
    assert.ok(said.includes("nats CLI: against NATS_URL, use a context of your own (nats context save …)"))
    assert.not.ok(existsSync(join(dir, "external", "nats")))
    // stopped once every worker is up: a SIGTERM while workers are still starting is not what this test is about
    for (const w of ["routing", "invoice", "tracking", "portal", "ops"]) await up.waitFor(new RegExp(`^${w} *│.*"?ready`), 60_000)
  } finally {
    const code = await up.stop("SIGTERM")
    await server.close()
    assert.is(code, 0, up.lines.slice(-8).join("\n"))
  }
})

test("up - without a nats-server binary or NATS_URL: one line saying how to get one, exit 1", async () => {
  const up = spawnTs("mesh/cli/main.ts", { NATS_URL: undefined, NATS_SERVER_BIN: join(dir, "missing", "nats-server") }, [
    "up",
    "--data-dir",
    dir,
  ])
  const code = await up.exited
  assert.is(code, 1)
  const out = up.lines.filter((l) => l.trim())
  assert.is(out.length, 1, out.join("\n"))
  assert.match(
    out[0]!,
    /^logiflow up: no nats-server found: build the pinned newest one with Go \(bash deploy\/nats\/install.sh\), or install one \(Debian\/Ubuntu: apt-get install nats-server/,
  )
})

test("up --scale invoice=2 - two invoice instances share 8 partitions (4 each); a route posted is invoiced once", async () => {
  const natsPort = await freePort()
  const ports = { routing: await freePort(), invoice: await freePort() }
  const env: Record<string, string | undefined> = {
    NATS_URL: undefined,
    NATS_PORT: String(natsPort),
    NATS_MONITOR_PORT: String(await freePort()),
    LOG_LEVEL: "info",
    PARTITIONS: undefined,
    ADMIN_PASSWORD: "pUpScaleAdmin1",
    // the nats CLI context goes here, never into the user's ~/.config
    XDG_CONFIG_HOME: join(dir, "scaled"),
    ROUTING_PORT: String(ports.routing),
    INVOICE_PORT: String(ports.invoice),
    ...Object.fromEntries(["TRACKING", "PORTAL", "OPS"].map((w) => [`${w}_PORT`, "0"])),
    PORTAL_SECRET: undefined,
    LOGIFLOW_OPERATORS: undefined,
    LOGIFLOW_API_KEYS: undefined,
    FLEET_API_KEY: undefined,
  }
  const up = spawnTs("mesh/cli/main.ts", env, ["up", "--no-fleet", "--scale", "invoice=2", "--data-dir", join(dir, "scaled")])
  try {
    await up.waitFor(/Ctrl-C stops everything/, 60_000)
    assert.ok(
      up.lines.some((l) => l.includes("invoice-2 started")),
      "a second instance",
    )
    assert.ok(
      up.lines.some((l) => /invoice :\d+ ×2.*\(8 partitions per stream\)/.test(l)),
      up.lines.join("\n"),
    )
    const taken = (label: string) => up.lines.filter((l) => l.startsWith(label) && l.includes("partition lease taken")).length
    const handed = (label: string) => up.lines.filter((l) => l.startsWith(label) && l.includes("partition handed over")).length
    // each ends with 4 of the 8: what the first took alone, it hands the second half over
    await waitUntil(() => taken("invoice │") - handed("invoice │") === 4 && taken("invoice-2│") - handed("invoice-2│") === 4, {
      what: "4 + 4 leases",
      timeoutMs: 60_000,
    })
    const curl = up.lines.map((l) => /try it \(API key "dispatcher"\): (curl .*)$/.exec(l)).find((m) => m)![1]!
    // the leases say invoice is up, not routing: the curl waits for routing's ready line (it listens before that)
    await up.waitFor(/^routing *│.*"?ready/, 60_000)
    const { routeId } = JSON.parse(execFileSync("sh", ["-c", curl], { encoding: "utf8" })) as { routeId: string }
    const nc = await connectTo({ url: `nats://127.0.0.1:${natsPort}` }, { user: "admin", pass: "pUpScaleAdmin1" })
    try {
      const jsm = await jetstreamManager(nc)
      await waitUntil(async () => (await jsm.streams.info("INVOICE")).state.messages === 1, { what: "the invoice" })
      const inv = await jsm.streams.getMessage("INVOICE", { seq: 1 })
      assert.is(inv!.json<{ routeId: string }>().routeId, routeId)
      // stored with its partition: INVOICE is partitioned like every business stream
      assert.match(inv!.subject, new RegExp(`^invoice\\.events\\.InvoiceGenerated\\.${routeId}\\.g1\\.[0-7]$`))
    } finally {
      await nc.close()
    }
  } finally {
    assert.is(await up.stop("SIGTERM"), 0)
  }
})

test("up - npm start: a SIGTERM to npm reaches up itself, which drains every worker and stops the server", async () => {
  // what a process manager, `timeout` or a container runtime does: signal the process it started, npm. npm passes
  // the signal to its child, the shell running the script; without the script's `exec` the shell died of it and left
  // up, its server and its workers running with nobody to stop them
  const { env } = await ownRun()
  const npm = spawnChild("npm", ["start", "--", "--no-fleet", "--data-dir", join(dir, "npm")], env, { name: "npm start", waitMs: 60_000 })
  let tree: number[] = []
  try {
    await npm.waitFor(/Ctrl-C stops everything/)
    for (const w of workers) await npm.waitFor(new RegExp(`^${w} *│.*"?ready`))
    // up, its nats-server and its five workers
    tree = descendants(npm.pid)
    const up = execFileSync("pgrep", ["-P", String(npm.pid)])
      .toString()
      .trim()
      .split("\n")
    assert.is(up.length, 1, "one child of npm")
    assert.match(readFileSync(`/proc/${up[0]}/cmdline`, "utf8"), "mesh/cli/main.ts\u0000up", "npm's child is up itself, not a shell")
    assert.is(tree.length, 1 + 1 + workers.length, tree.join(" "))
    assert.is(await npm.stop("SIGTERM"), 0, npm.lines.slice(-8).join("\n"))
    assert.ok(npm.lines.includes("logiflow│ stopping: draining workers"), npm.lines.slice(-8).join("\n"))
    assert.is(npm.lines.at(-1), "logiflow│ stopped")
    for (const w of workers)
      assert.ok(
        npm.lines.some((l) => new RegExp(`^${w} *│.*stopped.*drained`).test(l)),
        `${w} drained`,
      )
    for (const pid of tree) assert.not.ok(alive(pid), `pid ${pid} gone`)
  } finally {
    // a failed run leaves nothing behind: up first (it would restart its workers), then the rest
    for (const pid of tree.length ? tree : descendants(npm.pid)) if (alive(pid)) process.kill(pid, "SIGKILL")
    await npm.stop("SIGKILL")
  }
})

test("up - the nats context: a foreign one or a live run's is left alone, a dead run's is replaced; only its own is removed", async () => {
  const saved = process.env.XDG_CONFIG_HOME
  process.env.XDG_CONFIG_HOME = join(dir, "ctx")
  try {
    const path = join(dir, "ctx", "nats", "context", "mine.json")
    await mkdir(dirname(path), { recursive: true })
    const put = (description: string) => writeFile(path, JSON.stringify({ description, url: "nats://elsewhere:4222", user: "someone" }))
    await put("my own server")
    assert.equal(writeContext("mine", { url: "nats://127.0.0.1:1" }), {
      name: "mine",
      path,
      refused: 'a nats context "mine" exists that logiflow did not write; left as it is (set LOGIFLOW_NATS_CONTEXT to another name)',
    })
    await put(`logiflow up (pid ${process.ppid}): removed when it stops`)
    assert.match(
      (writeContext("mine", { url: "nats://127.0.0.1:1" }) as { refused: string }).refused,
      `belongs to another running logiflow up (pid ${process.ppid})`,
    )
    removeContext(path)
    assert.match(await readFile(path, "utf8"), "elsewhere", "not this process's: kept")
    const gone = spawnSync("true").pid!
    await put(`logiflow up (pid ${gone}): removed when it stops`)
    assert.equal(writeContext("mine", { url: "nats://127.0.0.1:1", user: "admin", password: "pw" }), { name: "mine", path })
    assert.equal(JSON.parse(await readFile(path, "utf8")).url, "nats://127.0.0.1:1")
    removeContext(path)
    assert.not.ok(existsSync(path))
    process.env.LOGIFLOW_NATS_CONTEXT = "../x"
    assert.throws(() => contextName(), /^LOGIFLOW_NATS_CONTEXT must be a plain name \(letters, digits, \. _ -\), got "\.\.\/x"$/)
    process.env.LOGIFLOW_NATS_CONTEXT = "demo"
    assert.is(contextName(), "demo")
  } finally {
    delete process.env.LOGIFLOW_NATS_CONTEXT
    if (saved === undefined) delete process.env.XDG_CONFIG_HOME
    else process.env.XDG_CONFIG_HOME = saved
  }
})

test.run()
