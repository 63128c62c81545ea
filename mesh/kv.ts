// mesh/kv.ts — KV helpers: safe keys, JSON values, revision-checked read–modify–write.
import type { JetStreamClient } from "@nats-io/jetstream"
import type { KV } from "@nats-io/kv"
import { utf8 } from "../contracts/mod.ts"
import { OutgoingHeaders } from "./headers.ts"
import { publishAcked } from "./acked.ts"
import { ApiCode, apiCode } from "./errors.ts"

const ALLOWED = /^[-/_=.a-zA-Z0-9]+$/

/** Any string → a valid KV key; injective, and keys that are already valid (other than '=') stay readable. */
export function kvKey(s: string): string {
  if (ALLOWED.test(s) && !s.includes("=") && !s.startsWith(".") && !s.endsWith(".") && !s.includes("..")) return s
  return Array.from(new TextEncoder().encode(s), (b) => {
    const c = String.fromCharCode(b)
    return /[-_a-zA-Z0-9]/.test(c) ? c : `=${b.toString(16).padStart(2, "0")}`
  }).join("")
}

export async function getJson<T>(kv: KV, key: string): Promise<T | undefined> {
  const e = await kv.get(kvKey(key))
  return e && e.operation === "PUT" && e.length > 0 ? (e.json() as T) : undefined
}

/** a create on a key that exists, or an update on a revision someone else moved past */
const exists = (err: unknown) => apiCode(err) === ApiCode.WrongLastSequence

/** What of the client's KV (its Bucket) a create through the shared ack inbox needs. */
type Bucket = { js?: JetStreamClient; encodeKey?(k: string): string; subjectForKey?(k: string, edit?: boolean): string }

/**
 * kv.create(key, value) as one publish through the connection's shared ack inbox (mesh/acked.ts), guarded by "no
 * message on the key's subject yet": none of the client's per-request timer and errors. A refusal is settled by the
 * client's own create, which also takes the place of a deleted key, or rejects as it would. Resolves with the revision.
 */
export async function createValue(kv: KV, key: string, value: string): Promise<number> {
  const b = kv as unknown as Bucket
  if (!b.js || !b.encodeKey || !b.subjectForKey || !ALLOWED.test(key)) return kv.create(key, value)
  try {
    const subject = b.subjectForKey(b.encodeKey(key), true)
    const ack = await publishAcked(b.js, subject, utf8(value), undefined, new OutgoingHeaders(), { lastSubjectSequence: 0 })
    return ack.seq
  } catch (err) {
    if (!exists(err)) throw err
    return kv.create(key, value)
  }
}

/**
 * Read–modify–write of one JSON value, guarded by the entry's revision: if another writer got in between, the write
 * fails and `fn` runs again on what they wrote, so no update is lost — across instances too, where per-key lanes
 * (one process each) cannot help. `fn` must be pure (it may run more than once); returning `prev` itself means
 * "nothing to change" and writes nothing. Resolves with the value now stored.
 */
export async function updateJson<T>(kv: KV, key: string, fn: (prev: T | undefined) => T, attempts = 20): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const entry = await kv.get(kvKey(key))
    const prev = entry && entry.operation === "PUT" && entry.length > 0 ? entry.json<T>() : undefined
    const next = fn(prev)
    if (next === prev) return next
    try {
      if (entry) await kv.update(kvKey(key), JSON.stringify(next), entry.revision)
      else await kv.create(kvKey(key), JSON.stringify(next))
      return next
    } catch (err) {
      if (!exists(err) || attempt >= attempts) throw err
    }
  }
}

/**
 * Read–modify–write of a value that must already be there: `read` gives it with its revision (and throws, a 404 say,
 * when it is not), `fn` decides on what is stored, and a write that lost to another writer decides again on theirs.
 */
export async function changeJson<T>(
  kv: KV,
  key: string,
  read: () => Promise<{ value: T; revision: number }>,
  fn: (value: T) => T,
  attempts: number,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const { value, revision } = await read()
    const next = fn(value)
    try {
      await kv.update(kvKey(key), JSON.stringify(next), revision)
      return next
    } catch (err) {
      if (attempt >= attempts) throw err
    }
  }
}
