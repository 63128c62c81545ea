// workers/ops-dlq.ts — the dead-letter desk's HTTP API, served by ops (workers/ops.ts) to named operators: find
// entries by what failed, correct a payload, check it, dry-run the consumer's handler on it, replay, discard, and
// bulk replays as background jobs. Every action is recorded under the operator's name.
import type { IRequest, RouterType } from "itty-router"
import {
  type Admin,
  cancelJob,
  dryRun,
  editEntry,
  editView,
  getJob,
  issuesWith,
  eventOfEntry,
  ENTRIES,
  JOBS,
  latestValues,
  type LiveIndex,
  liveIndex,
  type Runner,
  runJobs,
  listJobs,
  load,
  MAX_EDIT_BYTES,
  pruneGone,
  discardEntry,
  replayEntry,
  showEntry,
  startJob,
  toFilter,
} from "../mesh/admin/mod.ts"
import { HEARTBEATS } from "../contracts/mod.ts"
import { envInt, type Handlers, readJson, repeat, type Runtime } from "../mesh/mod.ts"
import { dlqEditorScript } from "./ops-dlq-page.ts"

type Signed = IRequest & { operator: string }
type Gate = (request: IRequest) => Promise<Response | undefined>

export type DeskDeps = {
  read: Gate
  act: Gate
  admin(): Promise<Admin>
  index(): Promise<LiveIndex>
  /** the consuming workers' handlers, for dry runs */
  handlers(): Promise<Record<string, Handlers>>
}

const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)
const bad = (error: string) => Response.json({ status: 400, error }, { status: 400 })

async function objectBody(req: IRequest, max: number): Promise<Record<string, unknown> | Response> {
  const body = (await readJson(req, max)) ?? {}
  return typeof body === "object" && !Array.isArray(body) ? (body as Record<string, unknown>) : bad("body must be a JSON object")
}

