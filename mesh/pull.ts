// mesh/pull.ts — one long-lived pull subscription per durable consumer, pulled by credit: a process asks the server
// only for as many messages as it has room for, and room comes back as handlers *finish*, not as messages arrive.
//
// Why not consume(): it re-pulls as messages arrive, so a process holds up to max_ack_pending (1000) at once, and a
// crash charges a delivery to every one of them; a short crash loop then used up max_deliver of events that never
// ran (test/chaos.test.ts). Why not fetch() per batch: a subscribe, a pull and an unsubscribe for every 16–64
// messages was the largest cost left in the profile (bench/consume.ts). Here one subscription lives as long as the
// connection. A pull request asks for room that is free then; it ends when its batch has arrived or the server ends
// it (408 expired, saying how much was left; 409 …). Once at most half a batch is still to come another one may go
// out, so the server is not left waiting a round trip for the next request (+7 % msgs/s), and an idle consumer
// keeps only one long poll open. What the process holds plus what may still arrive never exceeds its room. A lost
// request (server restart) is noticed by its missing heartbeats.
import type { PullOptions } from "@nats-io/jetstream"
// the client's own reading of a pull status (409 Consumer Deleted, …), not a second copy of its strings
import { JetStreamStatus } from "@nats-io/jetstream/internal"
import { createInbox, type Msg, nanos, type NatsConnection, type Subscription } from "@nats-io/transport-node"
import type { Logger } from "./log.ts"
import { PulledMsg } from "./pulled.ts"

export type PullerOptions = {
  stream: string
  durable: string
  /** how many more messages this consumer may hold now */
  room(): number
  /** the smallest batch worth a request (a request for 1 when 15 are about to free up costs a round trip each), and
   * the size of the first one */
  minBatch: number
  /** a message for the worker; the worker counts it as held until it is acked, nak'ed or terminated */
  deliver(msg: PulledMsg): void
  /** the server refuses the consumer (409 Consumer Deleted, 503 no responders) or takes requests for it again */
  bound?(bound: boolean, why: string): void
  log: Logger
  /** how long one pull request waits for messages (default 2 s): also the longest a stop waits for them to end */
  expiresMs?: number
  /** the server's heartbeat while a request waits (default 1 s); two missed ones end the request on our side */
  heartbeatMs?: number
  apiPrefix?: string
}

export type Puller = {
  /** what the open requests may still bring (0: none is open) */
  readonly outstanding: number
  /** room was freed: pull if a request may go out and the room is worth it */
  wake(): void
  /** stops pulling; what the server already sent is still delivered (UNSUB, then a flush round trip) */
  stop(): Promise<void>
}

const retryMs = 1000

