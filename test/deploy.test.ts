// deploy/ against the code it deploys: every worker everywhere, ports, env names, probes, grace periods, the
// NATS configs (validated by nats-server itself), and the 3-node cluster for real. No Docker engine here: images
// are not built; `docker compose config` runs only where the compose plugin exists.
import { spawn, spawnSync } from "node:child_process"
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import * as assert from "uvu/assert"
import { parse as parseYaml, parseAllDocuments } from "yaml"
import { topology, type WorkerName, workerNames, workers } from "../contracts/topology.ts"
import { type Cluster, DEFAULT_BASE_PORTS, startCluster } from "../mesh/cli/cluster.ts"
import { type Connection, connect } from "../mesh/connect.ts"
import { findNatsServer, freePort } from "../mesh/cli/natsd.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { route } from "./fixtures/events.ts"
import { passwords, ROOT, spawnTs, waitUntil, suite } from "./harness.ts"
import { CAPACITY_VARIABLES } from "../mesh/capacity.ts"

const read = (p: string) => readFileSync(join(ROOT, p), "utf8")
const execGitIgnored = (p: string) => spawnSync("git", ["check-ignore", "-q", p], { cwd: ROOT }).status === 0
const DEPLOY = join(ROOT, "deploy")
// YAML merge keys (<<: *anchor) resolved, as compose does
const yamlFile = (p: string) => parseYaml(read(p), { merge: true })
const yamlDocs = (p: string) => parseAllDocuments(read(p), { merge: true }).map((d) => d.toJS())

type Env = Record<string, string>
// parsed YAML: its shape is what the asserts check
type Json = any

// ---- what the code reads ------------------------------------------------------------------------------------

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => join(dir, f))
}

