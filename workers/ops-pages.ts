// workers/ops-pages.ts — how ops serves its pages (the dashboard, a story): each response gets a fresh nonce, and the
// policy lets only the page's own <script> and <style> (carrying it) run and apply. No inline handlers, no style
// attributes, nothing from elsewhere: a value that slipped past escaping still could not run or restyle the page.
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
