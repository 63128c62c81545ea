// bench/lib.ts — what every scenario shares: its own nats-server, args, child processes, open-loop load, progress
// lines, percentiles and the result shape run.ts turns into markdown. Machines here are shared and noisy, so a
// figure is only worth printing as a ratio to a baseline measured in the same run on the same server.
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { availableParallelism, loadavg, tmpdir } from "node:os"
import { join, resolve } from "node:path"
import type { JetStreamClient } from "@nats-io/jetstream"
import * as hdr from "hdr-histogram-js"
import { findNatsServer, freePort, type Natsd, natsServerVersion, startNatsd } from "../mesh/cli/natsd.ts"
import { publishEvent } from "../mesh/publish.ts"
import { type Child, spawnTs as spawnChildTs } from "../test/child.ts"
import { testAuth } from "../test/credentials.ts"
import { route } from "../test/fixtures/events.ts"

export const ROOT = resolve(import.meta.dirname, "..")

export type Opts = { quick: boolean }

export type Table = { title: string; columns: string[]; rows: (string | number)[][] }
/** One scenario's outcome: tables for the markdown, notes (caveats, unmet goals), raw data for the JSON. */
export type Section = { name: string; title: string; tables: Table[]; notes: string[]; data: unknown }
export type Scenario = (o: Opts) => Promise<Section>

export function args(argv = process.argv.slice(2)): { quick: boolean; names: string[]; flags: Map<string, string> } {
  const flags = new Map<string, string>()
  const names: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (!a.startsWith("--")) names.push(a)
    else if (a.includes("=")) flags.set(a.slice(2, a.indexOf("=")), a.slice(a.indexOf("=") + 1))
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("--") && a !== "--quick") flags.set(a.slice(2), argv[++i]!)
    else flags.set(a.slice(2), "1")
  }
  return { quick: flags.has("quick"), names, flags }
}

/**
 * The child side of a scenario that measures each variant in a fresh process: with `--variant <id>` it runs that
 * variant, prints `RESULT <json>` (the line the parent looks for) and exits; without `--variant` it returns.
 */
export async function variantChild<V extends { id: string }>(
  variants: V[],
  flags: Map<string, string>,
  run: (v: V) => Promise<unknown>,
): Promise<void> {
  const id = flags.get("variant")
  if (!id) return
  const v = variants.find((x) => x.id === id)
  if (!v) throw new Error(`unknown variant ${id}; one of ${variants.map((x) => x.id).join(", ")}`)
  console.log(`RESULT ${JSON.stringify(await run(v))}`)
  process.exit(0)
}

export function machine() {
  const bin = findNatsServer()
  const version = bin ? execFileSync(bin, ["--version"]).toString().trim() : "none"
  return {
    cores: availableParallelism(),
    node: process.version,
    natsServer: version,
    /** the binary every scenario started (the newest found, or --nats-server / NATS_SERVER_BIN), and its x.y.z */
    natsServerBin: bin ?? "none",
    natsServerVersion: (bin && natsServerVersion(bin)?.join(".")) || "unknown",
    loadavg1m: Math.round(loadavg()[0]! * 100) / 100,
    at: new Date().toISOString(),
  }
}

export type BenchServer = Natsd & { close(): Promise<void> }

/** A nats-server of the bench's own: free ports, a temp store, never the system server on 4222. */
export async function benchServer(): Promise<BenchServer> {
  const storeDir = mkdtempSync(join(tmpdir(), "logiflow-bench-"))
  const natsd = await startNatsd({ port: await freePort(), monitorPort: await freePort(), storeDir })
  return Object.assign(natsd, {
    async close() {
      await natsd.stop()
      rmSync(storeDir, { recursive: true, force: true })
    },
  })
}

/**
 * Publishes RouteCalculated `from`…`from+n-1` with at most `window` publishes awaiting their ack; the routes belong
 * to `trucks` trucks (the fixture's 10 unless set: at most 10 keys, so at most 10 handlers of a mesh worker at once).
 */
