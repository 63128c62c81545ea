// mesh/admin — the operator's library: the DLQ entry lifecycle, the advisory safety net, status. Used by the ops
// worker (HTTP API, dashboard) and by `logiflow` (mesh/cli/), so the two cannot drift apart.
export * from "./advisory.ts"
export * from "./entries.ts"
export * from "./filing.ts"
export * from "./list.ts"
export * from "./replay.ts"
export * from "./status.ts"
export * from "./pause.ts"
export * from "./live.ts"
export * from "./form.ts"
export * from "./edit.ts"
export * from "./dryrun.ts"
export * from "./jobs.ts"
