// contracts/check.ts — `v.safeParse` for the schemas of the contracts, without valibot's cost on input that passes.
// valibot runs every schema and action as an object with a dataset per value: a tenth of a draining worker's CPU,
// two checks per event. `parser(schema)` walks the schema once into plain closures that say "valid, here is the
// output" or "not sure"; on "not sure" (any failure, any construct it does not know) valibot itself runs, so every
// issue still comes from valibot, worded as before. What it accepts, valibot accepts with the same output (new
// objects and arrays with the schema's keys in the schema's order): test/check.test.ts compares both on generated
// input, valid and broken.
import * as v from "valibot"

const UNSURE: unique symbol = Symbol("unsure")
type Fast = (input: unknown) => unknown

/** Walks one schema into a closure; undefined if the schema uses anything not mirrored here (valibot then runs). */
function compile(s: v.GenericSchema): Fast | undefined {
  const piped = (s as { pipe?: readonly unknown[] }).pipe
  if (piped) return compilePipe(piped)
  const any = s as unknown as Record<string, unknown>
  switch (s.type) {
    case "string":
      return (x) => (typeof x === "string" ? x : UNSURE)
    case "number":
      return (x) => (typeof x === "number" && !Number.isNaN(x) ? x : UNSURE)
    case "boolean":
      return (x) => (typeof x === "boolean" ? x : UNSURE)
    case "literal": {
      const literal = any.literal
      return (x) => (x === literal ? x : UNSURE)
    }
    case "picklist": {
      const options = any.options as readonly unknown[]
      return (x) => (options.includes(x) ? x : UNSURE)
    }
    case "optional": {
      if (any.default !== undefined) return undefined
      const wrapped = compile(any.wrapped as v.GenericSchema)
      return wrapped && ((x) => (x === undefined ? x : wrapped(x)))
    }
    case "array": {
      const item = compile(any.item as v.GenericSchema)
      if (!item) return undefined
      return (x) => {
        if (!Array.isArray(x)) return UNSURE
        const out: unknown[] = []
        for (let i = 0; i < x.length; i++) {
          const r = item(x[i])
          if (r === UNSURE) return UNSURE
          out.push(r)
        }
        return out
      }
    }
    case "strict_object":
      return compileObject(any.entries as Record<string, v.GenericSchema>)
    default:
      return undefined
  }
}

function compileObject(entries: Record<string, v.GenericSchema>): Fast | undefined {
  const keys = Object.keys(entries)
  const checks: Fast[] = []
  const optional: boolean[] = []
  for (const k of keys) {
    const e = entries[k]! as unknown as Record<string, unknown>
    // a fallback, a default, exact_optional, nullish: valibot's own rules for a missing key, not mirrored
    if (e.fallback !== undefined || e.type === "exact_optional" || e.type === "nullish") return undefined
    const c = compile(entries[k]!)
    if (!c) return undefined
    checks.push(c)
    optional.push(e.type === "optional")
  }
  return (x) => {
    if (!x || typeof x !== "object") return UNSURE
    const input = x as Record<string, unknown>
    const out: Record<string, unknown> = {}
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!
      if (k in input) {
        const r = checks[i]!(input[k])
        if (r === UNSURE) return UNSURE
        out[k] = r
      } else if (!optional[i]) return UNSURE
    }
    // a strict object: any key the schema does not name is an issue
    for (const k in input) if (!Object.hasOwn(entries, k)) return UNSURE
    return out
  }
}

type Action = {
  kind: string
  type: string
  requirement?: unknown
  "~run"(dataset: { typed: boolean; value: unknown; issues?: unknown }, config: unknown): unknown
}

function compilePipe(items: readonly unknown[]): Fast | undefined {
  const base = compile(items[0] as v.GenericSchema)
  if (!base) return undefined
  const tests: ((x: never) => boolean)[] = []
  for (const item of items.slice(1) as Action[]) {
    if (item.kind === "metadata") continue
    if (item.kind !== "validation") return undefined
    const req = item.requirement
    switch (item.type) {
      case "min_length":
        tests.push((x: { length: number }) => x.length >= (req as number))
        break
      case "max_length":
        tests.push((x: { length: number }) => x.length <= (req as number))
        break
      case "min_value":
        tests.push((x: number) => x >= (req as number))
        break
      case "max_value":
        tests.push((x: number) => x <= (req as number))
        break
      case "gt_value":
        tests.push((x: number) => x > (req as number))
        break
      case "finite":
        tests.push((x: number) => Number.isFinite(x))
        break
      case "integer":
        tests.push((x: number) => Number.isInteger(x))
        break
      case "regex": {
        const re = req as RegExp
        // a global or sticky regex keeps state between tests: running it twice could disagree with valibot
        if (re.global || re.sticky) return undefined
        tests.push((x: string) => re.test(x))
        break
      }
      case "check":
        tests.push((x: never) => Boolean((req as (x: unknown) => unknown)(x)))
        break
      default:
        // any other validation (a rawCheck, say): valibot's own run of it, on a dataset of the value alone
        tests.push((x: never) => {
          const dataset: { typed: boolean; value: unknown; issues?: unknown } = { typed: true, value: x }
          item["~run"](dataset, v.getGlobalConfig())
          return !dataset.issues && dataset.value === x
        })
    }
  }
  return (x) => {
    const r = base(x)
    if (r === UNSURE) return UNSURE
    for (let i = 0; i < tests.length; i++) if (!tests[i]!(r as never)) return UNSURE
    return r
  }
}

/** `v.safeParse(schema, input)`, the same result, with valid input checked by the closures `compile` made. */
export function parser<S extends v.GenericSchema>(schema: S): (input: unknown) => v.SafeParseResult<S> {
  const fast = compile(schema)
  if (!fast) return (input) => v.safeParse(schema, input)
  return (input) => {
    const output = fast(input)
    if (output === UNSURE) return v.safeParse(schema, input)
    return { typed: true, success: true, output, issues: undefined } as v.SafeParseResult<S>
  }
}

/** The fast path alone, for tests: whether it takes `input` as valid without valibot (undefined: the schema has none). */
export function fastPath(schema: v.GenericSchema): ((input: unknown) => boolean) | undefined {
  const fast = compile(schema)
  return fast && ((input) => fast(input) !== UNSURE)
}
