// mesh/cli/token.ts — `logiflow token customer <id> [--days N] [--link]`: a customer's portal token, signed with
// PORTAL_SECRET (the environment, PORTAL_SECRET_FILE, or the running `npm start`'s session). Printed alone, so a
// script can take it:
//   echo "https://portal.example.com/login?token=$(logiflow token customer acme --days 7)"
// `--link` prints the one-click sign-in on the running portal instead (mesh/cli/urls.ts: wherever it listens).
import { parseArgs } from "node:util"
import { secret, signToken } from "../auth.ts"
import { CliError, type Command, session } from "./io.ts"
import { workerUrl } from "./urls.ts"

const DEFAULT_DAYS = 30

export const token: Command = {
  summary: "mint a customer's portal token (signed with PORTAL_SECRET), valid --days N (default 30)",
  usage: "logiflow token customer <customerId> [--days N] [--link]",
  async run(args, io) {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { days: { type: "string" }, link: { type: "boolean" } },
    })
    const [kind, customerId, ...rest] = positionals
    if (kind !== "customer" || !customerId || rest.length) throw new CliError(`usage: ${token.usage}`)
    const days = values.days === undefined ? DEFAULT_DAYS : Number(values.days)
    if (!(days > 0 && days <= 366)) throw new CliError(`--days must be a number of days between 0 and 366, got "${values.days}"`)
    const key = secret("PORTAL_SECRET") ?? session().PORTAL_SECRET
    if (!key)
      throw new CliError(
        "no PORTAL_SECRET: set it (or PORTAL_SECRET_FILE) to the portal's secret, or run this beside a running `npm start`",
      )
    const expiresAt = Math.floor(Date.now() / 1000 + days * 86_400)
    try {
      const signed = await signToken(key, customerId, expiresAt)
      io.out(values.link ? `${workerUrl("portal")}/login?token=${signed}` : signed)
    } catch (err) {
      throw new CliError((err as Error).message)
    }
  },
}
