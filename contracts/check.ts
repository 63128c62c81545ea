// contracts/check.ts — `v.safeParse` for the schemas of the contracts, without valibot's cost on input that passes.
// valibot runs every schema and action as an object with a dataset per value: a tenth of a draining worker's CPU,
// two checks per event. `parser(schema)` turns the schema, once, into one plain function that says "valid, here is
// the output" or "not sure"; on "not sure" (any failure) valibot itself runs, so every issue still comes from
// valibot, worded as before. A schema using anything not mirrored here goes to valibot whole. What the function
// accepts, valibot accepts with the same output (new objects and arrays, the schema's keys in the schema's order):
// test/check.test.ts compares both on thousands of generated inputs, valid and broken.
//
// The function is generated source (`new Function`), built only from the schema: property names go in as JSON
// string literals, every other value (a regex, a check, a literal, a bound) is passed in by reference, never
// printed. Straight-line code reads each property by its constant name; a walk over the schema with a closure per
// node, all keyed loads and stores V8 cannot specialise, cost a consumer 0.8 µs more per message (bench/README.md).
import * as v from "valibot"

const UNSURE: unique symbol = Symbol("unsure")

type Node = Record<string, unknown> & { type: string; pipe?: readonly unknown[] }
type Action = {
  kind: string
  type: string
  requirement?: unknown
  "~run"(dataset: { typed: boolean; value: unknown; issues?: unknown }, config: unknown): unknown
}

/** Source for one function body; `refs` holds every value the source uses by index (`R[3]`). */
class Gen {
  refs: unknown[] = []
  lines: string[] = []
  #n = 0
  name(prefix: string) {
    return `${prefix}${this.#n++}`
  }
  ref(value: unknown) {
    this.refs.push(value)
    return `R[${this.refs.length - 1}]`
  }
  fail(condition: string) {
    this.lines.push(`if (${condition}) return U;`)
  }
}

/**
 * Emits the checks of `s` on the value in variable `x`; returns the variable that holds the output, or undefined
 * when the schema uses something not mirrored here.
 */
function emit(g: Gen, s: Node, x: string): string | undefined {
  if (s.pipe) return emitPipe(g, s.pipe, x)
  switch (s.type) {
    case "string":
      g.fail(`typeof ${x} !== "string"`)
      return x
    case "number":
      g.fail(`typeof ${x} !== "number" || ${x} !== ${x}`)
      return x
    case "boolean":
      g.fail(`typeof ${x} !== "boolean"`)
      return x
    case "literal":
      g.fail(`${x} !== ${g.ref(s.literal)}`)
      return x
    case "picklist":
      g.fail(`!${g.ref(s.options)}.includes(${x})`)
      return x
    case "optional": {
      if (s.default !== undefined) return undefined
      const out = g.name("o")
      g.lines.push(`let ${out} = ${x};`, `if (${x} !== undefined) {`)
      const inner = emit(g, s.wrapped as Node, x)
      if (inner === undefined) return undefined
      g.lines.push(`${out} = ${inner};`, "}")
      return out
    }
    case "array": {
      const out = g.name("a")
      const i = g.name("i")
      const item = g.name("e")
      g.fail(`!Array.isArray(${x})`)
      g.lines.push(`const ${out} = [];`, `for (let ${i} = 0; ${i} < ${x}.length; ${i}++) {`, `const ${item} = ${x}[${i}];`)
      const inner = emit(g, s.item as Node, item)
      if (inner === undefined) return undefined
      g.lines.push(`${out}.push(${inner});`, "}")
      return out
    }
    case "strict_object":
      return emitObject(g, s.entries as Record<string, Node>, x)
    default:
      return undefined
  }
}

function emitObject(g: Gen, entries: Record<string, Node>, x: string): string | undefined {
  const out = g.name("r")
  g.fail(`!${x} || typeof ${x} !== "object"`)
  g.lines.push(`const ${out} = {};`)
  for (const key of Object.keys(entries)) {
    const e = entries[key]!
    // a fallback, a default, exact_optional, nullish: valibot's own rules for a missing key, not mirrored
    if (e.fallback !== undefined || e.type === "exact_optional" || e.type === "nullish") return undefined
    if (e.type === "optional" && e.default !== undefined) return undefined
    const k = JSON.stringify(key)
    const value = g.name("p")
    // valibot reads a key that is `in` the input (inherited ones too) and sets it on the output in the schema's order
    if (e.type === "optional") g.lines.push(`if (${k} in ${x}) {`)
    else g.fail(`!(${k} in ${x})`)
    g.lines.push(`const ${value} = ${x}[${k}];`)
    const inner = emit(g, e, value)
    if (inner === undefined) return undefined
    g.lines.push(`${out}[${k}] = ${inner};`)
    if (e.type === "optional") g.lines.push("}")
  }
  // a strict object: any key the schema does not name is an issue
  const key = g.name("k")
  g.lines.push(`for (const ${key} in ${x}) if (!Object.hasOwn(${g.ref(entries)}, ${key})) return U;`)
  return out
}

function emitPipe(g: Gen, items: readonly unknown[], x: string): string | undefined {
  const out = emit(g, items[0] as Node, x)
  if (out === undefined) return undefined
  for (const item of items.slice(1) as Action[]) {
    if (item.kind === "metadata") continue
    if (item.kind !== "validation") return undefined
    const req = item.requirement
    switch (item.type) {
      case "min_length":
        g.fail(`${out}.length < ${g.ref(req)}`)
        break
      case "max_length":
        g.fail(`${out}.length > ${g.ref(req)}`)
        break
      case "min_value":
        g.fail(`!(${out} >= ${g.ref(req)})`)
        break
      case "max_value":
        g.fail(`!(${out} <= ${g.ref(req)})`)
        break
      case "gt_value":
        g.fail(`!(${out} > ${g.ref(req)})`)
        break
      case "finite":
        g.fail(`!Number.isFinite(${out})`)
        break
      case "integer":
        g.fail(`!Number.isInteger(${out})`)
        break
      case "regex": {
        const re = req as RegExp
        // a global or sticky regex keeps state between tests: running it twice could disagree with valibot
        if (re.global || re.sticky) return undefined
        g.fail(`!${g.ref(re)}.test(${out})`)
        break
      }
      case "check":
        g.fail(`!${g.ref(req)}(${out})`)
        break
      default: {
        // any other validation (a rawCheck, say): valibot's own run of it, on a dataset of the value alone
        const run = (value: unknown) => {
          const dataset: { typed: boolean; value: unknown; issues?: unknown } = { typed: true, value }
          item["~run"](dataset, v.getGlobalConfig())
          return !dataset.issues && dataset.value === value
        }
        g.fail(`!${g.ref(run)}(${out})`)
      }
    }
  }
  return out
}

type Fast = (input: unknown) => unknown

/** One function for the schema, or undefined if it uses anything not mirrored here (valibot then runs). */
function compile(schema: v.GenericSchema): Fast | undefined {
  const g = new Gen()
  const out = emit(g, schema as unknown as Node, "x")
  if (out === undefined) return undefined
  const body = `return function check(x) {\n${g.lines.join("\n")}\nreturn ${out};\n}`
  return new Function("U", "R", body)(UNSURE, g.refs) as Fast
}

/** `v.safeParse(schema, input)`, the same result, with valid input checked by the function `compile` made. */
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
