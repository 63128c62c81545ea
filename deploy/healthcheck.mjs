// deploy/healthcheck.mjs — the images' HEALTHCHECK: exit 0 when the worker named by WORKER answers 200 on /readyz.
// Plain JavaScript, so neither tsx nor a type check runs every few seconds; works under `node` and `deno run`.
// The port: `<NAME>_PORT`, exactly as mesh/worker.ts reads it, else the worker's spec (contracts/topology.ts), which
// the image build writes to deploy/ports.json (deploy/ports.ts).
const getEnv = (k) => (globalThis.Deno ? globalThis.Deno.env.get(k) : globalThis.process.env[k])
const exit = (code) => (globalThis.Deno ? globalThis.Deno.exit(code) : globalThis.process.exit(code))

async function defaultPorts() {
  const file = new URL("./ports.json", import.meta.url)
  const text = globalThis.Deno ? await globalThis.Deno.readTextFile(file) : await (await import("node:fs/promises")).readFile(file, "utf8")
  return JSON.parse(text)
}

const worker = getEnv("WORKER") ?? ""
const port = getEnv(`${worker.toUpperCase()}_PORT`) || (await defaultPorts().catch(() => ({})))[worker]
if (!port) {
  console.error(`healthcheck: unknown WORKER "${worker}"`)
  exit(1)
}
try {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) })
  if (!res.ok) console.error(`healthcheck: :${port}/readyz ${res.status} ${await res.text()}`)
  exit(res.ok ? 0 : 1)
} catch (err) {
  console.error(`healthcheck: :${port}/readyz ${err.message}`)
  exit(1)
}
