// bench/profile.ts — the top frames of a V8 CPU profile (node --cpu-prof), by self time, as shares of the samples:
// what the findings in bench/README.md quote.
//   npx tsx bench/profile.ts <file.cpuprofile> [--top 25] [--by function|file|inclusive]
// (inclusive: samples at or under each frame of our own code, mesh/ contracts/ workers/)
import { readFileSync } from "node:fs"
import { isMain } from "../mesh/main.ts"
import { args } from "./lib.ts"

type Node = { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
type Profile = { nodes: Node[]; samples: number[]; timeDeltas: number[] }

/** Self samples per frame (function + file:line, or file alone), largest first, with their share of all samples. */
export function topFrames(p: Profile, by: "function" | "file" = "function"): { frame: string; share: number }[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const counts = new Map<string, number>()
  for (const id of p.samples) {
    const n = byId.get(id)!
    const f = n.callFrame
    const file = f.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/(mesh|contracts|workers|bench)\//, "$1/")
    const key = by === "file" ? file || f.functionName : `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([frame, c]) => ({ frame, share: c / p.samples.length }))
}

/** Samples at or under each frame (self + callees), for the frames whose file matches `only`, largest first. */
export function inclusive(p: Profile, only: RegExp): { frame: string; share: number }[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  for (const id of p.samples) self.set(id, (self.get(id) ?? 0) + 1)
  const totals = new Map<string, number>()
  const walk = (n: Node, open: Set<string>): number => {
    let t = self.get(n.id) ?? 0
    const f = n.callFrame
    const key = `${f.functionName || "(anonymous)"} ${f.url.replace(/^file:\/\/.*\/(mesh|contracts|workers|bench)\//, "$1/")}:${f.lineNumber + 1}`
    const mine = only.test(f.url) && !open.has(key)
    if (mine) open.add(key)
    for (const c of n.children ?? []) t += walk(byId.get(c)!, open)
    if (mine) open.delete(key), totals.set(key, (totals.get(key) ?? 0) + t)
    return t
  }
  walk(p.nodes[0]!, new Set())
  return [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([frame, c]) => ({ frame, share: c / p.samples.length }))
}

if (isMain(import.meta)) {
  const { names, flags } = args()
  const p = JSON.parse(readFileSync(names[0]!, "utf8")) as Profile
  const top = Number(flags.get("top") ?? 25)
  const by = flags.get("by")
  const rows = by === "inclusive" ? inclusive(p, /\/(mesh|contracts|workers)\//) : topFrames(p, by === "file" ? "file" : "function")
  for (const { frame, share } of rows.slice(0, top)) console.log(`${(share * 100).toFixed(1).padStart(5)} %  ${frame}`)
}
