// mesh/cli/dlq.ts — `logiflow dlq`: find dead letters by what failed, show, correct (edit), dry-run, replay (one, or a
// filter's worth as a background job that ops runs), discard. The operations are ops' own (mesh/admin/), so the CLI
// and the HTTP API cannot drift apart.
import { readFile } from "node:fs/promises"
import { parseArgs } from "node:util"
import { Kvm } from "@nats-io/kv"
import { replaySubject } from "../../contracts/mod.ts"
import {
  adminFor,
  allEntries,
  cancelJob,
  type DlqEntry,
  type DryRun,
  discardEntry,
  dryRun,
  editEntry,
  getJob,
  type Job,
  JOBS,
  listEntries,
  listJobs,
  matches,
  replayEntry,
  showEntry,
  startJob,
  toFilter,
} from "../admin/mod.ts"
import { cli, oneLine, operator, positiveInt, table } from "./format.ts"
import { CliError, type Command, type Io } from "./io.ts"
import { sleep } from "../time.ts"

const filterOptions = {
  "event-id": { type: "string" },
  key: { type: "string" },
  consumer: { type: "string" },
  reason: { type: "string" },
  subject: { type: "string" },
  since: { type: "string" },
  until: { type: "string" },
} as const

/** CLI flags → the API's filter (`--event-id` is `eventId`), checked as the API checks it. */
const filterOf = (values: Record<string, unknown>) =>
  cli(
    Promise.resolve().then(() => {
      const { "event-id": eventId, ...rest } = values
      return toFilter({ ...rest, eventId })
    }),
  )

function showLines(d: Awaited<ReturnType<typeof showEntry>>): string[] {
  const e = d.entry
  const field = (k: string, v: unknown) => `${`${k}:`.padEnd(12)} ${v}`
  return [
    field("id", e.id),
    field("state", e.state),
    field("consumer", e.consumer),
    field("stream", `${e.stream} seq ${e.seq}`),
    field("subject", e.subject),
    ...(e.eventId ? [field("event id", e.eventId)] : []),
    ...(e.routeId ? [field("route", e.routeId)] : []),
    ...(e.key ? [field("key", e.key)] : []),
    field("reason", e.reason),
    field("error", e.error),
    field("deliveries", e.deliveries),
    field("failed at", e.failedAt),
    field("replays", e.replays),
    ...(e.replayOf ? [field("replay of", e.replayOf)] : []),
    field("dlq seq", e.dlqSeq),
    "headers:",
    ...Object.entries(d.headers).map(([k, v]) => `  ${k}: ${v}`),
    "payload:",
    ...d.payload.split("\n").map((l) => `  ${l}`),
    ...(e.edit ? [`edited payload (edit ${e.edit.n} by ${e.edit.by} at ${e.edit.at}; a replay sends it):`] : []),
    ...(e.edit
      ? JSON.stringify(e.edit.payload, null, 2)
          .split("\n")
          .map((l) => `  ${l}`)
      : []),
    "timeline:",
    ...e.history.map((h) => `  ${h.at} ${h.action} by ${h.by}${h.note ? ` (${h.note})` : ""}`),
  ]
}

const entryRow = (e: DlqEntry) => [
  e.id,
  e.state,
  e.consumer,
  e.reason,
  e.routeId ?? e.eventId ?? "-",
  e.key ?? "-",
  String(e.deliveries),
  e.failedAt,
  oneLine(e.error, 80),
]

async function jsonArg(arg: string | undefined): Promise<unknown> {
  if (arg === undefined) return undefined
  const text = arg.startsWith("@")
    ? await readFile(arg.slice(1), "utf8").catch((err: NodeJS.ErrnoException) => {
        throw new CliError(`cannot read ${arg.slice(1)}: ${err.code ?? err.message}`)
      })
    : arg
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new CliError(`invalid JSON: ${(err as Error).message}`)
  }
}

