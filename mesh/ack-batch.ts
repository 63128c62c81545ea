// mesh/ack-batch.ts — acks collected and sent together. The client writes its buffer out in a microtask, and
// handlers finish in different microtasks: acked one by one, each ack was its own socket write. The consume engine
// adds each ack here and flushes once per turn of the event loop, together with the pull requests for the room they
// freed: one write, and one request sized to everything that finished.
//
// A turn's acks also go to the client as one protocol command. Each `msg.ack()` is a whole publish in the client
// (the subject checked against a regex, the PUB line built and run through TextEncoder, ~1 µs): at 80,000 messages a
// second that was a twelfth of a consumer's CPU. Here the `PUB <ack subject> 4\r\n+ACK\r\n` lines of a turn are
// joined and encoded once, and handed to the client's protocol handler, which buffers and writes them as it does its
// own publishes. Where that handler is not there to take them (another client build), or the connection is closing,
// each message is acked the client's way.
import type { JsMsg } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import { utf8 } from "../contracts/mod.ts"
import type { Logger } from "./log.ts"
import { PulledMsg } from "./pulled.ts"

/** past this many waiting acks they leave at once, not at the end of the turn */
const MAX_WAITING = 256

/** the part of the client's protocol handler (nats-core's ProtocolHandler) a batch of acks goes through */
type Wire = {
  sendCommand(cmd: string | Uint8Array, ...payloads: Uint8Array[]): void
  noMorePublishing: boolean
  outMsgs: number
  outBytes: number
}

export class AckBatch {
  #acks: JsMsg[] = []
  constructor(
    private readonly log: Logger,
    private readonly nc?: NatsConnection,
  ) {}

  add(msg: JsMsg): void {
    if (this.#acks.push(msg) >= MAX_WAITING) this.flush()
  }

  flush(): void {
    const batch = this.#acks
    if (batch.length === 0) return
    this.#acks = []
    const wire = this.#wire()
    let lines = ""
    let n = 0
    for (const m of batch) {
      // a message of ours, not yet acked: its line joins the batch (and it counts as acked from now on)
      const subject = wire && m instanceof PulledMsg ? m.claimAck() : undefined
      if (subject) (lines += `PUB ${subject} 4\r\n+ACK\r\n`), n++
      else if (subject === undefined) this.#one(m)
    }
    if (n === 0 || !wire) return
    wire.outMsgs += n
    wire.outBytes += 4 * n
    wire.sendCommand(utf8(lines))
  }

  /** the client's protocol handler, when it can take a batch now */
  #wire(): Wire | undefined {
    const nc = this.nc
    if (!nc || nc.isClosed()) return undefined
    const p = (nc as { protocol?: Partial<Wire> }).protocol
    if (!p || typeof p.sendCommand !== "function" || p.noMorePublishing !== false) return undefined
    if (typeof p.outMsgs !== "number" || typeof p.outBytes !== "number") return undefined
    return p as Wire
  }

  #one(m: JsMsg): void {
    // an ack after the connection closed (a handler the drain deadline gave up on) must not throw out of a timer:
    // that message is redelivered, as intended
    try {
      m.ack()
    } catch (err) {
      this.log.warn("ack not sent; the server redelivers after ack_wait", { seq: m.seq, error: err })
    }
  }
}
