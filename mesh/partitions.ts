// mesh/partitions.ts — several instances of one worker share its partitions (contracts/partitions.ts): each
// partition consumer ("unit") is pulled by the one instance holding its lease in the `partitions` bucket.
//
// Leases are revision-checked KV writes: a holder renews its leases every `leaseMs / 4`; one it has not renewed for
// `leaseMs` (by the server's timestamp of the last write) is expired and may be taken. An instance that cannot renew
// stops pulling before that moment, so no two instances pull one partition at once. Each live instance (members,
// renewed the same way) takes a fair share: ⌊U/N⌋ units, one more for the first U mod N by instance id. Handing a
// unit over never reorders a key: a holder giving one up stops pulling it, lets what it holds finish and be acked,
// and then releases it, all beside the rounds, which keep renewing its lease and the others' meanwhile (a handover
// may wait longer than a lease lasts); whoever takes a lease starts pulling only once the last holder's
// unacknowledged messages can no longer be outstanding (`safeAt`: at once after a clean release, ack_wait later
// otherwise), since the server redelivers those before anything newer. A partition of a new layout waits until every
// consumer of its stream's earlier layout is drained, so no key's new events pass its old ones.
import type { JetStreamManager } from "@nats-io/jetstream"
import type { KV, KvEntry } from "@nats-io/kv"
import { PARTITIONS_BUCKET } from "../contracts/mod.ts"
import { type BoundConsumer, type Consuming, consumerKey } from "./consume.ts"

export { PARTITIONS_BUCKET }
import { ApiCode, apiCode, isNotFound } from "./errors.ts"
import type { Logger } from "./log.ts"

/** A partition consumer this worker may pull; `old`: of an earlier layout, drained before the current one runs. */
export type Unit = { consumer: BoundConsumer; old: boolean }

/** a lease this instance holds: its revision, when it was last renewed, whether it pulls the unit yet */
type Holding = {
  unit: Unit
  revision: number
  renewedAt: number
  pulling: boolean
  safeAt: number
  /** being handed over: settles once it is released (or given up on) */
  handover?: Promise<void>
  /** being released: the rounds no longer renew it */
  releasing?: boolean
  /** a renewal found it taken by another instance */
  lost?: boolean
}

type Lease = { instance: string; state: "held" | "released" /** when a new holder may start pulling (ms) */; safeAt: number }

export type LeaseOptions = {
  worker: string
  instance: string
  kv: KV
  jsm: JetStreamManager
  engine: Consuming
  log: Logger
  units: Unit[]
  /** a lease not renewed for this long is expired (default 10 s); renewed every quarter of it */
  leaseMs?: number
  /** how long handing a unit over may wait for its messages to finish */
  drainMs?: number
}

export type Leases = {
  /** the units this instance pulls now */
  held(): string[]
  /** one round of renew, rebalance and take (normally run every leaseMs / 4) */
  tick(): Promise<void>
  /** from now on rounds only renew what is held: while the engine drains, which may outlast a lease */
  hold(): void
  /** hands every lease back (after the engine has drained): cleanly when nothing is held any more */
  stop(drained: boolean): Promise<void>
}

const nameOf = (u: Unit) => consumerKey(u.consumer)
const keyOf = (worker: string, u: Unit) => `${worker}.lease.${u.consumer.stream}.${u.consumer.durable}`
const memberKey = (worker: string, instance: string) => `${worker}.member.${instance}`
const lost = (err: unknown) => apiCode(err) === ApiCode.WrongLastSequence