/** Env names the runtime and workers read, plus what the images and NATS configs read. */
function envReadByCode(): Set<string> {
  const names = new Set<string>()
  for (const f of [...sourceFiles("mesh"), ...sourceFiles("workers"), ...sourceFiles("contracts")]) {
    const text = read(f)
    for (const re of [/\benv(?:Int)?\(\s*"([A-Z0-9_]+)"/g, /process\.env\.([A-Z0-9_]+)/g, /process\.env\[\s*"([A-Z0-9_]+)"\s*\]/g])
      for (const m of text.matchAll(re)) names.add(m[1]!)
    // secret("X") reads X or the file named by X_FILE
    for (const m of text.matchAll(/\bsecret\(\s*"([A-Z0-9_]+)"/g)) names.add(m[1]!).add(`${m[1]}_FILE`)
  }
  // mesh/capacity.ts reads its variables from a table (CAPACITY_VARIABLES)
  for (const v of CAPACITY_VARIABLES) names.add(v)
  // mesh/worker.ts reads `${name.toUpperCase()}_PORT` (asserted below), the images WORKER
  for (const w of workerNames) names.add(`${w.toUpperCase()}_PORT`)
  names.add("WORKER")
  return names
}

/** `$NAME` references of a nats-server config (quoted subjects like "$JS.API.>" aside): what it reads from its environment. */
const natsVars = (file: string) =>
  new Set(
    [
      ...read(file)
        .replace(/#.*$/gm, "")
        .replace(/"[^"]*"/g, "")
        .matchAll(/\$([A-Z][A-Z0-9_]*)/g),
    ].map((m) => m[1]!),
  )

const drainDefaultMs = () => {
  const m = /envInt\("DRAIN_TIMEOUT_MS",\s*([\d_]+)\)/.exec(read("mesh/worker.ts"))
  assert.ok(m, "mesh/worker.ts reads DRAIN_TIMEOUT_MS with a numeric default")
  return Number(m![1]!.replaceAll("_", ""))
}

/** compose `${X:?msg}` / `${X}` interpolation with the given values */
const interpolate = (s: string, env: Env) =>
  s.replace(/\$\{([A-Z0-9_]+)(?::?[?-][^}]*)?\}/g, (_, k: string) => {
    if (env[k] === undefined) throw new Error(`no value for ${k}`)
    return env[k]!
  })

function natsTest(config: string, env: Env): { ok: boolean; out: string } {
  const bin = findNatsServer()
  assert.ok(bin, "nats-server is installed")
  // only what is given: a variable the config needs must not leak in from the test's own environment
  const r = spawnSync(bin!, ["-t", "-c", config], { env, encoding: "utf8" })
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() }
}

const passwordEnv = passwords()

/** The secret each worker reads from a mounted file (mesh/auth.ts `secret`), and the file's name. */
const SECRET_FILES: Partial<Record<WorkerName, { env: string; file: string }>> = {
  portal: { env: "PORTAL_SECRET_FILE", file: "portal-secret" },
  ops: { env: "LOGIFLOW_OPERATORS_FILE", file: "operators" },
  routing: { env: "LOGIFLOW_API_KEYS_FILE", file: "api-keys" },
  tracking: { env: "LOGIFLOW_API_KEYS_FILE", file: "api-keys" },
  fleet: { env: "FLEET_API_KEY_FILE", file: "fleet-api-key" },
}
/** What the host publishes: only what must be public; ops for an operator's tunnel on 127.0.0.1; the rest nothing. */
const PUBLISHED: Record<WorkerName, string[] | undefined> = {
  portal: ["8080:8080"],
  routing: ["8081:8081"],
  tracking: ["8082:8082"],
  ops: ["127.0.0.1:8084:8084"],
  invoice: undefined,
  fleet: undefined,
}
/** Paths open without credentials on every worker's port (no customer data, no payloads): never exposed publicly. */
const OPEN_PATHS = ["/healthz", "/readyz", "/metrics"]

// ---- compose --------------------------------------------------------------------------------------------------

const files = suite("deploy files")
const compose = yamlFile("deploy/compose.yaml")
const services: Record<string, Json> = compose.services
const DEFAULT_PORTS = Object.fromEntries(workerNames.map((w) => [w, workers[w].port])) as Record<WorkerName, number>

const natsServices = Object.keys(services).filter((s) => /^nats-\d$/.test(s))

files("workers - every worker in contracts/topology.ts has a file that names itself", () => {
  for (const w of workerNames) assert.ok(read(`workers/${w}.ts`).includes(`name: "${w}"`), `workers/${w}.ts declares name "${w}"`)
})

files("compose - every worker is a service of the one image, under its own user, on its default port", () => {
  for (const w of workerNames) {
    const s = services[w]
    assert.ok(s, `compose service ${w}`)
    assert.equal(s.build, { context: "..", dockerfile: "deploy/Dockerfile" })
    assert.ok(existsSync(join(DEPLOY, s.build.context, s.build.dockerfile)))
    const env: Env = s.environment
    const port = String(DEFAULT_PORTS[w])
    assert.is(env.WORKER, w)
    assert.is(env.NATS_USER, w)
    assert.match(
      env.NATS_PASSWORD!,
      new RegExp(`^\\$\\{${w.toUpperCase()}_PASSWORD:\\?`),
      `${w}: compose refuses to start without its password`,
    )
    assert.is(env[`${w.toUpperCase()}_PORT`], port)
    assert.equal(s.ports, PUBLISHED[w], `${w}: published ports`)
    assert.is(env.NATS_URL, natsServices.map((n) => `nats://${n}:4222`).join(","))
    assert.is(env.STREAM_REPLICAS, "3")
    assert.is(s.depends_on.provision.condition, "service_completed_successfully")
    assert.equal(s.healthcheck.test, ["CMD", "node", "deploy/healthcheck.mjs"])
    // the grace period covers the drain
    assert.ok(Number.parseInt(s.stop_grace_period, 10) * 1000 > Number(env.DRAIN_TIMEOUT_MS ?? drainDefaultMs()), `${w}: stop_grace_period`)
  }
  assert.is(services.fleet.environment.ROUTING_URL, `http://routing:${DEFAULT_PORTS.routing}`)
  assert.is(services.fleet.environment.TRACKING_URL, `http://tracking:${DEFAULT_PORTS.tracking}`)
})

files("compose - secrets come from files under deploy/secrets/ (git-ignored), each worker mounting only its own", () => {
  assert.ok(execGitIgnored("deploy/secrets/operators"), "deploy/secrets/ is git-ignored")
  for (const [name, def] of Object.entries(compose.secrets as Record<string, { file: string }>)) {
    assert.is(def.file, `./secrets/${name}`, name)
  }
  for (const w of workerNames) {
    const want = SECRET_FILES[w]
    const env: Env = services[w].environment
    assert.equal(services[w].secrets, want ? [want.file] : undefined, `${w}: secrets`)
    if (want) assert.is(env[want.env], `/run/secrets/${want.file}`, `${w}: ${want.env}`)
    // never the values themselves in the file or the environment
    for (const k of ["PORTAL_SECRET", "LOGIFLOW_OPERATORS", "LOGIFLOW_API_KEYS", "FLEET_API_KEY", "LOGIFLOW_OPS_TOKEN"])
      assert.is(env[k], undefined, `${w}: ${k}`)
  }
  assert.equal(Object.keys(compose.secrets).sort(), [...new Set(Object.values(SECRET_FILES).map((x) => x!.file))].sort())
})

files("compose - provision runs once as admin at R3, after all three NATS nodes are healthy", () => {
  const p = services.provision
  assert.equal(p.command, ["node", "--import", "tsx", "mesh/cli/main.ts", "provision", "--replicas", "3"])
  assert.is(p.environment.NATS_USER, "admin")
  assert.match(p.environment.NATS_PASSWORD, /^\$\{ADMIN_PASSWORD:\?/)
  assert.is(p.restart, "no")
  assert.equal(Object.keys(p.depends_on).sort(), natsServices)
  for (const n of natsServices) assert.is(p.depends_on[n].condition, "service_healthy")
})

files("compose - three NATS nodes of deploy/nats/node.conf, each valid to nats-server with its own environment", () => {
  assert.equal(natsServices, ["nats-1", "nats-2", "nats-3"])
  const names = new Set<string>()
  for (const n of natsServices) {
    const s = services[n]
    const args: string[] = s.command
    const config = args[args.indexOf("-c") + 1]!
    const store = args[args.indexOf("-sd") + 1]!
    // the config path inside the container maps to deploy/nats/node.conf through a read-only bind mount
    const mount = (s.volumes as string[]).map((v) => v.split(":")).find(([, target]) => config.startsWith(`${target}/`))
    assert.ok(mount, `${n}: a volume holds ${config}`)
    assert.is(join(DEPLOY, mount![0]!, config.slice(mount![1]!.length)), join(DEPLOY, "nats/node.conf"))
    assert.is(mount![2], "ro")
    assert.ok(
      (s.volumes as string[]).some((v) => v.split(":")[1] === store),
      `${n}: ${store} is a volume`,
    )
    const env: Env = Object.fromEntries(Object.entries(s.environment as Env).map(([k, v]) => [k, interpolate(v, passwordEnv)]))
    names.add(env.NATS_SERVER_NAME!)
    assert.is(env.NATS_ROUTES, `[${natsServices.map((x) => `nats://${x}:6222`).join(", ")}]`)
    // everything node.conf and accounts.conf read is set, nothing else
    assert.equal(Object.keys(env).sort(), [...natsVars("deploy/nats/node.conf"), ...natsVars("deploy/nats/accounts.conf")].sort())
    const t = natsTest(join(DEPLOY, "nats/node.conf"), env)
    assert.ok(t.ok, `${n}: ${t.out}`)
    assert.ok(!(s.ports ?? []).some((p: string) => p.endsWith(":6222")), `${n}: the cluster port stays private`)
  }
  assert.is(names.size, 3, "server names are distinct")
})

files("compose - every variable set on a worker or provision is one the code reads", () => {
  const known = envReadByCode()
  for (const name of [...workerNames, "provision"])
    for (const k of Object.keys(services[name].environment)) assert.ok(known.has(k), `compose ${name}: ${k} is read by no code`)
})

// ---- Kubernetes --------------------------------------------------------------------------------------------

const k8sFiles = readdirSync(join(DEPLOY, "k8s")).filter((f) => f.endsWith(".yaml"))
const k8s = k8sFiles.filter((f) => f !== "kustomization.yaml" && f !== "nats-values.yaml").flatMap((f) => yamlDocs(`deploy/k8s/${f}`))
const kind = (k: string, name: string) => k8s.find((d) => d.kind === k && d.metadata.name === name)
const configMap: Env = kind("ConfigMap", "logiflow-config").data
const helm = yamlFile("deploy/k8s/nats-values.yaml")

files("k8s - kustomization lists every manifest (not the Helm values) and sets the image", () => {
  const kz = yamlFile("deploy/k8s/kustomization.yaml")
  assert.equal([...kz.resources].sort(), k8sFiles.filter((f) => f !== "kustomization.yaml" && f !== "nats-values.yaml").sort())
  assert.equal(
    kz.images.map((i: Json) => i.name),
    ["logiflow-mesh"],
  )
  assert.is(kz.namespace, "logiflow")
})

files("k8s - a Deployment and a Service per worker: probes, ports, user, secrets, grace period over the drain", () => {
  const drainMs = Number(configMap.DRAIN_TIMEOUT_MS ?? drainDefaultMs())
  for (const w of workerNames) {
    const d = kind("Deployment", w)
    assert.ok(d, `Deployment ${w}`)
    const pod = d.spec.template.spec
    const c = pod.containers[0]
    const port = DEFAULT_PORTS[w]
    assert.is(pod.containers.length, 1)
    assert.is(c.image, "logiflow-mesh")
    assert.equal(d.spec.selector.matchLabels, { "app.kubernetes.io/name": w })
    assert.is(d.spec.template.metadata.labels["app.kubernetes.io/name"], w)
    // Service links would set ROUTING_PORT=tcp://… in every pod, which a worker refuses as a port
    assert.is(pod.enableServiceLinks, false, `${w}: enableServiceLinks`)
    const env = Object.fromEntries(c.env.map((e: Json) => [e.name, e]))
    assert.is(env.WORKER.value, w)
    assert.is(env.NATS_USER.value, w)
    assert.is(env[`${w.toUpperCase()}_PORT`].value, String(port))
    assert.equal(env.NATS_PASSWORD.valueFrom.secretKeyRef, { name: "logiflow-nats-users", key: `${w.toUpperCase()}_PASSWORD` })
    assert.equal(c.envFrom, [{ configMapRef: { name: "logiflow-config" } }])
    assert.equal(c.ports, [{ name: "http", containerPort: port }])
    assert.equal(c.livenessProbe.httpGet, { path: "/healthz", port: "http" })
    assert.equal(c.startupProbe.httpGet, { path: "/healthz", port: "http" })
    assert.equal(c.readinessProbe.httpGet, { path: "/readyz", port: "http" })
    assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory, `${w}: resources`)
    assert.is(pod.securityContext.runAsNonRoot, true)
    assert.ok(pod.securityContext.runAsUser > 0)
    // tsx needs a writable temp dir; a read-only root needs one mounted
    if (c.securityContext.readOnlyRootFilesystem)
      assert.ok(
        c.volumeMounts.some((m: Json) => m.mountPath === "/tmp"),
        `${w}: /tmp volume`,
      )
    const sleep = c.lifecycle.preStop.exec.command
    assert.is(sleep[0], "sleep")
    assert.ok(pod.terminationGracePeriodSeconds * 1000 > drainMs + Number(sleep[1]) * 1000, `${w}: grace period > preStop + drain`)
    const svc = kind("Service", w)
    assert.ok(svc, `Service ${w}`)
    assert.equal(svc.spec.selector, { "app.kubernetes.io/name": w })
    assert.equal(svc.spec.ports, [{ name: "http", port, targetPort: "http" }])
    assert.ok(svc.spec.type === undefined || svc.spec.type === "ClusterIP", `${w}: a ClusterIP Service, never a NodePort or LoadBalancer`)
    // its own secret as a read-only file of Secret logiflow-auth, and nothing else of it
    const want = SECRET_FILES[w]
    const auth = (pod.volumes as Json[]).find((v) => v.secret?.secretName === "logiflow-auth")
    if (!want) {
      assert.is(auth, undefined, `${w}: no credentials mounted`)
      continue
    }
    assert.equal(auth.secret.items, [{ key: want.file, path: want.file }], `${w}: only its own key`)
    assert.ok([0o440, 440].includes(auth.secret.defaultMode), `${w}: mode 0440`)
    assert.is(pod.securityContext.fsGroup, pod.securityContext.runAsGroup, `${w}: the files' group is the user's`)
    const mount = c.volumeMounts.find((m: Json) => m.name === auth.name)
    assert.equal([mount.readOnly, env[want.env].value], [true, `${mount.mountPath}/${want.file}`])
  }
  assert.not.ok(JSON.stringify(k8s).includes("LOGIFLOW_OPS_TOKEN"))
})

files("k8s - the Ingress exposes only the portal, POST /routes and POST /positions; no health or metrics path, no catch-all", () => {
  const ing = kind("Ingress", "logiflow")
  assert.ok(ing, "Ingress logiflow")
  const paths = ing.spec.rules.flatMap((r: Json) =>
    r.http.paths.map((p: Json) => [p.path, p.pathType, p.backend.service.name, p.backend.service.port.name]),
  )
  assert.equal(paths, [
    ["/", "Exact", "portal", "http"],
    ["/login", "Exact", "portal", "http"],
    ["/logout", "Exact", "portal", "http"],
    ["/api", "Prefix", "portal", "http"],
    ["/routes", "Exact", "routing", "http"],
    ["/positions", "Exact", "tracking", "http"],
  ])
  for (const [path, type] of paths) {
    assert.not.ok(
      OPEN_PATHS.some((o) => o === path || (type === "Prefix" && o.startsWith(path === "/" ? "/" : `${path}/`))),
      `${path} (${type}) would expose ${OPEN_PATHS}`,
    )
  }
  assert.ok(ing.spec.tls?.length, "TLS")
})

files("k8s - a NetworkPolicy lets only the ingress controller's namespace and this namespace reach worker pods", () => {
  const np = kind("NetworkPolicy", "logiflow-workers")
  assert.ok(np, "NetworkPolicy logiflow-workers")
  assert.equal(np.spec.podSelector, { matchLabels: { "app.kubernetes.io/part-of": "logiflow" } })
  assert.equal(np.spec.policyTypes, ["Ingress"])
  assert.equal(np.spec.ingress, [
    { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "ingress-nginx" } } }, { podSelector: {} }] },
  ])
  for (const w of workerNames)
    assert.is(kind("Deployment", w).spec.template.metadata.labels["app.kubernetes.io/part-of"], "logiflow", `${w} is selected`)
})