export async function preload(
  js: JetStreamClient,
  n: number,
  { from = 0, window = 1000, label = "preload", trucks = 0 } = {},
): Promise<void> {
  const p = progress(label)
  let next = from
  const end = from + n
  const one = async (): Promise<void> => {
    while (next < end) {
      const i = next++
      const r = trucks ? route(i, { truckId: `truck-${i % trucks}` }) : route(i)
      await publishEvent(js, "RouteCalculated", r, { id: `bench:${r.routeId}`, source: "logiflow/bench" })
      if ((i - from) % 5000 === 0) p.update(`${i - from}/${n}`)
    }
  }
  await Promise.all(Array.from({ length: window }, one))
  p.done(`${n} events`)
}

/** One progress line on stderr: rewritten in place on a terminal, a line every few seconds otherwise. */
export function progress(label: string) {
  const tty = process.stderr.isTTY
  const started = Date.now()
  let last = 0
  const write = (text: string, final = false) => {
    const line = `  ${label}: ${text} (${((Date.now() - started) / 1000).toFixed(1)} s)`
    if (tty) process.stderr.write(`\r\x1b[K${line}${final ? "\n" : ""}`)
    else if (final || Date.now() - last > 5000) process.stderr.write(`${line}\n`), (last = Date.now())
  }
  return { update: (text: string) => write(text), done: (text = "done") => write(text, true) }
}

export type Cpu = { wallMs: number; cpuMs: number }
/** Wall and CPU (user + system) time of this process since the call. */
export function stopwatch(): () => Cpu {
  const t = performance.now()
  const c = process.cpuUsage()
  return () => {
    const d = process.cpuUsage(c)
    return { wallMs: performance.now() - t, cpuMs: (d.user + d.system) / 1000 }
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
export const round = (x: number, digits = 0) => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x)
export const ratio = (x: number, base: number) => (base > 0 && Number.isFinite(x) ? `${(x / base).toFixed(2)}×` : "–")
export const int = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "–")

/** Latencies in ms, kept in microseconds (3 significant digits) up to 10 min. */
export function histogram() {
  const h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 })
  return {
    record: (ms: number) => h.recordValue(Math.max(1, Math.round(ms * 1000))),
    get count() {
      return h.totalCount
    },
    summary: () => ({
      count: h.totalCount,
      p50: h.getValueAtPercentile(50) / 1000,
      p95: h.getValueAtPercentile(95) / 1000,
      p99: h.getValueAtPercentile(99) / 1000,
      max: h.maxValue / 1000,
    }),
  }
}
export type Latency = ReturnType<ReturnType<typeof histogram>["summary"]>
export const ms = (x: number) => (!Number.isFinite(x) ? "–" : x >= 100 ? `${Math.round(x)}` : x >= 10 ? x.toFixed(1) : x.toFixed(2))

/**
 * Open-loop load: request i is due at start + i/rate and is sent then, whatever earlier requests are doing, so a
 * slow system shows up as latency instead of as fewer requests. `send` gets the due time (latency is measured
 * from it, not from when the sender got round to it). `lagMs` is how late the sender itself ran at worst.
 */
export async function openLoop(rate: number, seconds: number, send: (i: number, dueAt: number) => Promise<void>, label = `${rate}/s`) {
  const total = Math.round(rate * seconds)
  const p = progress(label)
  const inflight = new Set<Promise<void>>()
  const start = performance.now() + 20
  let i = 0
  let lagMs = 0
  while (i < total) {
    const now = performance.now()
    while (i < total && start + (i * 1000) / rate <= now) {
      const due = start + (i * 1000) / rate
      lagMs = Math.max(lagMs, now - due)
      const s = send(i++, due).catch(() => {})
      inflight.add(s)
      void s.finally(() => inflight.delete(s))
    }
    if (i % 200 === 0) p.update(`${i}/${total} sent, ${inflight.size} in flight`)
    await sleep(Math.max(0, Math.min(5, start + (i * 1000) / rate - performance.now())))
  }
  const sentIn = (performance.now() - start) / 1000
  await Promise.all(inflight)
  p.done(`${total} sent in ${sentIn.toFixed(1)} s`)
  return { total, achievedRate: total / Math.max(sentIn, seconds), lagMs }
}

