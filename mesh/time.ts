// mesh/time.ts — waiting, bounded.

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** `p`, or a rejection with `timeoutError()` after `ms`; `p` itself keeps running (a publish may still land later). */
export function withTimeout<T>(p: Promise<T>, ms: number, timeoutError = () => new Error(`timed out after ${ms} ms`)): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(timeoutError()), ms)
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    )
  })
}
