// bench/routing-profile.ts — routing alone under a closed loop of POST /routes (16 in flight), as its own process
// under its own NATS user, for a CPU profile of the HTTP edge:
//   PROF=<dir> N=20000 npx tsx bench/routing-profile.ts; npx tsx bench/profile.ts <dir>/<file>.cpuprofile
// Prints how long the N requests took, their status codes, and the CPU per request of routing and of nats-server.
import { topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { connectTo, freePort, startServer, testAuth } from "../test/harness.ts"
import { spawnTs } from "../test/child.ts"
import { cpuMeter } from "./lib.ts"

const server = await startServer({ auth: true })
const admin = await connectTo(server, { user: "admin", pass: server.env.ADMIN_PASSWORD! })
await provision(admin, topology())
const port = await freePort()
const child = spawnTs(
  "workers/routing.ts",
  {
    NATS_URL: server.url,
    NATS_USER: "routing",
    NATS_PASSWORD: server.env.ROUTING_PASSWORD,
    ROUTING_PORT: String(port),
    LOG_LEVEL: "info",
    ...testAuth().env,
  },
  [],
  {
    nodeArgs: process.env.PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.PROF] : [],
  },
)
try {
  await child.waitFor(/ready/, 60_000)
  const N = Number(process.env.N ?? 20000)
  let i = 0
  const body = (i: number) =>
    JSON.stringify({
      truckId: `truck-${i % 500}`,
      customerId: "acme",
      depot: { lat: 52.52, lon: 13.405 },
      stops: Array.from({ length: 4 }, (_, s) => ({
        id: `r${i}-s${s}`,
        lat: 52.4 + ((i * 7 + s) % 20) / 100,
        lon: 13.3 + ((i * 3 + s) % 20) / 100,
      })),
    })
  const t0 = performance.now()
  const cpu = cpuMeter({ routing: child.pid, natsServer: server.process.pid! })
  const codes: Record<number, number> = {}
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (i < N) {
        const n = i++
        const r = await fetch(`http://127.0.0.1:${port}/routes`, {
          method: "POST",
          headers: { "content-type": "application/json", ...testAuth().headers.routes },
          body: body(n),
        })
        await r.arrayBuffer()
        codes[r.status] = (codes[r.status] ?? 0) + 1
      }
    }),
  )
  const perRequest = cpu(N)
  console.log(
    `${N} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    codes,
    `CPU per request: routing ${(perRequest.routing * 1000).toFixed(0)} µs, nats-server ${(perRequest.natsServer * 1000).toFixed(0)} µs`,
  )
} finally {
  await child.stop("SIGTERM")
  await admin.close()
  await server.close()
}
process.exit(0)
