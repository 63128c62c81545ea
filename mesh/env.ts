// mesh/env.ts — environment access that works on Node and Deno alike.

declare const Deno: { env: { get(k: string): string | undefined; toObject(): Record<string, string> } } | undefined

export function env(name: string): string | undefined {
  if (typeof Deno !== "undefined") return Deno.env.get(name)
  return process.env[name]
}

export function envInt(name: string, fallback: number): number {
  const raw = env(name)
  if (raw === undefined || raw === "") return fallback
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got "${raw}"`)
  return n
}

export const isDeno = typeof Deno !== "undefined"
