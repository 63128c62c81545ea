// mesh/cli/ops.ts — the operator commands of `logiflow` (tail, status, dlq, publish). They talk to NATS as the
// admin user (io.connect()); the DLQ operations (mesh/cli/dlq.ts) are the ops worker's own (mesh/admin/), so the
// CLI and the HTTP API cannot drift apart.
import { readFile } from "node:fs/promises"
import { parseArgs } from "node:util"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import type { MsgHdrs } from "@nats-io/transport-node"
import { ContractError, decode, eventNames, isEventName, keyOf, validate } from "../../contracts/mod.ts"
import { adminFor, parseTime, status } from "../admin/mod.ts"
import { env } from "../env.ts"
import { childTraceparent, newId, publishEvent } from "../publish.ts"
import { dlq } from "./dlq.ts"
import { ago, bytes, cli, left, oneLine, positiveInt, table } from "./format.ts"
import { CliError, type Command } from "./io.ts"

export { cli, operator } from "./format.ts"

// ---- helpers

/** Throws unless `s` is a valid subscription subject: dot-separated tokens, `*` a whole token, `>` only last. */
export function checkSubject(s: string): void {
  const tokens = s.split(".")
  const bad =
    s === "" ||
    /\s/.test(s) ||
    tokens.some((t, i) => t === "" || (t === ">" && i !== tokens.length - 1) || (t.length > 1 && /[*>]/.test(t)))
  if (bad)
    throw new CliError(`"${s}" is not a valid subject pattern (dot-separated tokens; * is one whole token, > the rest and only last)`)
}

/** The subjects both patterns match, as one pattern, or undefined when they share none. */
export function intersect(a: string, b: string): string | undefined {
  const x = a.split(".")
  const y = b.split(".")
  const out: string[] = []
  for (let i = 0; ; i++) {
    const p = x[i]
    const q = y[i]
    if (p === ">") return q === undefined ? undefined : [...out, ...y.slice(i)].join(".")
    if (q === ">") return p === undefined ? undefined : [...out, ...x.slice(i)].join(".")
    if (p === undefined || q === undefined) return p === q ? out.join(".") : undefined
    if (p !== "*" && q !== "*" && p !== q) return undefined
    out.push(p === "*" ? q : p)
  }
}

// ---- tail

type Seen = { subject: string; headers?: MsgHdrs; data: Uint8Array; time: Date }

/** One line per event: time, type, key, id, data; `--raw`: subject, headers, blank line, body. */
export function render(m: Seen, raw = false): string[] {
  const text = new TextDecoder().decode(m.data)
  if (raw) {
    const lines = [m.subject]
    for (const [k, vs] of m.headers ?? []) for (const v of vs) lines.push(`${k}: ${v}`)
    return [...lines, "", text, ""]
  }
  const h = (name: string) => m.headers?.get(name) || undefined
  try {
    const e = decode(h, m.data, m.subject)
    return [`${e.meta.time || m.time.toISOString()} ${e.name} ${e.meta.key ?? "-"} ${e.meta.id} ${JSON.stringify(e.data)}`]
  } catch (err) {
    // not a (valid) event: advisories, a hand-published message; shown as it is, with why it did not decode
    const why = err instanceof ContractError ? err.reason : "undecodable"
    return [`${h("ce-time") ?? m.time.toISOString()} ${m.subject} ${h("ce-subject") ?? "-"} ${h("ce-id") ?? "-"} !${why} ${oneLine(text)}`]
  }
}

const tail: Command = {
  summary: "print events on a subject as they arrive, one line each (--since: from the stream first)",
  usage: "logiflow tail <subject-pattern> [--raw] [--since 5m|<ISO time>] [--count N]",
  async run(args, io) {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { raw: { type: "boolean" }, since: { type: "string" }, count: { type: "string" } },
    })
    const [given, ...extra] = positionals
    if (!given || extra.length) throw new CliError(`usage: ${tail.usage}`)
    checkSubject(given)
    // an event's subjects end with its key: `routing.events.RouteCalculated` means all of them, every key
    const pattern = eventNames.some((e) => given.endsWith(`.events.${e}`) || given === `*.events.${e}`) ? `${given}.*` : given
    const count = values.count === undefined ? Infinity : positiveInt(values.count, "--count")
    const since = values.since === undefined ? undefined : await cli(Promise.resolve().then(() => parseTime(values.since!)))
    const nc = await io.connect()
    const stops: (() => unknown)[] = []
    let finish!: () => void
    const finished = new Promise<void>((r) => (finish = r))
    const onSignal = () => finish()
    try {
      const jsm = await jetstreamManager(nc)
      const targets: { stream: string; filter: string }[] = []
      const known: string[] = []
      for await (const s of jsm.streams.list()) {
        for (const subject of s.config.subjects ?? []) {
          known.push(subject)
          const filter = intersect(pattern, subject)
          if (filter) targets.push({ stream: s.config.name, filter })
        }
      }
      // a typo would otherwise wait forever in silence
      if (!targets.length)
        throw new CliError(`no stream stores "${pattern}"; stored subjects: ${known.sort().join(", ") || "none (run logiflow provision)"}`)
      let shown = 0
      const show = (m: Seen) => {
        if (shown >= count) return
        shown++
        for (const line of render(m, values.raw)) io.out(line)
        if (shown >= count) finish()
      }
      process.once("SIGINT", onSignal)
      process.once("SIGTERM", onSignal)
      if (since) {
        const js = jetstream(nc)
        for (const t of targets) {
          const c = await js.consumers.get(t.stream, { filter_subjects: t.filter, opt_start_time: since.toISOString() })
          const msgs = await c.consume({ callback: (m) => show({ subject: m.subject, headers: m.headers, data: m.data, time: m.time }) })
          stops.push(
            () => msgs.stop(),
            () => c.delete().catch(() => {}),
          )
        }
      } else {
        const sub = nc.subscribe(pattern, {
          callback: (err, m) => (err ? finish() : show({ subject: m.subject, headers: m.headers, data: m.data, time: new Date() })),
        })
        stops.push(() => sub.unsubscribe())
      }
      await nc.flush()
      console.error(`tail: listening on ${pattern}${since ? ` since ${since.toISOString()}` : ""} (Ctrl-C to stop)`)
      await finished
    } finally {
      process.off("SIGINT", onSignal)
      process.off("SIGTERM", onSignal)
      for (const stop of stops) await stop()
      await nc.close()
    }
  },
}

