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

/** Whether `s` is an RFC 3339 date-time `parseTime` accepts. */
export const isTime = (s: unknown): s is string => parseTime(s) !== undefined
