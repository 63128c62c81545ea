// mesh/errors.ts — errors a handler throws on purpose, and the NATS errors the mesh tells apart by type and code
// (never by message text).
import { JetStreamApiError } from "@nats-io/jetstream"
import { NoRespondersError, PermissionViolationError } from "@nats-io/transport-node"

/**
 * The event can never succeed (no tariff for the customer, say): it is dead-lettered at once with `reason`,
 * instead of being retried up to max deliveries.
 */
export class PermanentError extends Error {
  override name = "PermanentError"
  constructor(
    readonly reason: string,
    message: string = reason,
  ) {
    super(message)
  }
}

/**
 * An event larger than its stream stores (contracts/capacity.ts MAX_EVENT_BYTES, the stream's max_msg_size): retrying
 * cannot make it fit, so a consumer dead-letters its input with reason `too-large`, and the HTTP edge answers 413.
 */
export class TooLarge extends PermanentError {
  override name = "TooLarge"
  constructor(message: string) {
    super("too-large", message)
  }
}

/** A worker cannot start: a missing consumer, a refused permission. The message says what to do. */
export class StartupError extends Error {
  override name = "StartupError"
}

/** JetStream API error codes the mesh acts on (nats-server's errors.json; the same on 2.9 and 2.15). */
export const ApiCode = {
  /** "no suitable peers for placement": a replicated stream or consumer while a peer is not yet (or no longer) known */
  ClusterNoPeers: 10005,
  ConsumerNotFound: 10014,
  MessageTooLarge: 10054,
  StreamNotFound: 10059,
  SubjectsOverlap: 10065,
  /** a KV create on an existing key, an update on a stale revision, an expected-last-sequence publish guard */
  WrongLastSequence: 10071,
  /**
   * the same guard on a replicated stream (2.12+) while another message for the subject is still being agreed on:
   * nothing was stored, and asking again once that one is in may succeed
   */
  SubjectInFlight: 10164,
  /** a stream at its limits with discard new: "maximum messages/bytes exceeded" */
  StoreFull: 10077,
} as const

/** The JetStream API error code of `err` (a JetStreamApiError), else undefined. */
export const apiCode = (err: unknown): number | undefined => (err instanceof JetStreamApiError ? err.code : undefined)

/** `err` or one of its causes is of type `kind`: the v3 client wraps (a RequestError around a NoRespondersError). */
function causedBy(err: unknown, kind: abstract new (...args: never[]) => Error): boolean {
  let e: unknown = err
  for (let depth = 0; e instanceof Error && depth < 5; depth++) {
    if (e instanceof kind) return true
    e = (e as Error).cause
  }
  return false
}

/** Nothing answered: no stream stores the subject, no such bucket, or JetStream is off. */
export const isNoResponders = (err: unknown) => causedBy(err, NoRespondersError)
/** The server refused this user the subject: it will not appear by itself, retrying is pointless. */
export const isPermissionDenied = (err: unknown) => causedBy(err, PermissionViolationError)
export const isNotFound = (err: unknown) => apiCode(err) === ApiCode.StreamNotFound || apiCode(err) === ApiCode.ConsumerNotFound
