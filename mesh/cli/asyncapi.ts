// mesh/cli/asyncapi.ts — `npm run asyncapi`: the AsyncAPI 3.0 description of the mesh, derived from contracts/
// (events, envelope, topology) and written to contracts/asyncapi.json. The JSON is committed; test/asyncapi.test.ts
// fails when it is stale, so a contract change ships with its document. Dev-time only: nothing at run time imports
// this file (it pulls @valibot/to-json-schema); the ops worker serves the JSON.
import { readFile, writeFile } from "node:fs/promises"
import { toJsonSchema } from "@valibot/to-json-schema"
import {
  BY_REFERENCE,
  CE,
  ceTypeOf,
  DLQ,
  type EventName,
  eventNames,
  events,
  REPLAY,
  REPLAY_STREAM,
  streamOf,
  subjectsOf,
  topology,
  workerNames,
  workers,
} from "../../contracts/mod.ts"
import { isMain } from "../main.ts"

type Json = Record<string, unknown>

export const ASYNCAPI_FILE = new URL("../../contracts/asyncapi.json", import.meta.url)

/** what each event's key is (contracts/events.ts keyOf), for the channel parameter's description */
const KEY_OF: Record<EventName, string> = {
  RouteCalculated: "The truck id",
  InvoiceGenerated: "The route id (one invoice per route: a second one on the same subject is refused)",
  PositionReported: "The truck id",
  EtaUpdated: "The truck id",
}

const ref = (path: string) => ({ $ref: `#/${path}` })

/**
 * The JSON Schema of an event's payload. `finite` is left out (JSON cannot carry NaN or Infinity anyway), and so is
 * the time check: JSON Schema says it as `format: date-time` (the schema's metadata).
 */
export function payloadSchema(name: EventName, version = 1): Json {
  const schema = (events[name].versions as Record<number, Parameters<typeof toJsonSchema>[0]>)[version]!
  const { $schema: _, ...json } = toJsonSchema(schema, { ignoreActions: ["finite", "check"] }) as Json
  return json
}

const str = (description: string, extra: Json = {}) => ({ type: "string", description, ...extra })

/** CloudEvents 1.0 binary mode over NATS headers (contracts/envelope.ts): what every producer sends. */
function envelopeHeaders(ceType?: string): Json {
  return {
    type: "object",
    description: "CloudEvents 1.0 binary mode: the event's metadata as NATS headers, its data as the JSON body",
    properties: {
      [CE.specversion]: str("CloudEvents spec version", { const: "1.0" }),
      [CE.id]: str("Globally unique event id (UUIDv7, or prefixed by an edge site); also the Nats-Msg-Id, so a republish is stored once"),
      [CE.source]: str("The producing worker", { pattern: "^logiflow/[a-z]+$", examples: ["logiflow/routing"] }),
      [CE.type]: ceType
        ? str("Event type and schema version; a consumer dead-letters versions it does not know (unknown-version)", { const: ceType })
        : str("Event type and schema version", { pattern: "^logiflow\\.[a-z]+\\.[A-Za-z]+\\.v[0-9]+$" }),
      [CE.time]: str("When the event happened", { format: "date-time" }),
      [CE.subject]: str("Ordering key (a truck id): events with the same key are handled one at a time, in order"),
      [CE.contentType]: str("Media type of the body", { const: "application/json" }),
      [CE.traceparent]: str("W3C trace context of the span that published the event", {
        pattern: "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
      }),
      "Nats-Msg-Id": str("JetStream publish dedupe id; equals ce-id"),
    },
    required: [CE.specversion, CE.id, CE.source, CE.type, CE.time, CE.contentType],
  }
}

