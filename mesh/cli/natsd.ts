// mesh/cli/natsd.ts — finding and running a local nats-server (used by `logiflow up` and the test harness).
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, readFileSync, realpathSync } from "node:fs"
import { createServer } from "node:net"
import { delimiter, join } from "node:path"

export const INSTALL_HINT =
  "no nats-server found: build the pinned newest one with Go (bash deploy/nats/install.sh), or install one " +
  "(Debian/Ubuntu: apt-get install nats-server, 2.9: the core only; macOS: brew install nats-server; " +
  "or run the official image: docker run -p 4222:4222 nats -js), or set NATS_URL to an existing server"

/** `[2, 15, 3]` from `nats-server: v2.15.3`; undefined when it does not say. */
export function parseVersion(text: string): [number, number, number] | undefined {
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(text)
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined
}

export const compareVersions = (a: readonly number[], b: readonly number[]) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!

const versions = new Map<string, [number, number, number] | undefined>()
/** What `bin --version` reports (asked once per binary). */
export function natsServerVersion(bin: string): [number, number, number] | undefined {
  if (!versions.has(bin)) {
    const r = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 5000 })
    versions.set(bin, parseVersion(`${r.stdout ?? ""}${r.stderr ?? ""}`))
  }
  return versions.get(bin)
}

/** Where a nats-server may be: PATH, then where deploy/nats/install.sh, Debian and Go put one. */
export function natsServerCandidates(): string[] {
  const home = process.env.HOME ?? ""
  const dirs = [
    ...(process.env.PATH ?? "").split(delimiter),
    "/usr/local/bin",
    join(home, ".local", "bin"),
    join(home, "go", "bin"),
    "/usr/sbin",
    "/usr/local/sbin",
  ]
  const found: string[] = []
  for (const d of dirs) {
    const bin = d && join(d, "nats-server")
    // /sbin and /usr/sbin are often one directory: the same binary once
    if (bin && existsSync(bin) && !found.some((f) => realpathSync(f) === realpathSync(bin))) found.push(bin)
  }
  return found
}

/**
 * NATS_SERVER_BIN, else the newest nats-server found (by what each reports with --version); undefined if none.
 * The newest is the primary target: an older one (Debian's 2.9.10) runs the core, without what needs a newer server.
 */
export function findNatsServer(): string | undefined {
  // NATS_SERVER_BIN names the binary outright (a build of your own, an older release to test against)
  const pinned = process.env.NATS_SERVER_BIN
  if (pinned) return existsSync(pinned) ? pinned : undefined
  let best: { bin: string; v: [number, number, number] } | undefined
  for (const bin of natsServerCandidates()) {
    const v = natsServerVersion(bin) ?? [0, 0, 0]
    if (!best || compareVersions(v, best.v) > 0) best = { bin, v }
  }
  return best?.bin
}

/**
 * Pins the nats-server of this process and every child it starts (NATS_SERVER_BIN): the bench and the chaos soak
 * take `--nats-server <bin>` to measure one release beside another. Throws unless the binary reports a version.
 */
export function pinNatsServer(bin: string): [number, number, number] {
  const v = existsSync(bin) ? natsServerVersion(bin) : undefined
  if (!v) throw new Error(`${bin} is not a nats-server that reports its version (nats-server --version)`)
  process.env.NATS_SERVER_BIN = bin
  return v
}

/** A port that was free a moment ago, for a server to listen on: a random one below the ephemeral range that nothing
 * listens on, else one the kernel picks (bind to 0, read, close). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  // below the kernel's ephemeral range: a port found free there can become the local port of any outgoing
  // connection before the server that asked for it binds it ("address already in use", seen under parallel suites)
  const top = ephemeralFloor() - 1
  if (top > LOWEST_FREE + 1000)
    for (let i = 0; i < 40; i++) {
      const port = LOWEST_FREE + Math.floor(Math.random() * (top - LOWEST_FREE))
      if (!(await portInUse(port, host))) return port
    }
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, host, () => {
      const a = s.address()
      s.close(() => (typeof a === "object" && a ? resolve(a.port) : reject(new Error("no port"))))
    })
  })
}

/** where freePort looks from: above the well-known services' usual ports */
const LOWEST_FREE = 10_000

