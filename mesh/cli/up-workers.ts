// mesh/cli/up-workers.ts — the workers of `logiflow up`: each instance its own child process on the port the plan
// gave it, its lines prefixed and made readable, restarted with backoff when it exits, drained on stop.
import { type ChildProcess, spawn } from "node:child_process"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { MAX_PARTITIONS, type WorkerName } from "../../contracts/mod.ts"
import { backoffDelay } from "../backoff.ts"
import { CliError } from "./io.ts"
import { portInUse } from "./natsd.ts"
import { httpHost } from "./up-ports.ts"
import { lineSplitter, pretty, prefix } from "./up-print.ts"

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..")
export const WORKERS: WorkerName[] = ["routing", "invoice", "tracking", "portal", "ops", "fleet"]

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

/**
 * Restart delays: 0.5 s, doubling up to `maxMs`; a process that ran `stableMs` before it died starts afresh.
 * `next(ranMs)` is the delay before the next start, after a run of `ranMs` (0: it did not start at all).
 */
export function restartBackoff(maxMs: number, stableMs = 60_000) {
  let failures = 0
  return {
    next(ranMs: number): number {
      if (ranMs >= stableMs) failures = 0
      return backoffDelay(++failures, { initialMs: 500, maxMs, factor: 2, jitter: 0 })
    },
  }
}

export type WorkerInstance = {
  name: WorkerName
  /** `invoice`, `invoice-2`, …: how its lines are prefixed */
  label: string
  port: number
}

export type WorkerOptions = {
  /** the environment of an instance's process (NATS, credentials); its `<NAME>_PORT` is added */
  envOf(w: WorkerInstance): Record<string, string | undefined>
  say(line: string): void
  out(line: string): void
}

/** Starts every instance and keeps it running until `stop()` (SIGTERM, then SIGKILL after 30 s). */
export function superviseWorkers(instances: WorkerInstance[], o: WorkerOptions) {
  const tty = process.stdout.isTTY
  const state = instances.map((w) => ({
    w,
    child: undefined as ChildProcess | undefined,
    stopping: false,
    timer: undefined as NodeJS.Timeout | undefined,
  }))
  const backoffs = instances.map(() => restartBackoff(30_000))
  const launch = (i: number) => {
    const s = state[i]!
    const { w } = s
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "workers", `${w.name}.ts`)], {
      cwd: ROOT,
      env: { ...o.envOf(w), [`${w.name.toUpperCase()}_PORT`]: String(w.port) },
      stdio: ["ignore", "pipe", "pipe"],
      // its own process group: a terminal's Ctrl-C reaches only the supervisor, which then sends one SIGTERM
      // (a worker treats a second signal as "stop waiting" and would skip its drain)
      detached: true,
    })
    s.child = child
    o.say(`${w.label} started (pid ${child.pid})`)
    const startedAt = Date.now()
    const onData = lineSplitter((l) => o.out(`${prefix(w.label, i, tty)}${pretty(l, tty)}`))
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.once("exit", async (code, signal) => {
      if (s.stopping) return
      const delay = backoffs[i]!.next(Date.now() - startedAt)
      // up checked the port before it started anything; another program may have taken it since
      const stolen = w.port > 0 && (await portInUse(w.port, httpHost()))
      if (s.stopping) return
      const why = stolen ? `; port ${w.port} is now taken by another program (${w.name.toUpperCase()}_PORT sets it)` : ""
      o.say(`${w.label} exited (${signal ?? `code ${code}`})${why}; restarting in ${delay} ms`)
      s.timer = setTimeout(() => launch(i), delay)
    })
  }
  state.forEach((_, i) => launch(i))
  const running = (c: ChildProcess | undefined): c is ChildProcess => !!c && c.exitCode === null && c.signalCode === null
  return {
    async stop(): Promise<void> {
      await Promise.all(
        state.map(
          (s) =>
            new Promise<void>((done) => {
              s.stopping = true
              clearTimeout(s.timer)
              const c = s.child
              if (!running(c)) return done()
              const kill = setTimeout(() => c.kill("SIGKILL"), 30_000)
              c.once("exit", () => (clearTimeout(kill), done()))
              c.kill("SIGTERM")
            }),
        ),
      )
    },
    /** when up itself dies: take the (detached) workers with it */
    killAll(): void {
      for (const s of state) if (running(s.child)) s.child.kill("SIGKILL")
    },
  }
}
