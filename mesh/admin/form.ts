// mesh/admin/form.ts — the edit form of a dead letter, generated from its event's valibot schema (contracts/events.ts):
// a field per entry of the schema, with what the schema checks (length, range, integer, pattern, date-time) as hints
// for the page. A new field or event in contracts/ shows up in the form as it is; nothing here names one. The
// schema stays the judge: the server validates what comes back (mesh/admin/edit.ts), these are only hints.
import type { GenericSchema } from "valibot"

export type Field =
  | { kind: "object"; fields: { name: string; optional: boolean; field: Field }[] }
  | { kind: "array"; item: Field; minItems?: number; maxItems?: number }
  | { kind: "string"; minLength?: number; maxLength?: number; pattern?: string; format?: string }
  | { kind: "number"; integer?: true; min?: number; max?: number }
  | { kind: "boolean" }
  /** a schema the form cannot draw (a union, a record): edited as JSON text */
  | { kind: "json" }

type Node = {
  type: string
  entries?: Record<string, Node>
  item?: Node
  wrapped?: Node
  pipe?: { kind: string; type: string; requirement?: unknown; metadata?: Record<string, unknown> }[]
}

/** The form of a valibot schema. */
export function formOf(schema: GenericSchema): Field {
  return fieldOf(schema as unknown as Node)
}

function fieldOf(s: Node): Field {
  const checks = s.pipe ?? []
  const req = (type: string) => checks.find((c) => c.kind === "validation" && c.type === type)?.requirement
  const num = (type: string) => (typeof req(type) === "number" ? (req(type) as number) : undefined)
  switch (s.type) {
    case "object":
    case "strict_object":
    case "loose_object":
      return {
        kind: "object",
        fields: Object.entries(s.entries ?? {}).map(([name, f]) => {
          const optional = f.type === "optional" || f.type === "exact_optional" || f.type === "nullish"
          return { name, optional, field: fieldOf(optional ? f.wrapped! : f) }
        }),
      }
    case "array":
      return strip({ kind: "array", item: fieldOf(s.item!), minItems: num("min_length"), maxItems: num("max_length") })
    case "string": {
      const pattern = req("regex")
      const format = checks.find((c) => c.kind === "metadata")?.metadata?.format
      return strip({
        kind: "string",
        minLength: num("min_length"),
        maxLength: num("max_length"),
        pattern: pattern instanceof RegExp ? pattern.source : undefined,
        format: typeof format === "string" ? format : undefined,
      })
    }
    case "number":
      return strip({
        kind: "number",
        integer: checks.some((c) => c.type === "integer") ? (true as const) : undefined,
        min: num("min_value"),
        max: num("max_value"),
      })
    case "boolean":
      return { kind: "boolean" }
    default:
      return { kind: "json" }
  }
}

const strip = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