function deadLetterHeaders(): Json {
  const env = envelopeHeaders()
  return {
    type: "object",
    description: "The failed event's own headers, byte for byte (its traceparent included), plus where, how often and why it failed",
    properties: {
      ...(env.properties as Json),
      [DLQ.stream]: str("Stream the failed event is stored in (for a replayed event: the stream it was first stored in)"),
      [DLQ.consumer]: str("Durable consumer (= worker) that failed it"),
      [DLQ.seq]: str("Stream sequence of the failed event", { pattern: "^[0-9]+$" }),
      [DLQ.subject]: str("Subject the failed event was published on"),
      [DLQ.deliveries]: str("Deliveries made before it was dead-lettered", { pattern: "^[0-9]+$" }),
      [DLQ.reason]: str("Why", {
        examples: [
          "no-tariff",
          "max-deliveries",
          "invalid-event",
          "unknown-type",
          "unknown-version",
          "missing-header",
          "invalid-json",
          "unhandled-type",
          "invalid-output",
        ],
      }),
      [DLQ.error]: str("The error message, one line, at most 1024 characters"),
      [DLQ.failedAt]: str("When it was dead-lettered", { format: "date-time" }),
      [DLQ.storedAt]: str("When the failed event was stored in its stream", { format: "date-time" }),
      [DLQ.payload]: str(
        "by-reference: no body (the event with these headers exceeds the DLQ's message size); read the original from its stream and sequence",
        { enum: [BY_REFERENCE] },
      ),
    },
    required: [DLQ.stream, DLQ.consumer, DLQ.seq, DLQ.subject, DLQ.deliveries, DLQ.reason, DLQ.error, DLQ.failedAt],
  }
}

function replayHeaders(): Json {
  const env = envelopeHeaders()
  return {
    type: "object",
    description: "The dead-lettered event's headers, plus the entry it came from",
    properties: {
      ...(env.properties as Json),
      [REPLAY.of]: str("Id of the DLQ entry being replayed"),
      [REPLAY.stream]: str("Stream the event was first stored in"),
      [REPLAY.seq]: str("Its sequence there", { pattern: "^[0-9]+$" }),
      [REPLAY.subject]: str("Its original subject"),
    },
    required: [...(env.required as string[]), REPLAY.of, REPLAY.stream, REPLAY.seq, REPLAY.subject],
  }
}

