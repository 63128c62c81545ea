// contracts/effects.ts — the one effect a worker stores per input event with `once` (mesh/publish.ts): for each, the
// event and the field of the input that is its key. Ops reads it to tell a failure that had its effect anyway (a
// crash between the publish and the ack) from one that did not, and to know how long a replay stays safe.
import { type EventName, streamOf, subjectOf } from "./events.ts"

export type Effect = { event: EventName /** the input's field whose value is the effect's key */; key: string }

/** By worker, then by input event. */
export const effects: Partial<Record<string, Partial<Record<EventName, Effect>>>> = {
  // one invoice per route: InvoiceGenerated on invoice.events.InvoiceGenerated.<routeId>
  invoice: { RouteCalculated: { event: "InvoiceGenerated", key: "routeId" } },
}

/** Where the effect of `input` (an event `name` handled by `worker`) is stored, if the worker declares one. */
export function effectOf(
  worker: string,
  name: EventName,
  input: unknown,
): { event: EventName; stream: string; subject: string } | undefined {
  const e = Object.hasOwn(effects, worker) ? effects[worker]?.[name] : undefined
  const key = e && typeof input === "object" && input !== null ? (input as Record<string, unknown>)[e.key] : undefined
  if (!e || typeof key !== "string" || key === "") return undefined
  return { event: e.event, stream: streamOf(e.event), subject: subjectOf(e.event, key) }
}
