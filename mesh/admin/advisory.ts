// mesh/admin/advisory.ts — delivery rule 4, the safety net: a message that hit max deliveries without anyone
// dead-lettering it (the worker crashed or hung on its final delivery) is filed from the server's advisory.
import { deadLetter, type Failed, publishDeadLetter } from "../dlq.ts"
import { isNotFound as notFound } from "../errors.ts"
import { dlqSubject } from "../../contracts/mod.ts"
import { getJson } from "../kv.ts"
import { type Admin, type DlqEntry, entryIdOf, headerOf, ORIGINAL_GONE } from "./entries.ts"
import { consumerOfSubject, effectStored } from "./filing.ts"

export type Advisory = { type: string; stream: string; consumer: string; stream_seq: number; deliveries: number }

export function parseAdvisory(data: Uint8Array): Advisory | undefined {
  try {
    const a = JSON.parse(new TextDecoder().decode(data)) as Partial<Advisory>
    const ok =
      typeof a.type === "string" && typeof a.stream === "string" && typeof a.consumer === "string" && Number.isInteger(a.stream_seq)
    return ok ? ({ deliveries: 0, ...a } as Advisory) : undefined
  } catch {
    return undefined
  }
}

export type AdvisoryOutcome = "filed" | "already-filed" | "effect-stored" | "ignored"

/**
 * Delivery rule 4: a message that hit max deliveries without anyone dead-lettering it (the worker crashed or hung on
 * its final delivery, or the DLQ refused its entry) is filed from the server's advisory, under the same msg id the
 * worker would have used. MSG_TERMINATED needs nothing: workers term only after their DLQ publish was stored. The
 * consumer is the one the advisory's subject names (only the server publishes there); an advisory about a consumer
 * that handles no events (ops' own, which retry forever) is never filed.
 */
export async function fileFromAdvisory(a: Admin, adv: Advisory, subject?: string): Promise<AdvisoryOutcome> {
  if (!adv.type.endsWith(".max_deliver")) return "ignored"
  const [stream, consumer] = subject ? subject.split(".").slice(-2) : [adv.stream, adv.consumer]
  if (stream !== adv.stream || consumer !== adv.consumer) return "ignored"
  if (typeof consumerOfSubject(dlqSubject(adv.stream, adv.consumer)) === "string") return "ignored"
  const original = await a.jsm.streams.getMessage(adv.stream, { seq: adv.stream_seq }).catch((err) => {
    if (notFound(err)) return null
    throw err
  })
  // crashed between storing its effect and the ack: the failure had its effect, there is nothing to file
  if (original && (await effectStored(a, adv.consumer, original))) return "effect-stored"
  const base = { stream: adv.stream, seq: adv.stream_seq, consumer: adv.consumer, deliveries: adv.deliveries, reason: "max-deliveries" }
  const failed: Failed = original
    ? {
        ...base,
        subject: original.subject,
        headers: original.header,
        data: original.data,
        storedAt: original.time,
        error: `no ack after ${adv.deliveries} deliveries: the worker crashed or hung, or the DLQ refused its own entry (filed by ops from the server advisory)`,
      }
    : { ...base, subject: "", data: new Uint8Array(), error: ORIGINAL_GONE }
  const dl = deadLetter(failed)
  // past the DLQ stream's duplicate window only the bucket remembers that the worker already filed this failure
  if (await getJson<DlqEntry>(a.kv, entryIdOf(dl.subject, headerOf(dl.headers), dl.msgID))) return "already-filed"
  await publishDeadLetter(a.js, failed)
  return "filed"
}
