// mesh/cli/up.ts — `logiflow up` (= npm start): the whole mesh on one machine. A nats-server from nats.conf
// (unless NATS_URL points at one), the topology provisioned as admin, then every worker as its own child process
// under its own NATS user, restarted with backoff when it crashes. Ctrl-C drains the workers, then stops the server.
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs"
import { userInfo } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { MAX_PARTITIONS, topology, type WorkerName, workers } from "../../contracts/mod.ts"
import { tariffsFromEnv } from "../../workers/pricing.ts"
import { secret, signToken } from "../auth.ts"
import { CliError, type Io, SESSION_FILE } from "./io.ts"
import { type Cluster, startCluster } from "./cluster.ts"
import { connect } from "../connect.ts"
import { topologyEnv } from "../env.ts"
import { missingFeatures } from "../features.ts"
import { contextName, removeContext, writeContext } from "./context.ts"
import { findNatsServer, INSTALL_HINT, type Natsd, portInUse, startNatsd } from "./natsd.ts"
import { provision } from "../provision.ts"

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..")
const USERS = ["routing", "invoice", "tracking", "portal", "ops", "fleet", "admin", "sys"] as const
const WORKERS: WorkerName[] = ["routing", "invoice", "tracking", "portal", "ops", "fleet"]

async function nextFree(port: number): Promise<number> {
  while (await portInUse(port)) port++
  return port
}

const COLORS = [36, 33, 35, 32, 34, 31, 90]
const LEVEL_COLOR: Record<string, number> = { debug: 90, info: 0, warn: 33, error: 31 }

/** A JSON log line → `12:00:01 warn  dead-lettered reason=no-tariff …`; other lines as they are. */
export function pretty(line: string, color = process.stdout.isTTY): string {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line)
  } catch {
    return line
  }
  if (typeof o !== "object" || o === null || typeof o.msg !== "string") return line
  const { level = "info", time, msg, worker: _w, ...rest } = o as { level?: string; time?: string; msg: string; worker?: string }
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ")
  const t = typeof time === "string" ? time.slice(11, 19) : ""
  const lvl = String(level).padEnd(5)
  const c = LEVEL_COLOR[String(level)] ?? 0
  return `${t} ${color && c ? `\x1b[${c}m${lvl}\x1b[0m` : lvl} ${msg}${fields ? ` ${fields}` : ""}`
}

type Supervised = {
  name: WorkerName
  /** `invoice`, `invoice-2`, …: how its lines are prefixed */
  label: string
  env: Record<string, string>
  child?: ChildProcess
  restarts: number
  stopping: boolean
  timer?: ReturnType<typeof setTimeout>
}

const port = (w: WorkerName) => process.env[`${w.toUpperCase()}_PORT`] ?? workers[w].port

/** `--scale invoice=3 --scale tracking=2` (or `invoice=3,tracking=2`): instances per worker. */
export function parseScale(given: string[]): Map<WorkerName, number> {
  const out = new Map<WorkerName, number>()
  for (const part of given.flatMap((g) => g.split(","))) {
    const m = /^([a-z]+)=(\d+)$/.exec(part.trim())
    if (!m || !(WORKERS as string[]).includes(m[1]!) || Number(m[2]) < 1 || Number(m[2]) > MAX_PARTITIONS) {
      throw new CliError(`--scale takes <worker>=<instances> (1 to ${MAX_PARTITIONS}) of ${WORKERS.join(", ")}; got "${part}"`)
    }
    out.set(m[1] as WorkerName, Number(m[2]))
  }
  return out
}

const fresh = () => randomBytes(24).toString("base64url")
const SECRET_VARS = ["PORTAL_SECRET", "LOGIFLOW_OPERATORS", "LOGIFLOW_API_KEYS", "FLEET_API_KEY"]

/** An operator name from the OS user: what LOGIFLOW_OPERATORS accepts as a name. */
export function operatorName(user: string): string {
  const name = user
    .replace(/[^A-Za-z0-9._@-]/g, "-")
    .replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 64)
  return name || "operator"
}

/**
 * The credentials of this run: what the environment configures (directly or as *_FILE) is used as it is; what it
 * does not is generated fresh, never written to disk, and printed as links. Each worker gets only its own.
 */
