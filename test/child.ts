// test/child.ts — child processes whose output lines can be awaited: the one implementation behind the tests'
// spawnTs (harness.ts), the benches' spawnTs (bench/lib.ts) and the Deno workers (deno.test.ts, hostile.test.ts).
// Kept apart from harness.ts so a bench importing it does not take the harness's LOG_LEVEL default.
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import { join, resolve } from "node:path"

export const ROOT = resolve(import.meta.dirname, "..")

export type Child = {
  proc: ChildProcess
  pid: number
  lines: string[]
  /** resolves with the first output line matching `re` (already seen lines count) */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>
  /** sends `signal` and resolves with the exit code (null when it had to be killed after `graceMs`, default 90 s) */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>
  exited: Promise<number | null>
}

export type ChildOptions = {
  /** names the child in waitFor's timeout error */
  name: string
  /** gets every output line as it arrives; by default TEST_VERBOSE echoes it to stdout as `[name] line` */
  echo?: (line: string) => void
  /** past this many lines, the oldest half is dropped (long-running bench children) */
  maxLines?: number
  /** waitFor's default timeout */
  waitMs?: number
}

/** Runs `command args` in ROOT with `env` on top of this process's env; stdout and stderr become `lines`. */
export function spawnChild(command: string, args: string[], env: Record<string, string | undefined>, o: ChildOptions): Child {
  const proc = spawn(command, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
  const echo = o.echo ?? ((line: string) => process.env.TEST_VERBOSE && console.log(`[${o.name}] ${line}`))
  const lines: string[] = []
  let waiters: { re: RegExp; resolve: (l: string) => void }[] = []
  const onData = (b: Buffer) => {
    for (const line of b.toString().split("\n")) {
      if (!line) continue
      lines.push(line)
      if (o.maxLines && lines.length > o.maxLines) lines.splice(0, Math.floor(o.maxLines / 2))
      echo(line)
      waiters = waiters.filter((w) => (w.re.test(line) ? (w.resolve(line), false) : true))
    }
  }
  proc.stdout!.on("data", onData)
  proc.stderr!.on("data", onData)
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)))
  return {
    proc,
    pid: proc.pid!,
    lines,
    exited,
    waitFor(re, timeoutMs = o.waitMs ?? 20_000) {
      const seen = lines.find((l) => re.test(l))
      if (seen) return Promise.resolve(seen)
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`${o.name}: no line matching ${re} within ${timeoutMs} ms; last: ${lines.slice(-5).join(" | ")}`)),
          timeoutMs,
        )
        waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) })
      })
    },
    stop(signal = "SIGTERM", graceMs = 90_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited
      // a child that does not stop within graceMs is killed: its exit code is then null and the test fails, not hangs
      const kill = setTimeout(() => proc.kill("SIGKILL"), graceMs)
      void exited.then(() => clearTimeout(kill))
      proc.kill(signal)
      return exited
    },
  }
}

/**
 * Runs a TypeScript file as its own node process (node [nodeArgs] --import tsx: one pid, so signals and
 * /proc/<pid> reach it), LOG_LEVEL info unless `env` says otherwise. `nice` lowers its CPU priority (nice execs
 * node, so the pid stays the file's).
 */
export function spawnTs(
  file: string,
  env: Record<string, string | undefined> = {},
  args: string[] = [],
  o: Partial<ChildOptions> & { nodeArgs?: string[]; nice?: number } = {},
): Child {
  const cmd = [process.execPath, ...(o.nodeArgs ?? []), "--import", "tsx", resolve(ROOT, file), ...args]
  const [command, ...argv] = o.nice ? ["nice", "-n", String(o.nice), ...cmd] : cmd
  return spawnChild(command!, argv, { LOG_LEVEL: "info", ...env }, { name: file, ...o })
}

/**
 * The native binary, not node_modules/.bin/deno: when npm skipped deno's postinstall that is bin.cjs, a node process
 * that runs deno as its child, and a SIGTERM sent to it would never reach the worker.
 */
export function denoBinary(): string {
  const platforms = join(ROOT, "node_modules", "@deno")
  const candidates = [
    join(ROOT, "node_modules", "deno", "deno"),
    ...(existsSync(platforms) ? readdirSync(platforms).map((p) => join(platforms, p, "deno")) : []),
  ]
  const found = candidates.find((c) => existsSync(c))
  if (!found) throw new Error("no deno binary under node_modules: run npm install (deno is a devDependency)")
  return found
}
