import { test } from "uvu"
import * as assert from "uvu/assert"
import type { Stop } from "../contracts/events.ts"
import { estimateEta, haversineKm, nearestNeighbour, pathKm, planRoute, twoOpt, type Point } from "../workers/plan.ts"
// mulberry32, seeded: a failing instance can be replayed by its seed
import { prng } from "../workers/fleet.ts"

const KM_PER_EQUATOR_DEGREE = (6371.0088 * Math.PI) / 180

// around Lyon, roughly a regional delivery area
function randomStops(rand: () => number, n: number): Stop[] {
  return Array.from({ length: n }, (_, i) => ({ id: `s${i}`, lat: 45 + rand() * 1.5, lon: 4 + rand() * 2 }))
}

function* permutations<T>(items: readonly T[]): Generator<T[]> {
  if (items.length <= 1) return yield [...items]
  for (let i = 0; i < items.length; i++) {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)]
    for (const p of permutations(rest)) yield [items[i]!, ...p]
  }
}

const bruteForceKm = (depot: Point, stops: readonly Stop[]): number => {
  let best = Infinity
  for (const p of permutations(stops)) best = Math.min(best, pathKm(depot, p))
  return best
}

const onEquator = (lons: number[]): Stop[] => lons.map((lon, i) => ({ id: `s${i}`, lat: 0, lon }))
const ids = (stops: readonly Stop[]): string[] => stops.map((s) => s.id)

test("plan - haversine Paris to London is about 343.5 km", () => {
  const km = haversineKm({ lat: 48.8566, lon: 2.3522 }, { lat: 51.5074, lon: -0.1278 })
  assert.ok(Math.abs(km - 343.5) <= 1, `got ${km}`)
})

test("plan - haversine is symmetric and zero for the same point", () => {
  const a = { lat: 45.76, lon: 4.84 }
  const b = { lat: 43.3, lon: 5.37 }
  assert.is(haversineKm(a, b), haversineKm(b, a))
  assert.is(haversineKm(a, a), 0)
})

test("plan - haversine gives the same length to a degree of latitude and of equator longitude", () => {
  assert.ok(Math.abs(haversineKm({ lat: 0, lon: 0 }, { lat: 1, lon: 0 }) - KM_PER_EQUATOR_DEGREE) < 1e-6)
  assert.ok(Math.abs(haversineKm({ lat: 0, lon: 0 }, { lat: 0, lon: 1 }) - KM_PER_EQUATOR_DEGREE) < 1e-6)
})

test("plan - pathKm is an open path with no return leg", () => {
  const km = pathKm({ lat: 0, lon: 0 }, onEquator([1, 2]))
  assert.ok(Math.abs(km - 2 * KM_PER_EQUATOR_DEGREE) < 1e-6, `got ${km}`)
  assert.is(pathKm({ lat: 0, lon: 0 }, []), 0)
})

test("plan - nearest neighbour breaks ties by input order", () => {
  const depot = { lat: 0, lon: 0 }
  const [east, west] = onEquator([1, -1]) as [Stop, Stop]
  assert.equal(ids(nearestNeighbour(depot, [east, west])), ["s0", "s1"])
  assert.equal(ids(nearestNeighbour(depot, [west, east])), ["s1", "s0"])
})

// Depot at 0°, stops at 1°, 5° and -2° on the equator. With an open end the optimum visits the short side first:
// 0 → -2 → 1 → 5 = 2 + 3 + 4 = 9°. Nearest neighbour takes 1° first and pays 0 → 1 → -2 → 5 = 1 + 3 + 7 = 11°.
test("plan - 2-opt finds the known optimum where nearest neighbour does not", () => {
  const depot = { lat: 0, lon: 0 }
  const stops = onEquator([1, 5, -2])
  const optimumKm = 9 * KM_PER_EQUATOR_DEGREE

  assert.ok(Math.abs(bruteForceKm(depot, stops) - optimumKm) < 1e-6, "stated optimum disagrees with brute force")
  assert.ok(Math.abs(pathKm(depot, nearestNeighbour(depot, stops)) - 11 * KM_PER_EQUATOR_DEGREE) < 1e-6)

  const plan = planRoute(depot, stops)
  assert.equal(ids(plan.stops), ["s2", "s0", "s1"])
  assert.is(plan.distanceKm, Math.round(optimumKm * 1000) / 1000)
})