function credentials() {
  const generated = {
    operator: undefined as { name: string; token: string } | undefined,
    keys: undefined as Record<"dispatcher" | "gateway" | "fleet", string> | undefined,
  }
  const operators =
    secret("LOGIFLOW_OPERATORS") ??
    (() => {
      let user = "operator"
      try {
        user = userInfo().username
      } catch {}
      generated.operator = { name: operatorName(user), token: fresh() }
      return `${generated.operator.name}:${generated.operator.token}`
    })()
  let apiKeys = secret("LOGIFLOW_API_KEYS")
  let fleetKey = secret("FLEET_API_KEY")
  if (apiKeys === undefined) {
    const k = (generated.keys = { dispatcher: fresh(), gateway: fresh(), fleet: fresh() })
    apiKeys = `dispatcher:${k.dispatcher}:routes:20,gateway:${k.gateway}:positions:100,fleet:${k.fleet}:routes+positions:50`
    fleetKey = k.fleet
  }
  // PORTAL_SECRET signs the customers' links: one generated here is valid for this run's links only
  const portalSecret = secret("PORTAL_SECRET") ?? randomBytes(32).toString("base64url")
  const own: Record<string, Record<string, string | undefined>> = {
    portal: { PORTAL_SECRET: portalSecret },
    ops: { LOGIFLOW_OPERATORS: operators },
    routing: { LOGIFLOW_API_KEYS: apiKeys },
    tracking: { LOGIFLOW_API_KEYS: apiKeys },
    fleet: { FLEET_API_KEY: fleetKey },
  }
  const none = Object.fromEntries(
    SECRET_VARS.flatMap((v) => [
      [v, undefined],
      [`${v}_FILE`, undefined],
    ]),
  )
  return { generated, portalSecret, envOf: (worker: string) => ({ ...none, ...own[worker] }) }
}