/** the lowest port the kernel hands to outgoing connections (Linux: ip_local_port_range; elsewhere 32768 or more) */
function ephemeralFloor(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0])
    if (Number.isInteger(low) && low > 0) return low
  } catch {}
  return 32_768
}

/** Whether something listens on host:port. */
export function portInUse(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once("error", () => resolve(true))
    s.listen(port, host, () => s.close(() => resolve(false)))
  })
}

export type NatsdOptions = {
  port: number
  monitorPort: number
  storeDir: string
  /** a config file; command-line port/store flags override what it says */
  config?: string
  env?: Record<string, string>
  args?: string[]
  host?: string
  /**
   * its own process group: a terminal's Ctrl-C then reaches only whoever started it, which can drain the workers
   * before stopping the server (`logiflow up`); tests leave it in their group so a killed test takes it along
   */
  detached?: boolean
  /** where the server's own log lines go (default: discarded) */
  onLog?: (line: string) => void
}

export type Natsd = {
  url: string
  port: number
  monitorPort: number
  readonly process: ChildProcess
  /** SIGTERM (graceful: the server flushes its store) and wait for exit */
  stop(): Promise<void>
  /** SIGKILL: a crash, nothing flushed */
  kill(): Promise<void>
  /** start again on the same ports and store */
  restart(): Promise<void>
}

export async function startNatsd(o: NatsdOptions): Promise<Natsd> {
  const bin = findNatsServer()
  if (!bin) throw new Error(INSTALL_HINT)
  const host = o.host ?? "127.0.0.1"
  const args = [
    ...(o.config ? ["-c", o.config] : []),
    "-a",
    host,
    "-p",
    String(o.port),
    "-m",
    String(o.monitorPort),
    "-js",
    "-sd",
    o.storeDir,
    ...(o.args ?? []),
  ]
  let child: ChildProcess
  const launch = async () => {
    child = spawn(bin, args, { env: { ...process.env, ...o.env }, stdio: ["ignore", "pipe", "pipe"], detached: o.detached ?? false })
    let tail = ""
    const onData = (b: Buffer) => {
      const text = b.toString()
      tail = (tail + text).slice(-4000)
      if (o.onLog) for (const line of text.split("\n")) if (line) o.onLog(line)
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)))
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline) {
      const done = await Promise.race([exited.then(() => true), sleep(50).then(() => false)])
      if (done) throw new Error(`nats-server exited at start (code ${child.exitCode}): ${tail.trim().split("\n").slice(-3).join(" | ")}`)
      // bounded: a monitor port that accepts but never answers (a loaded box) must not stall the start
      const ok = await fetch(`http://${host}:${o.monitorPort}/healthz?js-enabled-only=true`, { signal: AbortSignal.timeout(2000) }).then(
        (r) => r.ok,
        () => false,
      )
      if (ok) return
    }
    child.kill("SIGKILL")
    throw new Error(`nats-server did not become healthy within 15 s: ${tail.slice(-500)}`)
  }
  // a graceful stop flushes the store; one that takes longer than 30 s is ended with SIGKILL (JetStream recovers)
  const waitExit = (signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      const kill = signal === "SIGKILL" ? undefined : setTimeout(() => child.kill("SIGKILL"), 30_000)
      child.once("exit", () => (clearTimeout(kill), resolve()))
      child.kill(signal)
    })
  await launch()
  return {
    url: `nats://${host}:${o.port}`,
    port: o.port,
    monitorPort: o.monitorPort,
    get process() {
      return child
    },
    stop: () => waitExit("SIGTERM"),
    kill: () => waitExit("SIGKILL"),
    restart: launch,
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
