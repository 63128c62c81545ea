// workers/invoice.ts — prices each calculated route with its customer's tariff, once per routeId, whatever the
// redeliveries, crashes and instances. No routes of its own: /healthz, /readyz, /metrics only.
import type { RouteCalculated } from "../contracts/mod.ts"
import {
  env,
  envInt,
  type HandlerContext,
  newId,
  type Outgoing,
  PermanentError,
  runWhenMain,
  sleep,
  StartupError,
  type Worker,
  worker,
} from "../mesh/mod.ts"
import { priceRoute, type Tariff, tariffsFromEnv } from "./pricing.ts"

function probability(name: string): number {
  const p = envInt(name, 0)
  if (p < 0 || p > 1) throw new Error(`${name} must be between 0 and 1, got ${p}`)
  return p
}

const config = {
  tariffs: tariffsFromEnv(env("INVOICE_TARIFFS")),
  site: env("SITE_ID") ?? "",
  // failure injection for demos and tests; all off unless set
  crashOnStart: env("INVOICE_CRASH_ON_START") === "1",
  slowMs: envInt("INVOICE_SLOW_MS", 0),
  failRate: probability("INVOICE_FAIL_RATE"),
  hang: env("INVOICE_HANG") === "1",
}

export function tariffOf(customerId: string, tariffs: Record<string, Tariff>): Tariff {
  // hasOwn: a customer called "constructor" must not find Object's
  if (!Object.hasOwn(tariffs, customerId)) throw new PermanentError("no-tariff", `no tariff for customer "${customerId}"`)
  return tariffs[customerId]!
}

async function injectFailures(ctx: HandlerContext): Promise<void> {
  if (config.hang) {
    ctx.log.warn("INVOICE_HANG=1: this handler never returns")
    await new Promise<never>(() => {})
  }
  if (config.slowMs > 0) await sleep(config.slowMs)
  if (Math.random() < config.failRate) throw new Error(`injected transient failure (INVOICE_FAIL_RATE=${config.failRate})`)
}

const injecting = config.hang || config.slowMs > 0 || config.failRate > 0

export function onRouteCalculated(route: RouteCalculated, ctx: HandlerContext): Outgoing[] | Promise<Outgoing[]> {
  const tariff = tariffOf(route.customerId, config.tariffs)
  // without injected failures the handler returns plainly: no promise to wait for before the publish
  return injecting ? injectFailures(ctx).then(() => invoiceOf(route, tariff)) : invoiceOf(route, tariff)
}

function invoiceOf(route: RouteCalculated, tariff: Tariff): Outgoing[] {
  const invoice = priceRoute(route, tariff, { invoiceId: newId(config.site), issuedAt: new Date().toISOString() })
  // once: the invoice is stored only if the route's subject holds none yet. A redelivery, a producer's retry or a
  // replay days later prices again, and the stream refuses the second invoice: the first one stands, whatever the
  // timing, for as long as INVOICE keeps it (one write per event, no separate record)
  return [{ name: "InvoiceGenerated", data: invoice, id: `invoice:${route.routeId}`, once: true }]
}

const invoice = worker({
  name: "invoice",
  consumes: { RouteCalculated: onRouteCalculated },
})

// fails before connecting: a crash in onStart would come after the consumer starts pulling, and invoices would trickle out
const crashAtStart = (w: Worker): Worker => ({
  ...w,
  start: () => Promise.reject(new StartupError("INVOICE_CRASH_ON_START=1: crashing at start on purpose")),
})

export default invoice
runWhenMain(import.meta, config.crashOnStart ? crashAtStart(invoice) : invoice)