// ---- status

const statusCommand: Command = {
  summary: "running workers, streams, consumers and their lag, open DLQ entries (like nats stream report + consumer report)",
  usage: "logiflow status",
  async run(args, io) {
    parseArgs({ args, options: {} })
    const nc = await io.connect()
    try {
      const st = await status(await adminFor(nc))
      if (st.workers.length === 0) io.out("WORKERS: no heartbeats (none running, or the heartbeats bucket is missing)")
      else {
        const rows = st.workers.map((w) => [
          w.worker,
          w.instance,
          w.ready ? "yes" : "no",
          String(w.inflight),
          w.version,
          ago(w.startedAt),
          ago(w.at),
        ])
        table(io, ["WORKER", "INSTANCE", "READY", "IN FLIGHT", "VERSION", "STARTED", "LAST BEAT"], rows)
      }
      io.out("")
      table(
        io,
        ["STREAM", "MESSAGES", "BYTES", "CONSUMERS", "SUBJECTS"],
        st.streams.map((s) => [s.name, String(s.messages), bytes(s.bytes), String(s.consumers), s.subjects.join(" ")]),
      )
      io.out("")
      table(
        io,
        ["CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED", "WAITING", "LAST ACTIVE"],
        st.consumers.map((c) => [
          `${c.stream}/${c.name}`,
          String(c.pending),
          String(c.ackPending),
          String(c.redelivered),
          String(c.waiting),
          ago(c.lastActive),
        ]),
      )
      io.out("")
      // only while something is paused (2.11+): the events of these consumers wait in their streams
      const paused = st.consumers.filter((c) => c.paused)
      if (paused.length) {
        table(
          io,
          ["PAUSED", "UNTIL", "LEFT"],
          paused.map((c) => [`${c.stream}/${c.name}`, c.pauseUntil ?? "-", c.pauseUntil ? left(c.pauseUntil) : "-"]),
        )
        io.out("")
      }
      if (st.dlq.error) io.out(`DLQ: ${st.dlq.error}`)
      else if (st.dlq.open === 0) io.out("DLQ: no open entries")
      else
        table(
          io,
          ["DLQ OPEN", "CONSUMER", "REASON"],
          st.dlq.groups.map((g) => [String(g.open), g.consumer, g.reason]),
        )
    } finally {
      await nc.close()
    }
  },
}

// ---- publish

const publish: Command = {
  summary: "validate an event against its contract and publish it (fresh UUIDv7 id, source logiflow/cli)",
  usage: "logiflow publish <EventName> <json|@file>",
  async run(args, io) {
    // no --key: an event's key (its ordering key and the last token of its subject) is the contract's, from its data
    const { positionals } = parseArgs({ args, allowPositionals: true, options: {} })
    const [name, payload, ...extra] = positionals
    if (!name || payload === undefined || extra.length) throw new CliError(`usage: ${publish.usage}`)
    if (!isEventName(name)) throw new CliError(`unknown event "${name}" (known: ${eventNames.join(", ")})`)
    let text = payload
    if (payload.startsWith("@")) {
      text = await readFile(payload.slice(1), "utf8").catch((err: NodeJS.ErrnoException) => {
        throw new CliError(`cannot read ${payload.slice(1)}: ${err.code ?? err.message}`)
      })
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (err) {
      throw new CliError(`invalid JSON: ${(err as Error).message}`)
    }
    let data
    try {
      data = validate(name, json)
    } catch (err) {
      if (err instanceof ContractError) throw new CliError(`breaks the contract: ${err.message}`)
      throw err
    }
    const nc = await io.connect()
    try {
      const id = newId(env("SITE_ID") ?? "")
      const ack = await publishEvent(jetstream(nc), name, data, { id, source: "logiflow/cli", traceparent: childTraceparent() })
      io.out(`published ${name} ${id} (key ${keyOf(name, data)}) to ${ack.stream} seq ${ack.seq}`)
    } finally {
      await nc.close()
    }
  },
}

export const commands: Record<string, Command> = { tail, status: statusCommand, dlq, publish }