export function dlqRoutes(router: RouterType<IRequest>, rt: Runtime, d: DeskDeps): void {
  const { read, act } = d
  const jobs = () => rt.kv(JOBS)

  // the dashboard's dead-letter editor: code only, no data (the page loads it with its nonce)
  router.get(
    "/ops-dlq.js",
    () =>
      new Response(dlqEditorScript, {
        headers: { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store", "x-content-type-options": "nosniff" },
      }),
  )
  router.get("/api/dlq", read, async ({ query }) => {
    const { limit, cursor, ...filter } = Object.fromEntries(Object.entries(query).map(([k, v]) => [k, one(v)]))
    return (await d.index()).page(toFilter(filter), { limit: limit ? Number(limit) : 50, cursor })
  })
  // open entries by stream, consumer and reason, and every state: kept as entries change, never counted per request
  router.get("/api/dlq/counts", read, async () => (await d.index()).counts().filter((c) => c.entries > 0))

  // bulk replay: a background job at a capped rate (mesh/admin/jobs.ts); the request only starts it
  const start = async (req: Signed) => {
    const body = await objectBody(req, 16 * 1024)
    if (body instanceof Response) return body
    const { rate, ...filter } = body
    const index = await d.index()
    const job = await startJob(await jobs(), (f) => index.select(f), toFilter(filter), req.operator, rate as number | undefined)
    rt.log.info("replay job started", { job: job.id, total: job.total, rate: job.rate, by: job.by })
    return Response.json(job, { status: 202, headers: { location: `/api/dlq/jobs/${job.id}` } })
  }
  router.post("/api/dlq/jobs", act, start)
  router.post("/api/dlq/replay", act, start)
  router.get("/api/dlq/jobs", read, async () => listJobs(await jobs()))
  router.get("/api/dlq/jobs/:id", read, async ({ params }) => (await getJob(await jobs(), params.id!)).job)
  // answers once the runner has stopped (so done is final), or after 10 s with the cancel still pending
  router.delete("/api/dlq/jobs/:id", act, async (req: Signed) => cancelJob(await jobs(), req.params.id!, req.operator, 10_000))

  router.get("/api/dlq/:id", read, async ({ params }) => showEntry(await d.admin(), params.id!))
  // the edit form: generated from the event's schema, with the payload as it stands and its issues
  router.get("/api/dlq/:id/edit", read, async ({ params }) => editView(await d.admin(), params.id!))
  router.post("/api/dlq/:id/check", read, async (req) => {
    const body = await objectBody(req, MAX_EDIT_BYTES + 1024)
    if (body instanceof Response) return body
    const { entry } = await load((await d.admin()).kv, req.params.id!)
    const issues = issuesWith(eventOfEntry(entry), body.payload)
    return { valid: issues.length === 0, issues }
  })
  router.post("/api/dlq/:id/edit", act, async (req: Signed) => {
    const body = await objectBody(req, MAX_EDIT_BYTES + 1024)
    if (body instanceof Response) return body
    if (!("payload" in body)) return bad('body must be { "payload": <the corrected event data> }')
    const entry = await editEntry(await d.admin(), req.params.id!, body.payload, req.operator)
    rt.log.info("dlq entry edited", { id: entry.id, by: req.operator, edit: entry.edit?.n })
    return entry
  })
  // runs the consumer's real handler on the payload here, in ops: nothing is published, no state is written
  router.post("/api/dlq/:id/dry-run", read, async (req) => {
    const body = await objectBody(req, MAX_EDIT_BYTES + 1024)
    if (body instanceof Response) return body
    return dryRun(await d.admin(), req.params.id!, await d.handlers(), body.payload)
  })
  router.post("/api/dlq/:id/replay", act, async (req: Signed) => replayEntry(await d.admin(), req.params.id!, req.operator))
  router.post("/api/dlq/:id/discard", act, async (req: Signed) => discardEntry(await d.admin(), req.params.id!, req.operator))
}

/**
 * The desk's state in ops: the live index of the entries (one read of the bucket at start, then a watch), the runner
 * of bulk replay jobs, the pruning of entries whose DLQ message is gone, the open-entries gauge, and the routes above.
 */
export function dlqDesk(rt: () => Runtime, admin: () => Promise<Admin>) {
  const pruneEveryMs = envInt("OPS_PRUNE_EVERY_MS", 3600_000)
  let live: Promise<LiveIndex> | undefined
  const build = () =>
    (live ??= (async () => {
      const l = await liveIndex(await rt().kv(ENTRIES), rt().log)
      await l.ready
      return l
    })().catch((err) => {
      live = undefined
      throw err
    }))
  // an index whose watch ended (the bucket deleted and made again, say) is replaced, not trusted
  const index = async (): Promise<LiveIndex> => {
    const l = await build()
    if (await l.current()) return l
    l.stop()
    if (live && (await live.catch(() => undefined)) === l) live = undefined
    return build()
  }
  let runner: Runner | undefined
  let pruning: { stop(): void } | undefined
  const prune = async () => {
    try {
      const gone = await pruneGone(await admin(), await index())
      if (gone.length) rt().log.info("dlq entries purged: their DLQ messages are gone (age or a purge)", { entries: gone.length })
    } catch (err) {
      rt().log.warn("dlq entries not pruned this time", { error: (err as Error).message })
    }
  }
  // a job's runner is alive while its ops instance beats
  const alive = async (instance: string) =>
    (await latestValues<{ worker: string; instance: string }>(rt().js, HEARTBEATS)).some(
      (w) => w.worker === "ops" && w.instance === instance,
    )
  // the workers' modules are loaded on the first dry run, not at every start of ops
  const handlers = () => import("./handlers.ts").then((m) => m.handlers)
  return {
    index,
    start: async (runtime: Runtime) => {
      await index()
      runner = runJobs(await admin(), await runtime.kv(JOBS), runtime.instance, alive, runtime.log)
      pruning = repeat(pruneEveryMs, prune)
    },
    stop: async () => {
      pruning?.stop()
      await runner?.stop()
      ;(await live?.catch(() => undefined))?.stop()
    },
    metrics(runtime: Runtime) {
      runtime.metrics.gauge("logiflow_dlq_open_entries", "Open DLQ entries by stream, consumer and reason (kept as entries change)", {
        labelNames: ["stream", "consumer", "reason"],
        collect: async () =>
          (await index())
            .counts()
            .filter((c) => c.state === "open")
            .map((c): [Record<string, string>, number] => [{ stream: c.stream, consumer: c.consumer, reason: c.reason }, c.entries]),
      })
    },
    routes: (router: RouterType<IRequest>, read: Gate, act: Gate) => dlqRoutes(router, rt(), { read, act, admin, index, handlers }),
  }
}
