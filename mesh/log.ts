// mesh/log.ts — one JSON line per lifecycle event on stdout; LOG_LEVEL picks the floor (default info).
// Not pino (checked: it runs on Deno 2 too): with lines per lifecycle event and never per handled message, its speed
// buys nothing, and it would need formatters to keep this shape (level names, ISO time: supervisor.ts `pretty` and
// operators' queries read it) plus a flush before runWhenMain's exit in async mode. console.log keeps every line
// synchronous, dependency-free and capturable in-process. A field that cannot be serialised never makes a call throw.
import { env } from "./env.ts"

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 } as const
export type Level = Exclude<keyof typeof LEVELS, "silent">
export type Logger = Record<Level, (msg: string, fields?: Record<string, unknown>) => void> & {
  child(fields: Record<string, unknown>): Logger
}

function floor(): number {
  const l = (env("LOG_LEVEL") ?? "info").toLowerCase()
  return LEVELS[l as keyof typeof LEVELS] ?? LEVELS.info
}

const plain = (_k: string, v: unknown) => (v instanceof Error ? v.message : typeof v === "bigint" ? String(v) : v)

function serialise(line: Record<string, unknown>): string {
  try {
    return JSON.stringify(line, plain)
  } catch {
    // a circular field: keep the line, lose only what cannot be written
    const seen = new WeakSet<object>()
    return JSON.stringify(line, (k, v) => {
      if (v && typeof v === "object") {
        if (seen.has(v)) return "[circular]"
        seen.add(v)
      }
      return plain(k, v)
    })
  }
}

export function logger(bound: Record<string, unknown> = {}): Logger {
  const min = floor()
  const write = (level: Level) => (msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < min) return
    const line = { level, time: new Date().toISOString(), ...bound, msg, ...fields }
    console.log(serialise(line))
  }
  return {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: (fields) => logger({ ...bound, ...fields }),
  }
}
