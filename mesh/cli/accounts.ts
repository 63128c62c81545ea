// mesh/cli/accounts.ts — `npm run accounts`: deploy/nats/accounts.conf (accounts, users and permissions of every
// LogiFlow server) derived from contracts/topology.ts, so a worker's NATS permissions are exactly what its spec says
// it publishes, consumes and stores. The file is committed; test/permissions.test.ts fails when it is stale and
// checks every permission against a live server.
import { writeFile } from "node:fs/promises"
import {
  consumersOf,
  HEARTBEATS,
  PARTITIONS_BUCKET,
  subjectsOf,
  topology,
  type WorkerName,
  workerNames,
  workers,
} from "../../contracts/mod.ts"
import { isMain } from "../main.ts"
import { durableNames, partitionable } from "../partitioning.ts"

export const ACCOUNTS_FILE = new URL("../../deploy/nats/accounts.conf", import.meta.url)

const HEAD = `# deploy/nats/accounts.conf — accounts, users and permissions of every LogiFlow server: nats.conf, each cluster node
# (node.conf, n1.conf..n3.conf) includes it, and the Helm install mounts it (deploy/k8s/nats-values.yaml).
#
# Generated from contracts/topology.ts by \`npm run accounts\` (mesh/cli/accounts.ts): edit the topology or the
# generator, never this file. test/permissions.test.ts fails when it is stale, and checks each permission live.
#
# Passwords come from the environment (\`$X_PASSWORD\`): a server refuses to start when one is missing. The server
# parses each value as a config token, so a password must start with a letter and hold only letters and digits.
#
# For each worker:
#   publish   its own event subjects (<domain>.events.<Event>.<key>), and its DLQ subjects dlq.<stream>.<worker>
#   consume   $JS.API.CONSUMER.INFO (bind) + MSG.NEXT (pull) + $JS.ACK (ack/nak/term/working) of its own durables
#             only (named after it, or its partitions <worker>-a0..b15), and STREAM.INFO of the streams it reads
#             (the partition layout); never CONSUMER.CREATE/DELETE on a domain stream: a missing durable must make
#             the worker fail fast (\`logiflow provision\`), not quietly create one that replays history
#   KV        its own buckets only: $KV.<b>.> (put/create/delete), STREAM.MSG.GET / DIRECT.GET (get), STREAM.INFO
#             (status), CONSUMER.CREATE/INFO/DELETE on KV_<b> and $JS.FC.KV_<b>.> (keys()/watch()/history())
#   heartbeat $KV.heartbeats.<worker>.> only; partition leases $KV.partitions.<worker>.> only
#   inbox     subscribe only to _INBOX_<worker>.> (mesh/connect.ts sets that inboxPrefix)
# No allow_responses: pull consumers reply to nothing; acks and flow control go to subjects listed above.
`

const kvAccess = (bucket: string) => [
  `$KV.${bucket}.>`,
  `$JS.API.STREAM.MSG.GET.KV_${bucket}`,
  `$JS.API.DIRECT.GET.KV_${bucket}.>`,
  `$JS.API.STREAM.INFO.KV_${bucket}`,
  `$JS.API.CONSUMER.CREATE.KV_${bucket}.>`,
  `$JS.API.CONSUMER.INFO.KV_${bucket}.*`,
  `$JS.API.CONSUMER.DELETE.KV_${bucket}.*`,
  `$JS.FC.KV_${bucket}.>`,
]

/** Leases of its own partitions: writes to its own keys; reads of the bucket (leases name no data, only instances). */
const leaseAccess = (w: string) => [
  `$KV.${PARTITIONS_BUCKET}.${w}.>`,
  `$JS.API.STREAM.MSG.GET.KV_${PARTITIONS_BUCKET}`,
  `$JS.API.DIRECT.GET.KV_${PARTITIONS_BUCKET}.>`,
  `$JS.API.STREAM.INFO.KV_${PARTITIONS_BUCKET}`,
  `$JS.API.CONSUMER.CREATE.KV_${PARTITIONS_BUCKET}.>`,
  `$JS.API.CONSUMER.INFO.KV_${PARTITIONS_BUCKET}.*`,
  `$JS.API.CONSUMER.DELETE.KV_${PARTITIONS_BUCKET}.*`,
  `$JS.FC.KV_${PARTITIONS_BUCKET}.>`,
]

