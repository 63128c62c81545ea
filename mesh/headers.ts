// mesh/headers.ts — the headers of an event being published, as the wire wants them. The client's MsgHdrs keeps a
// Map of arrays and validates and canonicalises every key on each set: for the nine headers of every event that was
// ~40 % of what publishing cost our side. Here they are kept as lines and encoded once; the client only ever calls
// set() (the msg id, the expectations) and encode() on headers it publishes.
import type { Match, MsgHdrs } from "@nats-io/transport-node"
import { utf8 } from "../contracts/mod.ts"

const BAD = /[\r\n]/

export class OutgoingHeaders implements MsgHdrs {
  readonly hasError = false
  readonly status = ""
  readonly code = 0
  readonly description = ""
  #names: string[] = []
  #values: string[] = []

  constructor(record: Record<string, string> = {}) {
    for (const k in record) this.append(k, record[k]!)
  }

  append(k: string, v: string, _match?: Match): void {
    if (BAD.test(k) || BAD.test(v)) throw new Error(`header ${k}: names and values cannot contain CR or LF`)
    this.#names.push(k)
    this.#values.push(v)
  }
  set(k: string, v: string, match?: Match): void {
    this.delete(k, match)
    this.append(k, v)
  }
  get(k: string): string {
    const i = this.#names.indexOf(k)
    return i < 0 ? "" : this.#values[i]!
  }
  last(k: string): string {
    const i = this.#names.lastIndexOf(k)
    return i < 0 ? "" : this.#values[i]!
  }
  has(k: string): boolean {
    return this.#names.includes(k)
  }
  keys(): string[] {
    return [...new Set(this.#names)]
  }
  values(k: string): string[] {
    return this.#values.filter((_, i) => this.#names[i] === k)
  }
  delete(k: string, _match?: Match): void {
    for (let i = this.#names.length - 1; i >= 0; i--) if (this.#names[i] === k) this.#names.splice(i, 1), this.#values.splice(i, 1)
  }
  *[Symbol.iterator](): Iterator<[string, string[]]> {
    for (const k of this.keys()) yield [k, this.values(k)]
  }
  /** `NATS/1.0`, one `name: value` line each, a blank line: the header block of HPUB */
  encode(): Uint8Array {
    let s = "NATS/1.0\r\n"
    for (let i = 0; i < this.#names.length; i++) s += `${this.#names[i]}: ${this.#values[i]}\r\n`
    return utf8(`${s}\r\n`)
  }
}