files("k8s - the provision Job runs `logiflow provision --replicas 3` as admin", () => {
  const job = kind("Job", "logiflow-provision")
  const c = job.spec.template.spec.containers[0]
  assert.equal(c.command, ["node", "--import", "tsx", "mesh/cli/main.ts", "provision", "--replicas", "3"])
  const env = Object.fromEntries(c.env.map((e: Json) => [e.name, e]))
  assert.is(env.NATS_USER.value, "admin")
  assert.equal(env.NATS_PASSWORD.valueFrom.secretKeyRef, { name: "logiflow-nats-users", key: "ADMIN_PASSWORD" })
  assert.ok(["OnFailure", "Never"].includes(job.spec.template.spec.restartPolicy))
})

files("k8s - every variable a manifest sets is one the code reads", () => {
  const known = envReadByCode()
  for (const k of Object.keys(configMap)) assert.ok(known.has(k), `ConfigMap: ${k} is read by no code`)
  for (const d of k8s.filter((x) => x.kind === "Deployment" || x.kind === "Job"))
    for (const e of d.spec.template.spec.containers[0].env)
      assert.ok(known.has(e.name), `${d.kind} ${d.metadata.name}: ${e.name} is read by no code`)
  assert.is(configMap.STREAM_REPLICAS, "3")
})

