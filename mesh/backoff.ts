// mesh/backoff.ts — client-side redelivery delays for a handler's errors (rule 3), and what a consumer's server-side
// backoff (which spaces out redeliveries after ack timeouts: crashes, hangs) does to them.

export type Backoff = { initialMs: number; maxMs: number; factor: number; jitter: number }

export const defaultBackoff: Backoff = { initialMs: 500, maxMs: 60_000, factor: 2, jitter: 0.2 }

/**
 * Delay before delivery `n + 1`, after `n` failed deliveries: initial·factorⁿ⁻¹, capped, ±jitter.
 * With factor 2 and jitter ≤ 0.33 each delay is longer than the one before until the cap.
 */
export function backoffDelay(deliveries: number, b: Backoff = defaultBackoff, random = Math.random): number {
  const raw = Math.min(b.maxMs, b.initialMs * b.factor ** Math.max(0, deliveries - 1))
  return Math.round(raw * (1 - b.jitter + 2 * b.jitter * random()))
}

/** A consumer's server-side redelivery waits, as the server reported them (empty: none, every wait is ack_wait). */
export type ServerBackoff = { ackWaitMs: number; backoffMs: readonly number[] }

/**
 * What to pass to nak() so that delivery `deliveries + 1` comes `delayMs` later on a consumer with a server-side
 * backoff. The server dates a nak'd message at now − ack_wait + delay and redelivers it once backoff[n − 1] (the
 * last entry past the list) has passed since then, so a plain nak(delay) on delivery n would wait
 * backoff[n − 1] − ack_wait longer: measured on 2.9.10 and 2.15.3 with backoff 1, 2, 4, 8 s, a 300 ms nak came back
 * after 0.3, 1.3, 3.3 and 7.3 s. Subtracting that makes the delay exact on both; the result may be negative, which
 * both servers take as that offset. 0 would read as a plain nak (at once), which is what it means.
 */
export function nakDelay(delayMs: number, deliveries: number, s: ServerBackoff): number {
  if (s.backoffMs.length === 0) return delayMs
  const wait = s.backoffMs[Math.min(Math.max(0, deliveries - 1), s.backoffMs.length - 1)]!
  return delayMs - (wait - s.ackWaitMs)
}
