// mesh/time.ts — waiting, bounded; work on a period.

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

/**
 * Runs `task` now, then again `everyMs` after each run has settled (a slow run never overlaps the next), until
 * `stop()`. The task handles its own errors: a rejection only ends that run.
 */
export function repeat(everyMs: number, task: () => Promise<unknown>): { stop(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined
  let stopped = false
  const run = () => {
    if (stopped) return
    void task()
      .catch(() => {})
      .finally(() => {
        if (!stopped) timer = setTimeout(run, everyMs)
      })
  }
  run()
  return {
    stop() {
      stopped = true
      clearTimeout(timer)
    },
  }
}
