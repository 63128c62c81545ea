// workers/ops-layout.ts — what the ops dashboard (ops-dashboard.ts) needs to fit a 1280 px screen and a phone, be used
// with the keyboard, and draw each consumer's lag over time: its responsive CSS and the sparkline and table script,
// placed inside the page's own <style> and <script> (both carry the page's nonce: the policy allows nothing else).

/** Sparklines, visible focus, and below 760 px: lag bars in two rows, the dead letters as labelled cards. */
export const dashboardCss = `
  header form.find { margin: 0; gap: .4rem; align-items: baseline; }
  header form.find input { max-width: 60vw; }
  .spark { display: block; width: 8rem; height: 1.8rem; }
  .spark polyline { fill: none; stroke: #3b7ddd; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
  .spark polygon { fill: #3b7ddd22; stroke: none; }
  .spark.hot polyline { stroke: #d9534f; } .spark.hot polygon { fill: #d9534f22; }
  a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, tr:focus-visible, summary:focus-visible { outline: 3px solid #3b7ddd; outline-offset: 2px; }
  @media (max-width: 760px) {
    header, main { padding-left: .7rem; padding-right: .7rem; }
    section { padding: .6rem .7rem; }
    td { overflow-wrap: anywhere; }
    .bar { grid-template-columns: minmax(0, 1fr) max-content; border-bottom: 1px solid #e7e9ee; padding-bottom: .4rem; }
    .bar .track, .bar .nums { grid-column: 1 / -1; }
    .bar .spark { grid-column: 1 / -1; width: 100%; }
    .bar > :last-child { grid-column: 2; grid-row: 1; }
    /* the dead letters as cards: each cell on its own line, named by its column (data-label, from the table head) */
    #entries thead { display: none; }
    #entries tr { display: block; padding: .4rem 0; border-bottom: 1px solid #e7e9ee; }
    #entries td { display: block; border: 0; padding: .05rem 0; max-width: none; }
    #entries td[data-label]:not([data-label=""])::before { content: attr(data-label) ": "; color: #5a6275; }
    dl { grid-template-columns: minmax(0, 7rem) minmax(0, 1fr); }
  }
`

/** Lag sparklines from GET /api/lag (drawn as inline SVG), and the dead-letter table's labels and Enter key. */
export const dashboardScript = `
// lag over time: ops keeps samples of every consumer's lag (GET /api/lag); each bar gets a sparkline of them, ending
// at the value just read. Drawn here as inline SVG: nothing is fetched from elsewhere.
const SVG = "http://www.w3.org/2000/svg";
let lagSeries = { everyMs: 10000, windowMs: 3600000, consumers: {} };
function spark(key, now) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("data-spark", key);
  svg.setAttribute("viewBox", "0 0 120 28");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  drawSpark(svg, key, now);
  return svg;
}
function drawSpark(svg, key, now) {
  const t = Date.now();
  const pts = [...(lagSeries.consumers[key] || []), [t, now]].filter(([at]) => at >= t - lagSeries.windowMs);
  // from the oldest sample kept (a fresh ops has only a few minutes of them) to now, ten samples wide at least
  const span = Math.max(t - pts[0][0], 10 * lagSeries.everyMs);
  const max = Math.max(1, ...pts.map(([, v]) => v));
  const x = (at) => (120 * (at - (t - span))) / span;
  const y = (v) => 27 - (25 * v) / max;
  const line = pts.map(([at, v]) => x(at).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
  const area = document.createElementNS(SVG, "polygon");
  area.setAttribute("points", x(pts[0][0]).toFixed(1) + ",27 " + line + " " + x(t).toFixed(1) + ",27");
  const poly = document.createElementNS(SVG, "polyline");
  poly.setAttribute("points", line);
  const title = document.createElementNS(SVG, "title");
  const secs = Math.round(span / 1000);
  const over = secs < 120 ? secs + " s" : Math.round(secs / 60) + " min";
  const label = key + " lag over the last " + over + ": " + pts.length + " samples, max " + max.toLocaleString("en-US") + ", now " + now.toLocaleString("en-US");
  title.textContent = label;
  svg.setAttribute("aria-label", label);
  svg.setAttribute("data-samples", String(pts.length));
  svg.setAttribute("data-max", String(max));
  svg.classList.toggle("hot", now > 0 && now >= max);
  svg.replaceChildren(title, area, poly);
}
async function refreshLag() {
  try {
    lagSeries = await getJson("/api/lag");
    for (const svg of document.querySelectorAll("svg.spark")) {
      drawSpark(svg, svg.dataset.spark, Number(svg.closest(".bar")?.dataset.lag || 0));
    }
  } catch {
    // the bars stand without their history; the next refresh tries again
  }
}
// the dead-letter table on a phone: each cell says which column it is (CSS shows it before the value), and a row
// opens its detail with Enter as it does with a click
function labelCells(table) {
  const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const tr of table.querySelectorAll("tbody tr")) {
    [...tr.children].forEach((td, i) => td.setAttribute("data-label", heads[i] || ""));
    if (tr.dataset.id && !tr.hasAttribute("tabindex")) tr.setAttribute("tabindex", "0");
  }
}
new MutationObserver(() => labelCells($("#entries"))).observe($("#entries tbody"), { childList: true });
$("#entries tbody").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && e.target instanceof HTMLTableRowElement) e.target.click();
});
`
