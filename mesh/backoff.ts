// mesh/backoff.ts — client-side redelivery delays. Server-side `backoff` combined with nak(delay)
// misbehaves on 2.9.10, so the delay is always computed here and passed to nak().

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
