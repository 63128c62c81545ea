// bench/sync-chain.ts — the deliberately synchronous baseline, as the old system was built: "sync routing" plans a
// route and calls "sync invoice" over HTTP, with a timeout, before it answers. Same planning and pricing code as the
// mesh workers; only the coupling differs. One file, two roles:
//   node --import tsx bench/sync-chain.ts invoice --port 9001 [--mode ok|hang|slow] [--slow-ms 1000]
//   node --import tsx bench/sync-chain.ts routing --port 9000 --invoice http://127.0.0.1:9001 [--timeout-ms 2000]
import { randomUUID } from "node:crypto"
import http from "node:http"
import { priceRoute, demoTariffs } from "../workers/pricing.ts"
import { calculateRoute, type RouteRequest } from "../workers/routing.ts"
import { args } from "./lib.ts"

const { names, flags } = args()
const port = Number(flags.get("port") ?? 0)

const readBody = (req: http.IncomingMessage) =>
  new Promise<unknown>((resolve, reject) => {
    let text = ""
    req.setEncoding("utf8")
    req.on("data", (c: string) => (text += c))
    req.on("end", () => {
      try {
        resolve(JSON.parse(text))
      } catch (err) {
        reject(err)
      }
    })
  })

const reply = (res: http.ServerResponse, status: number, body: unknown) =>
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body))

// the coupling under test: routing's answer waits for invoice's, up to the timeout
async function invoiceFor(route: unknown, url: string, timeoutMs: number): Promise<{ invoiceId: string }> {
  const res = await fetch(`${url}/invoices`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(route),
    signal: AbortSignal.timeout(timeoutMs),
  })
  if (!res.ok) throw new Error(`invoice answered ${res.status}`)
  return (await res.json()) as { invoiceId: string }
}

const server =
  names[0] === "routing"
    ? http.createServer(async (req, res) => {
        try {
          const route = calculateRoute((await readBody(req)) as RouteRequest, randomUUID(), new Date())
          const invoice = await invoiceFor(route, flags.get("invoice")!, Number(flags.get("timeout-ms") ?? 2000))
          reply(res, 201, { routeId: route.routeId, invoiceId: invoice.invoiceId })
        } catch (err) {
          const timedOut = (err as Error).name === "TimeoutError"
          reply(res, timedOut ? 504 : 502, { error: `invoice: ${(err as Error).message}` })
        }
      })
    : http.createServer(async (req, res) => {
        const route = (await readBody(req)) as Parameters<typeof priceRoute>[0]
        if (flags.get("mode") === "hang") return // accepts the connection, never answers
        if (flags.get("mode") === "slow") await new Promise((r) => setTimeout(r, Number(flags.get("slow-ms") ?? 1000)))
        reply(res, 201, priceRoute(route, demoTariffs[route.customerId]!, { invoiceId: randomUUID(), issuedAt: new Date().toISOString() }))
      })

server.keepAliveTimeout = 60_000
server.listen(port, "127.0.0.1", () => console.log(`listening ${(server.address() as { port: number }).port}`))
