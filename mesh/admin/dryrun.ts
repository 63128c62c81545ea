// mesh/admin/dryrun.ts — what the consumer that failed would do with a payload, before anything is replayed: its real
// handler (the function its worker declares, passed in by the caller) runs here, with a context that keeps what it
// returns instead of publishing it. A handler that reaches for state this process does not hold (a worker's private
// bucket) is stopped there, and the dry run says what it could not evaluate instead of guessing.
import { StatusError } from "itty-router"
import { type EventName, keyOf, type Meta, streamOf, subjectOf, validate } from "../../contracts/mod.ts"
import type { Handler, HandlerContext, Handlers } from "../handler.ts"
import { PermanentError } from "../errors.ts"
import type { Logger } from "../log.ts"
import type { Outgoing } from "../publish.ts"
import { withTimeout } from "../time.ts"
import { checkEdit, currentPayload, eventOfEntry, type Issue, issuesWith } from "./edit.ts"
import { type Admin, load } from "./entries.ts"
import { lastOf } from "./filing.ts"
import { payloadOf } from "./replay.ts"

export type Emitted = {
  name: EventName
  subject: string
  key: string
  /** the Nats-Msg-Id it would be published under */
  id: string
  data: unknown
  /** stored only if its subject holds none yet (a once-effect) */
  once?: true
  /** why the stream would refuse it (the once-effect is stored already) */
  refused?: string
  /** the event breaks its own contract: the runtime would refuse to publish it */
  invalid?: string
}

export type DryRun = {
  entry: string
  consumer: string
  event: EventName
  /** which payload ran: the one given, the entry's latest edit, or the original */
  payload: "given" | "edit" | "original"
  /**
   * emits: the handler returned (`emitted`, maybe none); dead-letter: it threw PermanentError (`reason`); retry: it
   * threw another error; not-evaluated: it needs what `notEvaluated` names; invalid: the payload breaks the schema
   */
  outcome: "emits" | "dead-letter" | "retry" | "not-evaluated" | "invalid"
  issues: Issue[]
  emitted: Emitted[]
  notEvaluated: string[]
  reason?: string
  error?: string
  log: { level: string; msg: string; fields?: Record<string, unknown> }[]
}

/** how long a dry run waits for the handler */
export const DRY_RUN_MS = 10_000

/** A handler asked for state the dry run does not hand out. */
class NotEvaluable extends Error {}

function capturingLog(into: DryRun["log"], fields: Record<string, unknown> = {}): Logger {
  const at =
    (level: string) =>
    (msg: string, more?: Record<string, unknown>): void =>
      void into.push({ level, msg, ...(more || Object.keys(fields).length ? { fields: { ...fields, ...more } } : {}) })
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (f) => capturingLog(into, { ...fields, ...f }),
  }
}

/**
 * Runs the failed consumer's handler on `payload` (default: the entry's latest edit, else its original). Nothing is
 * published and no state is written; `handlers` are the workers' own, by worker name (workers/handlers.ts).
 */
export async function dryRun(a: Admin, id: string, handlers: Record<string, Handlers>, given?: unknown): Promise<DryRun> {
  const { entry } = await load(a.kv, id)
  const current = given === undefined ? await currentPayload(a, entry) : undefined
  const payload = given === undefined ? current!.payload : given
  const run: DryRun = {
    entry: entry.id,
    consumer: entry.consumer,
    event: eventOfEntry(entry).name,
    payload: given !== undefined ? "given" : current!.edited ? "edit" : "original",
    outcome: "emits",
    issues: [],
    emitted: [],
    notEvaluated: [],
    log: [],
  }
  run.issues =
    payload === undefined ? [{ path: "", message: "the payload is not JSON" }] : issuesWith({ name: run.event, version: 1 }, payload)
  if (run.issues.length) return { ...run, outcome: "invalid" }
  if (given !== undefined) checkEdit(entry, given)
  const handler = (Object.hasOwn(handlers, entry.consumer) ? handlers[entry.consumer] : undefined)?.[run.event] as
    | Handler<EventName>
    | undefined
  if (!handler) throw new StatusError(409, `${entry.consumer} declares no handler for ${run.event}: nothing to run`)
  const headers = (await payloadOf(a, entry)).header
  const h = (n: string) => headers?.get(n) || undefined
  const meta: Meta = { id: h("ce-id") ?? entry.eventId ?? entry.id, source: h("ce-source") ?? "", time: h("ce-time") ?? "" }
  if (entry.key) meta.key = entry.key
  const ctx: HandlerContext = {
    worker: entry.consumer,
    meta,
    deliveries: 1,
    log: capturingLog(run.log, { worker: entry.consumer, dryRun: true }),
    working() {},
    kv: async (bucket) => {
      run.notEvaluated.push(`bucket ${bucket}: ${entry.consumer}'s own state, which the dry run neither reads nor writes`)
      throw new NotEvaluable(`dry run: ${entry.consumer} reads and writes bucket ${bucket}`)
    },
  }
  let out: Outgoing[] | void
  try {
    // a handler that hangs (a slow dependency) must not hold the operator's request: it would be retried for real
    out = await withTimeout(
      Promise.resolve(handler(structuredClone(payload) as never, ctx)),
      DRY_RUN_MS,
      () => new Error(`the handler did not return within ${DRY_RUN_MS} ms`),
    )
  } catch (err) {
    if (run.notEvaluated.length) return { ...run, outcome: "not-evaluated" }
    if (err instanceof PermanentError) return { ...run, outcome: "dead-letter", reason: err.reason, error: err.message }
    return { ...run, outcome: "retry", error: (err as Error)?.message ?? String(err) }
  }
  if (run.notEvaluated.length) return { ...run, outcome: "not-evaluated" }
  for (const [i, o] of (out ?? []).entries()) run.emitted.push(await emitted(a, entry.consumer, meta, o, i))
  return run
}

/** One returned event as the runtime would publish it (mesh/delivery.ts: subject from its key, id from the cause). */
async function emitted(a: Admin, consumer: string, meta: Meta, o: Outgoing, i: number): Promise<Emitted> {
  const e: Emitted = { name: o.name, subject: "", key: "", id: o.id ?? `${consumer}:${meta.id}:${i}`, data: o.data }
  try {
    validate(o.name, o.data)
    e.key = keyOf(o.name, o.data as never)
    e.subject = subjectOf(o.name, e.key)
  } catch (err) {
    e.invalid = (err as Error).message
    return e
  }
  if (o.once) {
    e.once = true
    const held = await lastOf(a, { stream: streamOf(o.name), subject: e.subject })
    if (held) e.refused = `${e.subject} already holds one (${streamOf(o.name)} seq ${held.seq}): the stream would refuse this publish`
  }
  return e
}
