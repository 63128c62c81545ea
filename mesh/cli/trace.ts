// mesh/cli/trace.ts — `logiflow trace <routeId|truckId>`: the story of one route or truck (mesh/admin/trace.ts, the same
// as ops' /story/<id> page), one line per event in time order, then what is missing; `--json` prints it as data.
import { parseArgs } from "node:util"
import { adminFor } from "../admin/entries.ts"
import { story } from "../admin/trace.ts"
import { CliError, type Command } from "./io.ts"
import { cli } from "./ops.ts"

export const trace: Command = {
  summary: "the story of a route or truck: its events across streams, dead letters, replays, trace ids, what is missing",
  usage: "logiflow trace <routeId|truckId|event id|DLQ entry id> [--routes N] [--json]",
  async run(args, io) {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { json: { type: "boolean" }, routes: { type: "string" } },
    })
    const [id, ...extra] = positionals
    if (!id || extra.length) throw new CliError(`usage: ${trace.usage}`)
    const routes = values.routes === undefined ? undefined : Number(values.routes)
    if (routes !== undefined && (!Number.isInteger(routes) || routes < 1))
      throw new CliError(`--routes must be a positive whole number, got "${values.routes}"`)
    const nc = await io.connect()
    try {
      const s = await cli(story(await adminFor(nc), id, { routes }))
      if (values.json) return void io.out(JSON.stringify(s, null, 2))
      io.out(s.kind === "route" ? `route ${s.routeId} (truck ${s.truckId}, customer ${s.customerId})` : `truck ${s.truckId}`)
      for (const l of s.lines) {
        const where = l.stream ? `  [${l.stream} #${l.seq}${l.traceId ? `, trace ${l.traceId}` : ""}]` : ""
        io.out(`${l.at}  ${l.event.padEnd(16)} ${l.text}${where}`)
      }
      for (const m of s.missing) io.out(`missing: ${m}`)
      if (!s.missing.length) io.out("missing: nothing")
      io.out(`trace ids: ${s.traceIds.join(", ") || "none"}`)
    } finally {
      await nc.close()
    }
  },
}
