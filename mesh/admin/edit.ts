// mesh/admin/edit.ts — correcting a dead letter's payload before a replay: which event it is, the form of its
// schema, the payload as it stands (the latest edit, else the original), and the check every edit passes. The
// original DLQ message is never changed: the edit lives in the entry (`edit`), its history says who made it and
// when, and a replay sends the edit (mesh/admin/replay.ts).
import { StatusError } from "itty-router"
import * as v from "valibot"
import { type EventName, eventOfSubject, events, issuesOf, keyOf, parseType, publishedSubject } from "../../contracts/mod.ts"
import { type Admin, change, type DlqEntry, load } from "./entries.ts"
import { type Field, formOf } from "./form.ts"
import { payloadOf } from "./replay.ts"

/** An edit is kept in the entry itself: a correction, not a new event of any size. */
export const MAX_EDIT_BYTES = 64 * 1024

export type Issue = { path: string; message: string }
export type EntryEvent = { name: EventName; version: number }

/** The event and version of an entry's payload (from its ce-type, else its subject), or a 409 saying why none. */
export function eventOfEntry(entry: DlqEntry): EntryEvent {
  if (entry.type) {
    try {
      return parseType(entry.type)
    } catch (err) {
      throw new StatusError(409, `entry ${entry.id}: ${(err as Error).message}; it has no schema to edit against`)
    }
  }
  const name = eventOfSubject(publishedSubject(entry.subject))
  if (!name) throw new StatusError(409, `entry ${entry.id} names no event type (no ce-type, subject ${entry.subject || "none"})`)
  return { name, version: 1 }
}

const schemaOf = (e: EntryEvent) => (events[e.name].versions as Record<number, v.GenericSchema>)[e.version]!

/** The schema's issues with `payload`; empty when it is valid. */
export function issuesWith(e: EntryEvent, payload: unknown): Issue[] {
  const r = v.safeParse(schemaOf(e), payload)
  return r.success ? [] : issuesOf(r.issues)
}

/** What a replay would send now: the latest edit, else the original (parsed; `undefined` when it is not JSON). */
export async function currentPayload(a: Admin, entry: DlqEntry): Promise<{ payload: unknown; edited: boolean; text: string }> {
  if (entry.edit) return { payload: entry.edit.payload, edited: true, text: JSON.stringify(entry.edit.payload) }
  const text = new TextDecoder().decode((await payloadOf(a, entry)).data)
  try {
    return { payload: JSON.parse(text), edited: false, text }
  } catch {
    return { payload: undefined, edited: false, text }
  }
}

export type EditView = {
  entry: DlqEntry
  event: string
  version: number
  form: Field
  payload: unknown
  /** the payload as text, for a payload that is not JSON */
  text: string
  edited: boolean
  issues: Issue[]
}

/** Everything the edit form needs: the form of the schema, the payload as it stands and its issues. */
export async function editView(a: Admin, id: string): Promise<EditView> {
  const { entry } = await load(a.kv, id)
  const e = eventOfEntry(entry)
  const now = await currentPayload(a, entry)
  const issues = now.payload === undefined ? [{ path: "", message: "the payload is not JSON" }] : issuesWith(e, now.payload)
  return { entry, event: e.name, version: e.version, form: formOf(schemaOf(e)), ...now, issues }
}

/** 400 with the schema's issues, unless `payload` is a valid event of the entry's type that keeps its key. */
export function checkEdit(entry: DlqEntry, payload: unknown): EntryEvent {
  const e = eventOfEntry(entry)
  const issues = issuesWith(e, payload)
  if (issues.length) throw new StatusError(400, { error: `the payload is not a valid ${e.name}`, issues })
  // the key decides the subject, the ordering and the once-guards: a different truck is a different event
  const key = keyOf(e.name, payload as never)
  if (entry.key !== undefined && key !== entry.key)
    throw new StatusError(400, {
      error: `an edit keeps the event's key (${entry.key}); for another key publish a new event (logiflow publish)`,
      issues: [{ path: "", message: `the key would change from ${entry.key} to ${key}` }],
    })
  return e
}

/** Stores a checked correction; the history records who made it and when. */
export async function editEntry(a: Pick<Admin, "kv">, id: string, payload: unknown, by: string): Promise<DlqEntry> {
  if (new TextEncoder().encode(JSON.stringify(payload) ?? "").length > MAX_EDIT_BYTES)
    throw new StatusError(413, `an edited payload is at most ${MAX_EDIT_BYTES} bytes`)
  return change(a.kv, id, (entry) => {
    if (entry.state !== "open") throw new StatusError(409, `entry ${id} is ${entry.state}: only an open entry is edited`)
    checkEdit(entry, payload)
    const at = new Date().toISOString()
    const n = (entry.edit?.n ?? 0) + 1
    return { ...entry, edit: { payload, by, at, n }, history: [...entry.history, { at, action: "edited", by, note: `edit ${n}` }] }
  })
}
