// mesh/tracing.ts — OpenTelemetry spans around handling and publishing, parented by the W3C traceparent each event
// carries, so an exporter sees one trace from the HTTP request at the edge to the last event it caused.
// Without a registered SDK the API is a no-op, and events carry the manual child traceparent (publish.ts) as before.
// Contexts are passed explicitly, never through the active context: that needs a context manager, which a bare
// provider (and Deno) does not install, and a span parented through it would quietly start a new trace.
import {
  type Attributes,
  type Context,
  isSpanContextValid,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api"
import { env } from "./env.ts"
import type { Logger } from "./log.ts"

export { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span }

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

export const tracer = () => trace.getTracer("logiflow")

// the provider the API hands out while no SDK is registered (a fresh proxy's delegate is that singleton)
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate()
/**
 * Whether an SDK is registered, so spans can be recorded. Without one a consumer span is pure cost on every
 * message, so deliveries skip it; events still carry a child traceparent (publish.ts). Looked up on every call
 * (two property reads): an SDK registered at any time is used from the next message on.
 */
export function spansOn(): boolean {
  const p = trace.getTracerProvider()
  return (p instanceof ProxyTracerProvider ? p.getDelegate() : p) !== NOOP_PROVIDER
}

/** The remote span a traceparent names, as a parent context; ROOT_CONTEXT (a new trace) when absent or malformed. */
export function contextOf(traceparent?: string): Context {
  const m = traceparent ? TRACEPARENT.exec(traceparent) : null
  if (!m) return ROOT_CONTEXT
  const sc = { traceId: m[1]!, spanId: m[2]!, traceFlags: parseInt(m[3]!, 16) & 1, isRemote: true }
  return isSpanContextValid(sc) ? trace.setSpanContext(ROOT_CONTEXT, sc) : ROOT_CONTEXT
}

/**
 * The traceparent naming `span` when an SDK made it; otherwise `fallback`. A no-op tracer hands back the parent's
 * own span context (or an invalid one), and propagating that would make two hops look like one span.
 */
export function traceparentOf(span: Span, parent: Context, fallback: string): string {
  const sc = span.spanContext()
  if (!isSpanContextValid(sc) || sc.spanId === trace.getSpanContext(parent)?.spanId) return fallback
  return `00-${sc.traceId}-${sc.spanId}-0${sc.traceFlags & 1}`
}

/**
 * The HTTP server span of a request, child of its `traceparent` header; its own traceparent goes on the request,
 * where requestTraceparent(request) finds it. Named `<METHOD> <route pattern>` when it ends.
 */
export function serverSpan(request: Request): Span {
  const parent = contextOf(request.headers.get("traceparent") ?? undefined)
  const url = new URL(request.url)
  const span = tracer().startSpan(
    request.method,
    {
      kind: SpanKind.SERVER,
      attributes: { "http.request.method": request.method, "url.path": url.pathname, "url.scheme": url.protocol.replace(":", "") },
    },
    parent,
  )
  ;(request as { traceparent?: string }).traceparent = traceparentOf(span, parent, request.headers.get("traceparent") ?? "") || undefined
  return span
}

export function endServerSpan(span: Span, method: string, route: string, status: number): void {
  span.updateName(`${method} ${route}`)
  span.setAttribute("http.route", route)
  span.setAttribute("http.response.status_code", status)
  if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
  span.end()
}

/** What a route should parent its work on: the server span (when spans are recorded), else the caller's header. */
export function requestTraceparent(request: Request): string | undefined {
  return (request as { traceparent?: string }).traceparent ?? request.headers.get("traceparent") ?? undefined
}

/** `logiflow.invoice.InvoiceGenerated.v1` → `InvoiceGenerated` (span names stay readable for unknown types too) */
export const eventNameOf = (ceType: string) => /^logiflow\.[a-z]+\.([A-Za-z]+)\.v\d+$/.exec(ceType)?.[1] ?? ceType

export type PublishOutcome = "ok" | "duplicate" | "error"
export type PublishObserver = (subject: string, outcome: PublishOutcome, seconds: number) => void

/**
 * Runs one publish inside a `publish <subject>` producer span (child of `parent`), timed for `observe`. `fn` gets
 * the traceparent the message should carry: the span's own when an SDK records spans, else `fallback`. Without an
 * SDK no span is made and `attributes` is never called: the publish is only timed.
 */
export async function publishing<T extends { duplicate: boolean }>(
  subject: string,
  o: { parent: Context; fallback?: string; attributes?: () => Attributes; observe?: PublishObserver },
  fn: (traceparent: string | undefined) => Promise<T>,
): Promise<T> {
  const span = spansOn()
    ? tracer().startSpan(
        `publish ${subject}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation.type": "send",
            ...o.attributes?.(),
          },
        },
        o.parent,
      )
    : undefined
  const started = performance.now()
  let outcome: PublishOutcome = "error"
  try {
    const r = await fn(span && o.fallback !== undefined ? traceparentOf(span, o.parent, o.fallback) : o.fallback)
    outcome = r.duplicate ? "duplicate" : "ok"
    return r
  } catch (err) {
    span?.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message ?? String(err) })
    throw err
  } finally {
    span?.setAttribute("logiflow.outcome", outcome)
    span?.end()
    o.observe?.(subject, outcome, (performance.now() - started) / 1000)
  }
}

export type Flush = () => Promise<void>
let exporting: Promise<Flush | undefined> | undefined

/**
 * With OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) set, registers an SDK that exports spans over OTLP/HTTP
 * (the exporter reads the endpoint and headers from the same env vars). Once per process: in-process workers share
 * the first one's service name. Resolves with a flush for shutdown, or undefined (no exporter; never a failed start).
 */
export function exportSpans(service: string, log: Logger): Promise<Flush | undefined> {
  const endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || env("OTEL_EXPORTER_OTLP_ENDPOINT")
  if (!endpoint) return Promise.resolve(undefined)
  return (exporting ??= (async () => {
    // loaded only here, so a worker without an endpoint never pays for the SDK
    const [{ BasicTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
      import("@opentelemetry/sdk-trace-base"),
      import("@opentelemetry/exporter-trace-otlp-http"),
      import("@opentelemetry/resources"),
    ])
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ "service.name": env("OTEL_SERVICE_NAME") || `logiflow-${service}` }),
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
    })
    if (!trace.setGlobalTracerProvider(provider)) {
      log.warn("a tracer provider was already registered in this process; spans go to it", { endpoint })
      return undefined
    }
    log.info("exporting spans over OTLP/HTTP", { endpoint })
    return () => provider.forceFlush()
  })().catch((err) => {
    log.warn("span export not started; running without it", { endpoint, error: err })
    return undefined
  }))
}
