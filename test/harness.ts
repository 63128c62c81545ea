// test/harness.ts — every suite gets its own nats-server on free ports with a temp store, and real child processes.
// Never the system server on 4222.
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node"
import { freePort, type Natsd, startNatsd } from "../mesh/natsd.ts"

export const ROOT = resolve(import.meta.dirname, "..")

// in-process workers log at the level the test run asks for; quiet by default
process.env.LOG_LEVEL ??= "error"

export type TestServer = Natsd & { storeDir: string; env: Record<string, string>; close(): Promise<void> }

/** Passwords for every nats.conf user, fresh per call, as the env vars nats.conf reads. */
export function passwords(): Record<string, string> {
  const users = ["ROUTING", "INVOICE", "TRACKING", "PORTAL", "OPS", "FLEET", "ADMIN", "SYS"]
  // the leading letter matters: nats-server parses a variable's value as a config token, and hex like "12e4…"
  // would read as a number and fail the server's start (about 1 start in 3 with eight passwords)
  return Object.fromEntries(users.map((u) => [`${u}_PASSWORD`, `p${randomBytes(12).toString("hex")}`]))
}

/** Starts nats-server with JetStream; `auth: true` loads nats.conf with fresh passwords (see `env`). */
export async function startServer(opts: { auth?: boolean; args?: string[]; port?: number } = {}): Promise<TestServer> {
  const storeDir = await mkdtemp(join(tmpdir(), "logiflow-test-"))
  const env = opts.auth ? passwords() : {}
  const natsd = await startNatsd({
    port: opts.port ?? (await freePort()),
    monitorPort: await freePort(),
    storeDir,
    config: opts.auth ? join(ROOT, "nats.conf") : undefined,
    env,
    args: opts.args,
  })
  return Object.assign(natsd, {
    storeDir,
    env,
    async close() {
      await natsd.stop()
      await rm(storeDir, { recursive: true, force: true })
    },
  })
}

/** A server, a connection and both JetStream clients: what most suites start with. */
export async function natsFixture(opts: Parameters<typeof startServer>[0] = {}) {
  const server = await startServer(opts)
  const nc = await connectTo(server)
  return { server, nc, js: jetstream(nc), jsm: await jetstreamManager(nc) }
}

export function connectTo(server: { url: string }, auth?: { user: string; pass: string }): Promise<NatsConnection> {
  return natsConnect({ servers: server.url, ...(auth ?? {}), maxReconnectAttempts: -1, reconnectTimeWait: 200 })
}

export type Child = {
  proc: ChildProcess
  lines: string[]
  /** resolves with the first output line matching `re` (already seen lines count) */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>
  /** sends `signal` and resolves with the exit code */
  stop(signal?: NodeJS.Signals): Promise<number | null>
  exited: Promise<number | null>
}

/** Runs a TypeScript file as its own node process (node --import tsx: one pid, so signals reach it). */
export function spawnTs(file: string, env: Record<string, string | undefined> = {}, args: string[] = []): Child {
  const proc = spawn(process.execPath, ["--import", "tsx", resolve(ROOT, file), ...args], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  })
  const lines: string[] = []
  let waiters: { re: RegExp; resolve: (l: string) => void }[] = []
  const onData = (b: Buffer) => {
    for (const line of b.toString().split("\n")) {
      if (!line) continue
      lines.push(line)
      if (process.env.TEST_VERBOSE) console.log(`[${file}] ${line}`)
      waiters = waiters.filter((w) => (w.re.test(line) ? (w.resolve(line), false) : true))
    }
  }
  proc.stdout!.on("data", onData)
  proc.stderr!.on("data", onData)
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)))
  return {
    proc,
    lines,
    exited,
    waitFor(re, timeoutMs = 20_000) {
      const seen = lines.find((l) => re.test(l))
      if (seen) return Promise.resolve(seen)
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${file}: no line matching ${re} within ${timeoutMs} ms; last: ${lines.slice(-5).join(" | ")}`)), timeoutMs)
        waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) })
      })
    },
    stop(signal = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited
      proc.kill(signal)
      return exited
    },
  }
}

export async function waitUntil<T>(fn: () => T | Promise<T>, { timeoutMs = 20_000, every = 50, what = "condition" } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: T | undefined
  while (Date.now() < deadline) {
    last = await fn()
    if (last) return last as NonNullable<T>
    await sleep(every)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`)
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

export { freePort }