/** `version`: the package's (package.json), so the document names the release it describes */
export function asyncapi(version: string): Json {
  const topo = topology()
  const consuming = workerNames.filter((w) => workers[w].consumes.length > 0)
  // a failure is filed under the stream the event was first stored in, never REPLAY
  const failingStreams = [
    ...new Set(topo.consumers.filter((c) => c.events.length > 0 && c.stream !== REPLAY_STREAM).map((c) => c.stream)),
  ].sort()
  const eventPayloads = eventNames.map((n) => ref(`components/schemas/${n}`))

  const channels: Json = {}
  const messages: Json = {}
  const schemas: Json = {}
  for (const name of eventNames) {
    schemas[name] = payloadSchema(name)
    messages[name] = {
      name,
      title: name,
      summary: `${name}, published on ${subjectsOf(name)} (the last token its key) and stored in stream ${streamOf(name)}`,
      contentType: "application/json",
      correlationId: { description: "the CloudEvents id", location: `$message.header#/${CE.id}` },
      headers: envelopeHeaders(ceTypeOf(name)),
      payload: ref(`components/schemas/${name}`),
    }
    channels[name] = {
      address: `${subjectsOf(name).slice(0, -1)}{key}`,
      title: name,
      parameters: {
        key: { description: `${KEY_OF[name]}, as one subject token: letters, digits, - and _ as they are, every other byte as =XX` },
      },
      description: `Stream ${streamOf(name)} (file storage, duplicate window on). Each consuming worker reads it through a durable pull consumer named after itself.`,
      messages: { [name]: ref(`components/messages/${name}`) },
    }
  }
  messages.DeadLetter = {
    name: "DeadLetter",
    title: "Dead letter",
    summary: "An event a consumer could not handle: the original body and headers plus logiflow-dlq-* headers",
    contentType: "application/json",
    headers: deadLetterHeaders(),
    payload: {
      description: "The failed event's body, byte for byte (it may break its schema: that can be why it is here)",
      oneOf: eventPayloads,
    },
  }
  messages.Replayed = {
    name: "Replayed",
    title: "Replayed event",
    summary: "A dead-lettered event sent again to the one consumer that failed it",
    contentType: "application/json",
    headers: replayHeaders(),
    payload: { oneOf: eventPayloads },
  }
  channels.deadLetters = {
    address: "dlq.{stream}.{consumer}",
    title: "Dead letters",
    description:
      "Stream DLQ (limits retention, 90 days, never work-queue). Msg id dlq:<stream>:<consumer>:<seq>, so the worker and the ops safety net file one entry per failure.",
    parameters: {
      stream: { enum: failingStreams, description: "Stream the failed event is stored in" },
      consumer: { enum: consuming, description: "Consumer (= worker) that failed it" },
    },
    messages: { DeadLetter: ref("components/messages/DeadLetter") },
  }
  channels.replays = {
    address: "replay.{worker}.{stream}",
    title: "Replays",
    description: `Stream ${REPLAY_STREAM}: a replayed event reaches only the worker that failed it (its ${REPLAY_STREAM} consumer filters replay.<worker>.>)`,
    parameters: {
      worker: { enum: consuming, description: "The worker that failed the event" },
      stream: { enum: failingStreams, description: "Stream the event was first stored in" },
    },
    messages: { Replayed: ref("components/messages/Replayed") },
  }

  const operations: Json = {}
  const op = (
    id: string,
    action: "send" | "receive",
    channel: string,
    message: string,
    worker: string,
    summary: string,
    extra: Json = {},
  ) =>
    (operations[id] = {
      action,
      channel: ref(`channels/${channel}`),
      messages: [ref(`channels/${channel}/messages/${message}`)],
      summary,
      tags: [{ name: worker }],
      ...extra,
    })
  for (const w of workerNames) {
    for (const e of workers[w].publishes) op(`${w}.send.${e}`, "send", e, e, w, `${w} publishes ${e} (awaits the JetStream ack)`)
    for (const e of workers[w].consumes) {
      const c = topo.consumers.find((c) => c.worker === w && c.events.includes(e))!
      op(`${w}.receive.${e}`, "receive", e, e, w, `${w} handles ${e} through durable ${c.stream}/${c.durable}`, {
        description: `Filter ${c.filterSubjects.join(", ")}; explicit ack, ack_wait ${c.ackWaitSeconds} s, max_deliver ${c.maxDeliver}, max_ack_pending ${c.maxAckPending}. Returned events are published before the ack.`,
      })
    }
    if (workers[w].consumes.length > 0) {
      op(`${w}.send.deadLetter`, "send", "deadLetters", "DeadLetter", w, `${w} dead-letters what it cannot handle (dlq.<stream>.${w})`)
      op(`${w}.receive.replay`, "receive", "replays", "Replayed", w, `${w} handles replayed events through durable ${REPLAY_STREAM}/${w}`)
    }
  }
  op(
    "ops.send.deadLetter",
    "send",
    "deadLetters",
    "DeadLetter",
    "ops",
    "ops files the dead letter of a crash or hang on the final delivery, from the MAX_DELIVERIES advisory",
  )
  op("ops.receive.deadLetter", "receive", "deadLetters", "DeadLetter", "ops", "ops indexes every DLQ entry in the dlq-entries bucket")
  op("ops.send.replay", "send", "replays", "Replayed", "ops", "ops replays a DLQ entry to the consumer that failed it")

  return {
    asyncapi: "3.0.0",
    info: {
      title: "LogiFlow mesh",
      version,
      description:
        "Small workers that talk only through durable NATS JetStream domain events (CloudEvents 1.0 binary mode over NATS headers). Generated from contracts/ by `npm run asyncapi`; do not edit by hand.",
      tags: workerNames.map((w) => ({ name: w, description: `the ${w} worker` })),
    },
    defaultContentType: "application/json",
    servers: {
      local: {
        host: "localhost:4222",
        protocol: "nats",
        description: "`npm start` runs nats-server from nats.conf; NATS_URL points elsewhere",
      },
    },
    channels,
    operations,
    components: { messages, schemas },
  }
}

export const packageVersion = async () =>
  (JSON.parse(await readFile(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version

/** The file as committed: stable key order, two-space indent, trailing newline. */
export const render = async () => `${JSON.stringify(asyncapi(await packageVersion()), null, 2)}\n`

if (isMain(import.meta)) {
  await writeFile(ASYNCAPI_FILE, await render())
  console.log(`wrote ${ASYNCAPI_FILE.pathname}`)
}
