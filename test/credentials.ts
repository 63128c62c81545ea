// test/credentials.ts — the one set of credentials a test (or bench) process gives every worker it starts: API keys
// for ingestion, an operator for ops, the portal's secret. Fresh per process, never written anywhere. The harness
// puts `testAuth().env` into the environment, so in-process workers and spawned children alike accept them.
import { randomBytes } from "node:crypto"
import { signToken } from "../mesh/auth.ts"

export type TestAuth = {
  /** LOGIFLOW_API_KEYS, LOGIFLOW_OPERATORS, PORTAL_SECRET, FLEET_API_KEY */
  env: Record<string, string>
  /** plaintext API keys by scope; `both` may send routes and positions (the fleet simulator's) */
  keys: { routes: string; positions: string; both: string }
  /** headers carrying each key */
  headers: { routes: Record<string, string>; positions: Record<string, string> }
  operator: { name: string; token: string; headers: Record<string, string> }
  /** a portal token for `customerId`, valid an hour unless `expiresAt` (unix seconds) says otherwise */
  customerToken(customerId: string, o?: { expiresAt?: number; secret?: string }): Promise<string>
}

let made: TestAuth | undefined

export function testAuth(): TestAuth {
  if (made) return made
  const token = () => randomBytes(24).toString("base64url")
  const keys = { routes: token(), positions: token(), both: token() }
  const operator = { name: "tester", token: token() }
  const portalSecret = token()
  // rates far above what any test sends: only the tests of the limit itself run into it, with keys of their own
  const env = {
    LOGIFLOW_API_KEYS: [
      `test-dispatcher:${keys.routes}:routes:100000`,
      `test-gateway:${keys.positions}:positions:100000`,
      `test-fleet:${keys.both}:routes+positions:100000`,
    ].join(","),
    LOGIFLOW_OPERATORS: `${operator.name}:${operator.token}`,
    PORTAL_SECRET: portalSecret,
    FLEET_API_KEY: keys.both,
  }
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` })
  made = {
    env,
    keys,
    headers: { routes: bearer(keys.routes), positions: bearer(keys.positions) },
    operator: { ...operator, headers: bearer(operator.token) },
    customerToken: (customerId, o = {}) =>
      signToken(o.secret ?? portalSecret, customerId, o.expiresAt ?? Math.floor(Date.now() / 1000) + 3600),
  }
  return made
}
