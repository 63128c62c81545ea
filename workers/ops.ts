// workers/ops.ts — the safety net and the operator's desk. Files the dead letters no worker could file (a crash or
// hang on the final delivery, seen through the server's MAX_DELIVERIES advisory), indexes every DLQ entry in the
// `dlq-entries` bucket, and serves the DLQ API and the dashboard (8084, OPS_PORT) to named operators.
import type { IRequest } from "itty-router"
import {
  type Admin,
  checkDeadLetter,
  ENTRIES,
  fileFromAdvisory,
  indexDeadLetter,
  openGroups,
  parseAdvisory,
  parsePauseAdvisory,
  pauseConsumer,
  pauseEnd,
  resumeConsumer,
  status,
} from "../mesh/admin/mod.ts"
import {
  cookie,
  type Operators,
  operatorsFromEnv,
  presented,
  randomSecret,
  type RawHandler,
  readJson,
  type Runtime,
  runWhenMain,
  sameOrigin,
  sessionCookie,
  signToken,
  verifyToken,
  worker,
  type Worker,
  type WorkerOptions,
} from "../mesh/mod.ts"
import { registerFullness } from "../mesh/admin/fullness.ts"
import { dlqDesk } from "./ops-dlq.ts"
import { lagSampler } from "./ops-lag.ts"
import { pageRoutes } from "./ops-pages.ts"

export type OpsConfig = {
  /** named operators (LOGIFLOW_OPERATORS or LOGIFLOW_OPERATORS_FILE, read at start); none = the API answers 503 */
  operators?: Operators
  /** delays between retries of an advisory or DLQ message ops failed to handle (default: the runtime's) */
  backoff?: WorkerOptions["backoff"]
}

const COOKIE = "logiflow_ops"
// a session outlives a working day, not a week; ops restarting ends every session (its key lives in memory only)
const SESSION_SECONDS = 12 * 3600
type Signed = IRequest & { operator: string }

const denied = (status: number, error: string, headers: Record<string, string> = {}) =>
  Response.json({ status, error }, { status, headers })

/**
 * Every read and every action needs a named operator: `Authorization: Bearer <token>`, or the session cookie that
 * GET /login?token= sets for the dashboard. A POST carried by that cookie must come from this origin's own page
 * (Sec-Fetch-Site or Origin), so another site cannot make an operator's browser replay or discard (CSRF).
 */
function operatorGate(operators: Operators, sessionKey: string) {
  const disabled =
    "the ops API is disabled: no operators are configured; set LOGIFLOW_OPERATORS (or LOGIFLOW_OPERATORS_FILE) to name:token entries"
  const who = async (request: Request): Promise<{ name?: string; via?: "bearer" | "cookie"; tried: boolean }> => {
    const bearer = presented(request)
    if (bearer) return { name: await operators.find(bearer), via: "bearer", tried: true }
    const session = cookie(request, COOKIE)
    const name = session ? (await verifyToken(sessionKey, session))?.subject : undefined
    // an operator removed from the list loses a session it still holds
    return { name: name && operators.names.includes(name) ? name : undefined, via: "cookie", tried: !!session }
  }
  const gate = (mutation: boolean) => async (request: IRequest) => {
    if (operators.names.length === 0) return denied(503, disabled)
    const w = await who(request)
    if (!w.name) {
      const error = w.tried
        ? "unknown operator token, or the session has expired"
        : "sign in: open GET /login?token=<your operator token>, or send Authorization: Bearer <token>"
      return denied(401, error, { "www-authenticate": 'Bearer realm="logiflow-ops"' })
    }
    if (mutation && w.via === "cookie" && !sameOrigin(request))
      return denied(403, "cross-site request refused: actions with the session cookie must come from the ops dashboard itself")
    ;(request as Signed).operator = w.name
  }
  const login = async (request: IRequest) => {
    if (operators.names.length === 0) return denied(503, disabled)
    const name = await operators.find(new URL(request.url).searchParams.get("token") ?? "")
    if (!name) return signInFailed()
    const session = await signToken(sessionKey, name, Math.floor(Date.now() / 1000) + SESSION_SECONDS)
    const headers = {
      location: "/",
      "set-cookie": sessionCookie(request, COOKIE, session, SESSION_SECONDS),
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
    }
    return new Response(null, { status: 303, headers })
  }
  const logout = (request: IRequest) =>
    new Response(null, { status: 303, headers: { location: "/", "set-cookie": sessionCookie(request, COOKIE, "", 0) } })
  return { read: gate(false), act: gate(true), login, logout }
}

