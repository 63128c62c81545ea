// mesh/ack-batch.ts — acks collected and sent together. The client writes its buffer out in a microtask, and
// handlers finish in different microtasks: acked one by one, each ack was its own socket write. The consume engine
// adds each ack here and flushes once per turn of the event loop, together with the pull requests for the room they
// freed: one write, and one request sized to everything that finished.
import type { JsMsg } from "@nats-io/jetstream"
import type { Logger } from "./log.ts"

/** past this many waiting acks they leave at once, not at the end of the turn */
const MAX_WAITING = 256

export class AckBatch {
  #acks: JsMsg[] = []
  constructor(private readonly log: Logger) {}

  add(msg: JsMsg): void {
    if (this.#acks.push(msg) >= MAX_WAITING) this.flush()
  }

  flush(): void {
    const batch = this.#acks
    this.#acks = []
    // an ack after the connection closed (a handler the drain deadline gave up on) must not throw out of a timer:
    // that message is redelivered, as intended
    for (const m of batch) {
      try {
        m.ack()
      } catch (err) {
        this.log.warn("ack not sent; the server redelivers after ack_wait", { seq: m.seq, error: err })
      }
    }
  }
}
