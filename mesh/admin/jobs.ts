// mesh/admin/jobs.ts — bulk replay as a background job: started by the API or `logiflow dlq replay --consumer …`,
// run by ops at a capped rate, with progress and a cancel, in the `dlq-jobs` bucket. The job outlives the request
// that started it, and ops: a job whose runner died (no heartbeat) is taken over by a running ops instance and
// resumes where it stood. It never replays an entry twice: it replays only entries still open, a replay it made
// before a crash is recognised by its note in the entry's history, and one published but not yet recorded goes out
// again under the same msg id (`replay:<entry>:<n>`), which the REPLAY stream drops as a duplicate.
import type { KV } from "@nats-io/kv"
import { StatusError } from "itty-router"
import { changeJson, getJson, kvKey } from "../kv.ts"
import type { Logger } from "../log.ts"
import { newId } from "../publish.ts"
import { repeat, sleep } from "../time.ts"
import { type Admin, type DlqEntry, load } from "./entries.ts"
import type { Filter, Summary } from "./list.ts"
import { replayEntry } from "./replay.ts"

export const JOBS = "dlq-jobs"
/** a job's ids are kept in one value: at most this many entries per job (narrow the filter, or start several) */
export const MAX_JOB_ENTRIES = 20_000
export const DEFAULT_RATE = 10
export const MAX_RATE = 1000

export type JobState = "running" | "done" | "cancelled"
export type Job = {
  id: string
  filter: Filter
  /** replays per second at most */
  rate: number
  by: string
  startedAt: string
  state: JobState
  /** open entries the filter selected at start */
  total: number
  /** replayed by this job */
  done: number
  /** refused or failed to publish (the error is in `errors`) */
  failed: number
  /** no longer open when the job came to them (replayed or discarded meanwhile by someone else) */
  skipped: number
  /** entries handled so far, in order: where a resumed job goes on */
  position: number
  /** the ops instance running it */
  owner?: string
  /** how often another instance took it over from one that died */
  resumed: number
  cancel?: { by: string; at: string }
  endedAt?: string
  errors: { id: string; error: string }[]
}

const idsKey = (id: string) => `${id}.ids`
const jobNote = (id: string) => `job ${id}`

/** Creates a job over the open entries `select` returns for `f` (oldest first); ops' runner picks it up. */
export async function startJob(
  kv: KV,
  select: (f: Filter) => Summary[] | Promise<Summary[]>,
  f: Filter,
  by: string,
  rate = DEFAULT_RATE,
): Promise<Job> {
  const { state, ...rest } = f
  if (state && state !== "open") throw new StatusError(400, "bulk replay takes open entries only; replay others one by one")
  if (Object.keys(rest).length === 0)
    throw new StatusError(400, "give at least one filter (eventId, key, consumer, subject, reason, since, until)")
  if (typeof rate !== "number" || !(rate > 0) || rate > MAX_RATE)
    throw new StatusError(400, `rate must be a number of replays per second, above 0 and at most ${MAX_RATE}`)
  const ids = (await select({ ...rest, state: "open" })).map((s) => s.id)
  if (ids.length > MAX_JOB_ENTRIES)
    throw new StatusError(400, `the filter selects ${ids.length} open entries; one job takes ${MAX_JOB_ENTRIES} at most: narrow it`)
  const id = `job-${newId()}`
  const job: Job = {
    id,
    filter: { ...rest, state: "open" },
    rate,
    by,
    startedAt: new Date().toISOString(),
    state: ids.length ? "running" : "done",
    total: ids.length,
    done: 0,
    failed: 0,
    skipped: 0,
    position: 0,
    resumed: 0,
    errors: [],
    ...(ids.length ? {} : { endedAt: new Date().toISOString() }),
  }
  await kv.put(kvKey(idsKey(id)), JSON.stringify(ids))
  await kv.create(kvKey(id), JSON.stringify(job))
  return job
}

export async function getJob(kv: KV, id: string): Promise<{ job: Job; revision: number }> {
  const e = await kv.get(kvKey(id))
  if (e?.operation !== "PUT" || !e.length || id.endsWith(".ids")) throw new StatusError(404, `no replay job "${id}"`)
  return { job: e.json<Job>(), revision: e.revision }
}

/** Read–modify–write of a job record, again on what is there when another writer (a cancel) got in between. */
const changeJob = (kv: KV, id: string, fn: (j: Job) => Job): Promise<Job> =>
  changeJson(kv, id, () => getJob(kv, id).then(({ job, revision }) => ({ value: job, revision })), fn, 20)