export function leases(o: LeaseOptions): Leases {
  const leaseMs = o.leaseMs ?? 10_000
  const drainMs = o.drainMs ?? 20_000
  const units = [...o.units].sort((a, b) => nameOf(a).localeCompare(nameOf(b)))
  /** what this instance holds: the lease's revision, when it was last renewed, and whether it pulls it yet */
  const mine = new Map<string, Holding>()
  let stopping = false
  let ticking: Promise<void> | undefined
  /** rounds in a row this instance held more than its share: handing over waits for two, so that instances whose
   * views of the members differ for a moment (one just joined) do not pass partitions back and forth */
  let over = 0
  const drainedOld = new Set<string>()
  /** units being handed over: each waits for its messages (up to drainMs, longer than a lease) beside the rounds,
   * which go on renewing its lease until it is released, and the leases and membership this instance keeps */
  const leaving = new Map<string, Holding>()

  const write = (lease: Lease) => JSON.stringify(lease)
  const read = (e: KvEntry | null): Lease | undefined => (e && e.operation === "PUT" && e.length > 0 ? e.json<Lease>() : undefined)
  const expired = (e: KvEntry, now: number) => now - e.created.getTime() > leaseMs

  async function members(now: number): Promise<string[]> {
    await o.kv.put(memberKey(o.worker, o.instance), JSON.stringify({ at: new Date(now).toISOString() }))
    const live: string[] = []
    for await (const k of await o.kv.keys(`${o.worker}.member.*`)) {
      const e = await o.kv.get(k)
      if (e && e.operation === "PUT" && !expired(e, now)) live.push(k.slice(k.lastIndexOf(".") + 1))
    }
    return live.sort()
  }

  /** a consumer of an earlier layout has nothing left: the current one's partition of that stream may start */
  async function oldDrained(stream: string): Promise<boolean> {
    const old = units.filter((u) => u.old && u.consumer.stream === stream)
    for (const u of old) {
      if (drainedOld.has(nameOf(u))) continue
      // gone (removed once drained) counts as drained; a failed look (a timeout under load) does not
      const info = await o.jsm.consumers.info(u.consumer.stream, u.consumer.durable).catch((err) => (isNotFound(err) ? null : undefined))
      if (info === undefined || (info && (info.num_pending > 0 || info.num_ack_pending > 0))) return false
      drainedOld.add(nameOf(u))
    }
    return true
  }

  /** starts handing a unit over: from now on it is in `leaving`, not `mine` */
  function giveUp(name: string, clean: boolean): Promise<void> {
    const h = mine.get(name)
    if (!h) return leaving.get(name)?.handover ?? Promise.resolve()
    mine.delete(name)
    leaving.set(name, h)
    h.handover = handOver(name, h, clean)
      .catch((err) => o.log.warn("partition handover failed; its lease expires by itself", { unit: name, error: err }))
      .finally(() => leaving.delete(name))
    return h.handover
  }

  async function handOver(name: string, h: Holding, clean: boolean) {
    const drained = h.pulling ? await o.engine.detach(h.unit.consumer, Date.now() + drainMs) : true
    // a handover that could not wait for every ack leaves them outstanding: the next holder waits out ack_wait
    const safeAt = clean && drained ? Date.now() : Date.now() + h.unit.consumer.ackWaitMs
    // no renewal from here on; one in flight finishes first, so the release is made on the lease's last revision
    h.releasing = true
    await ticking
    if (h.lost) return
    await o.kv
      .update(keyOf(o.worker, h.unit), write({ instance: o.instance, state: "released", safeAt }), h.revision)
      .catch((err) => o.log.warn("partition lease not released; it expires by itself", { unit: name, error: err }))
    o.log.info("partition handed over", { unit: name, drained })
  }

  async function take(u: Unit, now: number): Promise<boolean> {
    const key = keyOf(o.worker, u)
    const e = await o.kv.get(key)
    const current = read(e)
    let safeAt = now
    if (current?.state === "held") {
      if (!expired(e!, now)) return false
      // its holder stopped renewing at `created`, and pulled until at most leaseMs later: what it was given may be
      // redelivered until ack_wait after that, and must come before anything newer
      safeAt = e!.created.getTime() + leaseMs + u.consumer.ackWaitMs
    } else if (current) safeAt = Math.max(now, current.safeAt)
    const value = write({ instance: o.instance, state: "held", safeAt })
    try {
      const revision = e && e.operation === "PUT" ? await o.kv.update(key, value, e.revision) : await o.kv.create(key, value)
      mine.set(nameOf(u), { unit: u, revision, renewedAt: now, pulling: false, safeAt })
      o.log.info("partition lease taken", { unit: nameOf(u), startsIn: Math.max(0, safeAt - now) })
      return true
    } catch (err) {
      if (lost(err)) return false // another instance took it first
      throw err
    }
  }

  async function round() {
    const now = Date.now()
    // renew; a lease this instance could not renew in time may be someone else's already: stop pulling at once
    for (const h of [...mine.values(), ...leaving.values()]) {
      if (h.releasing) continue
      const name = nameOf(h.unit)
      try {
        h.revision = await o.kv.update(
          keyOf(o.worker, h.unit),
          write({ instance: o.instance, state: "held", safeAt: h.safeAt }),
          h.revision,
        )
        h.renewedAt = now
      } catch (err) {
        if (!lost(err) && now - h.renewedAt < leaseMs * 0.75) continue
        h.lost = true
        mine.delete(name)
        if (h.pulling && !leaving.has(name)) void o.engine.detach(h.unit.consumer, Date.now())
        o.log.warn("partition lease lost; stopped pulling it", { unit: name, error: err })
      }
    }
    if (stopping) return
    const live = await members(now)
    const n = Math.max(1, live.length)
    const rank = Math.max(0, live.indexOf(o.instance))
    const target = Math.floor(units.length / n) + (rank < units.length % n ? 1 : 0)
    // more than a fair share (an instance joined): hand the last ones over, cleanly, without waiting here
    const held = [...mine.keys()].sort()
    over = held.length > target ? over + 1 : 0
    if (over >= 2) for (const name of held.slice(target)) void giveUp(name, true)
    for (const u of units) {
      if (mine.size >= target) break
      if (!mine.has(nameOf(u)) && !leaving.has(nameOf(u))) await take(u, now)
    }
    // start pulling what is held, once safe, and, for a current layout's partition, once the old layout is drained
    for (const h of mine.values()) {
      if (h.pulling || Date.now() < h.safeAt) continue
      if (!h.unit.old && !(await oldDrained(h.unit.consumer.stream))) continue
      h.pulling = true
      o.engine.attach(h.unit.consumer)
    }
  }

  return {
    held: () => [...mine.values()].filter((h) => h.pulling).map((h) => nameOf(h.unit)),
    tick: () =>
      (ticking ??= round()
        .catch((err) => o.log.warn("partition leases: a round failed; trying again", { error: err }))
        .finally(() => (ticking = undefined))),
    hold() {
      stopping = true
    },
    async stop(drained) {
      stopping = true
      await ticking
      // giveUp of a unit already being handed over waits for that handover
      await Promise.all([...mine.keys(), ...leaving.keys()].map((name) => giveUp(name, drained)))
      await o.kv.delete(memberKey(o.worker, o.instance)).catch(() => {})
    },
  }
}
