// mesh/lanes.ts — bounded concurrency with per-key order: items with the same key run one at a time,
// in arrival order; different keys run side by side, up to `concurrency` at once.

export type Lanes<T> = {
  push(item: T): void
  /** not-yet-started items (those `which` selects, default all), removed: a draining worker hands them back */
  takeWaiting(which?: (item: T) => boolean): T[]
  /** resolves when nothing is running or waiting */
  idle(): Promise<void>
  readonly running: number
  readonly size: number
}

/**
 * `run(item, done)` starts an item; it calls `done` when the item no longer holds its lane (finished, or given up
 * on). A callback rather than a promise: a handler that finishes synchronously costs no promise and no microtask,
 * and `done` may be called inside `run` itself. Extra calls of one item's `done` are ignored.
 */
export function lanes<T>(concurrency: number, keyOf: (item: T) => string | undefined, run: (item: T, done: () => void) => void): Lanes<T> {
  if (!(concurrency >= 1)) throw new Error(`concurrency must be ≥ 1, got ${concurrency}`)
  const queues = new Map<string, T[]>()
  // a key's queue stays in the map once empty (deleting and re-adding it per item churned the map: ~2 % of the
  // consume path); empty ones are pruned once they outnumber the rest, so one-off keys cannot pile up
  let empty = 0
  const ready: string[] = []
  let running = 0
  let size = 0
  let unkeyed = 0
  let waiters: (() => void)[] = []
  let pumping = false

  const prune = () => {
    for (const [k, q] of queues) if (q.length === 0) queues.delete(k)
    empty = 0
  }

  const settle = () => {
    if (size > 0) return
    const w = waiters
    waiters = []
    for (const f of w) f()
  }

  const complete = (key: string, queue: T[]) => {
    running--
    size--
    queue.shift()
    if (queue.length > 0) ready.push(key)
    else if (++empty > 64 && empty > queues.size / 2) prune()
    pump()
    settle()
  }

  // returned, not assigned: a named closure per item would cost a defineProperty under tsx (esbuild keepNames)
  const doneFor = (key: string, queue: T[]) => {
    let finished = false
    return () => {
      if (finished) return
      finished = true
      complete(key, queue)
    }
  }

  // not re-entered: an item that completes inside run() frees its slot for this same loop instead of a nested one
  const pump = () => {
    if (pumping) return
    pumping = true
    try {
      while (running < concurrency && ready.length > 0) {
        const key = ready.shift()!
        const queue = queues.get(key)!
        running++
        const done = doneFor(key, queue)
        try {
          run(queue[0]!, done)
        } catch {
          done() // run() owns its errors; a throw must not stall the lane
        }
      }
    } finally {
      pumping = false
    }
  }
  return {
    push(item) {
      const key = keyOf(item) ?? `\u0000${unkeyed++}`
      size++
      const queue = queues.get(key)
      if (queue && queue.length > 0) queue.push(item)
      else {
        if (queue) empty--, queue.push(item)
        else queues.set(key, [item])
        ready.push(key)
      }
      pump()
    },
    takeWaiting(which = () => true) {
      const taken: T[] = []
      const readySet = new Set(ready)
      for (const [key, queue] of queues) {
        // the head of a lane that is not in `ready` is running: keep it
        const from = readySet.has(key) ? 0 : 1
        const kept = queue.slice(0, from)
        for (const item of queue.slice(from)) (which(item) ? taken : kept).push(item)
        queue.splice(0, queue.length, ...kept)
        if (queue.length === 0) {
          queues.delete(key)
          readySet.delete(key)
        }
      }
      empty = 0
      const stillReady = ready.filter((k) => readySet.has(k))
      ready.splice(0, ready.length, ...new Set(stillReady))
      size -= taken.length
      settle()
      return taken
    },
    idle() {
      return size === 0 ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve))
    },
    get running() {
      return running
    },
    get size() {
      return size
    },
  }
}
