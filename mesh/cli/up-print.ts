// mesh/cli/up-print.ts — what `logiflow up` prints: every process's lines prefixed with its name, JSON log lines made
// readable, and the one-click links a newcomer needs (on the ports the run really listens on).
import type { WorkerName } from "../../contracts/mod.ts"
import { tariffsFromEnv } from "../../workers/pricing.ts"
import { signToken } from "../auth.ts"
import type { Credentials } from "./up-credentials.ts"

const COLORS = [36, 33, 35, 32, 34, 31, 90]
const LEVEL_COLOR: Record<string, number> = { debug: 90, info: 0, warn: 33, error: 31 }
/** the colour of up's own lines and the servers' */
export const OWN_COLOR = 6

/** A JSON log line → `12:00:01 warn  dead-lettered reason=no-tariff …`; other lines as they are. */
export function pretty(line: string, color = process.stdout.isTTY): string {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line)
  } catch {
    return line
  }
  if (typeof o !== "object" || o === null || typeof o.msg !== "string") return line
  const { level = "info", time, msg, worker: _w, ...rest } = o as { level?: string; time?: string; msg: string; worker?: string }
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ")
  const t = typeof time === "string" ? time.slice(11, 19) : ""
  const lvl = String(level).padEnd(5)
  const c = LEVEL_COLOR[String(level)] ?? 0
  return `${t} ${color && c ? `\x1b[${c}m${lvl}\x1b[0m` : lvl} ${msg}${fields ? ` ${fields}` : ""}`
}

/** `invoice │ ` in the i-th colour (on a terminal). */
export function prefix(name: string, i: number, tty = process.stdout.isTTY): string {
  const label = name.padEnd(8)
  return tty ? `\x1b[${COLORS[i % COLORS.length]}m${label}\x1b[0m│ ` : `${label}│ `
}

/** Splits a stream's chunks into lines and hands each complete one on. */
export function lineSplitter(onLine: (line: string) => void): (b: Buffer) => void {
  let buf = ""
  return (b) => {
    buf += b.toString()
    const lines = buf.split("\n")
    buf = lines.pop()!
    for (const l of lines) if (l) onLine(l)
  }
}

/** One-click links: a portal sign-in per customer with a tariff, the ops dashboard, a ready request to routing. */
export async function links(names: string[], port: (w: WorkerName) => number, creds: Credentials, say: (l: string) => void) {
  if (names.includes("portal")) {
    let customers: string[] = []
    try {
      customers = Object.keys(tariffsFromEnv(process.env.INVOICE_TARIFFS))
    } catch {} // invoice itself reports a broken INVOICE_TARIFFS
    const expiresAt = Math.floor(Date.now() / 1000) + 7 * 86_400
    for (const c of customers)
      say(`portal for ${c}: http://127.0.0.1:${port("portal")}/login?token=${await signToken(creds.portalSecret, c, expiresAt)}`)
    say(`  (more: npx logiflow token customer <id> --link; links are valid 7 days, or until PORTAL_SECRET changes)`)
  }
  if (names.includes("ops")) {
    const op = creds.generated.operator
    say(
      op
        ? `ops dashboard: http://127.0.0.1:${port("ops")}/login?token=${op.token}  (operator ${op.name})`
        : `ops dashboard: http://127.0.0.1:${port("ops")}/  (sign in with your LOGIFLOW_OPERATORS token)`,
    )
  }
  const k = creds.generated.keys
  if (names.includes("routing") && k) {
    const body = JSON.stringify({
      truckId: "truck-7",
      customerId: "acme",
      depot: { lat: 52.52, lon: 13.405 },
      stops: [
        { id: "a", lat: 52.53, lon: 13.41 },
        { id: "b", lat: 52.5, lon: 13.39 },
      ],
    })
    say(
      `try it (API key "dispatcher"): curl -s -X POST http://127.0.0.1:${port("routing")}/routes -H 'authorization: Bearer ${k.dispatcher}' -H 'content-type: application/json' -d '${body}'`,
    )
    say(`  (tracking's key "gateway": ${k.gateway})`)
  }
}
