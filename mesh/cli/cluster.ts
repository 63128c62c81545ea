// mesh/cli/cluster.ts — a 3-node JetStream cluster on one machine, from the same deploy/nats/node.conf the containers
// use (`logiflow up --cluster`, test/deploy.test.ts). Loopback only: it shows R3 streams, leader election and a
// node going away, not what a network between machines does.
import { mkdir } from "node:fs/promises"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { type Natsd, startNatsd } from "./natsd.ts"
import { sleep } from "../time.ts"

export const NODE_CONF = resolve(dirname(fileURLToPath(import.meta.url)), "../../deploy/nats/node.conf")

export type NodePorts = { client: number; cluster: number; monitor: number }

export type ClusterOptions = {
  /** node n<i> stores in <dir>/n<i> (`logiflow up --cluster`: .logiflow/cluster, as deploy/nats/n1..n3.conf) */
  dir: string
  /** each node in its own process group (see NatsdOptions.detached) */
  detached?: boolean
  /** node i (0, 1, 2) listens on base + i; default 4301 / 6301 / 8301, the ports of deploy/nats/n1..n3.conf */
  basePorts?: NodePorts
  /** one entry per node, overriding basePorts (tests pass free ports) */
  ports?: NodePorts[]
  /** the *_PASSWORD variables deploy/nats/accounts.conf reads */
  env?: Record<string, string>
  host?: string
  onLog?: (node: string, line: string) => void
  /** how long the nodes may take to elect a JetStream meta leader (default 30 s) */
  timeoutMs?: number
}

export type Cluster = {
  /** client URLs, one per node; join them with "," for NATS_URL */
  urls: string[]
  nodes: Natsd[]
  /** the server name of the JetStream meta leader when the cluster came up */
  leader: string
  stop(): Promise<void>
}

export const DEFAULT_BASE_PORTS: NodePorts = { client: 4301, cluster: 6301, monitor: 8301 }

export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const host = o.host ?? "127.0.0.1"
  const base = o.basePorts ?? DEFAULT_BASE_PORTS
  const ports = o.ports ?? [0, 1, 2].map((i) => ({ client: base.client + i, cluster: base.cluster + i, monitor: base.monitor + i }))
  const routes = `[${ports.map((p) => `nats://${host}:${p.cluster}`).join(", ")}]`
  const started = await Promise.allSettled(
    ports.map(async (p, i) => {
      const name = `n${i + 1}`
      const storeDir = join(o.dir, name)
      await mkdir(storeDir, { recursive: true })
      return startNatsd({
        detached: o.detached,
        port: p.client,
        monitorPort: p.monitor,
        storeDir,
        host,
        config: NODE_CONF,
        env: { ...o.env, NATS_SERVER_NAME: name, NATS_ROUTES: routes },
        args: ["--cluster", `nats://${host}:${p.cluster}`],
        onLog: o.onLog && ((line) => o.onLog!(name, line)),
      })
    }),
  )
  const nodes = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []))
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()))
  }
  const failed = started.find((s) => s.status === "rejected")
  if (failed) {
    await stop()
    throw (failed as PromiseRejectedResult).reason
  }
  try {
    const leader = await metaLeader(nodes, o.timeoutMs ?? 30_000, host)
    return { urls: nodes.map((n) => n.url), nodes, leader, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

type Jsz = {
  meta_cluster?: { leader?: string; cluster_size?: number; replicas?: { name: string; current?: boolean; offline?: boolean }[] }
}

/**
 * Resolves once every node names the same meta leader and counts every node as a peer, and the leader sees every other
 * node as current. Before that, JetStream API calls time out, and an R3 stream can be refused for want of peers (a
 * leader is elected by two of three nodes). Even then the leader may not yet have every node's statistics, which
 * placement reads: provision waits out "no suitable peers" too (mesh/provision.ts).
 */
export async function metaLeader(nodes: Natsd[], timeoutMs: number, host = "127.0.0.1"): Promise<string> {
  const deadline = Date.now() + timeoutMs
  let seen: { leader?: string; peers?: number; others?: string[]; current?: number }[] = []
  while (Date.now() < deadline) {
    seen = await Promise.all(
      nodes.map((n) =>
        fetch(`http://${host}:${n.monitorPort}/jsz`)
          .then((r) => r.json() as Promise<Jsz>)
          .then(
            (j) => ({
              others: j.meta_cluster?.replicas?.map((r) => r.name),
              leader: j.meta_cluster?.leader || undefined,
              peers: j.meta_cluster?.cluster_size,
              current: j.meta_cluster?.replicas?.filter((r) => r.current && !r.offline).length,
            }),
            () => ({}),
          ),
      ),
    )
    const leader = seen[0]?.leader
    // a node lists the others as its replicas: the leader is the one that does not list the leader
    const leaderView = seen.find((v) => leader && v.others && !v.others.includes(leader))
    if (leader && seen.every((v) => v.leader === leader && v.peers === nodes.length) && leaderView?.current === nodes.length - 1)
      return leader
    await sleep(100)
  }
  throw new Error(`no JetStream meta leader within ${timeoutMs} ms (each node's view: ${JSON.stringify(seen)})`)
}
