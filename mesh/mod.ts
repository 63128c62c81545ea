// mesh — the runtime every worker imports, and all it imports of mesh/ (besides contracts/). No business logic.
// Operator tooling lives apart: mesh/admin/ (the DLQ desk's library, for ops and the CLI) and mesh/cli/ (`logiflow`).
export {
  apiKeyGate,
  type ApiKey,
  cookie,
  type Operators,
  operatorsFromEnv,
  parseApiKeys,
  parseOperators,
  presented,
  randomSecret,
  requireApiKey,
  sameOrigin,
  type Scope,
  secret,
  sessionCookie,
  signToken,
  verifyToken,
} from "./auth.ts"
export { connect, type Connection } from "./connect.ts"
export { hmacSha256, sha256 } from "./digest.ts"
export type { Handler, HandlerContext, Handlers, RawHandler } from "./handler.ts"
export { deadLetter, publishDeadLetter } from "./dlq.ts"
export { env, envInt } from "./env.ts"
export { ApiCode, apiCode, isNoResponders, isNotFound, isPermissionDenied, PermanentError, StartupError, TooLarge } from "./errors.ts"
export { readJson, retryLater, serve } from "./http.ts"
export { json } from "./lazy-web.ts"
export { createValue, getJson, kvKey, updateJson } from "./kv.ts"
export { type Logger, logger } from "./log.ts"
export { runWhenMain } from "./main.ts"
export { provision, TopologyConflict } from "./provision.ts"
export { type Follower, followRebuild, type RebuildState } from "./rebuild.ts"
export { getStoredMessage } from "./acked.ts"
export { checkEventSize, hex, newId, type Outgoing, publishEvent } from "./publish.ts"
export { repeat, sleep, withTimeout } from "./time.ts"
export { requestTraceparent } from "./tracing.ts"
export { type Running, type Runtime, type Worker, worker, type WorkerOptions } from "./worker.ts"
