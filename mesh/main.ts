// mesh/main.ts — `runWhenMain(import.meta, worker)`: starts the worker only when its file is the entry point,
// so importing a worker (tests, the supervisor) has no side effects. SIGTERM/SIGINT drain it and exit 0.
import { env, isDeno } from "./env.ts"
import { logger } from "./log.ts"
import type { Running, Worker } from "./worker.ts"

declare const Deno: {
  addSignalListener(s: "SIGTERM" | "SIGINT", f: () => void): void
  exit(code: number): never
  mainModule: string
}

export function isMain(meta: ImportMeta): boolean {
  if (isDeno) return (meta as ImportMeta & { main?: boolean }).main === true
  const entry = process.argv[1]
  if (!entry) return false
  const { pathToFileURL } = globalThis.process.getBuiltinModule?.("node:url") ?? ({} as typeof import("node:url"))
  const { realpathSync } = globalThis.process.getBuiltinModule?.("node:fs") ?? ({} as typeof import("node:fs"))
  try {
    return meta.url === pathToFileURL(realpathSync(entry)).href
  } catch {
    return false
  }
}

const exit = (code: number): never => (isDeno ? Deno.exit(code) : process.exit(code))

/** More unexpected errors than this within a minute is a broken process, not a bad request: exit and be restarted. */
export const FATAL_ERRORS_PER_MINUTE = 20

/**
 * The last line of defence: an error that escaped every handler (a bug a request could trigger) is logged and the
 * worker keeps its pid, its held messages and its connection; a restart would charge every held event a delivery.
 * Only a storm of them, a state no single request causes, ends the process.
 */
export function guardProcess(name: string, log = logger({ worker: name })): void {
  let recent: number[] = []
  const unexpected = (kind: string, err: unknown) => {
    const now = Date.now()
    recent = recent.filter((t) => now - t < 60_000)
    recent.push(now)
    log.error(`${kind}; the worker keeps running`, { error: err, stack: (err as Error)?.stack })
    if (recent.length > FATAL_ERRORS_PER_MINUTE) {
      log.error("too many unexpected errors within a minute; exiting so that a clean process takes over", { errors: recent.length })
      exit(1)
    }
  }
  if (isDeno) {
    const g = globalThis as unknown as { addEventListener(t: string, f: (e: Event & { error?: unknown; reason?: unknown }) => void): void }
    const on = g.addEventListener.bind(g)
    on("error", (e) => (e.preventDefault(), unexpected("uncaught exception", e.error)))
    on("unhandledrejection", (e) => (e.preventDefault(), unexpected("unhandled rejection", e.reason)))
  } else {
    process.on("uncaughtException", (err) => unexpected("uncaught exception", err))
    process.on("unhandledRejection", (reason) => unexpected("unhandled rejection", reason))
  }
}

export function runWhenMain(meta: ImportMeta, w: Worker): void {
  if (!isMain(meta)) return
  guardProcess(w.name)
  let running: Running | undefined
  let signalled = false
  // installed before start() resolves: a container's PID 1 still dialling NATS must not ignore SIGTERM
  const onSignal = () => {
    if (signalled) return exit(130) // a second Ctrl-C: stop waiting
    signalled = true
    // not started yet: nothing has been acked or published; anything pulled mid-start is redelivered after ack_wait
    if (!running) return exit(0)
    running.stop().then(
      () => exit(0),
      (err) => (console.error(`${w.name}: drain failed: ${(err as Error).message}`), exit(1)),
    )
  }
  if (isDeno) for (const s of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(s, onSignal)
  else for (const s of ["SIGTERM", "SIGINT"] as const) process.on(s, onSignal)
  w.start().then(
    (r) => void (running = r),
    (err) => {
      console.error(env("DEBUG") ? err : `${w.name}: ${(err as Error).message}`)
      exit(1)
    },
  )
}
