// mesh/admin/prune.ts — an entry lives as long as its DLQ message. DLQ keeps its messages for max_age (90 days) and
// is never purged by the mesh, but an operator may purge it (`nats stream purge DLQ`); either way, an entry whose
// message is gone can no longer be shown or replayed, and the bucket would keep it for ever. Ops purges such entries
// from `dlq-entries` (their history with them) at start and then periodically; its live index sees the purges.
import { kvKey } from "../kv.ts"
import type { Admin } from "./entries.ts"
import type { LiveIndex } from "./live.ts"

/** Purges the entries whose DLQ message is no longer in the stream; returns their ids (oldest first). */
export async function pruneGone(a: Admin, index: LiveIndex): Promise<string[]> {
  const { state } = await a.jsm.streams.info("DLQ")
  // an empty stream reports first_seq = last_seq + 1: every message up to last_seq is gone
  const first = state.messages === 0 ? state.last_seq + 1 : state.first_seq
  const gone = index.before(first)
  for (const id of gone) await a.kv.purge(kvKey(id))
  return gone
}
