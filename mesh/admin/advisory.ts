// mesh/admin/advisory.ts — delivery rule 4, the safety net: a message that hit max deliveries without anyone
// dead-lettering it (the worker crashed or hung on its final delivery) is filed from the server's advisory.
import { deadLetter, type Failed, publishDeadLetter } from "../dlq.ts"
import { isNotFound as notFound } from "../errors.ts"
import { getJson } from "../kv.ts"
import { type Admin, type DlqEntry, entryIdOf, headerOf, ORIGINAL_GONE } from "./entries.ts"

export type Advisory = { type: string; stream: string; consumer: string; stream_seq: number; deliveries: number }

export function parseAdvisory(data: Uint8Array): Advisory | undefined {
  try {
    const a = JSON.parse(new TextDecoder().decode(data)) as Partial<Advisory>
    const ok = typeof a.type === "string" && typeof a.stream === "string" && typeof a.consumer === "string" && Number.isInteger(a.stream_seq)
    return ok ? ({ deliveries: 0, ...a } as Advisory) : undefined
  } catch {
    return undefined
  }
}


/**
 * Delivery rule 4: a message that hit max deliveries without anyone dead-lettering it (the worker crashed or hung on
 * its final delivery) is filed from the server's advisory, under the same msg id the worker would have used.
 * MSG_TERMINATED needs nothing: workers term only after their DLQ publish was stored.
 */
export async function fileFromAdvisory(a: Admin, adv: Advisory): Promise<"filed" | "already-filed" | "ignored"> {
  if (!adv.type.endsWith(".max_deliver")) return "ignored"
  const original = await a.jsm.streams.getMessage(adv.stream, { seq: adv.stream_seq }).catch((err) => {
    if (notFound(err)) return null
    throw err
  })
  const base = { stream: adv.stream, seq: adv.stream_seq, consumer: adv.consumer, deliveries: adv.deliveries, reason: "max-deliveries" }
  const failed: Failed = original
    ? {
        ...base,
        subject: original.subject,
        headers: original.header,
        data: original.data,
        error: `no ack after ${adv.deliveries} deliveries: the worker crashed or hung (filed by ops from the server advisory)`,
      }
    : { ...base, subject: "", data: new Uint8Array(), error: ORIGINAL_GONE }
  const dl = deadLetter(failed)
  // past the DLQ stream's duplicate window only the bucket remembers that the worker already filed this failure
  if (await getJson<DlqEntry>(a.kv, entryIdOf(headerOf(dl.headers), dl.msgID))) return "already-filed"
  await publishDeadLetter(a.js, failed)
  return "filed"
}
