// mesh/rate.ts — MAX_RATE: how many events per second one process takes from the server at most. A worker coming
// back to a backlog otherwise drains it as fast as the CPU and the broker allow, and on a shared box (the edge, a
// small node) that is CPU and broker time taken from its neighbours: routing answers slower while invoice catches
// up (bench/cascade.ts, "invoice back"). The limit applies where messages are pulled, so nothing is held waiting.

export type Rate = {
  /** whole events that may be pulled now */
  available(): number
  take(n: number): void
  /** ms until `n` events may be pulled */
  msUntil(n: number): number
  /** what may be taken at once after a quiet spell; by default a tenth of a second's worth (one pull), at least 1 */
  readonly burst: number
}

export function rateLimit(perSecond: number, now = () => performance.now(), burst = Math.max(1, Math.ceil(perSecond / 10))): Rate {
  if (!(perSecond > 0) || !Number.isFinite(perSecond))
    throw new Error(`MAX_RATE must be a positive number of events per second, got ${perSecond}`)
  let tokens = burst
  let at = now()
  const refill = () => {
    const t = now()
    tokens = Math.min(burst, tokens + ((t - at) * perSecond) / 1000)
    at = t
  }
  return {
    burst,
    available() {
      refill()
      return Math.max(0, Math.floor(tokens))
    },
    take(n) {
      refill()
      tokens -= n
    },
    msUntil(n) {
      refill()
      return tokens >= n ? 0 : Math.ceil(((n - tokens) * 1000) / perSecond)
    },
  }
}