/** Asks the job to stop; the runner stops before its next entry and records it (`waitMs`: wait for that). */
export async function cancelJob(kv: KV, id: string, by: string, waitMs = 0): Promise<Job> {
  let job = await changeJob(kv, id, (j) => (j.state !== "running" || j.cancel ? j : { ...j, cancel: { by, at: new Date().toISOString() } }))
  for (const end = Date.now() + waitMs; job.state === "running" && Date.now() < end; ) {
    await sleep(50)
    job = (await getJob(kv, id)).job
  }
  return job
}

export async function listJobs(kv: KV): Promise<Job[]> {
  const out: Job[] = []
  for await (const k of await kv.keys()) {
    if (k.endsWith(".ids")) continue
    const j = await getJson<Job>(kv, k)
    if (j) out.push(j)
  }
  return out.sort((x, y) => y.startedAt.localeCompare(x.startedAt))
}

export type Runner = { stop(): Promise<void> }

/**
 * Runs every job that is running and has no live runner: this instance's own, and those of an ops instance whose
 * heartbeat is gone (`alive`). Looks for such jobs every `everyMs`.
 */
export function runJobs(a: Admin, kv: KV, me: string, alive: (owner: string) => Promise<boolean>, log: Logger, everyMs = 1000): Runner {
  const mine = new Map<string, Promise<void>>()
  let stopped = false
  const look = async () => {
    for (const j of await listJobs(kv)) {
      if (j.state !== "running" || mine.has(j.id)) continue
      if (j.owner && j.owner !== me && (await alive(j.owner))) continue
      const claimed = await changeJob(kv, j.id, (x) =>
        x.owner === j.owner ? { ...x, owner: me, resumed: x.owner ? x.resumed + 1 : x.resumed } : x,
      ).catch(() => undefined)
      if (claimed?.owner !== me) continue
      if (j.owner)
        log.warn("resuming a replay job whose runner stopped", { job: j.id, from: j.owner, position: j.position, total: j.total })
      mine.set(
        j.id,
        run(claimed).finally(() => mine.delete(j.id)),
      )
    }
  }
  const run = async (job: Job) => {
    const ids = (await getJson<string[]>(kv, idsKey(job.id))) ?? []
    const gap = 1000 / job.rate
    const began = Date.now()
    let sent = 0
    for (let i = job.position; i < ids.length && !stopped; i++) {
      const now = (await getJob(kv, job.id)).job
      if (now.cancel) break
      const id = ids[i]!
      const step = await replayStep(a, id, job)
      await changeJob(kv, job.id, (j) => ({
        ...j,
        position: i + 1,
        done: j.done + (step.outcome === "done" ? 1 : 0),
        failed: j.failed + (step.outcome === "failed" ? 1 : 0),
        skipped: j.skipped + (step.outcome === "skipped" ? 1 : 0),
        errors: step.error ? [...j.errors, { id, error: step.error }].slice(-20) : j.errors,
      }))
      if (step.outcome !== "skipped") {
        sent++
        // in short steps: a cancel during a long wait (a low rate) takes effect at once, not after it
        for (let wait = began + sent * gap - Date.now(); wait > 0 && !stopped; wait = began + sent * gap - Date.now()) {
          await sleep(Math.min(wait, 500))
          if (wait > 500 && (await getJob(kv, job.id)).job.cancel) break
        }
      }
    }
    if (stopped) return
    const end = await changeJob(kv, job.id, (j) => ({ ...j, state: j.cancel ? "cancelled" : "done", endedAt: new Date().toISOString() }))
    log.info("replay job ended", {
      job: end.id,
      state: end.state,
      done: end.done,
      failed: end.failed,
      skipped: end.skipped,
      total: end.total,
    })
  }
  const looking = repeat(everyMs, () =>
    look().catch((err) => log.warn("replay jobs: could not look for work", { error: (err as Error).message })),
  )
  return {
    async stop() {
      stopped = true
      looking.stop()
      await Promise.allSettled(mine.values())
    },
  }
}

/** One entry of a job: replayed now, replayed by this job before a restart, or no longer open. */
async function replayStep(a: Admin, id: string, job: Job): Promise<{ outcome: "done" | "failed" | "skipped"; error?: string }> {
  let entry: DlqEntry
  try {
    entry = (await load(a.kv, id)).entry
  } catch (err) {
    return { outcome: "failed", error: (err as Error).message }
  }
  if (entry.state !== "open") {
    const ours = entry.history.some((h) => h.action === "replayed" && h.note?.split("; ").includes(jobNote(job.id)))
    return { outcome: ours ? "done" : "skipped" }
  }
  try {
    await replayEntry(a, id, job.by, jobNote(job.id))
    return { outcome: "done" }
  } catch (err) {
    return { outcome: "failed", error: (err as Error).message }
  }
}
