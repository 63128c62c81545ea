// mesh/handler-context.ts — what a handler gets beside its event (HandlerContext, mesh/handler.ts), made once per
// message by the consume engine.
import type { KV } from "@nats-io/kv"
import type { Meta } from "../contracts/mod.ts"
import type { HandlerContext } from "./handler.ts"
import type { Held } from "./held.ts"
import type { Logger } from "./log.ts"

// a class, not an object literal: one per message, and a literal's arrow functions were a closure each
export class Context implements HandlerContext {
  constructor(
    readonly worker: string,
    readonly meta: Meta,
    readonly log: Logger,
    readonly kv: (bucket: string) => Promise<KV>,
    private readonly h: Held,
    private readonly ackWaitMs: number,
  ) {}
  get deliveries() {
    return this.h.msg.info.deliveryCount
  }
  working() {
    this.h.msg.working()
    this.h.deadline = Date.now() + this.ackWaitMs
  }
}
