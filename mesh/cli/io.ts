// mesh/cli/io.ts — what every `logiflow` command shares: its shape, its one-line error, and how it reaches NATS as
// the admin user (the environment, else the credentials of this checkout's running `npm start`).
import { existsSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { connect, type Connection } from "../connect.ts"
import { env } from "../env.ts"

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

/** Where `logiflow up` keeps its store and session unless --data-dir or LOGIFLOW_DATA_DIR say otherwise. */
export const DATA_DIR_DEFAULT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", ".logiflow")

/**
 * What a running `logiflow up` left for the CLI: its NATS URL and admin credentials, PORTAL_SECRET and each worker's
 * URL (`OPS_URL=http://127.0.0.1:8084`), in `session.env` of its data dir (LOGIFLOW_DATA_DIR, else the checkout's
 * .logiflow), mode 0600, removed when it stops.
 */
export function session(): Record<string, string> {
  const file = join(env("LOGIFLOW_DATA_DIR") || DATA_DIR_DEFAULT, "session.env")
  if (!existsSync(file)) return {}
  return Object.fromEntries(
    readFileSync(file, "utf8")
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