export function puller(nc: NatsConnection, o: PullerOptions): Puller {
  const expiresMs = o.expiresMs ?? 2_000
  const heartbeatMs = o.heartbeatMs ?? 1_000
  const next = `${o.apiPrefix ?? "$JS.API"}.CONSUMER.MSG.NEXT.${o.stream}.${o.durable}`
  const inboxPrefix = (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix
  let sub: Subscription | undefined
  let inbox = ""
  // Each request replies to `<inbox>.<n>`, so a status names the request it ends. Stored messages do not say which
  // request they fill (the server moves a partly served request to the back of its queue, so two open requests are
  // filled in turns), so the count is kept as a total: -1 per message, -(what the server says was left) per end.
  /** open requests by token: their batch, and when they expire at the latest */
  let open = new Map<number, { batch: number; until: number }>()
  let token = 0
  /** what the open requests may still bring, together */
  let outstanding = 0
  /** how much the next request asks for, at most: doubles while requests fill, falls back to what came when one
   * expires. An idle consumer (a REPLAY that is empty nearly always) then reserves only `minBatch` of the room
   * while its long poll waits, and a busy one gets the rest */
  let size = o.minBatch
  /** the newest request's batch: another may go out once no more than half of that is still to come */
  let lastBatch = 0
  let lastHeard = 0
  /** something arrived since the watchdog last looked (a clock read per message showed in the profile) */
  let heard = false
  let stopping = false
  /** stopped, waiting for the open requests to end: whatever still arrives is delivered as usual */
  let ending = false
  let allEnded: (() => void) | undefined
  let paused: ReturnType<typeof setTimeout> | undefined
  let complaint = ""
  let refused = false
  /** while disconnected nothing is asked: the client would buffer the request and send it, for the old inbox, on
   * reconnect — its messages would then wait out ack_wait */
  let disconnected = false

  // a fresh inbox whenever the count may be wrong (reconnect, a lost request): whatever still arrives for the old
  // one finds no subscriber, and the server, seeing no interest, keeps it for the next request (or ack_wait)
  const subscribe = () => {
    sub?.unsubscribe()
    inbox = createInbox(inboxPrefix)
    const mine = inbox
    sub = nc.subscribe(`${inbox}.*`, {
      callback: (err, msg) => {
        if (err) return void o.log.error("pull subscription failed", { stream: o.stream, consumer: o.durable, error: err })
        if (mine === inbox) onMessage(msg)
      },
    })
    open = new Map()
    outstanding = 0
  }

  const pull = () => {
    if (stopping || paused || disconnected || nc.isClosed()) return
    // another request goes out once at most half of the newest one is still to come, so the server never waits a
    // round trip for the next one; an idle consumer's one long poll is never joined by another
    if (open.size > 0 && outstanding > lastBatch / 2) return
    // messages are flowing (half of what was asked has come while a request is open): ask for more each time
    const want = open.size > 0 ? Math.min(size * 2, 1 << 16) : size
    const batch = Math.min(o.room(), want)
    if (batch < o.minBatch || batch <= 0) return
    size = want
    lastBatch = batch
    const n = ++token
    open.set(n, { batch, until: Date.now() + expiresMs + 2 * heartbeatMs })
    outstanding += batch
    if (open.size === 1) lastHeard = Date.now()
    const req: Partial<PullOptions> = { batch, expires: nanos(expiresMs), idle_heartbeat: nanos(heartbeatMs) }
    try {
      nc.publish(next, JSON.stringify(req), { reply: `${inbox}.${n}` })
    } catch (err) {
      open.delete(n)
      outstanding -= batch
      pauseThenPull(`pull request not sent: ${(err as Error).message}`)
    }
  }

  const pauseThenPull = (why: string) => {
    if (stopping) return
    if (why !== complaint) o.log.warn("pulling again shortly", { stream: o.stream, consumer: o.durable, why })
    complaint = why
    paused ??= setTimeout(() => {
      paused = undefined
      pull()
    }, retryMs)
  }

  const accepted = () => {
    complaint = ""
    if (refused) (refused = false), o.bound?.(true, "the server takes pull requests again")
  }

  /** request `n` is over with `left` of its batch undelivered (undefined: the server did not say — all of it) */
  const ended = (n: number, left: number | undefined) => {
    const r = open.get(n)
    if (!r) return
    open.delete(n)
    const l = left === undefined || !Number.isFinite(left) ? r.batch : Math.min(left, r.batch)
    outstanding = Math.max(0, outstanding - l)
    size = Math.max(o.minBatch, r.batch - l)
  }

  function onMessage(msg: Msg) {
    heard = true
    if (msg.reply) {
      // a stored message (its reply subject is its ack subject), for one of the open requests
      if (outstanding > 0 && --outstanding === 0) {
        // everything asked for has come: the requests were filled, ask for more next time
        const asked = Math.max(0, ...[...open.values()].map((r) => r.batch))
        open.clear()
        size = Math.min(Math.max(size, asked) * 2, 1 << 16)
      }
      if (complaint) accepted()
      o.deliver(new PulledMsg(msg, nc))
      if (ending && open.size === 0) allEnded?.()
      pull()
      return
    }
    // a status from the server about the request it names
    const n = Number(msg.subject.slice(msg.subject.lastIndexOf(".") + 1))
    const h = msg.headers
    const code = h?.code ?? 0
    if (code === 100) return void (complaint && accepted()) // idle heartbeat: the request is alive
    const left = h?.get("Nats-Pending-Messages") ? Number(h.get("Nats-Pending-Messages")) : undefined
    if (code === 404 || code === 408) {
      // expired (408) or nothing there (404): the request is over; the next asks for what this one brought
      if (complaint) accepted()
      ended(n, left)
      if (ending && open.size === 0) allEnded?.()
      return pull()
    }
    ended(n, left)
    if (ending && open.size === 0) allEnded?.()
    const status = new JetStreamStatus(msg)
    const description = status.description || `status ${code}`
    // 409 consumer deleted; 503: nothing answers the pull subject (no such consumer, or JetStream unavailable)
    if (code === 503 || status.isConsumerDeleted()) {
      if (!refused) (refused = true), o.bound?.(false, `${code} ${description}`)
    }
    // and 409 max waiting, leadership change…: retry after a pause
    pauseThenPull(`${code} ${description}`)
  }

  const watchdog = setInterval(() => {
    const now = Date.now()
    if (heard) (heard = false), (lastHeard = now)
    // a request past its expiry that never said so was filled (its end is silent) or is lost: forget it
    for (const [n, r] of open) if (now > r.until) open.delete(n)
    let asked = 0
    for (const r of open.values()) asked += r.batch
    outstanding = Math.min(outstanding, asked)
    // a request the server no longer knows (restarted, consumer moved) sends nothing, not even heartbeats
    if (open.size > 0 && now - lastHeard > 2 * heartbeatMs + 1000) {
      subscribe()
      pauseThenPull("no heartbeat from the open pull request")
    } else pull()
  }, heartbeatMs)

  // after a reconnect the server may have dropped the open request, or may still deliver to it: a fresh inbox
  // makes the count exact again (what went to the old one is redelivered after ack_wait)
  void (async () => {
    for await (const s of nc.status()) {
      if (stopping) break
      if (s.type === "disconnect") disconnected = true
      else if (s.type === "reconnect") {
        disconnected = false
        subscribe()
        pull()
      }
    }
  })().catch(() => {})

  subscribe()
  pull()

  return {
    get outstanding() {
      return outstanding
    },
    wake: pull,
    async stop() {
      stopping = true
      clearInterval(watchdog)
      clearTimeout(paused)
      // A request the server still holds goes on delivering to this inbox even after an unsubscribe: those messages
      // would reach nobody until ack_wait, and come back behind newer ones of their key (to this consumer's next
      // puller, here or in another instance). So the subscription stays until every open request has ended — filled,
      // or expired within expiresMs — and what arrives meanwhile is delivered like the rest.
      ending = true
      const last = Math.max(0, ...[...open.values()].map((r) => r.until))
      if (open.size > 0 && !nc.isClosed()) {
        let timer: ReturnType<typeof setTimeout> | undefined
        await new Promise<void>((resolve) => {
          allEnded = resolve
          timer = setTimeout(resolve, Math.max(0, last - Date.now()))
        })
        clearTimeout(timer)
      }
      await sub?.drain().catch(() => {})
    },
  }
}
