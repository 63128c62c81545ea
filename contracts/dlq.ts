// contracts/dlq.ts — the headers of a dead-letter entry and of a replayed event: what producers of DLQ entries
// (every worker, ops' advisory path) write and what readers (ops, `logiflow dlq`, the nats CLI) read.

/** Added to the original's headers in a DLQ entry on `dlq.<stream>.<consumer>`: where, how often and why it failed. */
export const DLQ = {
  stream: "logiflow-dlq-stream",
  consumer: "logiflow-dlq-consumer",
  seq: "logiflow-dlq-seq",
  subject: "logiflow-dlq-subject",
  deliveries: "logiflow-dlq-deliveries",
  reason: "logiflow-dlq-reason",
  error: "logiflow-dlq-error",
  failedAt: "logiflow-dlq-failed-at",
  /** when the original was stored in its stream: the start of the once-guard horizon for a replay */
  storedAt: "logiflow-dlq-stored-at",
  /** "by-reference": the entry carries no body (too large for the DLQ); the original is read from its stream */
  payload: "logiflow-dlq-payload",
} as const

/** The value of `DLQ.payload` on an entry that names its original instead of copying it. */
export const BY_REFERENCE = "by-reference"

/** Set on a replayed event: the DLQ entry it came from, and where the original was stored. */
export const REPLAY = {
  of: "logiflow-replay-of",
  stream: "logiflow-replay-stream",
  seq: "logiflow-replay-seq",
  subject: "logiflow-replay-subject",
} as const
