// mesh/front.ts — every worker's HTTP front: /healthz, /readyz, /metrics, the worker's own routes, errors as JSON,
// and request metrics labelled by the route pattern that answered.
import { AutoRouter, type IRequest, type RouterType, StatusError } from "itty-router"
import type { FetchHandler } from "./http.ts"
import { json } from "./lazy-web.ts"
import type { Logger } from "./log.ts"
import type { Registry } from "./metrics.ts"
import { endServerSpan, serverSpan, spansOn } from "./tracing.ts"

/** What /readyz reports: ready only when connected, bound, refused by nothing and not draining. */
export type Readiness = { connected: boolean; bound: boolean; stopping: boolean; refused: Map<string, string> }

export type FrontOptions = {
  name: string
  log: Logger
  metrics: Registry
  readiness(): Readiness
  routes?(router: RouterType<IRequest>): void
}

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])

export const isReady = (r: Readiness) => r.connected && r.bound && r.refused.size === 0 && !r.stopping

export function front(o: FrontOptions): FetchHandler {
  const { name, log, metrics } = o
  const labelNames = ["method", "route", "status"]
  const requests = metrics.counter(
    "logiflow_http_requests_total",
    "HTTP requests answered, by method, route pattern and status",
    labelNames,
  )
  const seconds = metrics.histogram(
    "logiflow_http_request_seconds",
    "Time to answer an HTTP request, by method, route pattern and status",
    { labelNames },
  )

  const router = AutoRouter({
    catch: (err: unknown) => {
      // a StatusError is an answer a route chose; anything else is a bug, logged here and never shown to the client
      if (!(err instanceof StatusError)) {
        log.error("http handler failed", { error: err, stack: (err as Error)?.stack })
        return json({ status: 500, error: "internal error" }, { status: 500 })
      }
      const issues = (err as unknown as { issues?: unknown }).issues
      const headers = (err as unknown as { headers?: Record<string, string> }).headers
      return json({ status: err.status, error: err.message, ...(issues ? { issues } : {}) }, { status: err.status, headers })
    },
  })
  router.get("/healthz", () => ({ status: "ok", worker: name }))
  router.get("/readyz", () => {
    const r = o.readiness()
    if (isReady(r)) return { status: "ready", worker: name }
    const body = { status: "not-ready", worker: name, connected: r.connected, bound: r.bound && r.refused.size === 0, stopping: r.stopping }
    return Response.json(r.refused.size ? { ...body, consumers: Object.fromEntries(r.refused) } : body, { status: 503 })
  })
  router.get("/metrics", async () => new Response(await metrics.render(), { headers: { "content-type": metrics.contentType } }))
  o.routes?.(router)

  // labelled by the route pattern that answered (`/api/trucks/:id`), never the raw path: ids would make a series each
  return async (request: Request) => {
    const started = performance.now()
    let status = 500
    // with an SDK, a server span (child of the caller's traceparent) is the parent of whatever the route publishes:
    // routes read it with requestTraceparent(request)
    const span = spansOn() ? serverSpan(request) : undefined
    try {
      const response: Response = await router.fetch(request)
      status = response.status
      return response
    } finally {
      const route = (request as IRequest).route ?? "unmatched"
      // a method is whatever token a client sends: any other than the usual ones shares one series
      const labels = { method: METHODS.has(request.method) ? request.method : "other", route, status: String(status) }
      requests.inc(labels)
      seconds.observe((performance.now() - started) / 1000, labels)
      if (span) endServerSpan(span, request.method, route, status)
    }
  }
}
