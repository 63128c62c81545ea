// contracts/time.ts — the one parser for every time in the contracts: RFC 3339 date-times, strictly. Whatever passes
// it is a real instant, so a validated event can never turn into NaN further down (a sort, an ETA, a staleness check).
// Date.parse is not that parser: it rolls 2026-02-30 over to March 2, takes "2026-11-25" and "Nov 25 2026", and
// refuses a leap second.

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/

const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0
const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
export const daysInMonth = (year: number, month: number) => (month === 2 && isLeap(year) ? 29 : DAYS[month - 1]!)

/**
 * Epoch milliseconds of an RFC 3339 date-time (`2026-11-25T08:00:00Z`, `2026-11-25t09:00:00.5+01:00`), or undefined:
 * a `T` (or `t`) between date and time, seconds required (00–60, a leap second counts as the next one), an optional
 * fraction of up to 9 digits, then `Z` (or `z`) or an offset ±hh:mm. The day must exist in its month.
 */
export function parseTime(s: unknown): number | undefined {
  if (typeof s !== "string") return undefined
  const m = RFC3339.exec(s)
  if (!m) return undefined
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number]
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined
  if (hour > 23 || minute > 59 || second > 60) return undefined
  let offsetMinutes = 0
  if (!m[8]) {
    const oh = Number(m[10])
    const om = Number(m[11])
    if (oh > 23 || om > 59) return undefined
    offsetMinutes = (m[9] === "-" ? -1 : 1) * (oh * 60 + om)
  }
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0–99 as 1900–1999
  const d = new Date(0)
  d.setUTCFullYear(year, month - 1, day)
  d.setUTCHours(hour, minute, second, m[7] ? Math.floor(Number(`0${m[7]}`) * 1000) : 0)
  const t = d.getTime() - offsetMinutes * 60_000
  return Number.isFinite(t) ? t : undefined
}

/** The number of two ASCII digits at `i`, or -1. */
function two(s: string, i: number): number {
  const a = s.charCodeAt(i) - 48
  const b = s.charCodeAt(i + 1) - 48
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : -1
}

/**
 * Whether `s` is an RFC 3339 date-time `parseTime` accepts. What toISOString writes (`2026-11-25T08:00:00.000Z`, the
 * form every event time of the mesh has) is checked digit by digit, without the regex and the Date: the contract check
 * runs this for every time of every event, and it was 4 % of a draining worker's CPU.
 */
export function isTime(s: unknown): s is string {
  if (typeof s !== "string") return false
  if (
    s.length !== 24 ||
    s[4] !== "-" ||
    s[7] !== "-" ||
    s[10] !== "T" ||
    s[13] !== ":" ||
    s[16] !== ":" ||
    s[19] !== "." ||
    s[23] !== "Z"
  ) {
    return parseTime(s) !== undefined
  }
  const hi = two(s, 0)
  const lo = two(s, 2)
  const month = two(s, 5)
  const day = two(s, 8)
  const ms = two(s, 20)
  if (hi < 0 || lo < 0 || ms < 0 || s.charCodeAt(22) < 48 || s.charCodeAt(22) > 57) return false
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(hi * 100 + lo, month)) return false
  const hour = two(s, 11)
  const minute = two(s, 14)
  const second = two(s, 17)
  return hour >= 0 && hour <= 23 && minute >= 0 && minute <= 59 && second >= 0 && second <= 60
}
