// mesh/cli/up-ports.ts — every port `logiflow up` will listen on, checked before anything starts. A busy default
// moves to the next free port that no other part of the plan asked for; a busy port that its variable set
// explicitly stops the run with one line naming the port and the variable. Either way nothing listens behind a
// printed URL but the mesh: a worker started on a taken port would only crash-loop on EADDRINUSE.
import { type WorkerName, workers as specs } from "../../contracts/mod.ts"
import { env } from "../env.ts"
import { DEFAULT_BASE_PORTS, type NodePorts } from "./cluster.ts"
import { CliError } from "./io.ts"
import { portInUse } from "./natsd.ts"

/** Where the workers' HTTP servers bind (mesh/worker.ts): a port is checked on the address it will be bound to. */
export const httpHost = () => env("HTTP_HOST") || "0.0.0.0"
const NATS_HOST = "127.0.0.1"

export type PortPlan = {
  /** the single server's ports (`logiflow up` without --cluster or NATS_URL) */
  nats?: { client: number; monitor: number }
  /** node n<i+1>'s ports (`--cluster`) */
  cluster?: NodePorts[]
  /** each worker's instances' ports, the first instance first */
  workers: Map<WorkerName, number[]>
  /** one line per busy default that moved: `portal: 8080 is in use, so it listens on 8081 (PORTAL_PORT sets it)` */
  moved: string[]
}

type Want = {
  /** who listens: `portal`, `invoice-2`, `nats-server monitoring`, `n2 routes` */
  what: string
  port: number
  host: string
  /** the variable that set the port explicitly; undefined for a default */
  variable?: string
  /** the variable a user would set (named in the line that says a default moved) */
  setBy?: string
  set(port: number): void
}

/** `<VAR>`'s port if set (0: any free port, never checked), else undefined. */
function explicit(variable: string): number | undefined {
  const raw = env(variable)
  if (raw === undefined || raw.trim() === "") return undefined
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 0 || n > 65_535) throw new CliError(`${variable} must be a port number (0 to 65535), got "${raw}"`)
  return n
}

/**
 * The ports of this run: NATS (unless `nats` is "external"), then every worker instance. `instances` gives how many
 * of each worker run; instance i > 0 of a worker starts looking at its port + 100·i.
 */
export async function planPorts(o: { nats: "server" | "cluster" | "external"; instances: Map<WorkerName, number> }): Promise<PortPlan> {
  const plan: PortPlan = { workers: new Map(), moved: [] }
  const wants: Want[] = []
  const want = (what: string, variable: string | undefined, fallback: number, host: string, set: (p: number) => void) => {
    const given = variable ? explicit(variable) : undefined
    wants.push({ what, host, port: given ?? fallback, variable: given === undefined ? undefined : variable, setBy: variable, set })
  }
  if (o.nats === "server") {
    const nats = (plan.nats = { client: 0, monitor: 0 })
    want("nats-server", "NATS_PORT", 4222, NATS_HOST, (p) => (nats.client = p))
    want("nats-server monitoring", "NATS_MONITOR_PORT", 8222, NATS_HOST, (p) => (nats.monitor = p))
  } else if (o.nats === "cluster") {
    const nodes = (plan.cluster = [0, 1, 2].map(() => ({ client: 0, cluster: 0, monitor: 0 })))
    nodes.forEach((node, i) => {
      for (const kind of ["client", "cluster", "monitor"] as const) {
        const what = `n${i + 1} ${kind === "cluster" ? "routes" : kind === "monitor" ? "monitoring" : "clients"}`
        want(what, undefined, DEFAULT_BASE_PORTS[kind] + i, NATS_HOST, (p) => (node[kind] = p))
      }
    })
  }
  for (const [name, count] of o.instances) {
    const ports: number[] = []
    plan.workers.set(name, ports)
    const variable = `${name.toUpperCase()}_PORT`
    const base = explicit(variable) ?? specs[name].port
    for (let i = 0; i < count; i++) {
      const set = (p: number) => (ports[i] = p)
      if (i === 0) want(name, variable, specs[name].port, httpHost(), set)
      // the further instances of a scaled worker: near the first, never explicit (one variable, one port)
      else want(`${name}-${i + 1}`, undefined, base === 0 ? 0 : base + 100 * i, httpHost(), set)
    }
  }

  // what was asked for, and what moves take: a moved port never lands on another part's own port
  const taken = new Set(wants.map((w) => w.port).filter((p) => p > 0))
  const busy: Want[] = []
  for (const w of wants) {
    // 0 asks the system for any free port when the server binds
    if (w.port > 0 && (await portInUse(w.port, w.host))) {
      if (w.variable) {
        throw new CliError(
          `port ${w.port} is in use, and ${w.variable}=${w.port} asks for it (${w.what}): free it, set ${w.variable} to a free port, or unset it to take the next free one; nothing was started`,
        )
      }
      busy.push(w)
    }
  }
  for (const w of busy) {
    let p = w.port + 1
    while (p <= 65_535 && (taken.has(p) || (await portInUse(p, w.host)))) p++
    if (p > 65_535) throw new CliError(`no free port above ${w.port} for ${w.what}; nothing was started`)
    taken.add(p)
    plan.moved.push(`${w.what}: port ${w.port} is in use, so it listens on ${p}${w.setBy ? ` (${w.setBy} sets it)` : ""}`)
    w.port = p
  }
  for (const w of wants) w.set(w.port)
  return plan
}
