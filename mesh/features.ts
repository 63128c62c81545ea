// mesh/features.ts — what the connected nats-server can do, by its version. The newest release is the primary
// target; an older one (Debian's 2.9.10) runs the core, and each feature it lacks is named at start, never a silent
// misbehaviour: 2.9 ignores several of these settings without an error (a pause, a TTL, a subject transform).
import type { NatsConnection } from "@nats-io/transport-node"

export type Version = readonly [number, number, number]

// `what` reads after "without " in a start-up line, and before "needs nats-server …" in a refusal
export const FEATURES = {
  // 2.9 redelivers a message terminated with a reason: the mesh sends a plain term() there
  termReason: { since: [2, 10, 4], what: "the dead-letter reason in MSG_TERMINATED advisories" },
  filterSubjects: { since: [2, 10, 0], what: "consumers with several filter subjects" },
  subjectTransform: { since: [2, 10, 0], what: "partitions by key (stream subject transforms)" },
  pause: { since: [2, 11, 0], what: "pausing and resuming a consumer" },
  messageTtl: { since: [2, 11, 0], what: "per-message TTL" },
  consumerReset: { since: [2, 14, 0], what: "resetting a consumer to a stream sequence in place" },
} as const satisfies Record<string, { since: Version; what: string }>

export type Feature = keyof typeof FEATURES

export function parseVersion(text: string | undefined): Version | undefined {
  const m = /(\d+)\.(\d+)\.(\d+)/.exec(text ?? "")
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined
}

export const atLeast = (v: Version, since: Version) => v[0] - since[0] || v[1] - since[1] || v[2] - since[2]

/** The version the server announced when the connection was made (0.0.0 when it did not). */
export const serverVersion = (nc: NatsConnection): Version => parseVersion(nc.info?.version) ?? [0, 0, 0]

export const versionSupports = (v: Version, feature: Feature) => atLeast(v, FEATURES[feature].since) >= 0

export const supports = (nc: NatsConnection, feature: Feature) => versionSupports(serverVersion(nc), feature)

/** What this server lacks, each as one line for a start-up log: `pausing and resuming a consumer (needs 2.11.0)`. */
export function missingFeatures(nc: NatsConnection): string[] {
  const v = serverVersion(nc)
  return Object.values(FEATURES)
    .filter((f) => atLeast(v, f.since) < 0)
    .map((f) => `${f.what} (needs ${f.since.join(".")})`)
}

/** Thrown where a feature is asked for that the server lacks: the message names it and the version it needs. */
export class FeatureMissing extends Error {
  override name = "FeatureMissing"
  constructor(
    readonly feature: Feature,
    readonly version: Version,
  ) {
    super(`${FEATURES[feature].what} needs nats-server ${FEATURES[feature].since.join(".")} or newer; this server is ${version.join(".")}`)
  }
}

export function requireFeature(nc: NatsConnection, feature: Feature): void {
  if (!supports(nc, feature)) throw new FeatureMissing(feature, serverVersion(nc))
}
