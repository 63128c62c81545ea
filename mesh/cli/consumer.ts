// mesh/cli/consumer.ts — `logiflow consumer pause|resume`: the circuit breaker for a downstream outage, the same
// operations as the ops API (mesh/admin/pause.ts), as the admin user. Needs nats-server 2.11; on an older one the
// answer is one line naming the version it needs.
import { parseArgs } from "node:util"
import { jetstreamManager } from "@nats-io/jetstream"
import { consumerRef, pauseConsumer, pauseEnd, resumeConsumer } from "../admin/mod.ts"
import { CliError, type Command, type Io } from "./io.ts"
import { cli, operator } from "./ops.ts"

const usage = "logiflow consumer pause <STREAM>/<consumer> [--for 30m | --until <RFC 3339>] | resume <STREAM>/<consumer>"

const run: Record<string, (args: string[], io: Io) => Promise<void>> = {
  async pause(args, io) {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { for: { type: "string" }, until: { type: "string" } },
    })
    if (positionals.length !== 1) throw new CliError(`usage: ${usage}`)
    const { stream, consumer } = await cli(Promise.resolve().then(() => consumerRef(positionals[0]!)))
    const until = await cli(Promise.resolve().then(() => pauseEnd(values)))
    const by = operator()
    const nc = await io.connect()
    try {
      const r = await cli(pauseConsumer({ jsm: await jetstreamManager(nc), nc }, stream, consumer, until, by))
      io.out(
        `paused ${stream}/${consumer} until ${r.pauseUntil} (by ${by}): its events wait in ${stream}; logiflow consumer resume ${stream}/${consumer} delivers them at once`,
      )
    } finally {
      await nc.close()
    }
  },
  async resume(args, io) {
    const { positionals } = parseArgs({ args, allowPositionals: true, options: {} })
    if (positionals.length !== 1) throw new CliError(`usage: ${usage}`)
    const { stream, consumer } = await cli(Promise.resolve().then(() => consumerRef(positionals[0]!)))
    const by = operator()
    const nc = await io.connect()
    try {
      await cli(resumeConsumer({ jsm: await jetstreamManager(nc), nc }, stream, consumer, by))
      io.out(`resumed ${stream}/${consumer} (by ${by})`)
    } finally {
      await nc.close()
    }
  },
}

export const consumerCommand: Command = {
  summary: "pause a consumer (its events wait in the stream: the breaker for a downstream outage), or resume it",
  usage,
  async run([sub, ...rest], io) {
    const f = sub ? run[sub] : undefined
    if (!f) throw new CliError(`${sub ? `unknown consumer command "${sub}"` : "missing consumer command"} (pause, resume); usage: ${usage}`)
    await f(rest, io)
  },
}
