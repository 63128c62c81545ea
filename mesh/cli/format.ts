// mesh/cli/format.ts — what the operator commands share to print: tables, sizes, times, one-line errors.
import { userInfo } from "node:os"
import { env } from "../env.ts"
import { CliError, type Io } from "./io.ts"

export function table(io: Io, head: string[], rows: string[][]): void {
  const all = [head, ...rows]
  const width = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)))
  for (const r of all) io.out(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i]!))).join("  "))
}

export const bytes = (n: number) => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let i = 0
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`
}

export const ago = (iso?: string) => {
  if (!iso) return "never"
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return s < 60
    ? `${s}s ago`
    : s < 3600
      ? `${Math.round(s / 60)}m ago`
      : s < 86400
        ? `${Math.round(s / 3600)}h ago`
        : `${Math.round(s / 86400)}d ago`
}

export const left = (iso: string) => {
  const s = Math.max(0, Math.round((Date.parse(iso) - Date.now()) / 1000))
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.round(s / 60)}m` : s < 86400 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`
}

export const oneLine = (s: string, max = 200) => {
  const flat = s.replace(/\s*[\r\n]+\s*/g, " ")
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}

export function positiveInt(s: string, flag: string): number {
  const n = Number(s)
  if (!Number.isInteger(n) || n < 1) throw new CliError(`${flag} must be a positive whole number, got "${s}"`)
  return n
}

/** dlq-admin reports bad input as a StatusError; here it is a one-line CLI error. */
export async function cli<T>(p: Promise<T>): Promise<T> {
  try {
    return await p
  } catch (err) {
    if (typeof (err as { status?: unknown }).status === "number") {
      // a payload the schema refuses: each issue on its own line, as the API lists them
      const issues = (err as { issues?: { path: string; message: string }[] }).issues ?? []
      throw new CliError([(err as Error).message, ...issues.map((i) => `  ${i.path || "(payload)"}: ${i.message}`)].join("\n"))
    }
    throw err
  }
}

/**
 * Who a replay, edit or discard is recorded as. The CLI's authority is its NATS connection as admin (whoever holds
 * that credential can do far more than replay), so it asks for no operator token; the history names the operator:
 * LOGIFLOW_OPERATOR, else the OS user.
 */
export function operator(): string {
  const named = env("LOGIFLOW_OPERATOR")?.trim()
  if (named) return named
  try {
    return userInfo().username
  } catch {
    return env("USER") ?? env("LOGNAME") ?? "unknown"
  }
}