/** The publish allow list of a worker, in a stable order. */
export function workerPermissions(w: WorkerName): string[] {
  const t = topology()
  const spec = workers[w]
  const mine = consumersOf(t, w)
  const out = [...spec.publishes.map(subjectsOf), `$KV.${HEARTBEATS}.${w}.>`]
  if (mine.length) out.push(`dlq.*.${w}`)
  for (const c of mine) {
    // a durable of a domain stream may be one of the worker's partitions, under any layout
    const names = partitionable(c.stream) ? durableNames(w) : [c.durable]
    if (names.length > 1) out.push(`$JS.API.STREAM.INFO.${c.stream}`)
    for (const d of names)
      out.push(`$JS.API.CONSUMER.INFO.${c.stream}.${d}`, `$JS.API.CONSUMER.MSG.NEXT.${c.stream}.${d}`, `$JS.ACK.${c.stream}.${d}.>`)
  }
  if (mine.some((c) => c.events.length > 0)) out.push(...leaseAccess(w))
  for (const b of Object.keys(spec.buckets)) out.push(...kvAccess(b))
  // its layout (partitioned or not) and its messages by sequence or subject, from the leader or from any replica
  for (const s of spec.reads ?? []) out.push(`$JS.API.STREAM.INFO.${s}`, `$JS.API.STREAM.MSG.GET.${s}`, `$JS.API.DIRECT.GET.${s}`)
  return out
}

/**
 * ops reads any stream's status and originals, files and replays dead letters, pauses and resumes consumers (the
 * breaker for a downstream outage, 2.11+: a pause keeps every message and the consumer's position), and creates,
 * updates or deletes no stream or consumer.
 */
function opsPermissions(): string[] {
  const streams = topology().streams.map((s) => s.name)
  return [
    "dlq.>",
    "replay.>",
    ...workerPermissions("ops"),
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.NAMES",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.LIST.*",
    "$JS.API.CONSUMER.NAMES.*",
    // POST /api/consumers/:stream/:consumer/pause|resume
    "$JS.API.CONSUMER.PAUSE.*.*",
    // the original of a dead letter, by stream sequence (advisories carry only stream + seq); not the KV_* streams,
    // which would expose every worker's private state
    ...streams.map((s) => `$JS.API.STREAM.MSG.GET.${s}`),
    // every worker's heartbeats, read (GET /api/status lists the workers that are up)
    `$JS.API.STREAM.MSG.GET.KV_${HEARTBEATS}`,
    `$JS.API.DIRECT.GET.KV_${HEARTBEATS}.>`,
    `$JS.API.CONSUMER.CREATE.KV_${HEARTBEATS}.>`,
    `$JS.API.CONSUMER.DELETE.KV_${HEARTBEATS}.*`,
    `$JS.FC.KV_${HEARTBEATS}.>`,
  ]
}

const WHY: Record<WorkerName, string> = {
  routing: "HTTP in (POST /routes), RouteCalculated out. Consumes nothing.",
  invoice: "RouteCalculated in, InvoiceGenerated out (guarded: one per route).",
  tracking: "RouteCalculated and PositionReported in; PositionReported (POST /positions) and EtaUpdated out.",
  portal: "The customer read model: consumes routes, ETAs and invoices, publishes no events (only its DLQ entries).",
  ops: "The operator's worker: files dead letters for any consumer and replays to any worker, pauses and resumes consumers, but publishes no domain event, and apart from pausing its JetStream API access is read-only.",
  fleet: "The truck simulator drives routing and tracking over HTTP; on NATS it only writes its heartbeat.",
}

export function render(): string {
  const user = (w: WorkerName) => {
    const allow = w === "ops" ? opsPermissions() : workerPermissions(w)
    return [
      `      # ${WHY[w]}`,
      "      {",
      `        user: ${w}, password: $${w.toUpperCase()}_PASSWORD`,
      "        permissions: {",
      "          publish: { allow: [",
      ...[...new Set(allow)].map((s) => `            "${s}"`),
      "          ] }",
      `          subscribe: { allow: ["_INBOX_${w}.>"] }`,
      "        }",
      "      }",
    ].join("\n")
  }
  return `${HEAD}
accounts {
  LOGIFLOW {
    # Every stream, consumer and KV bucket lives in this account; JetStream advisories are published here too.
    jetstream: enabled

    users: [
      # Provisioning and the operator CLI: no permissions block, so it may do everything in this account — the only
      # user that creates, updates or deletes streams and consumers. Workers never run as admin.
      { user: admin, password: $ADMIN_PASSWORD }

${workerNames.map(user).join("\n\n")}
    ]
  }

  # The system account: server monitoring over NATS for \`sys\` only. Kept apart from LOGIFLOW, so no application
  # user can see other accounts' connections or shut anything down.
  SYS {
    users: [
      { user: sys, password: $SYS_PASSWORD }
    ]
  }
}

system_account: SYS
`
}

if (isMain(import.meta)) {
  await writeFile(ACCOUNTS_FILE, render())
  console.log(`wrote ${ACCOUNTS_FILE.pathname}`)
}
