// workers/ops.ts — the safety net and the operator's desk. Files the dead letters no worker could file (a crash or
// hang on the final delivery, seen through the server's MAX_DELIVERIES advisory), indexes every DLQ entry in the
// `dlq-entries` bucket, and serves the DLQ API and the dashboard (8084, OPS_PORT).
import type { IRequest } from "itty-router"
import {
  type Admin,
  allEntries,
  discardEntry,
  ENTRIES,
  fileFromAdvisory,
  indexDeadLetter,
  listEntries,
  parseAdvisory,
  replayEntry,
  replayMatching,
  showEntry,
  status,
  toFilter,
} from "../mesh/admin/mod.ts"
import { env, readJson, type Runtime, runWhenMain, worker, type Worker } from "../mesh/mod.ts"
import { dashboardPage } from "./ops-dashboard.ts"

export type OpsConfig = {
  /** bearer token for mutations (replay, discard); unset = mutations refused with 503 */
  token?: string
}

export const opsConfig = (): OpsConfig => ({ token: env("LOGIFLOW_OPS_TOKEN") || undefined })

const sha256 = async (s: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)))

/** Compares digests in constant time, so response timing says nothing about how much of a guess was right. */
export async function sameSecret(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([sha256(given), sha256(expected)])
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!
  return diff === 0
}

/** undefined when the request may mutate; otherwise the refusal. */
async function refusal(request: Request, token: string | undefined): Promise<Response | undefined> {
  if (!token) {
    return Response.json(
      { status: 503, error: "mutations are disabled: set LOGIFLOW_OPS_TOKEN for the ops worker and send it as Authorization: Bearer <token>" },
      { status: 503 },
    )
  }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.get("authorization") ?? "")
  if (m && (await sameSecret(m[1]!, token))) return undefined
  return Response.json(
    { status: 401, error: m ? "wrong bearer token" : "missing bearer token (Authorization: Bearer <LOGIFLOW_OPS_TOKEN>)" },
    { status: 401, headers: { "www-authenticate": 'Bearer realm="logiflow-ops"' } },
  )
}

const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)

export function opsWorker(cfg: OpsConfig = opsConfig()): Worker {
  let rt: Runtime | undefined
  let admin: Promise<Admin> | undefined
  // handlers may run before onStart (consumers are bound first), so the clients are made on first use
  const adminOf = () =>
    (admin ??= (async () => ({ js: rt!.js, jsm: await rt!.js.jetstreamManager(), kv: await rt!.kv(ENTRIES) }))().catch((err) => {
      admin = undefined
      throw err
    }))
  let counted: { advisories(outcome: string): void; indexed(created: boolean): void } = { advisories() {}, indexed() {} }

  const mutation = (fn: (req: IRequest, a: Admin) => Promise<unknown>) => async (req: IRequest) =>
    (await refusal(req, cfg.token)) ?? fn(req, await adminOf())

  return worker({
    name: "ops",
    raw: {
      ADVISORIES: async (msg, ctx) => {
        const adv = parseAdvisory(msg.data)
        if (!adv) return void ctx.log.warn("not an advisory; skipped", { subject: msg.subject, seq: msg.seq })
        const outcome = await fileFromAdvisory(await adminOf(), adv)
        counted.advisories(outcome)
        if (outcome === "filed") {
          ctx.log.warn("dead-lettered from the max-deliveries advisory", { stream: adv.stream, consumer: adv.consumer, seq: adv.stream_seq, deliveries: adv.deliveries })
        }
      },
      DLQ: async (msg, ctx) => {
        const { entry, created } = await indexDeadLetter((await adminOf()).kv, { subject: msg.subject, headers: msg.headers, seq: msg.seq, time: msg.time })
        counted.indexed(created)
        ctx.log.info(created ? "dlq entry indexed" : "duplicate dead letter; the entry was already indexed", { id: entry.id, dlqSeq: msg.seq })
      },
    },
    routes(router, runtime) {
      rt = runtime
      const advisories = runtime.metrics.counter("logiflow_ops_advisories_total", "Advisories handled, by outcome (filed, already-filed, ignored)")
      const indexed = runtime.metrics.counter("logiflow_ops_dlq_indexed_total", "DLQ messages indexed; created=false: a duplicate of an indexed failure")
      counted = { advisories: (outcome) => advisories.inc({ outcome }), indexed: (created) => indexed.inc({ created: String(created) }) }
      runtime.metrics.gauge("logiflow_dlq_open_entries", "Open DLQ entries by consumer and reason (read from dlq-entries at scrape)", {
        labelNames: ["consumer", "reason"],
        collect: async () => {
          const open = new Map<string, [Record<string, string>, number]>()
          for (const e of await allEntries(await adminOf())) {
            if (e.state !== "open") continue
            const row = open.get(`${e.consumer}\u0000${e.reason}`) ?? [{ consumer: e.consumer, reason: e.reason }, 0]
            open.set(`${e.consumer}\u0000${e.reason}`, [row[0], row[1] + 1])
          }
          return [...open.values()]
        },
      })
      // generated from contracts/ by `npm run asyncapi`; a JSON import works unchanged on Node and Deno
      let contract: Promise<unknown> | undefined
      router.get("/asyncapi.json", async () => (await (contract ??= import("../contracts/asyncapi.json", { with: { type: "json" } }).then((m) => m.default))) as object)

      router.get("/", () => {
        const nonce = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))))
        return new Response(dashboardPage(nonce), {
          headers: {
            "content-type": "text/html; charset=utf-8",
            "cache-control": "no-store",
            // a payload that slipped past escaping still could not run: only the page's own script has the nonce
            "content-security-policy": `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
            "x-content-type-options": "nosniff",
          },
        })
      })
      router.get("/api/status", async () => status(await adminOf()))
      router.get("/api/dlq", async ({ query }) => {
        const { limit, cursor, ...filter } = Object.fromEntries(Object.entries(query).map(([k, v]) => [k, one(v)]))
        return listEntries(await adminOf(), toFilter(filter), { limit: limit ? Number(limit) : 50, cursor })
      })
      router.get("/api/dlq/:id", async ({ params }) => showEntry(await adminOf(), params.id!))
      router.post(
        "/api/dlq/replay",
        mutation(async (req, a) => {
          const body = await readJson(req, 16 * 1024)
          if (!body || typeof body !== "object" || Array.isArray(body)) return Response.json({ status: 400, error: "body must be a JSON object of filters" }, { status: 400 })
          return replayMatching(a, toFilter(body as Record<string, unknown>), "api")
        }),
      )
      router.post("/api/dlq/:id/replay", mutation(async ({ params }, a) => replayEntry(a, params.id!, "api")))
      router.post("/api/dlq/:id/discard", mutation(async ({ params }, a) => discardEntry(a, params.id!, "api")))
    },
  })
}

const ops = opsWorker()
export default ops
runWhenMain(import.meta, ops)
