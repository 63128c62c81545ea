// mesh/connect.ts — one NATS connection per process, from the environment, reconnecting forever.
import { connect as natsConnect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node"
import { env } from "./env.ts"
import type { Logger } from "./log.ts"

export type ConnectOptions = {
  /** the client name the server shows; also the private inbox prefix `_INBOX_<name>` nats.conf allows */
  name: string
  /** comma-separated; default NATS_URL or nats://127.0.0.1:4222 */
  url?: string
  user?: string
  pass?: string
  /** path to a .creds file (NATS_CREDS) */
  creds?: string
  /** keep dialling until the server is there (a worker may start before its broker); false fails fast (CLI) */
  waitForServer?: boolean
  log?: Logger
}

export type Connection = NatsConnection & { readonly connected: boolean }

export async function connect(opts: ConnectOptions): Promise<Connection> {
  const url = opts.url ?? env("NATS_URL") ?? "nats://127.0.0.1:4222"
  const user = opts.user ?? env("NATS_USER")
  const pass = opts.pass ?? env("NATS_PASSWORD")
  const creds = opts.creds ?? env("NATS_CREDS")
  let authenticator
  if (creds) {
    const { readFile } = await import("node:fs/promises")
    authenticator = credsAuthenticator(await readFile(creds))
  }
  const nc = await natsConnect({
    servers: url.split(",").map((s) => s.trim()),
    name: opts.name,
    inboxPrefix: `_INBOX_${opts.name}`,
    ...(user ? { user, pass } : {}),
    ...(authenticator ? { authenticator } : {}),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: opts.waitForServer ?? false,
    timeout: 5_000,
    // the client otherwise builds an Error per request to keep its async stack: a quarter of a draining worker's CPU
    // (every awaited publish is a request). Its errors then carry shorter stacks; ours say what failed
    noAsyncTraces: true,
  })
  let connected = true
  ;(async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        connected = false
        opts.log?.warn("nats disconnected", { server: s.server })
      } else if (s.type === "reconnect") {
        connected = true
        opts.log?.info("nats reconnected", { server: s.server })
      } else if (s.type === "error") opts.log?.warn("nats error", { error: String(s.error) })
    }
  })().catch(() => {})
  opts.log?.info("nats connected", { server: nc.getServer() })
  return Object.defineProperty(nc, "connected", { get: () => connected && !nc.isClosed() }) as Connection
}
