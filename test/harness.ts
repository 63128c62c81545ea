// test/harness.ts — every suite gets its own nats-server on free ports with a temp store, and real child processes.
// Never the system server on 4222.
import { randomBytes } from "node:crypto"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node"
import { type Callback, type Test, suite as uvuSuite } from "uvu"
import { topology } from "../contracts/mod.ts"
import { findNatsServer, freePort, type Natsd, natsServerVersion, startNatsd } from "../mesh/cli/natsd.ts"
import { FEATURES, type Feature, versionSupports } from "../mesh/features.ts"
import { provision, type ProvisionScope } from "../mesh/provision.ts"
import type { Running } from "../mesh/worker.ts"
import { type Child, ROOT, spawnTs } from "./child.ts"
import { testAuth } from "./credentials.ts"

/**
 * uvu's suite, with hooks that say why they failed. uvu's runner returns from a `finally`, which drops an error thrown
 * by a before or after hook: the suite shows "(0 / N)" and nothing else. Each suite imports `suite` from here.
 */
export function suite<T = Record<string, any>>(title?: string, context?: T): Test<T> {
  const t = uvuSuite<T>(title, context)
  const said =
    (register: (hook: Callback<T>) => void, which: string) =>
    (hook: Callback<T>): void =>
      register(async (ctx) => {
        try {
          await hook(ctx)
        } catch (err) {
          console.error(`${title ?? "suite"}: the ${which} hook failed: ${(err as Error)?.stack ?? err}`)
          throw err
        }
      })
  const before = Object.assign(said(t.before, "before"), { each: said(t.before.each, "before.each") })
  const after = Object.assign(said(t.after, "after"), { each: said(t.after.each, "after.each") })
  return Object.assign(t, { before, after })
}

export { type Child, ROOT, spawnChild, spawnTs } from "./child.ts"
export { type TestAuth, testAuth } from "./credentials.ts"

// in-process workers log at the level the test run asks for; quiet by default
process.env.LOG_LEVEL ??= "error"
// every worker a test starts, in this process or as a child (children inherit the environment), accepts the test
// credentials; a test of the checks themselves overrides a variable for the worker it starts
for (const [k, v] of Object.entries(testAuth().env)) process.env[k] ??= v

export type TestServer = Natsd & { storeDir: string; env: Record<string, string>; close(): Promise<void> }

/** What a worker process needs to connect to an auth server as nats.conf's `user` (ops, invoice, …). */
export const userEnv = (server: TestServer, user: string) => ({
  NATS_URL: server.url,
  NATS_USER: user,
  NATS_PASSWORD: server.env[`${user.toUpperCase()}_PASSWORD`]!,
})

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

/** A server from nats.conf (a user per worker, `userEnv`), the topology provisioned, and a connection as admin. */
export async function authFixture() {
  const server = await startServer({ auth: true })
  const admin = await connectTo(server, { user: "admin", pass: server.env.ADMIN_PASSWORD! })
  await provision(admin, topology())
  return { server, admin, jsm: await jetstreamManager(admin) }
}

/** A server, a connection and both JetStream clients: what most suites start with. */
export async function natsFixture(opts: Parameters<typeof startServer>[0] = {}) {
  const server = await startServer(opts)
  const nc = await connectTo(server)
  return { server, nc, js: jetstream(nc), jsm: await jetstreamManager(nc) }
}

export type NatsFixture = Awaited<ReturnType<typeof natsFixture>>

/**
 * A suite on its own server (`natsFixture`, started before the first test, closed after the last) with a clean slate
 * per test: every stream deleted, the topology provisioned (within `provision`), then `reset`. Workers pushed to
 * `running` are stopped after each test. The fields are set once the suite has started.
 */
export function natsSuite(
  test: Test,
  opts: { provision?: ProvisionScope; reset?: (f: NatsFixture) => Promise<unknown> } = {},
): NatsFixture & { running: Running[] } {
  const f = { running: [] as Running[] } as NatsFixture & { running: Running[] }
  test.before(async () => {
    Object.assign(f, await natsFixture())
  })
  test.after(async () => {
    await f.nc.close()
    await f.server.close()
  })
  test.before.each(async () => {
    for await (const s of f.jsm.streams.list()) await f.jsm.streams.delete(s.config.name)
    await provision(f.nc, topology(), opts.provision)
    await opts.reset?.(f)
  })
  test.after.each(async () => {
    await Promise.all(f.running.splice(0).map((r) => r.stop()))
  })
  return f
}

export function connectTo(server: { url: string }, auth?: { user: string; pass: string }): Promise<NatsConnection> {
  return natsConnect({ servers: server.url, ...(auth ?? {}), maxReconnectAttempts: -1, reconnectTimeWait: 200 })
}

export async function waitUntil<T>(
  fn: () => T | Promise<T>,
  { timeoutMs = 20_000, every = 50, what = "condition" } = {},
): Promise<NonNullable<T>> {
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

/**
 * Why the servers the suites start (the newest found, or NATS_SERVER_BIN) cannot run a test of `feature`, or
 * undefined when they can. A file whose every test needs it prints `skipped: <why>` and registers none (test/run.ts
 * counts it as skipped); a file with other tests leaves those few unregistered and says so.
 */
export function lacks(feature: Feature): string | undefined {
  const bin = findNatsServer()
  const v = bin ? natsServerVersion(bin) : undefined
  if (v && versionSupports(v, feature)) return undefined
  return `${FEATURES[feature].what} needs nats-server ${FEATURES[feature].since.join(".")}; the suites run ${bin ? `${bin} ${v?.join(".") ?? "(version unknown)"}` : "no nats-server"}`
}

export { freePort }

/**
 * A worker file (or a fixture standing in for one) as its own process, its HTTP port (`portVar`) a free one, once it
 * says it is ready; added to `children` so the suite stops it.
 */
export async function startReady(
  file: string,
  portVar: string,
  env: Record<string, string | undefined>,
  children: Child[],
): Promise<{ child: Child; url: string }> {
  const port = await freePort()
  const child = spawnTs(file, { ...env, [portVar]: String(port) })
  children.push(child)
  await child.waitFor(/"msg":"ready"/)
  return { child, url: `http://127.0.0.1:${port}` }
}
