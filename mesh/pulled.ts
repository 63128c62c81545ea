// mesh/pulled.ts — a pulled message: the client's JsMsg over a core message, plus a reader for one header straight
// from the raw header block, and the delivery info parsed from the ack subject.
import type { DeliveryInfo, JsMsg, PullOptions } from "@nats-io/jetstream"
import { type Msg, type MsgHdrs, nanos, type NatsConnection } from "@nats-io/transport-node"
import { utf8 } from "../contracts/mod.ts"

const ACK = Uint8Array.of(43, 65, 67, 75) // +ACK
const NAK = Uint8Array.of(45, 78, 65, 75) // -NAK
const WPI = Uint8Array.of(43, 87, 80, 73) // +WPI
const TERM = Uint8Array.of(43, 84, 69, 82, 77) // +TERM
const TD = new TextDecoder()
const needles = new Map<string, string>()

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
    return BigInt(ackTokens(this.reply)[9]!)
  }

  /** the first value of header `name` (exact case), without decoding the others */
  header(name: string): string | undefined {
    if (this.#raw === undefined) this.#raw = rawHeaders(this.msg)
    return headerOf(this.msg, this.#raw, name)
  }

  #respond(payload: Uint8Array, final = true) {
    if (this.#acked) return
    this.#acked = final
    this.msg.respond(payload)
  }
  ack() {
    this.#respond(ACK)
  }
  /**
   * For a batch of acks sent as one command (mesh/ack-batch.ts): the ack subject, with the message marked acked;
   * "" if it was acked (nak'ed, terminated) already or has no ack subject.
   */
  claimAck(): string {
    if (this.#acked || !this.msg.reply) return ""
    this.#acked = true
    return this.msg.reply
  }
  nak(millis?: number) {
    this.#respond(millis ? utf8(`-NAK ${JSON.stringify({ delay: nanos(millis) })}`) : NAK)
  }
  working() {
    this.#respond(WPI, false)
  }
  term(reason = "") {
    this.#respond(reason ? utf8(`+TERM ${reason}`) : TERM)
  }
  async ackAck(opts?: Partial<{ timeout: number }>): Promise<boolean> {
    const subject = this.claimAck()
    if (!subject) return false
    await this.nc.request(subject, ACK, { timeout: opts?.timeout ?? 5000 })
    return true
  }
  next(subj: string, ro: Partial<PullOptions> = { batch: 1 }) {
    const args: Record<string, unknown> = { batch: ro.batch || 1, no_wait: ro.no_wait || false }
    if (ro.expires && ro.expires > 0) args.expires = nanos(ro.expires)
    this.msg.respond(utf8(`+NXT ${JSON.stringify(args)}`), { reply: subj })
  }
  json<T>(): T {
    return this.msg.json<T>()
  }
  string() {
    return this.msg.string()
  }
}

/**
 * The first value of header `name` (exact case) of `msg`: read from its raw header block (rawHeaders) without decoding
 * the others, or through the client's MsgHdrs where the block could not be found (`block` null).
 */
export const headerOf = (msg: Msg, block: string | null, name: string): string | undefined =>
  block === null ? msg.headers?.get(name) || undefined : headerIn(block, name)

function headerIn(block: string, name: string): string | undefined {
  let needle = needles.get(name)
  if (needle === undefined) needles.set(name, (needle = `\r\n${name}:`))
  const at = block.indexOf(needle)
  if (at < 0) return undefined
  const from = at + needle.length
  let end = block.indexOf("\r\n", from)
  if (end < 0) end = block.length
  // the usual `name: value`: one slice, where slice().trim() made two strings
  const a = block.charCodeAt(from) === 32 ? from + 1 : from
  if (a < end && visible(block.charCodeAt(a)) && visible(block.charCodeAt(end - 1))) return block.slice(a, end)
  return block.slice(from, end).trim() || undefined
}

/** printable ASCII other than space: nothing trim() would remove */
const visible = (c: number) => c > 32 && c < 127

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

/** the ack subject's tokens in the long form (the short one gets `_` and an empty account inserted) */
function ackTokens(reply: string): string[] {
  const t = reply.split(".")
  if (t.length === 9) t.splice(2, 0, "_", "")
  if (t.length < 11 || t[0] !== "$JS" || t[1] !== "ACK") throw new Error(`not a JetStream message: ${reply}`)
  return t
}

/** `$JS.ACK[.<domain>.<account>].<stream>.<consumer>.<deliveries>.<sseq>.<dseq>.<nanos>.<pending>[.<random>]` */
export function parseInfo(reply: string): DeliveryInfo {
  const t = ackTokens(reply)
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
