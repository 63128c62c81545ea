// bench/portal-memory.ts — the portal's memory against the size of its invoice history: `npx tsx bench/portal-memory.ts`
// (`--stages 20000,200000`, `--portal <path to a workers/portal.ts>` to measure another build of it). For each
// stage it fills the portal-invoices bucket up to that many invoices (20 customers, one of them with ten times the
// others' volume), starts a fresh portal process (what a reload or a crash-restart does), asks every customer's
// first page, three pages further back for the big one and a cold page of 200 for a small one, and reads the
// process's RSS. Figures, not assertions: written to bench/results/portal-memory-<date>.md.
import { writeFile } from "node:fs/promises"
import { type KV, Kvm } from "@nats-io/kv"
import { connect } from "@nats-io/transport-node"
import { type InvoiceGenerated, topology } from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { testAuth } from "../test/credentials.ts"
import { invoiceKey } from "../workers/portal-invoices.ts"
import { args, benchServer, int, machine, ms, progress, ROOT, rssMiB, startWorker } from "./lib.ts"

const { flags } = args()
const stages = (flags.get("stages") ?? "20000,200000").split(",").map(Number)
const portalFile = flags.get("portal") ?? "workers/portal.ts"
const CUSTOMERS = Array.from({ length: 19 }, (_, i) => `customer-${String(i + 1).padStart(2, "0")}`)
const BIG = "bigco"
// bigco gets ten shares for each one of the others'
const share = [...CUSTOMERS, ...Array(10).fill(BIG)] as string[]

const invoiceOf = (n: number): InvoiceGenerated => {
  const customerId = share[n % share.length]!
  return {
    invoiceId: `inv-${String(n).padStart(8, "0")}`,
    routeId: `route-${n}`,
    truckId: `truck-${n % 5000}`,
    customerId,
    lines: [
      { description: "Base fee", amountCents: 2500 },
      { description: "Distance 42.0 km", amountCents: 4200 + (n % 1000) },
      { description: "Stops 10", amountCents: 1000 },
    ],
    totalCents: 7700 + (n % 1000),
    currency: "EUR",
    issuedAt: new Date(Date.parse("2026-11-01T00:00:00Z") + n * 400).toISOString(),
  }
}

async function fill(kv: KV, from: number, to: number) {
  const p = progress(`invoices ${from}→${to}`)
  let next = from
  const one = async () => {
    while (next < to) {
      const n = next++
      const inv = invoiceOf(n)
      await kv.create(invoiceKey(inv.customerId, inv.invoiceId), JSON.stringify(inv))
      if (n % 10_000 === 0) p.update(`${n}`)
    }
  }
  await Promise.all(Array.from({ length: 256 }, one))
  p.done()
}

const server = await benchServer()
const nc = await connect({ servers: server.url })
const rows: (string | number)[][] = []
try {
  await provision(nc, topology(), { consumers: () => false })
  const kv = await new Kvm(nc).open("portal-invoices")
  const auth = testAuth()
  let written = 0
  for (const stage of stages) {
    await fill(kv, written, stage)
    written = stage
    const portal = await startWorker(portalFile.startsWith("/") ? portalFile : `${ROOT}/${portalFile}`, server.url, {
      PORTAL_SECRET: auth.env.PORTAL_SECRET!,
    })
    try {
      const get = async (customer: string, path: string) => {
        const t = performance.now()
        const r = await fetch(`http://127.0.0.1:${portal.port}${path}`, {
          headers: { authorization: `Bearer ${await auth.customerToken(customer)}` },
        })
        const body = (await r.json()) as { invoices?: unknown[]; next?: string | null }
        if (!r.ok) throw new Error(`${path} for ${customer}: HTTP ${r.status}`)
        return { ms: performance.now() - t, body, bytes: JSON.stringify(body).length }
      }
      const firsts = []
      for (const c of [...CUSTOMERS, BIG]) firsts.push(await get(c, "/api/invoices"))
      let cursor = firsts.at(-1)!.body.next
      const deeper = []
      for (let i = 0; i < 3 && cursor; i++) {
        const r = await get(BIG, `/api/invoices?cursor=${encodeURIComponent(cursor)}`)
        deeper.push(r)
        cursor = r.body.next ?? null
      }
      // a page of 200 is above the cached first page: read from the bucket every time
      const coldSmall = await get(CUSTOMERS[0]!, "/api/invoices?limit=200")
      const coldBig = await get(BIG, "/api/invoices?limit=200")
      const rss = rssMiB(portal.pid!)
      rows.push([
        int(stage),
        rss === undefined ? "–" : rss.toFixed(0),
        int(firsts[0]!.bytes),
        ms(coldSmall.ms),
        ms(coldBig.ms),
        deeper.length ? ms(deeper.reduce((a, d) => a + d.ms, 0) / deeper.length) : "–",
      ])
      process.stderr.write(`  ${stage}: RSS ${rss?.toFixed(0)} MiB\n`)
    } finally {
      await portal.stop()
    }
  }
} finally {
  await nc.close()
  await server.close()
}

const m = machine()
const report = `# Portal memory against invoice history (${m.at.slice(0, 10)})

\`npx tsx bench/portal-memory.ts${process.argv.length > 2 ? ` ${process.argv.slice(2).join(" ")}` : ""}\` — portal: \`${portalFile}\`;
${m.cores} cores, Node ${m.node}, nats-server ${m.natsServerVersion}, load average ${m.loadavg1m} at the end.
20 customers, one with ten times the others' volume; a fresh portal process per stage, after every customer's
first page, three pages further back for the big one and a page of 200 for a small and the big one.

| invoices in the bucket | portal RSS (MiB) | a first page (bytes) | page of 200, small customer (ms) | page of 200, big customer (ms) | big customer's deeper pages (ms, mean) |
|---|---|---|---|---|---|
${rows.map((r) => `| ${r.join(" | ")} |`).join("\n")}
`
const file = `${ROOT}/bench/results/portal-memory-${m.at.slice(0, 10)}${flags.has("portal") ? "-other" : ""}.md`
await writeFile(file, report)
console.log(report)
console.log(`wrote ${file}`)