export async function up(args: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      "no-fleet": { type: "boolean" },
      "data-dir": { type: "string" },
      cluster: { type: "boolean" },
      scale: { type: "string", multiple: true },
    },
  })
  // a Ctrl-C or SIGTERM while starting is kept, not fatal: once everything started it stops it all in order (the
  // default action would end this process and leave the server and the detached workers behind)
  let signalledEarly = false
  const early = () => void (signalledEarly = true)
  process.on("SIGINT", early)
  process.on("SIGTERM", early)
  const scale = parseScale(values.scale ?? [])
  // several instances of a worker share its partitions: default 8 when any worker is scaled out, else 1
  const partitions = Number(process.env.PARTITIONS ?? ([...scale.values()].some((n) => n > 1) ? 8 : 1))
  const dataDir = resolve(values["data-dir"] ?? join(ROOT, ".logiflow"))
  const tty = process.stdout.isTTY
  const prefix = (name: string, i: number) => {
    const label = name.padEnd(8)
    return tty ? `\x1b[${COLORS[i % COLORS.length]}m${label}\x1b[0m│ ` : `${label}│ `
  }
  const say = (line: string) => io.out(`${prefix("logiflow", 6)}${line}`)

  // passwords: from the environment, else fresh for this run (never written to disk). nats-server reads a
  // variable's value as a config token, so a generated one starts with a letter ("12e4…" would parse as a number)
  const passwords: Record<string, string> = {}
  for (const u of USERS) passwords[u] = process.env[`${u.toUpperCase()}_PASSWORD`] ?? `p${randomBytes(16).toString("hex")}`
  const creds = credentials()
  let natsContext: string | undefined
  try {
    natsContext = contextName()
  } catch (err) {
    throw new CliError((err as Error).message)
  }

  let natsd: Natsd | undefined
  let cluster: Cluster | undefined
  let url = process.env.NATS_URL
  const external = !!url
  // what it runs is said once connected, with the version the server itself announces
  let started = ""
  const bin = external ? undefined : findNatsServer()
  if (!url && values.cluster) {
    if (!bin) throw new CliError(INSTALL_HINT)
    const env = Object.fromEntries(USERS.map((u) => [`${u.toUpperCase()}_PASSWORD`, passwords[u]!]))
    cluster = await startCluster({
      dir: join(dataDir, "cluster"),
      detached: true,
      env,
      onLog: (n, l) => (process.env.NATS_LOG ? io.out(`${prefix(n, 6)}${l}`) : undefined),
    })
    url = cluster.urls.join(",")
    // R3 for provision below and for the workers (inherited), which size what they create themselves by it
    process.env.STREAM_REPLICAS ??= "3"
    started = `3-node JetStream cluster of nats-server v%s (${bin}) on ${url} (meta leader ${cluster.leader}, stores in ${join(dataDir, "cluster")})`
  }
  if (!url) {
    if (!bin) throw new CliError(INSTALL_HINT)
    mkdirSync(join(dataDir, "nats"), { recursive: true })
    const port = await nextFree(Number(process.env.NATS_PORT ?? 4222))
    const monitorPort = await nextFree(Number(process.env.NATS_MONITOR_PORT ?? 8222))
    natsd = await startNatsd({
      port,
      monitorPort,
      storeDir: join(dataDir, "nats"),
      config: join(ROOT, "nats.conf"),
      detached: true,
      env: Object.fromEntries(USERS.map((u) => [`${u.toUpperCase()}_PASSWORD`, passwords[u]!])),
      onLog: (l) => (process.env.NATS_LOG ? io.out(`${prefix("nats", 6)}${l}`) : undefined),
    })
    url = natsd.url
    started = `nats-server v%s (${bin}) on ${url} (monitoring http://127.0.0.1:${monitorPort}, store ${join(dataDir, "nats")})`
  } else if (!cluster) started = `using NATS at ${url}: nats-server v%s`

  // provision as admin; against an external server the caller's own NATS_USER/NATS_PASSWORD (if any) are used
  const admin = external ? { user: process.env.NATS_USER, pass: process.env.NATS_PASSWORD } : { user: "admin", pass: passwords.admin }
  const nc = await connect({ name: "admin", url, ...admin, waitForServer: false }).catch((err) => {
    throw new CliError(`cannot reach NATS at ${url}: ${(err as Error).message}`)
  })
  say(started.replace("%s", nc.info?.version ?? "(version not announced)"))
  // each of these takes its older path, or is refused by name where it is asked for (mesh/features.ts)
  for (const m of missingFeatures(nc)) say(`without ${m}`)
  const actions = await provision(nc, topology({ ...topologyEnv(), partitions })).finally(() => nc.close())
  say(`topology provisioned: ${actions.length} resources, ${actions.filter((a) => a.action !== "unchanged").length} changed`)

  const names = WORKERS.filter((w) => (w !== "fleet" || !values["no-fleet"]) && existsSync(join(ROOT, "workers", `${w}.ts`)))
  const supervised: Supervised[] = []
  for (const name of names) {
    for (let i = 0; i < (scale.get(name) ?? 1); i++) {
      // the first instance on the worker's port, the others on the next free ones
      const env = i === 0 ? {} : { [`${name.toUpperCase()}_PORT`]: String(await nextFree(Number(port(name)) + 100 * i)) }
      supervised.push({ name, label: i === 0 ? name : `${name}-${i + 1}`, env, restarts: 0, stopping: false })
    }
  }
  const launch = (s: Supervised, i: number) => {
    const env: Record<string, string | undefined> = {
      ...process.env,
      NATS_URL: url,
      PARTITIONS: String(partitions),
      ...creds.envOf(s.name),
      ...(external ? {} : { NATS_USER: s.name, NATS_PASSWORD: passwords[s.name] }),
      ...s.env,
    }
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "workers", `${s.name}.ts`)], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      // its own process group: a terminal's Ctrl-C reaches only the supervisor, which then sends one SIGTERM
      // (a worker treats a second signal as "stop waiting" and would skip its drain)
      detached: true,
    })
    s.child = child
    say(`${s.label} started (pid ${child.pid})`)
    const startedAt = Date.now()
    let buf = ""
    const onData = (b: Buffer) => {
      buf += b.toString()
      const lines = buf.split("\n")
      buf = lines.pop()!
      for (const l of lines) if (l) io.out(`${prefix(s.label, i)}${pretty(l, tty)}`)
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.once("exit", (code, signal) => {
      if (s.stopping) return
      // a worker that ran a minute is healthy again: its next crash starts the backoff afresh
      if (Date.now() - startedAt > 60_000) s.restarts = 0
      const delay = Math.min(30_000, 500 * 2 ** s.restarts++)
      say(`${s.label} exited (${signal ?? `code ${code}`}); restarting in ${delay} ms`)
      s.timer = setTimeout(() => launch(s, i), delay)
    })
  }
  supervised.forEach(launch)
  say(
    `workers: ${names.map((w) => `${w} :${port(w)}${(scale.get(w) ?? 1) > 1 ? ` ×${scale.get(w)}` : ""}`).join(", ")}${partitions > 1 ? ` (${partitions} partitions per stream)` : ""}`,
  )
  await links(names, port, creds, say)
  // lets `npx logiflow status|tail|dlq …` from this checkout connect as admin without copying passwords around
  const ownSession = !external && dataDir === resolve(dirname(SESSION_FILE))
  if (ownSession) {
    writeFileSync(
      SESSION_FILE,
      `NATS_URL=${url}\nNATS_USER=admin\nNATS_PASSWORD=${passwords.admin}\nPORTAL_SECRET=${creds.portalSecret}\n`,
      { mode: 0o600 },
    )
  }
  // the real nats CLI, as admin, against this run's server (removed when it stops: the passwords are this run's)
  const context = external ? undefined : writeContext(natsContext, { url, user: "admin", password: passwords.admin })
  if (!context) say(`nats CLI: against NATS_URL, use a context of your own (nats context save …)`)
  else if ("refused" in context) say(`nats CLI: no context written: ${context.refused}`)
  else say(`nats CLI: nats --context ${context.name} stream ls`)
  say("Ctrl-C stops everything")

  await new Promise<void>((resolveStop) => {
    let stopping = false
    const stop = async () => {
      if (stopping) return
      stopping = true
      say("stopping: draining workers")
      await Promise.all(
        supervised.map(
          (s) =>
            new Promise<void>((done) => {
              s.stopping = true
              clearTimeout(s.timer)
              const c = s.child
              if (!c || c.exitCode !== null || c.signalCode !== null) return done()
              const kill = setTimeout(() => c.kill("SIGKILL"), 30_000)
              c.once("exit", () => (clearTimeout(kill), done()))
              c.kill("SIGTERM")
            }),
        ),
      )
      if (natsd) await natsd.stop()
      await cluster?.stop()
      if (ownSession) rmSync(SESSION_FILE, { force: true })
      if (context) removeContext(context.path)
      say("stopped")
      resolveStop()
    }
    process.off("SIGINT", early)
    process.off("SIGTERM", early)
    process.on("SIGINT", stop)
    process.on("SIGTERM", stop)
    if (signalledEarly) void stop()
    // if the supervisor itself dies, take the (detached) workers with it
    process.once("exit", () => {
      if (context) removeContext(context.path)
      supervised.forEach((s) => s.child?.exitCode === null && s.child.kill("SIGKILL"))
      if (natsd?.process.exitCode === null) natsd.process.kill("SIGTERM")
    })
  })
  return 0
}

