// mesh/cli/context.ts — the nats CLI context `logiflow up` writes for its run: the server URL and the admin user's
// credentials in the nats CLI's own context directory, so `nats --context logiflow …` works against the running
// mesh. The passwords are per run: the file is removed when the run stops, and a stale one (a run that was killed)
// is replaced by the next. A context of that name that another tool wrote, or another running `logiflow up`, is
// never touched.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { homedir } from "node:os"
import { join } from "node:path"
import { env } from "../env.ts"

export const DEFAULT_CONTEXT = "logiflow"

/** LOGIFLOW_NATS_CONTEXT, else `logiflow`: a name the nats CLI takes as a name, not as a path. */
export function contextName(): string {
  const name = env("LOGIFLOW_NATS_CONTEXT")?.trim() || DEFAULT_CONTEXT
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name) || name.endsWith(".json")) {
    throw new Error(`LOGIFLOW_NATS_CONTEXT must be a plain name (letters, digits, . _ -), got "${name}"`)
  }
  return name
}

/** Where the nats CLI keeps its contexts: $XDG_CONFIG_HOME/nats/context, else ~/.config/nats/context. */
export function contextDir(): string {
  return join(env("XDG_CONFIG_HOME") || join(homedir(), ".config"), "nats", "context")
}

// the mark of a context this tool wrote, and of the run it belongs to
const MARK = /^logiflow up \(pid (\d+)\)/

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"
  }
}

export type Written = { name: string; path: string } | { name: string; path: string; refused: string }

/**
 * Writes the context `name` (mode 0600, in a 0700 directory, as `nats context save` does) unless a context of that
 * name is someone else's: then it says why in `refused` and writes nothing.
 */
export function writeContext(name: string, c: { url: string; user?: string; password?: string }): Written {
  const dir = contextDir()
  const path = join(dir, `${name}.json`)
  if (existsSync(path)) {
    let description = ""
    try {
      description = String((JSON.parse(readFileSync(path, "utf8")) as { description?: unknown }).description ?? "")
    } catch {}
    const pid = Number(MARK.exec(description)?.[1])
    if (!pid)
      return {
        name,
        path,
        refused: `a nats context "${name}" exists that logiflow did not write; left as it is (set LOGIFLOW_NATS_CONTEXT to another name)`,
      }
    if (pid !== process.pid && alive(pid))
      return {
        name,
        path,
        refused: `the nats context "${name}" belongs to another running logiflow up (pid ${pid}); set LOGIFLOW_NATS_CONTEXT to another name`,
      }
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const context = {
    description: `logiflow up (pid ${process.pid}): removed when it stops; the passwords are this run's`,
    url: c.url,
    user: c.user ?? "",
    password: c.password ?? "",
  }
  // written whole, then renamed into place: the CLI never reads half a file, and the password never sits in a file
  // with looser permissions
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, `${JSON.stringify(context, null, 2)}\n`, { mode: 0o600 })
  renameSync(tmp, path)
  return { name, path }
}

/** Removes the context if it is still this process's own. */
export function removeContext(path: string): void {
  try {
    const description = String((JSON.parse(readFileSync(path, "utf8")) as { description?: unknown }).description ?? "")
    if (Number(MARK.exec(description)?.[1]) === process.pid) rmSync(path, { force: true })
  } catch {}
}
