// mesh/cli/up-credentials.ts — the secrets of one `logiflow up` run: a NATS password per nats.conf user, the
// operators' and API keys' tokens and the portal's signing secret. What the environment configures is used as it
// is; what it does not is generated fresh, never written to disk but to the session file (mode 0600) and the links.
import { randomBytes } from "node:crypto"
import { userInfo } from "node:os"
import { secret } from "../auth.ts"

export const USERS = ["routing", "invoice", "tracking", "portal", "ops", "fleet", "admin", "sys"] as const

/**
 * `<USER>_PASSWORD` from the environment, else fresh. nats-server reads a variable's value as a config token, so a
 * generated one starts with a letter ("12e4…" would parse as a number).
 */
export function natsPasswords(): Record<(typeof USERS)[number], string> {
  return Object.fromEntries(
    USERS.map((u) => [u, process.env[`${u.toUpperCase()}_PASSWORD`] ?? `p${randomBytes(16).toString("hex")}`]),
  ) as Record<(typeof USERS)[number], string>
}

/** The variables nats.conf reads the passwords from. */
export const passwordEnv = (passwords: Record<string, string>) =>
  Object.fromEntries(USERS.map((u) => [`${u.toUpperCase()}_PASSWORD`, passwords[u]!]))

const fresh = () => randomBytes(24).toString("base64url")
const SECRET_VARS = ["PORTAL_SECRET", "LOGIFLOW_OPERATORS", "LOGIFLOW_API_KEYS", "FLEET_API_KEY"]

/** An operator name from the OS user: what LOGIFLOW_OPERATORS accepts as a name. */
export function operatorName(user: string): string {
  const name = user
    .replace(/[^A-Za-z0-9._@-]/g, "-")
    .replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 64)
  return name || "operator"
}

export type Credentials = ReturnType<typeof credentials>

/**
 * The credentials of this run: what the environment configures (directly or as *_FILE) is used as it is; what it
 * does not is generated fresh and printed as links. Each worker gets only its own.
 */
export function credentials() {
  const generated = {
    operator: undefined as { name: string; token: string } | undefined,
    keys: undefined as Record<"dispatcher" | "gateway" | "fleet", string> | undefined,
  }
  const operators =
    secret("LOGIFLOW_OPERATORS") ??
    (() => {
      let user = "operator"
      try {
        user = userInfo().username
      } catch {}
      generated.operator = { name: operatorName(user), token: fresh() }
      return `${generated.operator.name}:${generated.operator.token}`
    })()
  let apiKeys = secret("LOGIFLOW_API_KEYS")
  let fleetKey = secret("FLEET_API_KEY")
  if (apiKeys === undefined) {
    const k = (generated.keys = { dispatcher: fresh(), gateway: fresh(), fleet: fresh() })
    apiKeys = `dispatcher:${k.dispatcher}:routes:20,gateway:${k.gateway}:positions:100,fleet:${k.fleet}:routes+positions:50`
    fleetKey = k.fleet
  }
  // PORTAL_SECRET signs the customers' links: one generated here is valid for this run's links only
  const portalSecret = secret("PORTAL_SECRET") ?? randomBytes(32).toString("base64url")
  const own: Record<string, Record<string, string | undefined>> = {
    portal: { PORTAL_SECRET: portalSecret },
    ops: { LOGIFLOW_OPERATORS: operators },
    routing: { LOGIFLOW_API_KEYS: apiKeys },
    tracking: { LOGIFLOW_API_KEYS: apiKeys },
    fleet: { FLEET_API_KEY: fleetKey },
  }
  const none = Object.fromEntries(
    SECRET_VARS.flatMap((v) => [
      [v, undefined],
      [`${v}_FILE`, undefined],
    ]),
  )
  return { generated, portalSecret, envOf: (worker: string) => ({ ...none, ...own[worker] }) }
}