const signInFailed = () =>
  new Response(
    '<!doctype html><html lang="en"><meta charset="utf-8"><title>LogiFlow ops</title><p>That operator token was not accepted. <a href="/">Back to sign in</a></p></html>',
    {
      status: 401,
      headers: { "content-type": "text/html; charset=utf-8", "content-security-policy": "default-src 'none'", "cache-control": "no-store" },
    },
  )

export function opsWorker(cfg: OpsConfig = {}): Worker {
  let rt: Runtime | undefined
  let admin: Promise<Admin> | undefined
  // handlers may run before onStart (consumers are bound first), so the clients are made on first use
  const adminOf = () =>
    (admin ??= (async () => ({ js: rt!.js, jsm: await rt!.js.jetstreamManager(), kv: await rt!.kv(ENTRIES) }))().catch((err) => {
      admin = undefined
      throw err
    }))
  const noop = () => {}
  let counted: { advisories(outcome: string): void; indexed(created: boolean): void; refused(): void; failed(stream: string): void } = {
    advisories: noop,
    indexed: noop,
    refused: noop,
    failed: noop,
  }
  // a failure of the net itself is retried by the runtime for as long as it takes (never dead-lettered): counted here
  const net =
    (stream: string, handle: RawHandler): RawHandler =>
    async (msg, ctx) => {
      try {
        await handle(msg, ctx)
      } catch (err) {
        counted.failed(stream)
        throw err
      }
    }

  // the live index of the entries and the bulk replay runner (workers/ops-dlq.ts); lag samples for the sparklines
  const desk = dlqDesk(() => rt!, adminOf)
  const lag = lagSampler()

  return worker({
    name: "ops",
    backoff: cfg.backoff,
    onStart: async (r) => {
      await desk.start(r)
      lag.start(async () => (await adminOf()).jsm)
    },
    onStop: async () => {
      lag.stop()
      await desk.stop()
    },
    raw: {
      ADVISORIES: net("ADVISORIES", async (msg, ctx) => {
        // any pause or resume, whoever asked (the dashboard, logiflow, the nats CLI): the record of the breaker
        const pause = parsePauseAdvisory(msg.data)
        if (pause)
          return void ctx.log.warn(pause.paused ? "consumer paused" : "consumer resumed", {
            stream: pause.stream,
            consumer: pause.consumer,
            until: pause.paused ? pause.pause_until : undefined,
          })
        const adv = parseAdvisory(msg.data)
        if (!adv) return void ctx.log.warn("not an advisory; skipped", { subject: msg.subject, seq: msg.seq })
        const outcome = await fileFromAdvisory(await adminOf(), adv, msg.subject)
        counted.advisories(outcome)
        const where = { stream: adv.stream, consumer: adv.consumer, seq: adv.stream_seq, deliveries: adv.deliveries }
        if (outcome === "filed") ctx.log.warn("dead-lettered from the max-deliveries advisory", where)
        if (outcome === "effect-stored") ctx.log.info("max deliveries, but the event's effect is stored: nothing to file", where)
      }),
      DLQ: net("DLQ", async (msg, ctx) => {
        const a = await adminOf()
        const m = { subject: msg.subject, headers: msg.headers, seq: msg.seq, time: msg.time, data: msg.data }
        const checked = await checkDeadLetter(a, m)
        // a worker may publish only dlq.*.<itself>: what does not match its original is forged or broken, never an entry
        if (!checked.ok)
          return void (counted.refused(),
          ctx.log.warn("dead letter refused; not indexed", { subject: msg.subject, dlqSeq: msg.seq, why: checked.why }))
        const { entry, created } = await indexDeadLetter(a.kv, m, checked.entry)
        counted.indexed(created)
        ctx.log.info(created ? "dlq entry indexed" : "duplicate dead letter; the entry was already indexed", {
          id: entry.id,
          dlqSeq: msg.seq,
          state: entry.state,
        })
      }),
    },
    routes(router, runtime) {
      rt = runtime
      const operators = cfg.operators ?? operatorsFromEnv()
      if (operators.names.length === 0)
        runtime.log.warn("no operators configured: the ops API answers 503 until LOGIFLOW_OPERATORS (or LOGIFLOW_OPERATORS_FILE) is set")
      const { read, act, login, logout } = operatorGate(operators, randomSecret())
      const advisories = runtime.metrics.counter(
        "logiflow_ops_advisories_total",
        "Advisories handled, by outcome (filed, already-filed, effect-stored, ignored)",
      )
      const indexed = runtime.metrics.counter(
        "logiflow_ops_dlq_indexed_total",
        "DLQ messages indexed; created=false: a duplicate of an indexed failure",
      )
      const refused = runtime.metrics.counter(
        "logiflow_ops_dlq_refused_total",
        "DLQ messages not indexed: forged or broken (they do not match their original)",
      )
      const failures = runtime.metrics.counter(
        "logiflow_ops_failures_total",
        "Advisories and DLQ messages ops failed to handle, by stream (each is retried until it succeeds)",
        ["stream"],
      )
      counted = {
        advisories: (outcome) => advisories.inc({ outcome }),
        indexed: (created) => indexed.inc({ created: String(created) }),
        refused: () => refused.inc(),
        failed: (stream) => failures.inc({ stream }),
      }
      desk.metrics(runtime)
      // stream fullness against the limits, consumer lag and oldest unacked age: what deploy/alerts reads
      registerFullness(runtime.metrics, async () => (await adminOf()).jsm)
      // generated from contracts/ by `npm run asyncapi`; a JSON import works unchanged on Node and Deno
      let contract: Promise<unknown> | undefined
      router.get(
        "/asyncapi.json",
        read,
        async () =>
          (await (contract ??= import("../contracts/asyncapi.json", { with: { type: "json" } }).then((m) => m.default))) as object,
      )

      // the pages hold no data: they load without a session and say how to sign in until there is one
      pageRoutes(router, { read, admin: adminOf, lag })
      router.get("/login", login)
      router.get("/logout", logout)
      router.get("/api/session", read, (req: Signed) => ({ operator: req.operator }))
      router.get("/api/status", read, async () => {
        const index = await desk.index()
        return status(await adminOf(), async () => openGroups(index.counts()))
      })
      desk.routes(router, read, act)
      // the circuit breaker (mesh/admin/pause.ts): events wait in the stream instead of burning deliveries
      router.post("/api/consumers/:stream/:consumer/pause", act, async (req: Signed) => {
        const body = (await readJson(req, 4096)) ?? {}
        if (typeof body !== "object" || Array.isArray(body))
          return Response.json(
            { status: 400, error: 'body must be a JSON object: { "for": "30m" } or { "until": "<RFC 3339>" }' },
            { status: 400 },
          )
        const until = pauseEnd(body as Record<string, unknown>)
        const r = await pauseConsumer(
          { jsm: (await adminOf()).jsm, nc: runtime.nc },
          req.params.stream!,
          req.params.consumer!,
          until,
          req.operator,
        )
        runtime.log.warn("consumer pause requested", { stream: r.stream, consumer: r.consumer, until: r.pauseUntil, by: r.by })
        return r
      })
      router.post("/api/consumers/:stream/:consumer/resume", act, async (req: Signed) => {
        const r = await resumeConsumer(
          { jsm: (await adminOf()).jsm, nc: runtime.nc },
          req.params.stream!,
          req.params.consumer!,
          req.operator,
        )
        runtime.log.warn("consumer resume requested", { stream: r.stream, consumer: r.consumer, by: r.by })
        return r
      })
    },
  })
}

const ops = opsWorker()
export default ops
runWhenMain(import.meta, ops)
