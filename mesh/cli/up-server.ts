// mesh/cli/up-server.ts — the NATS side of `logiflow up`: one nats-server from nats.conf, or with --cluster three
// nodes from deploy/nats/node.conf, on the ports the plan checked, each supervised like the workers. A server that
// dies is started again on the same store and ports (JetStream's file store keeps every stored event); the workers
// reconnect to it on their own (mesh/connect.ts reconnects forever).
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { startCluster } from "./cluster.ts"
import { type Natsd, startNatsd } from "./natsd.ts"
import { passwordEnv } from "./up-credentials.ts"
import type { PortPlan } from "./up-ports.ts"
import { OWN_COLOR, prefix } from "./up-print.ts"
import { ROOT, restartBackoff } from "./up-workers.ts"

/** The longest wait between two attempts to start a dead server again. */
export const SERVER_BACKOFF_MAX_MS = 10_000

export type MeshServer = {
  /** for NATS_URL: one URL, or the nodes' joined by "," */
  url: string
  /** what runs, for up's first line; `%s` stands for the version the server announces */
  started: string
  /** stops supervising, then stops each server gracefully (SIGTERM: the store is flushed) */
  stop(): Promise<void>
  /** when up itself dies: SIGTERM to every server still running */
  killAll(): void
}

export type ServerOptions = {
  cluster: boolean
  plan: PortPlan
  dataDir: string
  bin: string
  passwords: Record<string, string>
  say(line: string): void
  out(line: string): void
}

export async function startServer(o: ServerOptions): Promise<MeshServer> {
  const env = passwordEnv(o.passwords)
  const log = (name: string) => (line: string) => (process.env.NATS_LOG ? o.out(`${prefix(name, OWN_COLOR)}${line}`) : undefined)
  let nodes: { natsd: Natsd; label: string; storeDir: string }[]
  let started: string
  if (o.cluster) {
    const dir = join(o.dataDir, "cluster")
    const cluster = await startCluster({ dir, detached: true, env, ports: o.plan.cluster, onLog: (n, l) => log(n)(l) })
    nodes = cluster.nodes.map((natsd, i) => ({ natsd, label: `nats-server n${i + 1}`, storeDir: join(dir, `n${i + 1}`) }))
    started = `3-node JetStream cluster of nats-server v%s (${o.bin}) on ${cluster.urls.join(",")} (meta leader ${cluster.leader}, stores in ${dir}, pids ${cluster.nodes.map((n) => n.process.pid).join(",")})`
  } else {
    const storeDir = join(o.dataDir, "nats")
    mkdirSync(storeDir, { recursive: true })
    const { client, monitor } = o.plan.nats!
    const natsd = await startNatsd({
      port: client,
      monitorPort: monitor,
      storeDir,
      config: join(ROOT, "nats.conf"),
      detached: true,
      env,
      onLog: log("nats"),
    })
    nodes = [{ natsd, label: "nats-server", storeDir }]
    started = `nats-server v%s (${o.bin}) on ${natsd.url} (monitoring http://127.0.0.1:${monitor}, store ${storeDir}, pid ${natsd.process.pid})`
  }
  // with --cluster the workers carry on through the other two nodes (R3: two of three keep every stream going)
  const meanwhile = o.cluster ? "the workers carry on with the other nodes" : "the workers wait for it"
  const supervisors = nodes.map((n) => superviseNatsd(n.natsd, n.label, n.storeDir, meanwhile, o.say))
  return {
    url: nodes.map((n) => n.natsd.url).join(","),
    started,
    async stop() {
      for (const s of supervisors) s.stopping()
      await Promise.all(nodes.map((n) => n.natsd.stop()))
    },
    killAll() {
      for (const { natsd } of nodes) if (natsd.process.exitCode === null && natsd.process.signalCode === null) natsd.process.kill("SIGTERM")
    },
  }
}

/**
 * Watches `natsd`: when its process dies (a crash, kill -9, the OOM killer) it says so, and starts it again on the
 * same store and ports after 0.5 s, doubling up to 10 s while it keeps failing; a server that ran a minute starts
 * the backoff afresh. `meanwhile` says what the mesh does without it. `stopping()` ends the watch before a
 * deliberate stop.
 */
export function superviseNatsd(natsd: Natsd, label: string, storeDir: string, meanwhile: string, say: (line: string) => void) {
  const backoff = restartBackoff(SERVER_BACKOFF_MAX_MS)
  let stopping = false
  let timer: NodeJS.Timeout | undefined
  let diedAt = 0
  const watch = () => {
    const child = natsd.process
    const startedAt = Date.now()
    child.once("exit", (code, signal) => {
      if (stopping) return
      diedAt = Date.now()
      const delay = backoff.next(diedAt - startedAt)
      say(
        `${label} (pid ${child.pid}) died (${signal ?? `exit code ${code}`}): ${meanwhile}; starting it again in ${delay} ms on the same store (${storeDir}) and ${natsd.url}`,
      )
      timer = setTimeout(again, delay)
    })
  }
  const again = async () => {
    if (stopping) return
    try {
      await natsd.restart()
    } catch (err) {
      if (stopping) return
      const delay = backoff.next(0)
      say(`${label} did not start again (${(err as Error).message.split("\n")[0]}); next try in ${delay} ms`)
      timer = setTimeout(again, delay)
      return
    }
    if (stopping) return
    const secs = ((Date.now() - diedAt) / 1000).toFixed(1)
    say(`${label} is back (pid ${natsd.process.pid}) on ${natsd.url}, ${secs} s after it died; the workers reconnect on their own`)
    watch()
  }
  watch()
  return {
    stopping() {
      stopping = true
      clearTimeout(timer)
    },
  }
}