function dryRunLines(r: DryRun): string[] {
  const out = [`dry run of ${r.entry}: ${r.consumer} handles ${r.event} (${r.payload} payload) → ${r.outcome}`]
  for (const i of r.issues) out.push(`  invalid ${i.path || "(payload)"}: ${i.message}`)
  if (r.reason || r.error) out.push(`  ${r.reason ? `${r.reason}: ` : ""}${r.error ?? ""}`)
  for (const n of r.notEvaluated) out.push(`  not evaluated: ${n}`)
  if (r.outcome === "emits" && r.emitted.length === 0) out.push("  emits nothing")
  for (const e of r.emitted) {
    const why = e.invalid ? ` INVALID: ${e.invalid}` : e.refused ? ` REFUSED: ${e.refused}` : ""
    out.push(`  emits ${e.name} on ${e.subject} (msg id ${e.id}${e.once ? ", once" : ""})${why}`, `    ${JSON.stringify(e.data)}`)
  }
  return out
}

const jobLine = (j: Job) =>
  `${j.id} ${j.state}${j.cancel && j.state === "running" ? " (cancelling)" : ""}: ${j.done} done, ${j.failed} failed, ${j.skipped} skipped of ${j.total} at ${j.rate}/s` +
  `${j.resumed ? `, resumed ${j.resumed}×` : ""} (by ${j.by}, started ${j.startedAt})`

async function withAdmin<T>(io: Io, fn: (a: Awaited<ReturnType<typeof adminFor>>, nc: Awaited<ReturnType<Io["connect"]>>) => Promise<T>) {
  const nc = await io.connect()
  try {
    return await fn(await adminFor(nc), nc)
  } finally {
    await nc.close()
  }
}

const one = (positionals: string[], usage: string) => {
  if (positionals.length !== 1) throw new CliError(`usage: ${usage}`)
  return positionals[0]!
}

