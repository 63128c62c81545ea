// mesh/env.ts — environment access that works on Node and Deno alike.
import type { Capacity } from "../contracts/mod.ts"
import { capacityOverrides } from "./capacity.ts"

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

/**
 * The topology options a deployment sets by environment, read in one place for the workers, `logiflow provision` and
 * `logiflow up`: STREAM_REPLICAS, PARTITIONS, ROUTING_RETRY_HORIZON_SECONDS, and the capacity model's CAPACITY_* and
 * LOGIFLOW_CAPACITY_FILE (mesh/capacity.ts).
 */
export function topologyEnv(): { replicas: number; partitions: number; retryHorizonSeconds?: number; capacity: Partial<Capacity> } {
  const horizon = envInt("ROUTING_RETRY_HORIZON_SECONDS", 0)
  if (horizon < 0) throw new Error(`ROUTING_RETRY_HORIZON_SECONDS must be a number of seconds > 0, got ${horizon}`)
  return {
    replicas: envInt("STREAM_REPLICAS", 1),
    partitions: envInt("PARTITIONS", 1),
    capacity: capacityOverrides(),
    ...(horizon > 0 ? { retryHorizonSeconds: horizon } : {}),
  }
}
