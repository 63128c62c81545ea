// test/run.ts — `npm test`: each test file in its own process, TEST_JOBS (default 2) at a time (a hung file is killed
// with its whole process group after TEST_FILE_TIMEOUT_MS, servers included), each file's output printed whole when
// it ends, then one closing line: `N passed, N failed`. `npm test -- runtime shutdown` runs only the files whose
// names contain those words. The fault suites that measure recovery times run alone, so a neighbour's load does not
// stretch what they measure.
import { spawn } from "node:child_process"
import { readdirSync } from "node:fs"
import { join } from "node:path"

const dir = import.meta.dirname
const filters = process.argv.slice(2)
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".test.ts") && (filters.length === 0 || filters.some((w) => f.includes(w))))
  .sort()
const timeoutMs = Number(process.env.TEST_FILE_TIMEOUT_MS ?? 300_000)
const jobs = Math.max(1, Number(process.env.TEST_JOBS ?? 2))
const ALONE = new Set(["chaos.test.ts", "cascade.test.ts", "history.test.ts"])
const strip = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "")

let passed = 0
let failed = 0
let skipped = 0
const broken: string[] = []
/** files that ran no test on purpose: they print `skipped: <why>` (a binary they need is absent) and exit 0 */
const skippedFiles: string[] = []

async function runFile(file: string): Promise<void> {
  const started = Date.now()
  const child = spawn(process.execPath, ["--import", "tsx", join(dir, file)], { stdio: ["ignore", "pipe", "pipe"], detached: true })
  let out = ""
  child.stdout.on("data", (b: Buffer) => (out += b.toString()))
  child.stderr.on("data", (b: Buffer) => (out += b.toString()))
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    try {
      process.kill(-child.pid!, "SIGKILL")
    } catch {}
  }, timeoutMs)
  const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)))
  clearTimeout(timer)
  const text = strip(out)
  const num = (label: string) => Number(new RegExp(`${label}:\\s+(\\d+)`).exec(text)?.[1] ?? 0)
  const total = num("Total")
  const ok = num("Passed")
  passed += ok
  skipped += num("Skipped")
  // uvu's Total leaves skipped tests out
  failed += total - ok
  const skippedWhy = /^skipped: (.+)$/m.exec(text)?.[1]
  if (!timedOut && code === 0 && total === 0 && skippedWhy) skippedFiles.push(`${file}: ${skippedWhy}`)
  else if (timedOut || code !== 0 || total === 0) {
    broken.push(`${file}: ${timedOut ? `killed after ${timeoutMs} ms` : total === 0 ? `ran no test (exit ${code})` : `exit ${code}`}`)
    if (total === ok) failed++ // a crash outside any test still counts as a failure
  }
  process.stdout.write(`\n── ${file}\n${out}── ${file}: ${ok}/${total} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
}

const started = Date.now()
// the lone suites first, one at a time; then the rest, `jobs` at a time
for (const f of files.filter((f) => ALONE.has(f))) await runFile(f)
const queue = files.filter((f) => !ALONE.has(f))
await Promise.all(
  Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) await runFile(f)
  }),
)

console.log("")
for (const s of skippedFiles) console.log(`SKIPPED ${s}`)
for (const b of broken) console.log(`FAILED ${b}`)
const skips = [skipped ? `${skipped} skipped` : "", skippedFiles.length ? `${skippedFiles.length} files skipped` : ""].filter(Boolean)
console.log(
  `${passed} passed, ${failed} failed${skips.length ? `, ${skips.join(", ")}` : ""} (${files.length} files in ${((Date.now() - started) / 1000).toFixed(0)} s)`,
)
process.exitCode = failed > 0 || broken.length > 0 ? 1 : 0
