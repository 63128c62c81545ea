#!/usr/bin/env -S node --import=tsx
// mesh/cli.ts — `logiflow <command>`: one-line errors and exit code 1 (a stack trace only with --debug).
import { existsSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { commands as opsCommands } from "./cli-ops.ts"
import { connect, type Connection } from "./connect.ts"
import { env } from "./env.ts"
import { provision } from "./provision.ts"
import { topology } from "../contracts/topology.ts"

export type Command = {
  summary: string
  usage: string
  run(args: string[], io: Io): Promise<number | void>
}

export type Io = {
  out(line: string): void
  /** connects as the admin user (NATS_USER/NATS_PASSWORD, else ADMIN_PASSWORD as `admin`), failing fast */
  connect(): Promise<Connection>
  debug: boolean
}

/** A failure the user can fix; printed as one line. */
export class CliError extends Error {
  override name = "CliError"
}

/** What a running `logiflow up` left for the CLI (.logiflow/session.env, mode 0600, removed when it stops). */
export const SESSION_FILE = join(dirname(fileURLToPath(import.meta.url)), "..", ".logiflow", "session.env")

function session(): Record<string, string> {
  if (!existsSync(SESSION_FILE)) return {}
  return Object.fromEntries(
    readFileSync(SESSION_FILE, "utf8")
      .split("\n")
      .map((l) => /^([A-Z_]+)=(.*)$/.exec(l))
      .filter((m) => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  )
}

export async function adminConnect(): Promise<Connection> {
  // the environment wins; else the credentials of the `npm start` running from this checkout
  const s = env("NATS_URL") || env("NATS_USER") || env("ADMIN_PASSWORD") ? {} : session()
  const user = env("NATS_USER") ?? s.NATS_USER ?? (env("ADMIN_PASSWORD") ? "admin" : undefined)
  const pass = env("NATS_PASSWORD") ?? s.NATS_PASSWORD ?? env("ADMIN_PASSWORD")
  const url = env("NATS_URL") ?? s.NATS_URL ?? "nats://127.0.0.1:4222"
  try {
    return await connect({ name: "admin", url, user, pass, waitForServer: false })
  } catch (err) {
    throw new CliError(`cannot reach NATS at ${url}: ${(err as Error).message}`)
  }
}

const provisionCommand: Command = {
  summary: "create or update every stream, consumer and KV bucket of contracts/topology.ts (idempotent)",
  usage: "logiflow provision [--replicas N] [--edge hub|edge]",
  async run(args, io) {
    const { values } = parseArgs({ args, options: { replicas: { type: "string" }, edge: { type: "string" } } })
    const replicas = Number(values.replicas ?? env("STREAM_REPLICAS") ?? 1)
    const role = values.edge
    // deploy/edge: the edge server gets EDGE_ROUTING only, the hub's ROUTING sources it
    if (role !== undefined && role !== "hub" && role !== "edge") throw new CliError(`--edge is hub or edge, got "${role}"`)
    const nc = await io.connect()
    try {
      const actions = await provision(nc, topology({ replicas, ...(role ? { edge: { role } } : {}) }))
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
    usage: "logiflow up [--no-fleet] [--cluster]",
    run: async (args, io) => (await import("./supervisor.ts")).up(args, io),
  },
  provision: provisionCommand,
  ...opsCommands,
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

import { isMain } from "./main.ts"
if (isMain(import.meta)) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code
  })
}