files("k8s - Helm values: 3-node JetStream on file storage, accounts.conf included, every password from the Secret", () => {
  assert.is(helm.config.cluster.enabled, true)
  assert.is(helm.config.cluster.replicas, 3)
  assert.is(helm.config.jetstream.enabled, true)
  assert.is(helm.config.jetstream.fileStore.enabled, true)
  assert.is(helm.config.jetstream.fileStore.pvc.enabled, true)
  assert.is(Object.entries(helm.config.merge).find(([k]) => k.endsWith("$include"))?.[1], "accounts.conf")
  assert.equal(Object.keys(helm.container.env).sort(), [...natsVars("deploy/nats/accounts.conf")].sort())
  for (const [k, v] of Object.entries(helm.container.env as Record<string, Json>))
    assert.equal(v.valueFrom.secretKeyRef, { name: "logiflow-nats-users", key: k })
  // the release the workers dial
  assert.is(configMap.NATS_URL, "nats://nats:4222")
  assert.match(read("deploy/k8s/nats-values.yaml"), /--set-file 'configMap\.merge\.data\.accounts\\\.conf=deploy\/nats\/accounts\.conf'/)
})

// ---- images ------------------------------------------------------------------------------------------------

/** Dockerfile instructions, continuation lines joined, comments dropped. */
const instructions = (p: string) =>
  read(p)
    .replace(/\\\n/g, " ")
    .split("\n")
    .filter((l) => l.trim() && !l.trim().startsWith("#"))
    .map((l) => {
      const [op, ...rest] = l.trim().split(/\s+/)
      return { op: op!.toUpperCase(), args: rest.join(" ") }
    })