test("plan - never beats brute force on small random instances", () => {
  const rand = prng(7)
  for (let k = 0; k < 20; k++) {
    const depot = { lat: 45 + rand(), lon: 4 + rand() }
    const stops = randomStops(rand, 6)
    const optimum = bruteForceKm(depot, stops)
    const planned = pathKm(depot, planRoute(depot, stops).stops)
    assert.ok(planned >= optimum - 1e-9, `instance ${k}: ${planned} < optimum ${optimum}`)
  }
})

test("plan - 2-opt is never longer than nearest neighbour", () => {
  let improved = 0
  for (let seed = 1; seed <= 50; seed++) {
    const rand = prng(seed)
    const depot = { lat: 45.75, lon: 4.85 }
    const nn = nearestNeighbour(depot, randomStops(rand, 40))
    const nnKm = pathKm(depot, nn)
    const optKm = pathKm(depot, twoOpt(depot, nn))
    assert.ok(optKm <= nnKm, `seed ${seed}: 2-opt ${optKm} > nearest neighbour ${nnKm}`)
    if (optKm < nnKm - 1e-9) improved++
  }
  // nearest neighbour on 40 random stops is essentially never 2-opt-optimal; a no-op 2-opt would fail here
  assert.ok(improved >= 45, `2-opt improved only ${improved} of 50 instances`)
})

test("plan - 2-opt can reverse the tail, because the path end is free", () => {
  const depot = { lat: 0, lon: 0 }
  assert.equal(ids(twoOpt(depot, onEquator([3, 2, 1]))), ["s2", "s1", "s0"])
  assert.equal(ids(twoOpt(depot, onEquator([2, 1]))), ["s1", "s0"])
})

test("plan - 2-opt does not mutate its input", () => {
  const depot = { lat: 0, lon: 0 }
  const order = onEquator([1, -2, 5])
  const before = ids(order)
  twoOpt(depot, order)
  assert.equal(ids(order), before)
})

test("plan - 200 stops come back as a permutation of the input, quickly", () => {
  const depot = { lat: 45.75, lon: 4.85 }
  const stops = randomStops(prng(200), 200)
  const started = performance.now()
  const plan = planRoute(depot, stops)
  const elapsedMs = performance.now() - started

  assert.is(plan.stops.length, 200)
  assert.equal(ids(plan.stops).sort(), ids(stops).sort())
  assert.is(new Set(ids(plan.stops)).size, 200)
  assert.is(plan.distanceKm, Math.round(pathKm(depot, plan.stops) * 1000) / 1000)
  // generous bound, so a slow CI box passes but an accidental O(n⁴) does not
  assert.ok(elapsedMs < 2000, `took ${elapsedMs.toFixed(0)} ms`)
})

test("plan - planRoute with no stops is an empty zero-length route", () => {
  assert.equal(planRoute({ lat: 0, lon: 0 }, []), { stops: [], distanceKm: 0 })
})

test("plan - ETA adds driving time and service time to the exact millisecond", () => {
  const departAt = new Date("2025-03-10T08:00:00.000Z")
  const opts = { avgSpeedKmh: 80, serviceMinutesPerStop: 7.5 }
  // 100 km at 80 km/h = 1.25 h = 4 500 000 ms; 3 stops × 7.5 min = 1 350 000 ms
  const eta = estimateEta(departAt, 100, 3, opts)
  assert.is(eta.getTime() - departAt.getTime(), 5_850_000)
  assert.is(eta.toISOString(), "2025-03-10T09:37:30.000Z")
})

test("plan - ETA rejects a non-positive speed", () => {
  assert.throws(() => estimateEta(new Date(0), 10, 1, { avgSpeedKmh: 0, serviceMinutesPerStop: 5 }), /avgSpeedKmh/)
})

test.run()
