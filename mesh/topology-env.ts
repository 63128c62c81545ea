// mesh/topology-env.ts — the topology's settings a deployment gives by environment, read in one place.
import type { Capacity } from "../contracts/mod.ts"
import { capacityOverrides } from "./capacity.ts"
import { envInt } from "./env.ts"

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
