#!/usr/bin/env -S node --import=tsx
// mesh/cli/main.ts — `logiflow <command>`: one-line errors and exit code 1 (a stack trace only with --debug).
import { parseArgs } from "node:util"
import { topology } from "../../contracts/mod.ts"
import { env } from "../env.ts"
import { topologyEnv } from "../topology-env.ts"
import { isMain } from "../main.ts"
import { provision } from "../provision.ts"
import { adminConnect, CliError, type Command } from "./io.ts"
import { consumerCommand } from "./consumer.ts"
import { commands as opsCommands } from "./ops.ts"
import { rebuild } from "./rebuild.ts"
import { token } from "./token.ts"
import { trace } from "./trace.ts"

const provisionCommand: Command = {
  summary: "create or update every stream, consumer and KV bucket of contracts/topology.ts (idempotent)",
  usage: "logiflow provision [--replicas N] [--partitions P] [--edge hub|edge]",
  async run(args, io) {
    const { values } = parseArgs({
      args,
      options: { replicas: { type: "string" }, partitions: { type: "string" }, edge: { type: "string" } },
    })
    const replicas = Number(values.replicas ?? env("STREAM_REPLICAS") ?? 1)
    // a different count than the streams have starts a new partition layout (contracts/partitions.ts)
    const partitions = Number(values.partitions ?? env("PARTITIONS") ?? 1)
    const role = values.edge
    // deploy/edge: the edge server gets EDGE_ROUTING only, the hub's ROUTING sources it
    if (role !== undefined && role !== "hub" && role !== "edge") throw new CliError(`--edge is hub or edge, got "${role}"`)
    const nc = await io.connect()
    try {
      const actions = await provision(nc, topology({ ...topologyEnv(), replicas, partitions, ...(role ? { edge: { role } } : {}) }))
      for (const a of actions) io.out(`${a.action.padEnd(9)} ${a.kind.padEnd(8)} ${a.name}`)
      const changed = actions.filter((a) => a.action !== "unchanged").length
      io.out(`${actions.length} resources, ${changed} changed`)
    } finally {
      await nc.close()
    }
  },
}

export const commands: Record<string, Command> = {
  up: {
    summary: "run the whole mesh locally: nats-server (unless NATS_URL), provision, every worker supervised",
    usage: "logiflow up [--no-fleet] [--cluster] [--scale worker=N ...] [--data-dir DIR]",
    run: async (args, io) => (await import("./up.ts")).up(args, io),
  },
  provision: provisionCommand,
  ...opsCommands,
  trace,
  rebuild,
  consumer: consumerCommand,
  token,
}

function help(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`)
  return ["usage: logiflow <command> [options]", "", ...rows, "", "global: --debug (stack traces)"].join("\n")
}

export async function main(argv: string[], out = (l: string) => console.log(l)): Promise<number> {
  const debug = argv.includes("--debug")
  const args = argv.filter((a) => a !== "--debug")
  const [name, ...rest] = args
  if (!name || name === "help" || name === "--help" || name === "-h") {
    out(help())
    return name ? 0 : 2
  }
  const command = commands[name]
  if (!command) {
    console.error(`logiflow: unknown command "${name}" (try: ${Object.keys(commands).join(", ")})`)
    return 2
  }
  try {
    return (await command.run(rest, { out, connect: adminConnect, debug })) ?? 0
  } catch (err) {
    if (debug) console.error(err)
    else console.error(`logiflow ${name}: ${(err as Error).message}`)
    return 1
  }
}

if (isMain(import.meta)) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code
  })
}
