// bench/soak-report.ts — the fleet soak's result as markdown, and whether it passed.
import { type fleetSoak, WORKERS } from "./fleet-soak.ts"
import { int, type machine, ms, round } from "./lib.ts"

export type Result = Awaited<ReturnType<typeof fleetSoak>>

export function soakMarkdown(r: Result, m: ReturnType<typeof machine>, command: string, loadEnd: number): string {
  const c = r.capacity
  const modelBytes: Record<string, number> = {
    ROUTING: c.bytes.route,
    INVOICE: c.bytes.invoice,
    TRACKING: c.bytes.eta,
    POSITIONS: c.bytes.position,
  }
  const out = [
    `# Fleet soak — ${m.at.slice(0, 16).replace("T", " ")} UTC`,
    "",
    `${m.cores} cores, Node ${m.node}, ${m.natsServer} (${m.natsServerBin}); 1-min load average ${m.loadavg1m} at the start, ` +
      `${loadEnd} at the end (the machine is shared with other engineers' work).`,
    "",
    `Command: \`${command}\``,
    "",
    "## What ran",
    "",
    "| | |",
    "|---|---|",
    `| trucks | ${int(r.options.trucks)}, one ping each per round, ${r.rounds} rounds of ${c.positionIntervalSeconds} s simulated time` +
      `${r.rounds < r.plannedRounds ? ` (of ${r.plannedRounds} planned: the time budget of ${r.options.budgetSeconds} s ran out)` : ""} |`,
    `| positions | ${int(r.sent.positions)} from the fleet + ${int(r.sent.noisy)} from one truck pinging ${r.options.noisyFactor}× too often |`,
    `| routes | ${int(r.sent.routes)} over HTTP (10 stops each), customer "big" 10× each of ${r.options.customers} others |`,
    `| load phase | ${round(r.loadSeconds)} s (${int(r.sent.positions / r.loadSeconds)} positions/s, ${int(r.sent.routes / r.loadSeconds)} routes/s offered), ` +
      `of it ${round(r.pausedSeconds)} s waiting for the consumers to come within ${int(r.options.maxPending ?? 20_000)} events |`,
    `| drain after the load | ${round(r.drainSeconds)} s until every consumer had nothing pending |`,
    `| simulated fleet time | ${round((r.rounds * c.positionIntervalSeconds) / 3600, 2)} h of positions, ${round(r.sent.routes / c.routesPerDay, 2)} days of routes |`,
    "",
    "## Checks",
    "",
    "| check | |",
    "|---|---|",
    ...r.checks.map(([what, ok]) => `| ${what} | ${ok ? "✓" : "✗ FAILED"} |`),
    ...WORKERS.map(
      (w) =>
        `| ${w} RSS flat after warm-up (last quarter ÷ second ≤ 1.2: ${r.rss[w]!.ratio.toFixed(2)}) | ${r.rss[w]!.ratio <= 1.2 ? "✓" : "✗ FAILED"} |`,
    ),
    "",
    "## RSS per worker (MiB, mean of each quarter of the run)",
    "",
    "| worker | Q1 | Q2 | Q3 | Q4 | Q4 ÷ Q2 | CPU s |",
    "|---|---|---|---|---|---|---|",
    ...WORKERS.map((w) => {
      const q = r.rss[w]!.quarters
      return `| ${w} | ${q.map((x) => round(x)).join(" | ")} | ${r.rss[w]!.ratio.toFixed(2)} | ${round((r.samples.at(-1)?.cpuMs[w] ?? 0) / 1000)} |`
    }),
    "",
    "## Streams vs the model",
    "",
    "| stream | messages | bytes | bytes/event (model) | of max_bytes | max_bytes |",
    "|---|---|---|---|---|---|",
    ...Object.entries(r.streams).map(
      ([s, x]) =>
        `| ${s} | ${int(x.messages)} | ${int(x.bytes)} | ${int(x.perMessage)}${modelBytes[s] ? ` (${int(modelBytes[s])})` : ""} | ` +
        `${((100 * x.bytes) / x.maxBytes).toFixed(2)} % | ${int(x.maxBytes)} |`,
    ),
    "",
    "## Portal: one customer's first page of invoices (`/api/invoices?customerId=…&limit=50`)",
    "",
    "| who | when | requests | p50 ms | p99 ms | max ms |",
    "|---|---|---|---|---|---|",
    `| c01 (ordinary) | during the load, every second | ${r.portal.ordinary.count} | ${ms(r.portal.ordinary.p50)} | ${ms(r.portal.ordinary.p99)} | ${ms(r.portal.ordinary.max)} |`,
    `| big (10×) | during the load, every second | ${r.portal.big.count} | ${ms(r.portal.big.p50)} | ${ms(r.portal.big.p99)} | ${ms(r.portal.big.max)} |`,
    `| c01 (ordinary) | after the drain, 200 in a row | ${r.portal.idle.count} | ${ms(r.portal.idle.p50)} | ${ms(r.portal.idle.p99)} | ${ms(r.portal.idle.max)} |`,
    "",
    "## Routes and invoices per customer",
    "",
    "| customer | routes accepted | invoices |",
    "|---|---|---|",
    ...Object.keys(r.routesPerCustomer)
      .sort()
      .map((k) => `| ${k} | ${int(r.routesPerCustomer[k]!)} | ${int(r.invoicesPerCustomer[k] ?? 0)} |`),
    "",
    `HTTP answers, final: routes ${JSON.stringify(r.statuses.routes)}, position batches ${JSON.stringify(r.statuses.positions)}; ` +
      `answers sent again first (503 nothing recorded, 504 maybe recorded): ${JSON.stringify(r.retried)}.`,
  ]
  return `${out.join("\n")}\n`
}

export const passed = (r: Result) => r.checks.every(([, ok]) => ok) && WORKERS.every((w) => r.rss[w]!.ratio <= 1.2)