export type { Child }

/**
 * A .ts file as its own node process (one pid: signals and /proc/<pid> reach the worker itself). `nice` lowers its
 * CPU priority (nice execs node, so the pid stays the worker's). LOG_LEVEL warn unless `env` says otherwise; the
 * last 1000-2000 lines kept; BENCH_VERBOSE echoes every line to stderr.
 */
export function spawnTs(file: string, env: Record<string, string> = {}, argv: string[] = [], nodeArgs: string[] = [], nice = 0): Child {
  // the workers accept the bench's own API keys (testAuth): its requests carry them
  return spawnChildTs(file, { LOG_LEVEL: "warn", ...testAuth().env, ...env }, argv, {
    nodeArgs,
    nice,
    maxLines: 2000,
    waitMs: 30_000,
    echo: (line) => {
      if (process.env.BENCH_VERBOSE) process.stderr.write(`[${file}] ${line}\n`)
    },
  })
}

/** VmRSS of a process in MiB, from /proc (Linux); undefined once it is gone. */
export function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return m ? Number(m[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

/** A worker file as a child process on free ports against `url`; resolves once it logged "ready". */
export async function startWorker(
  file: string,
  url: string,
  env: Record<string, string> = {},
  nice = 0,
): Promise<Child & { port: number }> {
  const port = await freePort()
  const name = /workers\/(\w+)\.ts$/.exec(file)?.[1]?.toUpperCase() ?? "WORKER"
  const child = spawnTs(file, { NATS_URL: url, [`${name}_PORT`]: String(port), LOG_LEVEL: "info", ...env }, [], [], nice)
  await child.waitFor(/"msg":"ready"/, 60_000)
  return Object.assign(child, { port })
}

// --- output ---------------------------------------------------------------------------------------------------

export function markdown(sections: Section[], m = machine(), command = ""): string {
  const out = [
    `# LogiFlow mesh benchmarks — ${m.at.slice(0, 10)}`,
    "",
    `${m.cores} cores (os.availableParallelism), Node ${m.node}, ${m.natsServer} (${m.natsServerBin}), 1-min load average at start ${m.loadavg1m}` +
      " (the machine is shared: absolute numbers move with the neighbours' load; ratios come from the same run on the same server).",
  ]
  if (command) out.push("", `Command: \`${command}\``)
  for (const s of sections) {
    out.push("", `## ${s.title}`)
    for (const t of s.tables) {
      out.push("", `**${t.title}**`, "", `| ${t.columns.join(" | ")} |`, `|${t.columns.map(() => "---").join("|")}|`)
      for (const r of t.rows) out.push(`| ${r.join(" | ")} |`)
    }
    if (s.notes.length) out.push("", ...s.notes.map((n) => `- ${n}`))
  }
  return `${out.join("\n")}\n`
}

export function print(sections: Section[]): void {
  console.log(`\n${markdown(sections)}`)
}

/**
 * Starts a CPU meter on the processes named in `pids`; calling it with a number of events gives each one's CPU ms per
 * event since the meter started.
 */
export function cpuMeter<K extends string>(pids: Record<K, number>): (events: number) => Record<K, number> {
  const names = Object.keys(pids) as K[]
  const at = names.map((k) => cpuMsOf(pids[k]))
  return (events) => Object.fromEntries(names.map((k, i) => [k, (cpuMsOf(pids[k]) - at[i]!) / events])) as Record<K, number>
}

/** CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat (Linux). */
export function cpuMsOf(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8")
      .replace(/^.*\) /, "")
      .split(" ")
    // after the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc)
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return NaN
  }
}