const dlqCommands: Record<string, (args: string[], io: Io) => Promise<void>> = {
  async ls(args, io) {
    const options = { ...filterOptions, state: { type: "string" }, limit: { type: "string" }, cursor: { type: "string" } } as const
    const { values } = parseArgs({ args, options })
    const { limit, cursor, ...raw } = values
    const filter = await filterOf(raw)
    const n = limit === undefined ? 100 : positiveInt(limit, "--limit")
    await withAdmin(io, async (a) => {
      const page = await cli(listEntries(a, filter, { limit: Math.min(n, 1000), cursor }))
      if (page.total === 0) return io.out("no entries")
      table(io, ["ID", "STATE", "CONSUMER", "REASON", "EVENT", "KEY", "DELIVERIES", "FAILED AT", "ERROR"], page.entries.map(entryRow))
      io.out(
        page.entries.length < page.total
          ? `showing ${page.entries.length} of ${page.total} entries${page.nextCursor ? `; next page: --cursor ${page.nextCursor}` : " (last page)"}`
          : `${page.total} ${page.total === 1 ? "entry" : "entries"}`,
      )
    })
  },
  async show(args, io) {
    const id = one(parseArgs({ args, allowPositionals: true, options: {} }).positionals, "logiflow dlq show <id>")
    await withAdmin(io, async (a) => {
      for (const line of showLines(await cli(showEntry(a, id)))) io.out(line)
    })
  },
  async edit(args, io) {
    const { positionals } = parseArgs({ args, allowPositionals: true, options: {} })
    if (positionals.length !== 2) throw new CliError("usage: logiflow dlq edit <id> <json|@file>")
    const payload = await jsonArg(positionals[1])
    await withAdmin(io, async (a) => {
      const e = await cli(editEntry(a, positionals[0]!, payload, operator()))
      io.out(`edited ${e.id} (edit ${e.edit!.n}); check it with logiflow dlq dry-run ${e.id}, then logiflow dlq replay ${e.id}`)
    })
  },
  async "dry-run"(args, io) {
    const { positionals } = parseArgs({ args, allowPositionals: true, options: {} })
    if (positionals.length < 1 || positionals.length > 2) throw new CliError("usage: logiflow dlq dry-run <id> [json|@file]")
    const payload = await jsonArg(positionals[1])
    // the workers' real handlers, loaded only for this command
    const { handlers } = await import("../../workers/handlers.ts")
    await withAdmin(io, async (a) => {
      for (const line of dryRunLines(await cli(dryRun(a, positionals[0]!, handlers, payload)))) io.out(line)
    })
  },
  async replay(args, io) {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { ...filterOptions, rate: { type: "string" }, wait: { type: "boolean" } },
    })
    const { rate, wait, ...filters } = values
    const filtered = Object.values(filters).some((v) => v !== undefined)
    if (positionals.length > 1 || (positionals.length === 1) === filtered || (!positionals.length && !filtered)) {
      throw new CliError(
        "usage: logiflow dlq replay <id>, or logiflow dlq replay --consumer C [--reason R] [--event-id E] [--key K] [--since T] [--until T] [--rate N] [--wait]",
      )
    }
    const by = operator()
    const filter = await filterOf(filters)
    await withAdmin(io, async (a) => {
      if (positionals.length) {
        const e = await cli(replayEntry(a, positionals[0]!, by))
        return io.out(`replayed ${e.id} to ${replaySubject(e.consumer, e.stream)} (replay ${e.replays})`)
      }
      const kv = await new Kvm(a.js).open(JOBS)
      const select = async (f: typeof filter) => (await allEntries(a)).filter((e) => matches(e, f)).reverse()
      let job = await cli(startJob(kv, select, filter, by, rate === undefined ? undefined : Number(rate)))
      io.out(`started ${jobLine(job)}`)
      io.out(`ops runs it; follow it with logiflow dlq job ${job.id}, stop it with logiflow dlq job ${job.id} --cancel`)
      while (wait && job.state === "running") {
        await sleep(500)
        job = (await getJob(kv, job.id)).job
      }
      if (wait) io.out(jobLine(job))
    })
  },
  async job(args, io) {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { cancel: { type: "boolean" } } })
    const id = one(positionals, "logiflow dlq job <job-id> [--cancel]")
    await withAdmin(io, async (a) => {
      const kv = await new Kvm(a.js).open(JOBS)
      const job = values.cancel ? await cli(cancelJob(kv, id, operator(), 10_000)) : (await cli(getJob(kv, id))).job
      io.out(jobLine(job))
      for (const e of job.errors) io.out(`  ${e.id}: ${e.error}`)
    })
  },
  async jobs(args, io) {
    parseArgs({ args, options: {} })
    await withAdmin(io, async (a) => {
      const all = await listJobs(await new Kvm(a.js).open(JOBS))
      if (!all.length) return io.out("no replay jobs")
      for (const j of all) io.out(jobLine(j))
    })
  },
  async discard(args, io) {
    const id = one(parseArgs({ args, allowPositionals: true, options: {} }).positionals, "logiflow dlq discard <id>")
    const by = operator()
    await withAdmin(io, async (a) => io.out(`discarded ${(await cli(discardEntry(a, id, by))).id}`))
  },
}
dlqCommands.list = dlqCommands.ls!

export const dlq: Command = {
  summary: "dead letters: find (ls), show, edit, dry-run, replay (one, or a filter's as a background job), job, discard",
  usage:
    "logiflow dlq ls [--event-id E] [--key K] [--consumer C] [--reason R] [--state open|replayed|discarded|resolved] [--subject S] " +
    "[--since 1h] [--until T] [--limit N] [--cursor C] | show <id> | edit <id> <json|@file> | dry-run <id> [json|@file] | " +
    "replay <id> | replay --consumer C [--reason R] [--rate N] [--wait] | job <job-id> [--cancel] | jobs | discard <id>",
  async run([sub, ...rest], io) {
    const run = sub && Object.hasOwn(dlqCommands, sub) ? dlqCommands[sub] : undefined
    if (!run)
      throw new CliError(
        `${sub ? `unknown dlq command "${sub}"` : "missing dlq command"} (${Object.keys(dlqCommands).join(", ")}); usage: ${dlq.usage}`,
      )
    await run(rest, io)
  },
}
