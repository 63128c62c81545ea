// mesh/acked.ts — a JetStream publish and its ack, as js.publish does it, without its per-publish costs. The client
// makes every publish a request: a timer, a Promise.race and, once the ack is in, an Error it builds to "cancel" the
// settled request (even with noAsyncTraces). In a worker draining a backlog that Error alone was ~7 % of the CPU
// (bench/README.md). Here one subscription per connection takes every ack, a single sweep times them out, and the
// outcomes are the client's own: a PubAck, a JetStreamApiError with the server's code, JetStreamNotEnabled around
// NoRespondersError when nothing stores the subject, TimeoutError, a RequestError around a permission violation.
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
import type { OutgoingHeaders } from "./headers.ts"

type Pending = { subject: string; at: number; resolve(ack: PubAck): void; reject(err: Error): void }

export type Expect = { lastSubjectSequence?: number; lastSubjectSequenceSubject?: string }

const dec = new TextDecoder()

class AckInbox {
  readonly #prefix: string
  readonly #pending = new Map<string, Pending>()
  #next = 0
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
    const token = (this.#next++).toString(36)
    return new Promise<PubAck>((resolve, reject) => {
      this.#pending.set(token, { subject, at: performance.now(), resolve, reject })
      this.#sweep ??= setInterval(() => this.#timeOut(), Math.max(10, Math.min(250, this.timeoutMs / 10)))
      try {
        this.nc.publish(subject, body, { reply: `${this.#prefix}${token}`, headers })
      } catch (err) {
        this.#settle(token)
        reject(err)
      }
    })
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
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      const cause = new RequestError(`no responders: ${p.subject}`, { cause: new NoRespondersError(p.subject) })
      return p.reject(new jserrors.JetStreamNotEnabled("jetstream is not enabled", { cause }))
    }
    try {
      const ack = JSON.parse(dec.decode(msg.data)) as PubAck & { error?: { code: number; err_code: number; description: string } }
      if (ack.error) {
        const api = new JetStreamApiError(ack.error)
        return p.reject(api.code === 10039 ? new jserrors.JetStreamNotEnabled(api.message, { cause: api }) : api)
      }
      if (!ack.stream) return p.reject(new jserrors.JetStreamError("invalid ack response"))
      ack.duplicate = ack.duplicate ?? false
      p.resolve(ack)
    } catch (err) {
      p.reject(err as Error)
    }
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

const inboxes = new WeakMap<JetStreamClient, AckInbox>()

/**
 * js.publish(subject, body, { msgID, headers, expect }) with the same outcomes, through one ack subscription per
 * JetStream client (its connection and timeout). Falls back to js.publish for a client that is not the @nats-io one.
 */
export function publishAcked(
  js: JetStreamClient,
  subject: string,
  body: Uint8Array,
  msgID: string,
  headers: OutgoingHeaders,
  expect: Expect = {},
): Promise<PubAck> {
  let inbox = inboxes.get(js)
  if (!inbox) {
    const nc = (js as unknown as { nc?: NatsConnection }).nc
    if (!nc || nc.isClosed()) return js.publish(subject, body, { msgID, headers, expect })
    inboxes.set(js, (inbox = new AckInbox(nc, js.getOptions().timeout ?? 5_000, () => inboxes.delete(js))))
  }
  headers.append(PubHeaders.MsgIdHdr, msgID)
  if (expect.lastSubjectSequence !== undefined) headers.append(PubHeaders.ExpectedLastSubjectSequenceHdr, `${expect.lastSubjectSequence}`)
  if (expect.lastSubjectSequenceSubject) headers.append(PubHeaders.ExpectedLastSubjectSequenceSubjectHdr, expect.lastSubjectSequenceSubject)
  return inbox.publish(subject, body, headers)
}
