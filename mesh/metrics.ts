// mesh/metrics.ts — each worker's Prometheus registry, on prom-client (exposition format, escaping, cumulative
// histogram buckets and process metrics are its job, not ours). prom-client runs unchanged on Deno 2: checked
// with `deno run` against node_modules, default metrics included. The small facade keeps worker code short and
// makes a metric call unable to throw: a label mistake must never turn into a nak of the event being handled.
import client from "prom-client"

export type Labels = Record<string, string>
export type Counter = {
  inc(labels?: Labels, by?: number): void
  get(labels?: Labels): number
  /** the series for `labels`, checked once: for a hot path (one call per message) */
  bind(labels: Labels): { inc(by?: number): void }
}
export type Gauge = { set(value: number, labels?: Labels): void }
export type Histogram = {
  observe(value: number, labels?: Labels): void
  /** the series for `labels`, checked once: for a hot path (one call per message) */
  bind(labels: Labels): { observe(value: number): void }
}
/** sampled at each scrape; rows replace whatever the gauge held */
export type Collect = () => number | [Labels, number][] | Promise<number | [Labels, number][]>

export type Registry = {
  /** `labelNames` fixes the label set up front; without it the first call's labels fix it (nothing shows before) */
  counter(name: string, help: string, labelNames?: string[]): Counter
  gauge(name: string, help: string, opts?: { labelNames?: string[]; collect?: Collect }): Gauge
  histogram(name: string, help: string, opts?: { labelNames?: string[]; buckets?: number[] }): Histogram
  render(): Promise<string>
  readonly contentType: string
  /** the prom-client registry itself, for metric kinds the facade does not cover */
  readonly prom: client.Registry
}

/**
 * A series per pair of label values, bound on first use (`bind`): on a hot path the label set is checked and hashed
 * once, not on every call. By the first value, then the second: a key built per call had to be flattened and hashed.
 */
export function boundPairs<A extends string, B extends string, S>(bind: (a: A, b: B) => S): (a: A, b: B) => S {
  const byFirst = new Map<A, Map<B, S>>()
  return (a, b) => {
    let bySecond = byFirst.get(a)
    if (!bySecond) byFirst.set(a, (bySecond = new Map()))
    let series = bySecond.get(b)
    if (series === undefined) bySecond.set(b, (series = bind(a, b)))
    return series
  }
}

export const SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

const keyOf = (l: Labels) =>
  Object.keys(l)
    .sort()
    .map((k) => `${k}=${l[k]}`)
    .join("\u0000")

/** one label set of a histogram: `counts[i]` observations in bucket i (the last: above every bound) */
type HistogramSeries = { labels: Labels; counts: number[]; sum: number; count: number }

/** A histogram as prom-client's registry renders one (`get()` → `_bucket` with cumulative `le`, `_sum`, `_count`). */
function histogramMetric(name: string, help: string, bounds: number[], series: Map<string, HistogramSeries>) {
  const get = () => {
    const values: { value: number; labels: Record<string, string | number>; metricName: string }[] = []
    for (const x of series.values()) {
      let acc = 0
      for (let i = 0; i < bounds.length; i++) {
        acc += x.counts[i]!
        values.push({ value: acc, labels: { ...x.labels, le: bounds[i]! }, metricName: `${name}_bucket` })
      }
      values.push({ value: x.count, labels: { ...x.labels, le: "+Inf" }, metricName: `${name}_bucket` })
      values.push({ value: x.sum, labels: x.labels, metricName: `${name}_sum` })
      values.push({ value: x.count, labels: x.labels, metricName: `${name}_count` })
    }
    return { name, help, type: "histogram", values, aggregator: "sum" }
  }
  return { name, help, type: "histogram", aggregator: "sum", get: async () => get(), reset: () => series.clear() }
}

