// mesh/metrics.ts — a small Prometheus registry (counters, gauges, histograms) rendered as text exposition.

type Labels = Record<string, string>
const keyOf = (l: Labels) => JSON.stringify(Object.entries(l).sort(([a], [b]) => a.localeCompare(b)))
const fmt = (l: Labels) => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`)
  return parts.length ? `{${parts.join(",")}}` : ""
}

type Metric = { render(): string }

export type Registry = {
  counter(name: string, help: string): { inc(labels?: Labels, by?: number): void; get(labels?: Labels): number }
  gauge(name: string, help: string, collect?: () => number | [Labels, number][]): { set(value: number, labels?: Labels): void }
  histogram(name: string, help: string, buckets?: number[]): { observe(value: number, labels?: Labels): void }
  render(): string
}

export function registry(): Registry {
  const metrics: Metric[] = []
  return {
    counter(name, help) {
      const values = new Map<string, [Labels, number]>()
      metrics.push({
        render: () => [`# HELP ${name} ${help}`, `# TYPE ${name} counter`, ...[...values.values()].map(([l, v]) => `${name}${fmt(l)} ${v}`)].join("\n"),
      })
      return {
        inc(labels = {}, by = 1) {
          const k = keyOf(labels)
          const cur = values.get(k)
          values.set(k, [labels, (cur?.[1] ?? 0) + by])
        },
        get: (labels = {}) => values.get(keyOf(labels))?.[1] ?? 0,
      }
    },
    gauge(name, help, collect) {
      const values = new Map<string, [Labels, number]>()
      metrics.push({
        render() {
          const collected = collect?.()
          const rows = typeof collected === "number" ? [[{}, collected] as [Labels, number]] : (collected ?? [...values.values()])
          return [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, ...rows.map(([l, v]) => `${name}${fmt(l)} ${v}`)].join("\n")
        },
      })
      return { set: (value, labels = {}) => void values.set(keyOf(labels), [labels, value]) }
    },
    histogram(name, help, buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]) {
      const series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>()
      metrics.push({
        render() {
          const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`]
          for (const s of series.values()) {
            buckets.forEach((b, i) => lines.push(`${name}_bucket${fmt({ ...s.labels, le: String(b) })} ${s.counts[i]}`))
            lines.push(`${name}_bucket${fmt({ ...s.labels, le: "+Inf" })} ${s.count}`)
            lines.push(`${name}_sum${fmt(s.labels)} ${s.sum}`, `${name}_count${fmt(s.labels)} ${s.count}`)
          }
          return lines.join("\n")
        },
      })
      return {
        observe(value, labels = {}) {
          const k = keyOf(labels)
          let s = series.get(k)
          if (!s) series.set(k, (s = { labels, counts: buckets.map(() => 0), sum: 0, count: 0 }))
          buckets.forEach((b, i) => value <= b && s.counts[i]!++)
          s.sum += value
          s.count++
        },
      }
    },
    render: () => metrics.map((m) => m.render()).join("\n") + "\n",
  }
}
