// The alert rules a platform team loads as is: generated from the model's thresholds, checked and unit-tested by the
// real promtool, shipped in the k8s ConfigMap unchanged, and alerting only on series something exports — the fullness
// gauges read from a real server here.
import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as assert from "uvu/assert"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect as natsConnect } from "@nats-io/transport-node"
import { parse } from "yaml"
import { alertRules, rulesConfigMap, rulesYaml } from "../deploy/alerts/rules.ts"
import { ALERT_FULLNESS, limits, REFERENCE_FLEET, topology } from "../contracts/mod.ts"
import { fullness, registerFullness } from "../mesh/admin/fullness.ts"
import { registry } from "../mesh/metrics.ts"
import { provision } from "../mesh/provision.ts"
import { newId, publishEvent } from "../mesh/publish.ts"
import { route } from "./fixtures/events.ts"
import { connectTo, natsFixture, ROOT, startServer, waitUntil, suite } from "./harness.ts"

const test = suite("alerts")
const ALERTS = join(ROOT, "deploy", "alerts")
const PROMTOOL = "/usr/bin/promtool"

const promtool = (...args: string[]) => {
  assert.ok(existsSync(PROMTOOL), "promtool missing: apt-get install prometheus (.ci/run does)")
  return execFileSync(PROMTOOL, args, { cwd: ALERTS, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
}

test("generated - the rules file and the k8s ConfigMap are what deploy/alerts/rules.ts makes of the model", () => {
  assert.is(readFileSync(join(ALERTS, "logiflow.rules.yaml"), "utf8"), rulesYaml())
  assert.is(readFileSync(join(ROOT, "deploy", "k8s", "alert-rules.yaml"), "utf8"), rulesConfigMap())
  const cm = parse(rulesConfigMap())
  assert.is(cm.data["logiflow.rules.yaml"], rulesYaml())
  const kz = parse(readFileSync(join(ROOT, "deploy", "k8s", "kustomization.yaml"), "utf8"))
  assert.ok(kz.resources.includes("alert-rules.yaml"))
  const exprs = alertRules().groups[0]!.rules.map((r) => r.expr)
  assert.ok(exprs.some((e) => e.endsWith(`> ${ALERT_FULLNESS.warn}`)) && exprs.some((e) => e.endsWith(`> ${ALERT_FULLNESS.critical}`)))
})

test("promtool - check rules passes on the file and on the ConfigMap's copy; the unit tests pass", () => {
  assert.match(promtool("check", "rules", "logiflow.rules.yaml"), /SUCCESS: 7 rules found/)
  const dir = mkdtempSync(join(tmpdir(), "logiflow-rules-"))
  try {
    writeFileSync(join(dir, "from-configmap.yaml"), parse(rulesConfigMap()).data["logiflow.rules.yaml"])
    assert.match(promtool("check", "rules", join(dir, "from-configmap.yaml")), /SUCCESS: 7 rules found/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  assert.match(promtool("test", "rules", "logiflow.rules.test.yaml"), /SUCCESS/)
})

test("metrics - every series the rules read is exported: the fullness gauges from a real server, dlq entries by ops", async () => {
  const f = await natsFixture()
  try {
    await provision(f.nc, topology())
    const metrics = registry({ defaults: false })
    registerFullness(metrics, async () => f.jsm)
    // a backlog on ROUTING: three routes no consumer has acked
    for (let i = 0; i < 3; i++) await publishEvent(f.js, "RouteCalculated", route(i), { id: newId(), source: "logiflow/test" })
    const text = await waitUntil(
      async () => {
        const t = await metrics.render()
        // the oldest unacked route ages while the test waits
        return /logiflow_consumer_oldest_unacked_seconds\{stream="ROUTING",consumer="invoice"\} (?!0\n)[\d.]+/.test(t) ? t : undefined
      },
      { what: "an aged backlog" },
    )
    const routing = (await f.jsm.streams.info("ROUTING")).state
    const l = limits(REFERENCE_FLEET)
    assert.ok(text.includes(`logiflow_stream_bytes{stream="ROUTING",discard="new"} ${routing.bytes}\n`), text)
    assert.ok(text.includes(`logiflow_stream_messages{stream="ROUTING",discard="new"} 3\n`))
    assert.ok(text.includes(`logiflow_stream_max_bytes{stream="ROUTING",discard="new"} ${l.ROUTING.maxBytes}\n`))
    assert.ok(text.includes(`logiflow_stream_max_bytes{stream="POSITIONS",discard="old"} ${l.POSITIONS.maxBytes}\n`))
    assert.ok(text.includes(`logiflow_stream_max_age_seconds{stream="ROUTING",discard="new"} ${l.ROUTING.maxAgeSeconds}\n`))
    for (const c of ["invoice", "tracking", "portal"])
      assert.ok(text.includes(`logiflow_consumer_lag{stream="ROUTING",consumer="${c}"} 3\n`), c)
    assert.ok(text.includes(`logiflow_consumer_oldest_unacked_seconds{stream="INVOICE",consumer="portal"} 0\n`))
    // unlimited max_msgs: no series, so no ratio
    assert.not.ok(text.includes("logiflow_stream_max_messages{"))

    const exported = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]!))
    // ops exports the open entries of the DLQ index (workers/ops.ts)
    exported.add("logiflow_dlq_open_entries")
    for (const r of alertRules().groups[0]!.rules) {
      for (const m of r.expr.matchAll(/\b(logiflow_[a-z_]+)\b/g))
        assert.ok(exported.has(m[1]!), `${r.alert} reads ${m[1]}, which nothing exports`)
    }
  } finally {
    await f.nc.close()
    await f.server.close()
  }
})

test("metrics - ops' own NATS user may read everything the gauges need (nats.conf)", async () => {
  const server = await startServer({ auth: true })
  const admin = await connectTo(server, { user: "admin", pass: server.env.ADMIN_PASSWORD! })
  // as the ops worker connects: its own user and private inbox prefix
  const ops = await natsConnect({ servers: server.url, user: "ops", pass: server.env.OPS_PASSWORD!, inboxPrefix: "_INBOX_ops" })
  try {
    await provision(admin, topology())
    await publishEvent(jetstream(admin), "RouteCalculated", route(1), { id: newId(), source: "logiflow/test" })
    const f = await fullness(await jetstreamManager(ops))
    assert.equal(
      f.lag.filter(([l]) => l.stream === "ROUTING").map(([l, n]) => [l.consumer, n]),
      [
        ["invoice", 1],
        ["portal", 1],
        ["tracking", 1],
      ],
    )
    assert.ok(f.oldestUnacked.find(([l]) => l.stream === "ROUTING" && l.consumer === "invoice")![1] >= 0)
    assert.ok(f.maxBytes.some(([l]) => l.stream === "POSITIONS"))
  } finally {
    await ops.close()
    await admin.close()
    await server.close()
  }
})

test.run()
