// workers/plan.ts — route planning for the routing worker: pure, deterministic, no I/O.
import type { Stop } from "../contracts/events.ts"

export type Point = { lat: number; lon: number }

const EARTH_RADIUS_KM = 6371.0088
// a move must gain more than this, or rounding noise could swap two equal paths back and forth forever
const EPSILON_KM = 1e-9

const toRad = (deg: number): number => (deg * Math.PI) / 180

export function haversineKm(a: Point, b: Point): number {
  const dLat = toRad(b.lat - a.lat)
  const dLon = toRad(b.lon - a.lon)
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(toRad(a.lat)) * Math.cos(toRad(b.lat)) * Math.sin(dLon / 2) ** 2
  // min() guards asin against h creeping past 1 for antipodal points
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)))
}

/** Open path: depot → stops[0] → … → last stop, no return leg. */
export function pathKm(depot: Point, stops: readonly Point[]): number {
  let km = 0
  let from = depot
  for (const to of stops) {
    km += haversineKm(from, to)
    from = to
  }
  return km
}

/** Greedy order from the depot; on equal distance the stop listed first wins, so the result is reproducible. */
export function nearestNeighbour<T extends Point>(depot: Point, stops: readonly T[]): T[] {
  const left = [...stops]
  const order: T[] = []
  let from: Point = depot
  while (left.length > 0) {
    let best = 0
    let bestKm = Infinity
    left.forEach((s, i) => {
      const km = haversineKm(from, s)
      if (km < bestKm) [best, bestKm] = [i, km]
    })
    const [next] = left.splice(best, 1) as [T]
    order.push(next)
    from = next
  }
  return order
}

function distanceMatrix(points: readonly Point[]): Float64Array {
  const n = points.length
  const m = new Float64Array(n * n)
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const km = haversineKm(points[i]!, points[j]!)
      m[i * n + j] = km
      m[j * n + i] = km
    }
  }
  return m
}

function reverse(a: Int32Array, i: number, j: number): void {
  for (; i < j; i++, j--) [a[i], a[j]] = [a[j]!, a[i]!]
}

/**
 * 2-opt on an open path that starts at the depot and may end anywhere: reversing `path[i..j]` swaps the edges
 * (i-1,i) and (j,j+1) for (i-1,j) and (i,j+1); when j is the last stop there is no (j,j+1) edge to pay for,
 * which is what lets the free end move. Does not mutate `order`.
 */
export function twoOpt<T extends Point>(depot: Point, order: readonly T[]): T[] {
  const n = order.length
  if (n < 2) return [...order]
  const size = n + 1
  const d = distanceMatrix([depot, ...order])
  // node 0 is the depot, node k + 1 is order[k]
  const path = Int32Array.from({ length: size }, (_, i) => i)

  for (let improved = true; improved; ) {
    improved = false
    for (let i = 1; i < n; i++) {
      for (let j = i + 1; j <= n; j++) {
        const a = path[i - 1]!
        const b = path[i]!
        const c = path[j]!
        // d[p * size + q]: the distance from node p to node q
        let delta = d[a * size + c]! - d[a * size + b]!
        if (j < n) delta += d[b * size + path[j + 1]!]! - d[c * size + path[j + 1]!]!
        if (delta < -EPSILON_KM) {
          reverse(path, i, j)
          improved = true
        }
      }
    }
  }

  const result = Array.from(path.subarray(1), (node) => order[node - 1]!)
  // each move gains > EPSILON_KM, yet a long float sum can still round the other way on continent-scale
  // routes; callers rely on "never longer than the input", so the input wins any such tie
  return pathKm(depot, result) <= pathKm(depot, order) ? result : [...order]
}

export function planRoute(depot: Point, stops: readonly Stop[]): { stops: Stop[]; distanceKm: number } {
  const ordered = twoOpt(depot, nearestNeighbour(depot, stops))
  return { stops: ordered, distanceKm: Math.round(pathKm(depot, ordered) * 1000) / 1000 }
}

export function estimateEta(
  departAt: Date,
  distanceKm: number,
  stopCount: number,
  opts: { avgSpeedKmh: number; serviceMinutesPerStop: number },
): Date {
  if (!(opts.avgSpeedKmh > 0)) throw new RangeError(`avgSpeedKmh must be > 0, got ${opts.avgSpeedKmh}`)
  const drivingMs = (distanceKm / opts.avgSpeedKmh) * 3_600_000
  const serviceMs = stopCount * opts.serviceMinutesPerStop * 60_000
  return new Date(departAt.getTime() + Math.round(drivingMs + serviceMs))
}
