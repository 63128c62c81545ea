// mesh/capacity.ts — the fleet a deployment is sized for (contracts/capacity.ts), from configuration: a JSON file
// named by LOGIFLOW_CAPACITY_FILE, then CAPACITY_* variables over it. Read at start by every worker, `logiflow
// provision` and `logiflow up`; a value that is not a sensible number stops the start with a message naming where it
// came from, because a typo here would silently size every stream wrong.
import { readFileSync } from "node:fs"
import * as v from "valibot"
import { type Capacity, REFERENCE_FLEET } from "../contracts/mod.ts"
import { env } from "./env.ts"

const count = (what: string) => v.pipe(v.number(), v.integer(`${what} must be a whole number`), v.minValue(1, `${what} must be ≥ 1`))
const positive = (what: string) => v.pipe(v.number(), v.finite(), v.gtValue(0, `${what} must be > 0`))

/** Each field of the model with its variable and its check. */
const FIELDS = {
  trucks: { variable: "CAPACITY_TRUCKS", schema: count("trucks") },
  positionIntervalSeconds: { variable: "CAPACITY_POSITION_INTERVAL_SECONDS", schema: positive("seconds between positions") },
  routesPerDay: { variable: "CAPACITY_ROUTES_PER_DAY", schema: count("routes a day") },
  etaUpdatesPerTruckHour: { variable: "CAPACITY_ETA_UPDATES_PER_TRUCK_HOUR", schema: positive("ETA updates per truck and hour") },
  outageBudgetDays: { variable: "CAPACITY_OUTAGE_BUDGET_DAYS", schema: positive("the outage budget in days") },
  positionRetentionHours: { variable: "CAPACITY_POSITION_RETENTION_HOURS", schema: positive("position retention in hours") },
  headroom: {
    variable: "CAPACITY_HEADROOM",
    schema: v.pipe(v.number(), v.finite(), v.minValue(1, "headroom must be ≥ 1 (1.5 = half again the expected volume)")),
  },
} as const

const BYTES = {
  route: "CAPACITY_ROUTE_BYTES",
  invoice: "CAPACITY_INVOICE_BYTES",
  position: "CAPACITY_POSITION_BYTES",
  eta: "CAPACITY_ETA_BYTES",
} as const

/** The variables read, for docs and error messages. */
export const CAPACITY_VARIABLES = [...Object.values(FIELDS).map((f) => f.variable), ...Object.values(BYTES), "LOGIFLOW_CAPACITY_FILE"]

/** What a capacity file may hold: any fields of the model (unknown ones are refused: a misspelt field is no default). */
export const CapacityFile = v.strictObject({
  ...(Object.fromEntries(Object.entries(FIELDS).map(([k, f]) => [k, v.optional(f.schema)])) as {
    [K in keyof typeof FIELDS]: v.OptionalSchema<(typeof FIELDS)[K]["schema"], undefined>
  }),
  bytes: v.optional(
    v.strictObject({
      route: v.optional(count("route bytes")),
      invoice: v.optional(count("invoice bytes")),
      position: v.optional(count("position bytes")),
      eta: v.optional(count("ETA bytes")),
    }),
  ),
})

export class CapacityError extends Error {
  override name = "CapacityError"
}

const issueText = (issues: v.BaseIssue<unknown>[]) =>
  issues.map((i) => `${i.path?.map((p) => p.key).join(".") || "(file)"}: ${i.message}`).join("; ")

function fromVariable<T>(variable: string, schema: v.GenericSchema<number, T>, raw: string): T {
  const n = raw.trim() === "" ? Number.NaN : Number(raw)
  if (!Number.isFinite(n)) throw new CapacityError(`${variable} must be a number, got "${raw}"`)
  const parsed = v.safeParse(schema, n)
  if (!parsed.success) throw new CapacityError(`${variable}: ${parsed.issues[0]!.message}, got "${raw}"`)
  return parsed.output
}

/**
 * The overrides of the reference fleet that this process's configuration sets (empty: the defaults). Throws a
 * CapacityError naming the variable or the file and field of the first bad value.
 */
export function capacityOverrides(read: (name: string) => string | undefined = env): Partial<Capacity> {
  let out: Partial<Capacity> = {}
  const file = read("LOGIFLOW_CAPACITY_FILE")
  if (file) {
    let json: unknown
    try {
      json = JSON.parse(readFileSync(file, "utf8"))
    } catch (err) {
      throw new CapacityError(`LOGIFLOW_CAPACITY_FILE (${file}) is not readable JSON: ${(err as Error).message}`)
    }
    const parsed = v.safeParse(CapacityFile, json)
    if (!parsed.success) throw new CapacityError(`LOGIFLOW_CAPACITY_FILE (${file}): ${issueText(parsed.issues)}`)
    const { bytes, ...rest } = parsed.output
    out = { ...rest, ...(bytes ? { bytes: { ...REFERENCE_FLEET.bytes, ...bytes } } : {}) } as Partial<Capacity>
  }
  for (const [k, f] of Object.entries(FIELDS)) {
    const raw = read(f.variable)
    if (raw !== undefined && raw !== "") (out as Record<string, number>)[k] = fromVariable(f.variable, f.schema, raw)
  }
  for (const [k, variable] of Object.entries(BYTES)) {
    const raw = read(variable)
    if (raw === undefined || raw === "") continue
    out.bytes = { ...REFERENCE_FLEET.bytes, ...out.bytes, [k]: fromVariable(variable, count(`${k} bytes`), raw) }
  }
  return out
}

/** The whole model in force: the reference fleet with this configuration's overrides. */
export const capacity = (read?: (name: string) => string | undefined): Capacity => ({ ...REFERENCE_FLEET, ...capacityOverrides(read) })