/** Whether the build context keeps `path` under a .dockerignore (last matching rule wins). */
function kept(ignoreFile: string, path: string): boolean {
  let keep = true
  for (const raw of read(ignoreFile).split("\n")) {
    const line = raw.trim()
    if (!line || line.startsWith("#")) continue
    const negate = line.startsWith("!")
    const glob = negate ? line.slice(1) : line
    const re = new RegExp(
      `^${glob
        .replace(/[.+^$()|[\]]/g, "\\$&")
        .replace(/\*\*/g, "\u0000")
        .replace(/\*/g, "[^/]*")
        .replace(/\u0000/g, ".*")}$`,
    )
    if (re.test(path)) keep = negate
  }
  return keep
}

function checkCopies(dockerfile: string) {
  for (const { op, args } of instructions(dockerfile)) {
    if (op !== "COPY" || args.startsWith("--from")) continue
    const srcs = args.split(/\s+/).slice(0, -1)
    for (const s of srcs) {
      assert.ok(existsSync(join(ROOT, s)), `${dockerfile}: COPY ${s} exists`)
      const probe = statSync(join(ROOT, s)).isDirectory() ? `${s}/${readdirSync(join(ROOT, s))[0]}` : s
      assert.ok(kept(`${dockerfile}.dockerignore`, probe), `${dockerfile}.dockerignore keeps ${probe}`)
    }
  }
  assert.not.ok(kept(`${dockerfile}.dockerignore`, "node_modules/tsx/package.json"), "node_modules stays out of the context")
  assert.not.ok(kept(`${dockerfile}.dockerignore`, ".logiflow/nats/x"), ".logiflow stays out of the context")
}

