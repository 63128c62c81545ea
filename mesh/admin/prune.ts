// mesh/admin/prune.ts — an entry lives as long as its DLQ message. DLQ keeps its messages for max_age (90 days) and
// is never purged by the mesh, but an operator may purge it (`nats stream purge DLQ`); either way, an entry whose
// message is gone can no longer be shown or replayed, and the bucket would keep it for ever. Ops purges such entries
// from `dlq-entries` (their history with them) at start and then periodically; its live index sees the purges.
import { kvKey } from "../kv.ts"
import type { Admin } from "./entries.ts"
import type { LiveIndex } from "./live.ts"

/** Purges the entries whose DLQ message is no longer in the stream; returns their ids (oldest first). */
export async function pruneGone(a: Admin, index: LiveIndex): Promise<string[]> {
  // after a purge or once everything aged out, first_seq is last_seq + 1: every message before it is gone
  const gone = index.before((await a.jsm.streams.info("DLQ")).state.first_seq)
  for (const id of gone) await a.kv.purge(kvKey(id))
  return gone
}
