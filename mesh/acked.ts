// mesh/acked.ts — a JetStream publish and its ack, as js.publish does it, without its per-publish costs. The client
// makes every publish a request: a timer, a Promise.race and, once the ack is in, an Error it builds to "cancel" the
// settled request (even with noAsyncTraces). In a worker draining a backlog that Error alone was ~7 % of the CPU
// (bench/README.md). Here one subscription per connection takes every ack, a single sweep times them out, and the
// outcomes are the client's own: a PubAck, a JetStreamApiError with the server's code, JetStreamNotEnabled around
// NoRespondersError when nothing stores the subject, TimeoutError, a RequestError around a permission violation.
// The same inbox carries the mesh's other JetStream requests on a hot path (a stored message's read, a KV create),
// and everything sent through it before the event loop turns is handed to the client at once: one socket write for
// the publishes of many handlers or HTTP requests instead of one each.
import { JetStreamApiError, type JetStreamClient, type PubAck, PubHeaders } from "@nats-io/jetstream"
import { jserrors } from "@nats-io/jetstream/internal"
import {
  createInbox,
  type Msg,
  type NatsConnection,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
} from "@nats-io/transport-node"
import { setImmediate } from "node:timers"
import { utf8 } from "../contracts/mod.ts"
import type { OutgoingHeaders } from "./headers.ts"
import { isNoResponders } from "./errors.ts"
import { headerOf, rawHeaders } from "./pulled.ts"

/**
 * What waits for a reply: a publish's PubAck, or a request's message. No closure per publish: tsx wraps each named
 * one in a `defineProperty` for its name (keepNames), which cost more than the rest of the pending entry.
 */
type Pending = { subject: string; at: number; ack: boolean; resolve(value: PubAck | Msg): void; reject(err: Error): void }

export type Expect = { lastSubjectSequence?: number; lastSubjectSequenceSubject?: string }

const dec = new TextDecoder()

class AckInbox {
  readonly #prefix: string
  readonly #pending = new Map<string, Pending>()
  #next = 0
  #out: { subject: string; body: Uint8Array; headers: OutgoingHeaders | undefined; token: string }[] = []
  #sweep: ReturnType<typeof setInterval> | undefined

