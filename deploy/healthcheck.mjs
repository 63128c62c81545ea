// deploy/healthcheck.mjs — the images' HEALTHCHECK: exit 0 when the worker named by WORKER answers 200 on /readyz.
// Plain JavaScript, so neither tsx nor a type check runs every few seconds; works under `node` and `deno run`.
// The defaults are mesh/cli/up.ts DEFAULT_PORTS (test/deploy.test.ts keeps them equal); `<NAME>_PORT` wins,
// exactly as mesh/worker.ts reads it.
const DEFAULT_PORTS = { portal: 8080, routing: 8081, tracking: 8082, invoice: 8083, ops: 8084, fleet: 8085 }

const getEnv = (k) => (globalThis.Deno ? globalThis.Deno.env.get(k) : globalThis.process.env[k])
const exit = (code) => (globalThis.Deno ? globalThis.Deno.exit(code) : globalThis.process.exit(code))

const worker = getEnv("WORKER") ?? ""
const port = getEnv(`${worker.toUpperCase()}_PORT`) || DEFAULT_PORTS[worker]
if (!port) {
  console.error(`healthcheck: unknown WORKER "${worker}"`)
  exit(1)
}
try {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) })
  if (!res.ok) console.error(`healthcheck: /readyz ${res.status} ${await res.text()}`)
  exit(res.ok ? 0 : 1)
} catch (err) {
  console.error(`healthcheck: ${err.message}`)
  exit(1)
}
