// workers/ops-pages.ts — ops' pages (the dashboard, the story of a route or truck) and what they read besides the DLQ
// API: the story (mesh/admin/trace.ts) and the lag samples (ops-lag.ts). Each page gets a fresh nonce, and the
// policy lets only the page's own <script> and <style> (carrying it) run and apply. No inline handlers, no style
// attributes, nothing from elsewhere: a value that slipped past escaping still could not run or restyle the page.
import type { IRequest, RouterType } from "itty-router"
import type { Admin } from "../mesh/admin/mod.ts"
import { story } from "../mesh/admin/trace.ts"
import { dashboardPage } from "./ops-dashboard.ts"
import type { LagSampler } from "./ops-lag.ts"
import { storyPage } from "./ops-story.ts"

export const pagePolicy = (nonce: string) =>
  `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; img-src 'self'; connect-src 'self'; ` +
  `base-uri 'none'; form-action 'self'; frame-ancestors 'none'`

export function servePage(render: (nonce: string) => string): Response {
  const nonce = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))))
  return new Response(render(nonce), {
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "content-security-policy": pagePolicy(nonce),
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    },
  })
}

type Gate = (request: IRequest) => Promise<Response | undefined>

const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)

export function pageRoutes(router: RouterType<IRequest>, o: { read: Gate; admin: () => Promise<Admin>; lag: LagSampler }): void {
  router.get("/", () => servePage(dashboardPage))
  // the dashboard's "story of" form: GET /story?id=<id> → /story/<id>
  router.get("/story", ({ query }) => {
    const id = one(query.id)?.trim()
    return new Response(null, { status: 303, headers: { location: id ? `/story/${encodeURIComponent(id)}` : "/" } })
  })
  router.get("/story/:id", () => servePage(storyPage))
  router.get("/api/story/:id", o.read, async ({ params, query }) => {
    const routes = one(query.routes)
    let id: string
    try {
      id = decodeURIComponent(params.id!)
    } catch {
      return Response.json({ status: 400, error: "the id is not valid percent-encoding" }, { status: 400 })
    }
    return story(await o.admin(), id, routes ? { routes: Number(routes) } : {})
  })
  router.get("/api/lag", o.read, () => o.lag.series())
  // browsers ask for it on every page: an empty answer, not a 404 in the console
  router.get("/favicon.ico", () => new Response(null, { status: 204, headers: { "cache-control": "max-age=86400" } }))
}
