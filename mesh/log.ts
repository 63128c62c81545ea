// mesh/log.ts — one JSON line per lifecycle event on stdout; LOG_LEVEL picks the floor (default info).
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

export function logger(bound: Record<string, unknown> = {}): Logger {
  const min = floor()
  const write = (level: Level) => (msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < min) return
    const line = { level, time: new Date().toISOString(), ...bound, msg, ...fields }
    console.log(JSON.stringify(line, (_k, v) => (v instanceof Error ? v.message : v)))
  }
  return {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: (fields) => logger({ ...bound, ...fields }),
  }
}
