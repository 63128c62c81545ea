// mesh/cli/up.ts — `logiflow up` (= npm start): the whole mesh on one machine. Every port it needs is checked first
// (up-ports.ts); then a nats-server from nats.conf (unless NATS_URL points at one), the topology provisioned as admin,
// and every worker as its own child process under its own NATS user. Servers and workers are restarted with backoff
// when they die (up-server.ts, up-workers.ts). Ctrl-C drains the workers, then stops the server.
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { parseArgs } from "node:util"
import { topology, type WorkerName } from "../../contracts/mod.ts"
import { connect } from "../connect.ts"
import { env } from "../env.ts"
import { topologyEnv } from "../topology-env.ts"
import { missingFeatures } from "../features.ts"
import { provision } from "../provision.ts"
import { contextName, removeContext, writeContext } from "./context.ts"
import { CliError, DATA_DIR_DEFAULT, type Io } from "./io.ts"
import { findNatsServer, INSTALL_HINT } from "./natsd.ts"
import { credentials, natsPasswords } from "./up-credentials.ts"
import { planPorts } from "./up-ports.ts"
import { links, OWN_COLOR, prefix } from "./up-print.ts"
import { type MeshServer, startServer } from "./up-server.ts"
import { parseScale, ROOT, superviseWorkers, WORKERS, type WorkerInstance } from "./up-workers.ts"

export { operatorName } from "./up-credentials.ts"
export { pretty } from "./up-print.ts"
export { parseScale } from "./up-workers.ts"

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
  const dataDir = resolve(values["data-dir"] ?? (env("LOGIFLOW_DATA_DIR") || DATA_DIR_DEFAULT))
  const say = (line: string) => io.out(`${prefix("logiflow", OWN_COLOR)}${line}`)

  const passwords = natsPasswords()
  const creds = credentials()
  let natsContext: string | undefined
  try {
    natsContext = contextName()
  } catch (err) {
    throw new CliError((err as Error).message)
  }

  const external = process.env.NATS_URL
  const bin = external ? undefined : findNatsServer()
  if (!external && !bin) throw new CliError(INSTALL_HINT)
  const names = WORKERS.filter((w) => (w !== "fleet" || !values["no-fleet"]) && existsSync(join(ROOT, "workers", `${w}.ts`)))
  // every port, before anything starts: a busy default moves, a busy explicit one ends the run here
  const plan = await planPorts({
    nats: external ? "external" : values.cluster ? "cluster" : "server",
    instances: new Map(names.map((w) => [w, scale.get(w) ?? 1])),
  })
  for (const line of plan.moved) say(line)
  const portOf = (w: WorkerName) => plan.workers.get(w)?.[0] ?? 0
  const urlOf = (w: WorkerName) => `http://127.0.0.1:${portOf(w)}`

  let server: MeshServer | undefined
  let url = external
  let started = `using NATS at ${url}: nats-server v%s`
  if (!external) {
    server = await startServer({ cluster: !!values.cluster, plan, dataDir, bin: bin!, passwords, say, out: io.out })
    url = server.url
    started = server.started
    // R3 for provision below and for the workers (inherited), which size what they create themselves by it
    if (values.cluster) process.env.STREAM_REPLICAS ??= "3"
  }
  const stopServer = async () => server?.stop()
  process.once("exit", () => server?.killAll())

  // provision as admin; against an external server the caller's own NATS_USER/NATS_PASSWORD (if any) are used
  const admin = external ? { user: process.env.NATS_USER, pass: process.env.NATS_PASSWORD } : { user: "admin", pass: passwords.admin }
  const nc = await connect({ name: "admin", url, ...admin, waitForServer: false }).catch(async (err) => {
    await stopServer()
    throw new CliError(`cannot reach NATS at ${url}: ${(err as Error).message}`)
  })
  say(started.replace("%s", nc.info?.version ?? "(version not announced)"))
  // each of these takes its older path, or is refused by name where it is asked for (mesh/features.ts)
  for (const m of missingFeatures(nc)) say(`without ${m}`)
  // a run that cannot go on stops what it started: a detached server left behind would hold the ports and store
  const actions = await provision(nc, topology({ ...topologyEnv(), partitions }))
    .catch(async (err) => {
      await stopServer()
      throw err
    })
    .finally(() => nc.close())
  say(`topology provisioned: ${actions.length} resources, ${actions.filter((a) => a.action !== "unchanged").length} changed`)

  const instances: WorkerInstance[] = names.flatMap((name) =>
    plan.workers.get(name)!.map((port, i) => ({ name, label: i === 0 ? name : `${name}-${i + 1}`, port })),
  )
  const fleet = superviseWorkers(instances, {
    envOf: (w) => ({
      ...process.env,
      NATS_URL: url,
      PARTITIONS: String(partitions),
      // the fleet simulator drives routing and tracking over HTTP, wherever they listen
      ROUTING_URL: process.env.ROUTING_URL ?? urlOf("routing"),
      TRACKING_URL: process.env.TRACKING_URL ?? urlOf("tracking"),
      ...creds.envOf(w.name),
      ...(external ? {} : { NATS_USER: w.name, NATS_PASSWORD: passwords[w.name] }),
    }),
    say,
    out: io.out,
  })
  process.once("exit", () => fleet.killAll())
  say(
    `workers: ${names.map((w) => `${w} :${portOf(w)}${(scale.get(w) ?? 1) > 1 ? ` ×${scale.get(w)}` : ""}`).join(", ")}${partitions > 1 ? ` (${partitions} partitions per stream)` : ""}`,
  )
  await links(names, portOf, creds, say)
  // lets `npx logiflow …` from this checkout (or with LOGIFLOW_DATA_DIR) reach this run: its NATS as admin, without
  // copying passwords around, and each worker on the port it really got
  const sessionFile = join(dataDir, "session.env")
  const session = [
    ...(external ? [] : [`NATS_URL=${url}`, "NATS_USER=admin", `NATS_PASSWORD=${passwords.admin}`]),
    `PORTAL_SECRET=${creds.portalSecret}`,
    // a port of 0 (any free one) is the worker's to pick: no URL to write down
    ...names.filter((w) => portOf(w) > 0).map((w) => `${w.toUpperCase()}_URL=${urlOf(w)}`),
  ]
  mkdirSync(dataDir, { recursive: true })
  writeFileSync(sessionFile, `${session.join("\n")}\n`, { mode: 0o600 })
  // the real nats CLI, as admin, against this run's server (removed when it stops: the passwords are this run's)
  const context = external ? undefined : writeContext(natsContext, { url: url!, user: "admin", password: passwords.admin })
  const forget = () => {
    rmSync(sessionFile, { force: true })
    if (context) removeContext(context.path)
  }
  process.once("exit", forget)
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
      await fleet.stop()
      await stopServer()
      forget()
      say("stopped")
      resolveStop()
    }
    process.off("SIGINT", early)
    process.off("SIGTERM", early)
    process.on("SIGINT", stop)
    process.on("SIGTERM", stop)
    if (signalledEarly) void stop()
  })
  return 0
}