files("Dockerfile - Node 20 slim, npm ci --omit=dev, non-root, HEALTHCHECK on /readyz, SIGTERM to node", () => {
  const ins = instructions("deploy/Dockerfile")
  const one = (op: string) => ins.filter((i) => i.op === op).map((i) => i.args)
  assert.match(one("FROM")[0]!, /^node:20[\w.-]*slim/)
  assert.ok(one("RUN").some((r) => /\bnpm ci --omit=dev\b/.test(r)))
  const pkg = JSON.parse(read("package.json"))
  assert.ok(pkg.dependencies.tsx, "tsx is a runtime dependency, so --omit=dev keeps it")
  const user = one("USER").at(-1)!
  assert.not.ok(/^(root|0)(:|$)/.test(user), `runs as ${user}`)
  assert.match(one("HEALTHCHECK")[0]!, /CMD \["node", "deploy\/healthcheck\.mjs"\]/)
  assert.ok(read("deploy/healthcheck.mjs").includes("/readyz"))
  assert.equal(one("STOPSIGNAL"), ["SIGTERM"])
  const cmd = JSON.parse(one("CMD")[0]!)
  assert.equal(cmd.slice(0, 2), ["sh", "-c"])
  assert.match(cmd[2], /^exec node --import tsx workers\/\$\{WORKER:\?[^}]*\}\.ts$/)
  assert.equal(one("EXPOSE")[0]!.split(" ").map(Number).sort(), Object.values(DEFAULT_PORTS).sort())
  checkCopies("deploy/Dockerfile")
})

files("Dockerfile - every package a worker or `logiflow provision` imports is a runtime dependency, so --omit=dev keeps it", () => {
  const deps = Object.keys(JSON.parse(read("package.json")).dependencies)
  const pkgOf = (spec: string) =>
    spec
      .split("/")
      .slice(0, spec.startsWith("@") ? 2 : 1)
      .join("/")
  // follow the relative imports from what the containers run; build scripts beside them (npm run asyncapi) may use dev tools
  const seen = new Set<string>()
  const queue = [...workerNames.map((w) => `workers/${w}.ts`), "mesh/cli/main.ts"]
  while (queue.length) {
    const f = queue.pop()!
    if (seen.has(f)) continue
    seen.add(f)
    // type-only imports vanish at run time
    const code = read(f).replace(/^import type .*$/gm, "")
    for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^import\s+)"([^"]+)"/gm)) {
      const spec = m[1]!
      if (spec.startsWith(".")) {
        if (spec.endsWith(".ts")) queue.push(join(f, "..", spec)) // a JSON import (contracts/asyncapi.json) has no imports
      } else if (!spec.startsWith("node:"))
        assert.ok(deps.includes(pkgOf(spec)), `${f} imports ${spec}, which is not in package.json dependencies`)
    }
  }
  assert.ok(seen.has("mesh/worker.ts") && seen.has("contracts/topology.ts"), "the walk reached the runtime")
})

files("Dockerfile.deno - Deno 2, non-root, the same workers and health check", () => {
  const ins = instructions("deploy/Dockerfile.deno")
  const one = (op: string) => ins.filter((i) => i.op === op).map((i) => i.args)
  assert.match(one("FROM").at(-1)!, /^denoland\/deno:2\b/)
  assert.is(one("USER").at(-1), "deno")
  assert.match(one("HEALTHCHECK")[0]!, /deploy\/healthcheck\.mjs/)
  assert.match(JSON.parse(one("CMD")[0]!)[2], /^exec deno run .*workers\/\$\{WORKER:\?[^}]*\}\.ts$/)
  checkCopies("deploy/Dockerfile.deno")
})

files(
  "healthcheck.mjs - without <NAME>_PORT it asks the port of the worker's spec, from the ports.json the image build writes",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "logiflow-health-"))
    try {
      copyFileSync(join(DEPLOY, "healthcheck.mjs"), join(dir, "healthcheck.mjs"))
      const ports = spawnSync(process.execPath, ["--import", "tsx", join(DEPLOY, "ports.ts")], { encoding: "utf8" })
      assert.is(ports.status, 0, ports.stderr)
      writeFileSync(join(dir, "ports.json"), ports.stdout)
      assert.equal(JSON.parse(ports.stdout), DEFAULT_PORTS)
      // a server that answers /readyz 200 on a free port, named by <NAME>_PORT: healthy; without it the spec's port
      const server = createServer((_q, r) => r.end("{}")).listen(0, "127.0.0.1")
      await new Promise((r) => server.once("listening", r))
      const port = (server.address() as AddressInfo).port
      const run = (env: Record<string, string>) =>
        new Promise<{ status: number | null; stderr: string }>((resolve) => {
          const c = spawn(process.execPath, [join(dir, "healthcheck.mjs")], { env: { PATH: process.env.PATH!, ...env } })
          let stderr = ""
          c.stderr.on("data", (b) => (stderr += b))
          c.on("exit", (status) => resolve({ status, stderr }))
        })
      assert.is((await run({ WORKER: "invoice", INVOICE_PORT: String(port) })).status, 0)
      const fallback = await run({ WORKER: "invoice", INVOICE_PORT: "" })
      server.close()
      assert.is(fallback.status, 1)
      assert.match(fallback.stderr, new RegExp(`:${DEFAULT_PORTS.invoice}/readyz`))
      assert.match((await run({ WORKER: "nobody" })).stderr, /unknown WORKER "nobody"/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  },
)

