// mesh/held.ts — the messages a process holds: running, or waiting for their key's turn. What a drain hands back,
// what the ack_wait sweep watches, and what PREFETCH bounds.
import type { DeliveryDeps } from "./handler.ts"
import type { PulledMsg } from "./pulled.ts"

export type Held = {
  msg: PulledMsg
  stream: string
  /** `<stream>/<durable>` it came through: a worker may pull several consumers of one stream (its partitions) */
  consumer: string
  /** how its consumer delivers it (mesh/delivery.ts) */
  deps?: DeliveryDeps
  ackWaitMs: number
  started: boolean
  /** when a running handler has outlived ack_wait (the sweep then lets its lane move on); 0: running, and the sweep
   * has not set it yet; Infinity: not watched */
  deadline: number
  /** its index in the HeldSet; -1 once it is not held */
  slot: number
  /** frees its lane: set when it starts */
  abandon?: () => void
}

export const held = (msg: PulledMsg, stream: string, consumer: string, deps?: DeliveryDeps, ackWaitMs = 30_000): Held => ({
  msg,
  stream,
  consumer,
  deps,
  ackWaitMs,
  started: false,
  deadline: Infinity,
  slot: -1,
})

/**
 * An array with swap-remove: a Map keyed by the message cost a hash, and a table rehash every so often, for every
 * message (~2 % of the consume path).
 */
export class HeldSet {
  #items: Held[] = []
  get size() {
    return this.#items.length
  }
  add(h: Held) {
    h.slot = this.#items.push(h) - 1
  }
  delete(h: Held) {
    const i = h.slot
    if (i < 0 || this.#items[i] !== h) return
    const last = this.#items.pop()!
    if (last !== h) (this.#items[i] = last), (last.slot = i)
    h.slot = -1
  }
  /** a copy: what the caller does may free (and so move) others */
  values(): Held[] {
    return this.#items.slice()
  }
}
