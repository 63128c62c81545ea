// routing on a 3-node cluster with ROUTING at R3, connected to a node that does not lead ROUTING: the truck's last
// sequence is read through DIRECT.GET, which that node's replica answers, possibly a little behind the leader. A stale
// read may only make the guarded publish refuse and be retried: every request gets its 202 and every route is
// stored exactly once, with many requests for the same few trucks in flight at once.
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { topology } from "../contracts/mod.ts"
import { startCluster } from "../mesh/cli/cluster.ts"
import { provision } from "../mesh/provision.ts"
import { type Proc, spawnWorker } from "./fixtures/chaos.ts"
import { routeRequest } from "./fixtures/faults.ts"
import { freePort, passwords, sleep, testAuth, waitUntil, suite } from "./harness.ts"

const test = suite("routing-cluster")

test("routing on R3 - direct reads from a follower: 400 requests for 8 trucks, 40 at once, each 202 and stored once", async () => {
  const dir = await mkdtemp(join(tmpdir(), "logiflow-routing-cluster-"))
  const env = passwords()
  const ports = []
  for (let i = 0; i < 3; i++) ports.push({ client: await freePort(), cluster: await freePort(), monitor: await freePort() })
  const cluster = await startCluster({ dir, ports, env })
  let routing: Proc | undefined
  const nc = await connect({ servers: cluster.urls, user: "admin", pass: env.ADMIN_PASSWORD! })
  try {
    // a cluster that has just elected its meta leader may still refuse R3 placements for a moment
    for (let tries = 1; ; tries++) {
      const err = await provision(nc, topology({ replicas: 3 })).then(
        () => undefined,
        (e: Error) => e,
      )
      if (!err) break
      if (tries === 20) throw err
      await sleep(500)
    }
    const jsm = await jetstreamManager(nc)
    const info = await waitUntil(
      async () => {
        const i = await jsm.streams.info("ROUTING")
        return i.cluster?.leader && (i.cluster.replicas ?? []).filter((r) => r.current).length === 2 ? i : undefined
      },
      { timeoutMs: 30_000, what: "ROUTING with a leader and two current replicas" },
    )
    assert.is(info.config.allow_direct, true, "ROUTING answers DIRECT.GET")
    // routing's only server is one that holds a follower replica of ROUTING
    const follower = cluster.nodes.findIndex((_, i) => `n${i + 1}` !== info.cluster!.leader)
    // every DIRECT.GET routing sends to ROUTING, seen by a plain subscriber beside the replicas' queue group
    let directReads = 0
    nc.subscribe("$JS.API.DIRECT.GET.ROUTING", { callback: () => void directReads++ })
    await nc.flush()
    routing = await spawnWorker("routing", {
      NATS_URL: cluster.urls[follower]!,
      NATS_USER: "routing",
      NATS_PASSWORD: env.ROUTING_PASSWORD!,
      STREAM_REPLICAS: "3",
    })

    const n = 400
    const answers: { status: number; routeId?: string; error?: string }[] = []
    let next = 0
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        while (next < n) {
          const k = next++
          const res = await fetch(`${routing!.url}/routes`, {
            method: "POST",
            headers: { "content-type": "application/json", ...testAuth().headers.routes, "idempotency-key": `rc-${k}` },
            body: JSON.stringify(routeRequest(k, `truck-${k % 8}`)),
            signal: AbortSignal.timeout(20_000),
          })
          const body = (await res.json()) as { routeId?: string; error?: string }
          answers[k] = { status: res.status, routeId: body.routeId, ...(res.status === 202 ? {} : { error: body.error }) }
        }
      }),
    )
    assert.equal(
      answers.filter((a) => a.status !== 202),
      [],
      "every request answered 202",
    )
    const ids = answers.map((a) => a.routeId!)
    assert.is(new Set(ids).size, n, "a routeId per request")
    const state = (await jsm.streams.info("ROUTING", { subjects_filter: "routing.events.RouteCalculated.>" })).state
    assert.is(state.messages, n, "ROUTING holds each route once")
    assert.is(Object.keys(state.subjects ?? {}).length, 8, "on its truck's subject")
    // the stored routes are exactly the answered ones
    const stored = new Set<string>()
    for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
      const m = await jsm.streams.getMessage("ROUTING", { seq })
      if (m) stored.add(m.json<{ routeId: string }>().routeId)
    }
    assert.equal([...stored].sort(), [...ids].sort())
    assert.ok(directReads >= n, `routing read the last sequence through DIRECT.GET (${directReads} reads for ${n} requests)`)
  } finally {
    await routing?.stop("SIGTERM")
    await nc.close()
    await cluster.stop()
    await rm(dir, { recursive: true, force: true })
  }
})

test.run()
