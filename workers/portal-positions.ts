// workers/portal-positions.ts — each truck's last position, for the portal's map: read from the POSITIONS stream
// itself (the last message on the truck's subject), never copied into a bucket, because at one ping per truck every
// few seconds a write per ping would cost more than every map refresh together. A short cache per truck keeps a page
// refreshing every few seconds from asking again each time, and answers from the last known position while NATS is away.
import type { JetStreamManager } from "@nats-io/jetstream"
import { type PositionReported, streamOf, subjectOf } from "../contracts/mod.ts"

const STREAM = streamOf("PositionReported")

export type Position = Pick<PositionReported, "lat" | "lon" | "at" | "speedKmh">

export type PositionOptions = {
  /** how long a position read is reused before the stream is asked again */
  cacheMs: number
  /** trucks whose position is kept (least recently asked dropped first): the fleet, with room */
  trucks: number
  /** requests in flight at once for one answer */
  parallel: number
}

export type Positions = { of(truckIds: string[]): Promise<Map<string, Position | null>> }

export function positions(jsm: () => Promise<JetStreamManager>, o: PositionOptions): Positions {
  const cache = new Map<string, { position: Position | null; at: number }>()
  let partitioned: { value: boolean; at: number } | undefined

  // a partitioned stream stores a truck's pings under its subject plus two layout tokens (contracts/partitions.ts)
  const form = async (m: JetStreamManager, subject: string) => {
    if (!partitioned || Date.now() - partitioned.at > 60_000)
      partitioned = { value: !!(await m.streams.info(STREAM)).config.subject_transform, at: Date.now() }
    return partitioned.value ? `${subject}.>` : subject
  }
  const lookup = async (m: JetStreamManager, truckId: string): Promise<Position | null> => {
    const msg = await m.streams.getMessage(STREAM, { last_by_subj: await form(m, subjectOf("PositionReported", truckId)) })
    if (!msg) return null
    const p = msg.json<PositionReported>()
    return { lat: p.lat, lon: p.lon, at: p.at, ...(p.speedKmh === undefined ? {} : { speedKmh: p.speedKmh }) }
  }

  return {
    async of(truckIds) {
      const out = new Map<string, Position | null>()
      const todo = truckIds.filter((id) => {
        const c = cache.get(id)
        if (c && Date.now() - c.at < o.cacheMs) return (out.set(id, c.position), false)
        return true
      })
      if (todo.length) {
        const m = await jsm().catch(() => undefined)
        let next = 0
        const run = async () => {
          while (next < todo.length) {
            const id = todo[next++]!
            const position = m ? await lookup(m, id).catch(() => undefined) : undefined
            // unknown (NATS away, a timeout): the last known position, however old; its time says how old
            if (position === undefined) out.set(id, cache.get(id)?.position ?? null)
            else {
              cache.delete(id)
              cache.set(id, { position, at: Date.now() })
              out.set(id, position)
            }
          }
        }
        await Promise.all(Array.from({ length: Math.min(o.parallel, todo.length) }, run))
        while (cache.size > o.trucks) cache.delete(cache.keys().next().value!)
      }
      return out
    },
  }
}
