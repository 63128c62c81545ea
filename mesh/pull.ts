// mesh/pull.ts — one long-lived pull subscription per durable consumer, pulled by credit: a process asks the server
// only for as many messages as it has room for, and room comes back as handlers *finish*, not as messages arrive.
//
// Why not consume(): it re-pulls as messages arrive, so a process holds up to max_ack_pending (1000) at once, and a
// crash charges a delivery to every one of them; a short crash loop then used up max_deliver of events that never
// ran (test/chaos.test.ts). Why not fetch() per batch: a subscribe, a pull and an unsubscribe for every 16–64
// messages was the largest cost left in the profile (bench/consume.ts). Here one subscription lives as long as the
// connection. A pull request asks for room that is free then; it ends when its batch has arrived or the server ends
// it (408 expired, saying how much was left; 409 …). Once half of it has arrived a second one may go out, so the
// server is not left waiting a round trip for the next request (+7 % msgs/s); never a third, and an idle consumer
// keeps only one long poll open. What the process holds plus what may still arrive never exceeds its room. A lost
// request (server restart) is noticed by its missing heartbeats.
import type { DeliveryInfo, JsMsg, PullOptions } from "@nats-io/jetstream"
import { createInbox, type Msg, type MsgHdrs, nanos, type NatsConnection, type Subscription } from "@nats-io/transport-node"
import type { Logger } from "./log.ts"

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
  /** how long one pull request waits for messages (default 30 s) */
  expiresMs?: number
  /** the server's heartbeat while a request waits (default 5 s); two missed ones end the request on our side */
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
  const expiresMs = o.expiresMs ?? 30_000
  const heartbeatMs = o.heartbeatMs ?? 5_000
  const next = `${o.apiPrefix ?? "$JS.API"}.CONSUMER.MSG.NEXT.${o.stream}.${o.durable}`
  const inboxPrefix = (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix
  let sub: Subscription | undefined
  let inbox = ""
  /** the open requests, oldest first (the server fills them in that order): batch, and what each may still bring */
  let open: { batch: number; left: number }[] = []
  let outstanding = 0
  /** how much the next request asks for, at most: doubles while requests fill, falls back to what came when one
   * expires. An idle consumer (a REPLAY that is empty nearly always) then reserves only `minBatch` of the room
   * while its long poll waits, and a busy one gets the rest */
  let size = o.minBatch
  let lastHeard = 0
  let stopping = false
  let paused: ReturnType<typeof setTimeout> | undefined
  let complaint = ""
  let refused = false
  /** while disconnected nothing is asked: the client would buffer the request and send it, for the old inbox, on
   * reconnect — its messages would then wait out ack_wait */
  let disconnected = false

  const subscribe = () => {
    sub?.unsubscribe()
    inbox = createInbox(inboxPrefix)
    const mine = inbox
    sub = nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (err) return void o.log.error("pull subscription failed", { stream: o.stream, consumer: o.durable, error: err })
        if (mine === inbox) onMessage(msg)
      },
    })
    forget()
  }

  const forget = () => {
    open = []
    outstanding = 0
  }

  const pull = () => {
    if (stopping || paused || disconnected || nc.isClosed()) return
    // a second request goes out while the first's last messages arrive, so the server never waits for the next
    // one (a round trip of idle time per batch); never a third
    if (open.length >= 2 || (open.length === 1 && open[0]!.left > open[0]!.batch / 2)) return
    const batch = Math.min(o.room(), size)
    if (batch < o.minBatch || batch <= 0) return
    open.push({ batch, left: batch })
    outstanding += batch
    if (open.length === 1) lastHeard = Date.now()
    const req: Partial<PullOptions> = { batch, expires: nanos(expiresMs), idle_heartbeat: nanos(heartbeatMs) }
    try {
      nc.publish(next, JSON.stringify(req), { reply: inbox })
    } catch (err) {
      open.pop()
      outstanding -= batch
      pauseThenPull(`pull request not sent: ${(err as Error).message}`)
    }
  }

  const pauseThenPull = (why: string) => {
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

  function onMessage(msg: Msg) {
    lastHeard = Date.now()
    if (msg.reply) {
      // a stored message (its reply subject is its ack subject)
      const head = open[0]
      if (head) {
        outstanding--
        if (--head.left <= 0) {
          size = Math.min(head.batch * 2, 1 << 16)
          open.shift()
        }
      }
      if (complaint) accepted()
      o.deliver(new PulledMsg(msg, nc))
      pull()
      return
    }
    // a status from the server about the open request
    const h = msg.headers
    const code = h?.code ?? 0
    if (code === 100 || code === 404 || code === 408) {
      if (complaint) accepted()
      if (code === 100) return // idle heartbeat: the request is alive
      // expired (408) or nothing there (404): the request is over; the next asks for what this one brought
      // which request: the one with exactly that much left, else the oldest
      const left = Number(h?.get("Nats-Pending-Messages"))
      const i = Math.max(0, open.findIndex((r) => r.left === left))
      const ended = open[i]
      if (ended) {
        size = Math.max(o.minBatch, ended.batch - ended.left)
        outstanding -= ended.left
        open.splice(i, 1)
      }
      return pull()
    }
    forget()
    const description = h?.description || `status ${code}`
    // 409 consumer deleted; 503: nothing answers the pull subject (no such consumer, or JetStream unavailable)
    if (code === 503 || /consumer deleted/i.test(description)) {
      if (!refused) (refused = true), o.bound?.(false, `${code} ${description}`)
    }
    // and 409 max waiting, leadership change…: retry after a pause
    pauseThenPull(`${code} ${description}`)
  }

  // a request the server no longer knows (restarted, consumer moved) sends nothing, not even heartbeats
  const watchdog = setInterval(() => {
    if (open.length && Date.now() - lastHeard > 2 * heartbeatMs + 1000) {
      forget()
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
      await sub?.drain().catch(() => {})
    },
  }
}

const ACK = Uint8Array.of(43, 65, 67, 75) // +ACK
const NAK = Uint8Array.of(45, 78, 65, 75) // -NAK
const WPI = Uint8Array.of(43, 87, 80, 73) // +WPI
const TERM = Uint8Array.of(43, 84, 69, 82, 77) // +TERM
const TD = new TextDecoder()
const needles = new Map<string, string>()
const TE = new TextEncoder()

/**
 * A JsMsg over a core message, as the client's own JsMsgImpl (not exported by @nats-io/jetstream) builds it, plus
 * `header(name)`: reads one header straight from the raw header block. The client's MsgHdrs decoding (a Map of
 * arrays, every key validated) cost more than the JSON body and the schema check together; a delivery reads six.
 */
export class PulledMsg implements JsMsg {
  #di?: DeliveryInfo
  #raw?: string | null
  #acked = false
  constructor(
    readonly msg: Msg,
    private readonly nc: NatsConnection,
  ) {}

  get subject() {
    return this.msg.subject
  }
  get sid() {
    return this.msg.sid
  }
  get data() {
    return this.msg.data
  }
  get headers(): MsgHdrs | undefined {
    return this.msg.headers
  }
  get reply() {
    return this.msg.reply ?? ""
  }
  get info(): DeliveryInfo {
    return (this.#di ??= parseInfo(this.reply))
  }
  get redelivered() {
    return this.info.deliveryCount > 1
  }
  get seq() {
    return this.info.streamSequence
  }
  get time() {
    return new Date(Math.floor(this.info.timestampNanos / 1e6))
  }
  get timestamp() {
    return this.time.toISOString()
  }
  get timestampNanos() {
    const t = this.reply.split(".")
    return BigInt(t[t.length === 9 ? 7 : 9] ?? 0)
  }

  /** the first value of header `name` (exact case), without decoding the others */
  header(name: string): string | undefined {
    if (this.#raw === undefined) this.#raw = rawHeaders(this.msg)
    if (this.#raw === null) return this.msg.headers?.get(name) || undefined
    const s = this.#raw
    let needle = needles.get(name)
    if (needle === undefined) needles.set(name, (needle = `\r\n${name}:`))
    const at = s.indexOf(needle)
    if (at < 0) return undefined
    const from = at + needle.length
    const end = s.indexOf("\r\n", from)
    return s.slice(from, end < 0 ? s.length : end).trim() || undefined
  }

  #respond(payload: Uint8Array, final = true) {
    if (this.#acked) return
    this.#acked = final
    this.msg.respond(payload)
  }
  ack() {
    this.#respond(ACK)
  }
  nak(millis?: number) {
    this.#respond(millis ? TE.encode(`-NAK ${JSON.stringify({ delay: nanos(millis) })}`) : NAK)
  }
  working() {
    this.#respond(WPI, false)
  }
  term(reason = "") {
    this.#respond(reason ? TE.encode(`+TERM ${reason}`) : TERM)
  }
  async ackAck(opts?: Partial<{ timeout: number }>): Promise<boolean> {
    if (this.#acked || !this.msg.reply) return false
    this.#acked = true
    await this.nc.request(this.msg.reply, ACK, { timeout: opts?.timeout ?? 5000 })
    return true
  }
  next(subj: string, ro: Partial<PullOptions> = { batch: 1 }) {
    const args: Record<string, unknown> = { batch: ro.batch || 1, no_wait: ro.no_wait || false }
    if (ro.expires && ro.expires > 0) args.expires = nanos(ro.expires)
    this.msg.respond(TE.encode(`+NXT ${JSON.stringify(args)}`), { reply: subj })
  }
  json<T>(): T {
    return this.msg.json<T>()
  }
  string() {
    return this.msg.string()
  }
}

/**
 * The header block of `msg` as text, or null when it cannot be found safely (then MsgHdrs is used). The client keeps
 * headers and body in one buffer with the body a view into it, and `size()` counts subject, reply, headers and body:
 * the block is the bytes just before the body. It must start with `NATS/1.` and end with a blank line, or it is not.
 */
export function rawHeaders(msg: Msg): string | null {
  const size = (msg as { size?: () => number }).size?.()
  if (size === undefined) return null
  const body = msg.data
  const len = size - msg.subject.length - (msg.reply?.length ?? 0) - body.length
  if (len < 12 || body.byteOffset < len) return null
  const block = new Uint8Array(body.buffer, body.byteOffset - len, len)
  if (block[0] !== 78 || block[1] !== 65 || block[2] !== 84 || block[3] !== 83 || block[4] !== 47) return null // NATS/
  if (block[len - 4] !== 13 || block[len - 3] !== 10 || block[len - 2] !== 13 || block[len - 1] !== 10) return null
  return TD.decode(block)
}

/** `$JS.ACK[.<domain>.<account>].<stream>.<consumer>.<deliveries>.<sseq>.<dseq>.<nanos>.<pending>[.<random>]` */
export function parseInfo(reply: string): DeliveryInfo {
  const t = reply.split(".")
  if (t.length === 9) t.splice(2, 0, "_", "")
  if (t.length < 11 || t[0] !== "$JS" || t[1] !== "ACK") throw new Error(`not a JetStream message: ${reply}`)
  const deliveryCount = parseInt(t[6]!, 10)
  return {
    domain: t[2] === "_" ? "" : t[2]!,
    account_hash: t[3],
    stream: t[4]!,
    consumer: t[5]!,
    deliveryCount,
    redelivered: deliveryCount > 1,
    streamSequence: parseInt(t[7]!, 10),
    deliverySequence: parseInt(t[8]!, 10),
    timestampNanos: parseInt(t[9]!, 10),
    pending: parseInt(t[10]!, 10),
  } as DeliveryInfo
}
