// mesh/heartbeat.ts — every running worker instance writes a Beat to the `heartbeats` bucket every 5 s under
// `<worker>.<instance>`; the bucket's max age (15 s) drops the key of an instance that died without saying so.
// A heartbeat that cannot be written (no bucket, NATS down) is logged once and retried quietly; one the server
// denies is logged once and given up. Either way it never stops a worker from starting or running.
import type { JetStreamClient } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import { type BucketSpec, HEARTBEAT_TTL_SECONDS, HEARTBEATS, maxValueBytes } from "../contracts/mod.ts"
import { env } from "./env.ts"
import { isNoResponders, isNotFound, isPermissionDenied } from "./errors.ts"
import type { Logger } from "./log.ts"
import { hex } from "./publish.ts"

export type Beat = {
  worker: string
  instance: string
  startedAt: string
  /** when this beat was written */
  at: string
  ready: boolean
  inflight: number
  version: string
  /** set while the instance's read model is being rebuilt: the rebuild's start (mesh/rebuild.ts) */
  rebuilding?: string
}

export { HEARTBEATS }
/** for a worker that finds the bucket missing and may create it (a dev server without auth) */
export const heartbeatsBucket: BucketSpec = {
  bucket: HEARTBEATS,
  history: 1,
  ttlSeconds: HEARTBEAT_TTL_SECONDS,
  maxValueBytes: maxValueBytes(HEARTBEATS),
}
export const HEARTBEAT_EVERY_MS = 5_000

/** `<HOSTNAME>-<random>`: the pod name in Kubernetes, and still unique for instances sharing a host. */
export function instanceId(): string {
  const host = (env("HOSTNAME") ?? "").replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 48)
  const rand = hex(crypto.getRandomValues(new Uint8Array(4)))
  return host ? `${host}-${rand}` : rand
}

export const version = () => env("LOGIFLOW_VERSION") || env("npm_package_version") || "dev"

export type HeartbeatOptions = {
  worker: string
  instance: string
  js: JetStreamClient
  state(): { ready: boolean; inflight: number } & Record<string, unknown>
  log: Logger
  /** called once when the bucket is missing; may create it (a dev server without auth) */
  provision?(): Promise<void>
  everyMs?: number
}

export function heartbeat(o: HeartbeatOptions): { beat(): Promise<boolean>; stop(): Promise<void> } {
  const key = `${o.worker}.${o.instance}`
  const startedAt = new Date().toISOString()
  let kv: Promise<KV> | undefined
  let failing = false
  let provisioned = false
  let stopped = false

  async function beat(): Promise<boolean> {
    if (stopped) return false
    const value: Beat = {
      worker: o.worker,
      instance: o.instance,
      startedAt,
      at: new Date().toISOString(),
      ...o.state(),
      version: version(),
    }
    try {
      kv ??= new Kvm(o.js).open(HEARTBEATS)
      await (await kv).put(key, JSON.stringify(value))
      if (failing) o.log.info("heartbeats written again", { bucket: HEARTBEATS, key })
      failing = false
      return true
    } catch (err) {
      kv = undefined
      const missing = isNoResponders(err) || isNotFound(err)
      if (missing && o.provision && !provisioned) {
        provisioned = true
        const created = await o.provision().then(
          () => true,
          () => false,
        )
        if (created) return beat()
      }
      // a permission will not appear by itself, and each denied publish is also a server error line: stop trying
      const denied = isPermissionDenied(err)
      if (!failing)
        o.log.warn("cannot write heartbeats; the worker runs on without them", { bucket: HEARTBEATS, key, error: err, retrying: !denied })
      failing = true
      if (denied) clearInterval(timer)
      return false
    }
  }

  // one beat at a time: while NATS is away a put waits for its timeout, and beats must not pile up behind it
  let inflight: Promise<boolean> | undefined
  const tick = () => (inflight ??= beat().finally(() => (inflight = undefined)))
  const timer: ReturnType<typeof setInterval> = setInterval(() => void tick(), o.everyMs ?? HEARTBEAT_EVERY_MS)
  void tick()
  return {
    beat: tick,
    /** removes the key at once, so status pages do not show a stopped instance for another 15 s */
    async stop() {
      stopped = true
      clearInterval(timer)
      await inflight
      await kv?.then((b) => b.delete(key)).catch(() => {})
    },
  }
}