/** One-click links: a portal sign-in per customer with a tariff, the ops dashboard, a ready request to routing. */
async function links(
  names: string[],
  port: (w: WorkerName) => string | number,
  creds: ReturnType<typeof credentials>,
  say: (l: string) => void,
) {
  if (names.includes("portal")) {
    let customers: string[] = []
    try {
      customers = Object.keys(tariffsFromEnv(process.env.INVOICE_TARIFFS))
    } catch {} // invoice itself reports a broken INVOICE_TARIFFS
    const expiresAt = Math.floor(Date.now() / 1000) + 7 * 86_400
    for (const c of customers)
      say(`portal for ${c}: http://127.0.0.1:${port("portal")}/login?token=${await signToken(creds.portalSecret, c, expiresAt)}`)
    say(`  (more: npx logiflow token customer <id>; links are valid 7 days, or until PORTAL_SECRET changes)`)
  }
  if (names.includes("ops")) {
    const op = creds.generated.operator
    say(
      op
        ? `ops dashboard: http://127.0.0.1:${port("ops")}/login?token=${op.token}  (operator ${op.name})`
        : `ops dashboard: http://127.0.0.1:${port("ops")}/  (sign in with your LOGIFLOW_OPERATORS token)`,
    )
  }
  const k = creds.generated.keys
  if (names.includes("routing") && k) {
    const body = JSON.stringify({
      truckId: "truck-7",
      customerId: "acme",
      depot: { lat: 52.52, lon: 13.405 },
      stops: [
        { id: "a", lat: 52.53, lon: 13.41 },
        { id: "b", lat: 52.5, lon: 13.39 },
      ],
    })
    say(
      `try it (API key "dispatcher"): curl -s -X POST http://127.0.0.1:${port("routing")}/routes -H 'authorization: Bearer ${k.dispatcher}' -H 'content-type: application/json' -d '${body}'`,
    )
    say(`  (tracking's key "gateway": ${k.gateway})`)
  }
}
