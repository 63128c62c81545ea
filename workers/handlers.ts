// workers/handlers.ts — every consuming worker's handlers, by worker name, as the workers declare them: what ops' dry
// run of a corrected dead letter runs (mesh/admin/dryrun.ts). Importing a worker module starts nothing.
import type { Handlers } from "../mesh/mod.ts"
import invoice from "./invoice.ts"
import portal from "./portal.ts"
import tracking from "./tracking.ts"

export const handlers: Record<string, Handlers> = Object.fromEntries(
  [invoice, tracking, portal].map((w) => [w.name, w.options.consumes ?? {}]),
)