  constructor(
    readonly nc: NatsConnection,
    readonly timeoutMs: number,
    /** the subscription was refused or closed: the next publish needs a new inbox */
    onBroken: () => void,
  ) {
    // under the connection's inbox prefix: the one a least-privilege user may subscribe to (nats.conf)
    this.#prefix = `${createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix)}.`
    nc.subscribe(`${this.#prefix}*`, { callback: (err, msg) => (err ? (onBroken(), this.#failAll(err)) : this.#answer(msg)) })
    // a publish the server refuses this user is answered on the status stream, not on the reply subject
    void (async () => {
      for await (const s of nc.status()) {
        const pe = s.type === "error" ? s.error : undefined
        if (pe instanceof PermissionViolationError && pe.operation === "publish") this.#failSubject(pe.subject, pe)
      }
    })().catch(() => {})
    void nc.closed().then(() => this.#failAll(new RequestError("connection closed")))
  }

  publish(subject: string, body: Uint8Array, headers: OutgoingHeaders): Promise<PubAck> {
    return new Promise<PubAck>((resolve, reject) =>
      this.#send(subject, body, headers, { subject, at: performance.now(), ack: true, resolve: resolve as Pending["resolve"], reject }),
    )
  }

  /** a request answered on this inbox: its reply as it came, or the client's errors for none (503, timeout) */
  request(subject: string, body: Uint8Array, headers?: OutgoingHeaders): Promise<Msg> {
    return new Promise<Msg>((resolve, reject) =>
      this.#send(subject, body, headers, { subject, at: performance.now(), ack: false, resolve: resolve as Pending["resolve"], reject }),
    )
  }

  #send(subject: string, body: Uint8Array, headers: OutgoingHeaders | undefined, p: Pending) {
    const token = (this.#next++).toString(36)
    this.#pending.set(token, p)
    this.#sweep ??= setInterval(() => this.#timeOut(), Math.max(10, Math.min(250, this.timeoutMs / 10)))
    // the client writes to the socket once per microtask checkpoint, and each request's publish comes from its own
    // I/O callback or promise chain: held until the check phase, they all go out in one write
    if (this.#out.push({ subject, body, headers, token }) === 1) setImmediate(this.#flush)
  }

  readonly #flush = () => {
    const out = this.#out
    this.#out = []
    for (const o of out) {
      try {
        this.nc.publish(o.subject, o.body, { reply: `${this.#prefix}${o.token}`, headers: o.headers })
      } catch (err) {
        this.#settle(o.token)?.reject(err as Error)
      }
    }
  }

  #settle(token: string): Pending | undefined {
    const p = this.#pending.get(token)
    if (!p) return undefined
    this.#pending.delete(token)
    if (this.#pending.size === 0 && this.#sweep) clearInterval(this.#sweep), (this.#sweep = undefined)
    return p
  }

  #answer(msg: Msg) {
    const p = this.#settle(msg.subject.slice(this.#prefix.length))
    if (!p) return // timed out already
    if (p.ack) return pubAck(p.subject, msg, p.resolve, p.reject)
    const none = noResponders(p.subject, msg)
    if (none) p.reject(none)
    else p.resolve(msg)
  }

  #timeOut() {
    const now = performance.now()
    for (const [token, p] of this.#pending) {
      if (now - p.at < this.timeoutMs) break // insertion order: the rest are younger
      this.#settle(token)
      p.reject(new TimeoutError())
    }
  }

  #failSubject(subject: string, cause: Error) {
    for (const [token, p] of this.#pending)
      if (p.subject === subject) this.#settle(token), p.reject(new RequestError(cause.message, { cause }))
  }

  #failAll(err: Error) {
    for (const token of [...this.#pending.keys()]) this.#settle(token)!.reject(err)
  }
}

/** The client's error for a request nothing answered (an empty 503 status), as its own requests report it. */
function noResponders(subject: string, msg: Msg): RequestError | undefined {
  if (msg.data.length !== 0 || msg.headers?.code !== 503) return undefined
  return new RequestError(`no responders: ${subject}`, { cause: new NoRespondersError(subject) })
}

/** A publish's reply as js.publish reads it. */
function pubAck(subject: string, msg: Msg, resolve: (ack: PubAck) => void, reject: (err: Error) => void) {
  const cause = noResponders(subject, msg)
  if (cause) return reject(new jserrors.JetStreamNotEnabled("jetstream is not enabled", { cause }))
  try {
    const ack = JSON.parse(dec.decode(msg.data)) as PubAck & { error?: ApiErrorBody }
    if (ack.error) {
      const api = new JetStreamApiError(ack.error)
      return reject(api.code === 10039 ? new jserrors.JetStreamNotEnabled(api.message, { cause: api }) : api)
    }
    if (!ack.stream) return reject(new jserrors.JetStreamError("invalid ack response"))
    ack.duplicate = ack.duplicate ?? false
    resolve(ack)
  } catch (err) {
    reject(err as Error)
  }
}

type ApiErrorBody = { code: number; err_code: number; description: string }

const inboxes = new WeakMap<JetStreamClient, AckInbox>()

/** The JetStream client's shared inbox, made on first use; undefined for a client that is not the @nats-io one. */
function inboxOf(js: JetStreamClient): AckInbox | undefined {
  let inbox = inboxes.get(js)
  if (!inbox) {
    const nc = (js as unknown as { nc?: NatsConnection }).nc
    if (!nc || nc.isClosed()) return undefined
    inboxes.set(js, (inbox = new AckInbox(nc, js.getOptions().timeout ?? 5_000, () => inboxes.delete(js))))
  }
  return inbox
}

/**
 * js.publish(subject, body, { msgID, headers, expect }) with the same outcomes, through one ack subscription per
 * JetStream client (its connection and timeout). Falls back to js.publish for a client that is not the @nats-io one.
 */
export function publishAcked(
  js: JetStreamClient,
  subject: string,
  body: Uint8Array,
  msgID: string | undefined,
  headers: OutgoingHeaders,
  expect: Expect = {},
): Promise<PubAck> {
  const inbox = inboxOf(js)
  if (!inbox) return js.publish(subject, body, { msgID, headers, expect })
  if (msgID) headers.append(PubHeaders.MsgIdHdr, msgID)
  if (expect.lastSubjectSequence !== undefined) headers.append(PubHeaders.ExpectedLastSubjectSequenceHdr, `${expect.lastSubjectSequence}`)
  if (expect.lastSubjectSequenceSubject) headers.append(PubHeaders.ExpectedLastSubjectSequenceSubjectHdr, expect.lastSubjectSequenceSubject)
  return inbox.publish(subject, body, headers)
}

/** A stored message as STREAM.MSG.GET returns it: what the mesh reads of one. */
export type StoredMessage = { subject: string; seq: number; data: Uint8Array }
export type MessageQuery = { last_by_subj: string } | { seq: number; next_by_subj?: string }

const NO_MESSAGE_FOUND = 10037

/**
 * jsm.streams.getMessage(stream, query) through the shared inbox: the stored message, null when there is none, or the
 * client's errors (JetStreamApiError with the server's code, a RequestError around no responders, TimeoutError).
 * `next_by_subj` is the server's (2.9 and newer): the first message on the subject at or after `seq`.
 *
 * `direct`, for a stream with allow_direct: asked through DIRECT.GET, which answers with the stored message itself
 * (its headers, the stream's Nats-Sequence and Nats-Subject, the body as is) where STREAM.MSG.GET wraps it in JSON
 * with the body in base64; nats-server spends less than half the CPU on it. In a replicated stream any replica may
 * answer, so the message may be a little behind the leader's: only for a caller that checks what it read (a publish
 * guarded by the sequence refuses a stale one). A stream that no longer allows it is asked the other way.
 */
export async function getStoredMessage(
  js: JetStreamClient,
  stream: string,
  query: MessageQuery,
  opts: { direct?: boolean } = {},
): Promise<StoredMessage | null> {
  const inbox = inboxOf(js)
  if (!inbox) {
    const m = await (await js.jetstreamManager(false)).streams.getMessage(stream, query as { seq: number })
    return m && { subject: m.subject, seq: m.seq, data: m.data }
  }
  const prefix = js.getOptions().apiPrefix ?? "$JS.API"
  if (opts.direct) {
    const reply = await inbox.request(`${prefix}.DIRECT.GET.${stream}`, utf8(JSON.stringify(query))).catch((err) => {
      // nothing answers DIRECT.GET: the stream's allow_direct was turned off since its config was read
      if (isNoResponders(err)) return undefined
      throw err
    })
    if (reply) return directMessage(reply)
  }
  const reply = await inbox.request(`${prefix}.STREAM.MSG.GET.${stream}`, utf8(JSON.stringify(query)))
  const r = JSON.parse(dec.decode(reply.data)) as { error?: ApiErrorBody; message?: { subject: string; seq: number; data?: string } }
  if (r.error) {
    if (r.error.err_code === NO_MESSAGE_FOUND) return null
    throw new JetStreamApiError(r.error)
  }
  if (!r.message) throw new jserrors.JetStreamError("invalid message response")
  const { subject, seq, data } = r.message
  // decoded when read: a caller after the sequence alone pays nothing for the body
  return {
    subject,
    seq,
    get data() {
      return data ? base64(data) : new Uint8Array(0)
    },
  }
}

/** A DIRECT.GET answer: the message with the stream's headers, or a status (404: none stored; 408, 400: refused). */
function directMessage(reply: Msg): StoredMessage | null {
  const block = rawHeaders(reply)
  // the status line, `NATS/1.0 404 Message Not Found`, holds a code only when the answer is not a message
  const status = block === null ? undefined : block.slice(0, block.indexOf("\r\n"))
  const code = status === undefined ? (reply.headers?.code ?? 0) : Number(status.slice(9).trim().split(" ")[0]) || 0
  if (code === 404) return null
  const seq = Number(headerOf(reply, block, "Nats-Sequence"))
  const subject = headerOf(reply, block, "Nats-Subject")
  if (code !== 0 || !subject || !Number.isSafeInteger(seq) || seq <= 0) {
    throw new jserrors.JetStreamError(`direct get refused: ${status || reply.headers?.description || `status ${code}`}`)
  }
  return { subject, seq, data: reply.data }
}

function base64(text: string): Uint8Array {
  const bin = atob(text)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}