export function registry({ defaults = true } = {}): Registry {
  const prom = new client.Registry()
  if (defaults) client.collectDefaultMetrics({ register: prom })
  const warned = new Set<string>()

  // the metric is created on first use when its label names were not given, and a later call's labels are
  // trimmed to the known names (prom-client would throw), with one warning per metric
  function guarded<M>(name: string, labelNames: string[] | undefined, make: (labelNames: string[]) => M) {
    let metric: M | undefined = labelNames ? make(labelNames) : undefined
    let known = labelNames
    return (labels: Labels, use: (m: M, labels: Labels) => void) => {
      try {
        known ??= Object.keys(labels)
        metric ??= make(known)
        const extra = Object.keys(labels).filter((k) => !known!.includes(k))
        if (extra.length && !warned.has(name)) {
          warned.add(name)
          console.warn(`metrics: ${name} has no label ${extra.join(", ")}; dropped`)
        }
        use(metric, extra.length ? Object.fromEntries(Object.entries(labels).filter(([k]) => known!.includes(k))) : labels)
      } catch (err) {
        if (!warned.has(name)) warned.add(name), console.warn(`metrics: ${name}: ${(err as Error).message}`)
      }
    }
  }

  return {
    prom,
    contentType: prom.contentType,
    counter(name, help, labelNames) {
      // counted here and handed to prom-client when it is scraped: an inc on the hot path is an addition, not a
      // label check and a hash (prom-client's own inc costs both, every call)
      type Series = { total: number; pending: number; labels?: Labels; metric?: client.Counter }
      const series = new Map<string, Series>()
      const call = guarded(
        name,
        labelNames,
        (ln) =>
          new client.Counter({
            name,
            help,
            labelNames: ln,
            registers: [prom],
            collect() {
              for (const x of series.values()) {
                if (!x.pending || !x.metric) continue
                const by = x.pending
                x.pending = 0
                x.metric.inc(x.labels!, by)
              }
            },
          }),
      )
      const seriesOf = (labels: Labels): Series => {
        const key = keyOf(labels)
        let x = series.get(key)
        if (!x) {
          series.set(key, (x = { total: 0, pending: 0 }))
          const found = x
          call(labels, (m, l) => ((found.metric = m), (found.labels = l)))
        }
        return x
      }
      const add = (x: Series, by: number) => {
        if (!(by >= 0) || by === Infinity) return // prom-client would throw at the scrape; a metric call never throws
        x.total += by
        x.pending += by
      }
      return {
        inc: (labels = {}, by = 1) => add(seriesOf(labels), by),
        get: (labels = {}) => series.get(keyOf(labels))?.total ?? 0,
        bind(labels) {
          const x = seriesOf(labels)
          return { inc: (by = 1) => add(x, by) }
        },
      }
    },
    gauge(name, help, { labelNames, collect } = {}) {
      const g = new client.Gauge({
        name,
        help,
        labelNames: labelNames ?? [],
        registers: [prom],
        ...(collect && {
          async collect() {
            // a failed sample keeps the last values rather than failing the whole scrape
            const rows = await Promise.resolve()
              .then(collect)
              .catch(() => undefined)
            if (rows === undefined) return
            if (typeof rows === "number") return void this.set(rows)
            this.reset()
            for (const [l, v] of rows) this.set(l, v)
          },
        }),
      })
      const call = guarded(name, labelNames ?? [], () => g)
      return { set: (value, labels = {}) => call(labels, (m, l) => m.set(l, value)) }
    },
    histogram(name, help, { labelNames, buckets = SECONDS } = {}) {
      // kept here, not in prom-client's Histogram: its observe() checks and hashes the label set on every call, even
      // through a bound child (~3 % of the consume path); the registry renders this one like its own at a scrape
      const bounds = [...new Set(buckets)].filter(Number.isFinite).sort((a, b) => a - b)
      const series = new Map<string, HistogramSeries>()
      const call = guarded(name, labelNames, () => {
        prom.registerMetric(histogramMetric(name, help, bounds, series) as unknown as client.Metric)
        return series
      })
      const seriesOf = (labels: Labels): HistogramSeries | undefined => {
        let found: HistogramSeries | undefined
        call(labels, (_m, l) => {
          const key = keyOf(l)
          found = series.get(key)
          if (!found) series.set(key, (found = { labels: l, counts: new Array<number>(bounds.length + 1).fill(0), sum: 0, count: 0 }))
        })
        return found
      }
      const record = (x: HistogramSeries, v: number) => {
        // a NaN or an infinity must not throw out of a hot path (the facade's promise: a metric call never throws)
        if (!Number.isFinite(v)) return
        let i = 0
        while (i < bounds.length && v > bounds[i]!) i++
        x.counts[i]!++
        x.sum += v
        x.count++
      }
      return {
        observe(value, labels = {}) {
          const x = seriesOf(labels)
          if (x) record(x, value)
        },
        bind(labels) {
          let x: HistogramSeries | undefined
          return {
            observe(value) {
              x ??= seriesOf(labels)
              if (x) record(x, value)
            },
          }
        },
      }
    },
    render: () => prom.metrics(),
  }
}