// ---- NATS configs ------------------------------------------------------------------------------------------

files("nats - n1..n3.conf are valid, on 4301-4303 / 6301-6303 / 8301-8303, with one route list and their own stores", () => {
  const routes = new Set<string>()
  const stores = new Set<string>()
  for (const i of [1, 2, 3]) {
    const f = `deploy/nats/n${i}.conf`
    const t = natsTest(join(ROOT, f), passwordEnv)
    assert.ok(t.ok, `${f}: ${t.out}`)
    const text = read(f).replace(/#.*$/gm, "")
    const val = (re: RegExp) => re.exec(text)?.[1]
    assert.is(val(/^server_name: (\S+)/m), `n${i}`)
    assert.is(Number(val(/^port: (\d+)/m)), DEFAULT_BASE_PORTS.client + i - 1)
    assert.is(Number(val(/^http_port: (\d+)/m)), DEFAULT_BASE_PORTS.monitor + i - 1)
    assert.is(Number(val(/^\s+port: (\d+)/m)), DEFAULT_BASE_PORTS.cluster + i - 1)
    assert.is(val(/^\s+name: (\S+)/m), "logiflow")
    routes.add(val(/routes: (\[.*\])/)!)
    stores.add(val(/store_dir: "([^"]+)"/)!)
  }
  assert.equal([...routes], [`[${[0, 1, 2].map((i) => `nats://127.0.0.1:${DEFAULT_BASE_PORTS.cluster + i}`).join(", ")}]`])
  assert.is(stores.size, 3)
  assert.match(read("deploy/nats/node.conf"), /^\s+name: logiflow$/m)
  // a node without one of the passwords refuses to start, naming it
  const { ADMIN_PASSWORD: _, ...without } = passwordEnv
  const t = natsTest(join(ROOT, "deploy/nats/n1.conf"), without)
  assert.not.ok(t.ok)
  assert.match(t.out, /ADMIN_PASSWORD/)
})

files("nats - accounts.conf is nats.conf's accounts block (or nats.conf includes it)", () => {
  const nats = read("nats.conf")
  if (/^\s*include\s+"?deploy\/nats\/accounts\.conf"?/m.test(nats)) return
  const norm = (s: string) =>
    s
      .split("\n")
      .map((l) => l.replace(/#.*$/, "").trim())
      .filter(Boolean)
      .join("\n")
  const start = nats.search(/^accounts\s*\{/m)
  assert.ok(start >= 0, "nats.conf has an accounts block")
  const accounts = read("deploy/nats/accounts.conf")
  assert.fixture(norm(accounts.slice(accounts.search(/^accounts\s*\{/m))), norm(nats.slice(start)))
})

// not registered without the plugin, rather than files.skip: test/run.ts subtracts uvu's skipped count from a total
// that already leaves skips out, and would print "-1 failed"
const composeCli = spawnSync("docker", ["compose", "version"], { encoding: "utf8" }).status === 0
if (!composeCli)
  console.log("deploy.test: `docker compose` (the compose plugin) is not installed here: not running `docker compose config`")
else
  files("compose - docker compose config accepts the file with every password set", () => {
    // --env-file /dev/null: a developer's deploy/.env must not decide either outcome
    const config = ["compose", "--env-file", "/dev/null", "-f", join(DEPLOY, "compose.yaml"), "config", "--quiet"]
    const r = spawnSync("docker", config, {
      env: { ...process.env, ...passwordEnv },
      encoding: "utf8",
    })
    assert.is(r.status, 0, r.stderr)
    const bare = spawnSync("docker", config, { env: { PATH: process.env.PATH }, encoding: "utf8" })
    assert.is.not(bare.status, 0, "refuses without passwords")
  })

files.run()

// ---- the cluster, for real -----------------------------------------------------------------------------------

const live = suite("cluster")
let dir: string
let cluster: Cluster
let nc: Connection
let jsm: JetStreamManager
const admin = { user: "admin", pass: passwordEnv.ADMIN_PASSWORD! }

live.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "logiflow-cluster-"))
  const ports = []
  for (let i = 0; i < 3; i++) ports.push({ client: await freePort(), cluster: await freePort(), monitor: await freePort() })
  cluster = await startCluster({ dir, ports, env: passwordEnv })
  nc = await connect({ name: "admin", url: cluster.urls.join(","), ...admin })
  jsm = await jetstreamManager(nc)
})
live.after(async () => {
  await nc?.close()
  await cluster?.stop()
  await rm(dir, { recursive: true, force: true })
})

const replicaState = async (stream: string) => {
  const si = await jsm.streams.info(stream)
  return {
    replicas: si.config.num_replicas,
    leader: si.cluster?.leader,
    followers: si.cluster?.replicas ?? [],
    messages: si.state.messages,
  }
}

live("cluster - three nodes agree on one JetStream meta leader, which sees the other two as current", async () => {
  assert.is(cluster.nodes.length, 3)
  assert.ok(["n1", "n2", "n3"].includes(cluster.leader))
  for (const [i, n] of cluster.nodes.entries()) {
    const jsz = (await (await fetch(`http://127.0.0.1:${n.monitorPort}/jsz`)).json()) as {
      meta_cluster: { leader: string; cluster_size: number; replicas: { name: string; current: boolean }[] }
    }
    assert.is(jsz.meta_cluster.leader, cluster.leader)
    assert.is(jsz.meta_cluster.cluster_size, 3)
    if (`n${i + 1}` === cluster.leader) {
      const others = ["n1", "n2", "n3"].filter((name) => name !== cluster.leader)
      assert.equal(
        jsz.meta_cluster.replicas.map((r) => [r.name, r.current]).sort(),
        others.map((name) => [name, true]),
      )
    }
  }
})

live("cluster - provision at R3, 100 events: ROUTING has a leader and two current followers holding all 100", async () => {
  await provision(nc, topology({ replicas: 3 }))
  const js = jetstream(nc)
  for (let i = 0; i < 100; i++) {
    const ack = await publishEvent(js, "RouteCalculated", route(i), { id: `cluster-${i}`, source: "logiflow/test" })
    assert.is(ack.stream, "ROUTING")
  }
  const s = await waitUntil(
    async () => {
      const st = await replicaState("ROUTING")
      return st.followers.length === 2 && st.followers.every((f) => f.current) ? st : undefined
    },
    { timeoutMs: 10_000, what: "two current followers" },
  )
  assert.is(s.replicas, 3)
  assert.is(s.messages, 100)
  const names = [s.leader!, ...s.followers.map((f) => f.name)].sort()
  assert.equal(names, ["n1", "n2", "n3"])
  for (const b of topology().buckets) assert.is((await jsm.streams.info(`KV_${b.bucket}`)).config.num_replicas, 3, b.bucket)
})

live("cluster - a worker under its own user works through the three URLs, and the image health check sees it ready", async () => {
  const port = await freePort()
  const env = {
    NATS_URL: cluster.urls.join(","),
    NATS_USER: "invoice",
    NATS_PASSWORD: passwordEnv.INVOICE_PASSWORD,
    INVOICE_PORT: String(port),
    STREAM_REPLICAS: "3",
  }
  const health = () =>
    spawnSync(process.execPath, [join(DEPLOY, "healthcheck.mjs")], { env: { ...env, WORKER: "invoice" }, encoding: "utf8" })
  assert.is(health().status, 1, "not running yet: unhealthy")
  const invoice = spawnTs("workers/invoice.ts", env)
  try {
    await invoice.waitFor(/"msg":"ready"/)
    const h = health()
    assert.is(h.status, 0, h.stderr)
    assert.is((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200)
    // the 100 routes of the previous test, priced once each (customer acme has a tariff)
    await waitUntil(async () => (await replicaState("INVOICE")).messages === 100, { timeoutMs: 20_000, what: "100 invoices" })
  } finally {
    assert.is(await invoice.stop("SIGTERM"), 0)
  }
  assert.is(health().status, 1, "stopped: unhealthy")
})

live("cluster - with the ROUTING leader's node stopped, a new leader takes over and publishes are still acknowledged", async () => {
  const before = await replicaState("ROUTING")
  const victim = cluster.nodes[Number(before.leader!.slice(1)) - 1]!
  await victim.stop()
  const js = jetstream(nc)
  const after = await waitUntil(
    async () => {
      const st = await replicaState("ROUTING").catch(() => undefined)
      return st?.leader && st.leader !== before.leader ? st : undefined
    },
    { timeoutMs: 20_000, what: "a new ROUTING leader" },
  )
  const ack = await publishEvent(js, "RouteCalculated", route(100), { id: "cluster-100", source: "logiflow/test" })
  assert.is(ack.seq, 101)
  assert.is(after.replicas, 3)
  await victim.restart()
  await waitUntil(
    async () => {
      const st = await replicaState("ROUTING")
      return st.followers.length === 2 && st.followers.every((f) => f.current) && st.messages === 101
    },
    { timeoutMs: 20_000, what: "the restarted node caught up" },
  )
})

live.run()
