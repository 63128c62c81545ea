// workers/ops-dashboard.ts — the ops page: plain HTML and a little JS over /api, no build step. It holds no data
// itself: without an operator session it shows a sign-in form (GET /login?token=), and its requests carry the session
// cookie, which scripts cannot read.
// Every value from the API goes into the page as text (textContent / Text nodes), never as markup:
// payloads and error messages are whatever a producer sent.

import { dlqEditorCss } from "./ops-dlq-page.ts"
import { dashboardCss, dashboardScript } from "./ops-layout.ts"

export function dashboardPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LogiFlow ops</title>
<style nonce="${nonce}">
  :root { font: 14px/1.4 system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
  body { margin: 0; }
  header { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: baseline; padding: .7rem 1.2rem; background: #1d2330; color: #fff; }
  header h1 { font-size: 1.1rem; margin: 0; }
  header .grow { flex: 1; }
  header a { color: #cfd8ea; }
  main { padding: 1rem 1.2rem; display: grid; gap: 1rem; }
  section { background: #fff; border-radius: 6px; padding: .8rem 1rem; box-shadow: 0 1px 2px #0001; min-width: 0; }
  h2 { font-size: 1rem; margin: 0 0 .6rem; }
  .bar { display: grid; grid-template-columns: minmax(8rem, 13rem) minmax(4rem, 1fr) 8rem minmax(0, 22rem) 5.5rem; gap: .6rem; align-items: center; margin: .2rem 0; }
  .bar > * { min-width: 0; overflow-wrap: anywhere; }
  .bar.paused .fill { background: #e0a526; }
  .bar .paused-until { display: block; color: #a66a00; }
  .bar .track { background: #e7e9ee; border-radius: 3px; height: .8rem; overflow: hidden; }
  .bar .fill { background: #3b7ddd; height: 100%; min-width: 1px; }
  .bar .fill.hot { background: #d9534f; }
  .bar .nums { color: #5a6275; font-variant-numeric: tabular-nums; }
  form { display: flex; gap: .8rem; margin-bottom: .6rem; flex-wrap: wrap; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e7e9ee; vertical-align: top; }
  tbody tr { cursor: pointer; }
  tbody tr:hover { background: #f0f4fb; }
  td { overflow-wrap: break-word; }
  td.error { max-width: 32rem; overflow-wrap: anywhere; }
  .scroll { overflow-x: auto; }
${dashboardCss}
${dlqEditorCss}
  .state { font-weight: 600; }
  .state-open { color: #c0392b; } .state-replayed { color: #2e7d32; } .state-discarded, .state-resolved { color: #7a7f8c; }
  button.act { margin-right: .3rem; }
  pre { background: #f5f6f8; padding: .6rem; overflow: auto; max-height: 24rem; }
  dl { display: grid; grid-template-columns: 9rem 1fr; gap: .2rem .8rem; }
  dt { color: #5a6275; } dd { margin: 0; overflow-wrap: anywhere; }
  #message { min-height: 1.2rem; margin: 0; }
  #message.bad { color: #c0392b; }
  .muted { color: #7a7f8c; }
  .worker { margin-right: 1.4rem; white-space: nowrap; }
  .worker::before { content: "● "; }
  .worker.up::before { color: #2e7d32; } .worker.down::before { color: #c0392b; }
</style>
</head>
<body>
<header>
  <h1>LogiFlow ops</h1>
  <form class="find" method="get" action="/story" role="search">
    <label>story of <input name="id" placeholder="route or truck id" required size="24"></label>
    <button type="submit">show</button>
  </form>
  <span class="grow"></span>
  <label><input type="checkbox" id="auto" checked> auto-refresh</label>
  <span id="updated" class="muted"></span>
  <span id="who"></span>
  <a id="signout" href="/logout" hidden>sign out</a>
</header>
<main>
  <p id="message" role="status"></p>
  <section id="signin" hidden>
    <h2>Sign in</h2>
    <p>Open the sign-in link you were given (<code>npm start</code> prints one), or paste your operator token: one of
    <code>LOGIFLOW_OPERATORS</code>.</p>
    <form method="get" action="/login">
      <label>operator token <input type="password" name="token" autocomplete="off" required></label>
      <button type="submit">sign in</button>
    </form>
  </section>
  <section class="desk">
    <h2>Workers</h2>
    <p id="workers"></p>
  </section>
  <section class="desk">
    <h2>Consumer lag</h2>
    <p class="muted">Pause a consumer while what it calls is down: its events wait in the stream instead of using up
    their deliveries into the dead letters. <label>pause for <select id="pause-for"><option>15m</option>
    <option selected>30m</option><option>1h</option><option>4h</option><option>1d</option></select></label></p>
    <div id="bars"></div>
  </section>
  <section class="desk">
    <h2>Dead letters <span id="open-count" class="muted"></span></h2>
    <form id="filter">
      <label>event or route id <input name="eventId" size="18" autocomplete="off"></label>
      <label>key (truck) <input name="key" size="12" autocomplete="off"></label>
      <label>consumer <select name="consumer"><option value="">all</option></select></label>
      <label>reason <input name="reason" list="reasons" size="16"><datalist id="reasons"></datalist></label>
      <label>state <select name="state"><option value="">all</option><option>open</option><option>replayed</option><option>discarded</option><option>resolved</option></select></label>
      <label>since <input name="since" size="10" placeholder="1h or ISO time" autocomplete="off"></label>
      <label>until <input name="until" size="10" placeholder="ISO time" autocomplete="off"></label>
    </form>
    <div class="scroll">
    <table id="entries">
      <thead><tr><th>failed at</th><th>id</th><th>event</th><th>key</th><th>consumer</th><th>reason</th><th>error</th><th>deliveries</th><th>state</th><th></th></tr></thead>
      <tbody></tbody>
    </table>
    </div>
    <p><span id="more" class="muted"></span> <button id="newest" type="button" hidden>newest</button> <button id="older" type="button" hidden>older</button></p>
  </section>
  <section id="detail" hidden>
    <h2>Entry <code id="d-id"></code> <button id="d-close" type="button">close</button></h2>
    <dl id="d-fields"></dl>
    <div id="d-actions"></div>
    <h3>Payload</h3>
    <pre id="d-payload"></pre>
    <h3>Headers</h3>
    <table id="d-headers"><tbody></tbody></table>
    <h3>Timeline</h3>
    <ol id="d-timeline"></ol>
  </section>
</main>
<script nonce="${nonce}">
"use strict";
const $ = (s) => document.querySelector(s);
// thrown by a request answered 401: the page switches to the sign-in form instead of reporting an error
class SignedOut extends Error {}
// builds elements from text only: strings become Text nodes, so no value is ever parsed as HTML
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
}
const ago = (iso) => {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? s + "s ago" : s < 3600 ? Math.round(s / 60) + "m ago" : Math.round(s / 3600) + "h ago";
};
function say(text, bad) {
  const m = $("#message");
  m.textContent = text;
  m.className = bad ? "bad" : "";
}
function signedOut(why) {
  $("#signin").hidden = false;
  document.querySelectorAll("section.desk, #detail").forEach((s) => (s.hidden = true));
  $("#who").textContent = "";
  $("#signout").hidden = true;
  say(why || "", !!why);
}
function signedIn(name) {
  if (!$("#signin").hidden) {
    $("#signin").hidden = true;
    document.querySelectorAll("section.desk").forEach((s) => (s.hidden = false));
  }
  $("#who").textContent = "signed in as " + name;
  $("#signout").hidden = false;
}
async function getJson(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) throw new SignedOut(body.error);
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}
// the session cookie goes along, and the browser adds Origin and Sec-Fetch-Site, which the server checks
async function mutate(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}) });
  const out = await r.json().catch(() => ({}));
  if (r.status === 401) return signedOut("your session has ended: sign in again");
  if (!r.ok) return say(out.error || r.status + " " + r.statusText, true);
  say(out.replayed !== undefined ? "replayed " + out.replayed + " entries"
    : out.paused !== undefined ? out.stream + "/" + out.consumer + (out.paused ? " paused until " + out.pauseUntil : " resumed") + " by " + out.by
    : out.id + " is now " + out.state);
  await refresh();
}

let openId = null;
function renderWorkers(st) {
  const p = $("#workers");
  if (!st.workers.length) return void (p.textContent = "no heartbeats: no worker running, or the heartbeats bucket is missing");
  p.replaceChildren(...st.workers.map((w) =>
    el("span", { class: "worker " + (w.ready ? "up" : "down"), "data-worker": w.worker + "/" + w.instance, title: "version " + w.version + ", started " + w.startedAt },
      w.worker + " " + w.instance + " · " + w.inflight + " in flight · " + ago(w.at))));
}
function renderBars(st) {
  const rows = st.consumers.filter((c) => !c.stream.startsWith("KV_"));
  const max = Math.max(1, ...rows.map((c) => c.pending + c.ackPending));
  $("#bars").replaceChildren(
    ...rows.map((c) => {
      const lag = c.pending + c.ackPending;
      const fill = el("div", { class: lag > 0 && c.redelivered > 0 ? "fill hot" : "fill" });
      fill.style.width = (100 * lag) / max + "%";
      const path = "/api/consumers/" + encodeURIComponent(c.stream) + "/" + encodeURIComponent(c.name);
      const breaker = c.paused
        ? el("button", { class: "act resume", type: "button", onclick: () => mutate(path + "/resume") }, "resume")
        : el("button", { class: "act pause", type: "button", onclick: () => mutate(path + "/pause", { for: $("#pause-for").value }) }, "pause");
      return el("div", { class: c.paused ? "bar paused" : "bar", "data-consumer": c.stream + "/" + c.name, "data-lag": lag },
        el("span", {}, c.stream + "/" + c.name),
        el("div", { class: "track" }, fill),
        spark(c.stream + "/" + c.name, lag),
        el("span", { class: "nums" }, c.pending + " pending · " + c.ackPending + " in flight · " + c.redelivered + " redelivered · " + ago(c.lastActive),
          c.paused ? el("span", { class: "paused-until" }, "paused until " + (c.pauseUntil || "resumed")) : null),
        breaker);
    }),
  );
  const select = document.querySelector("#filter [name=consumer]");
  const chosen = select.value;
  const names = [...new Set(rows.filter((c) => c.stream !== "ADVISORIES" && c.stream !== "DLQ").map((c) => c.name))].sort();
  select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
  select.value = chosen;
  $("#reasons").replaceChildren(...Object.keys(st.dlq.byReason).map((r) => el("option", { value: r })));
  $("#open-count").textContent = st.dlq.open + " open";
}
function actions(e) {
  const replay = el("button", { class: "act replay", type: "button", onclick: (ev) => (ev.stopPropagation(), mutate("/api/dlq/" + encodeURIComponent(e.id) + "/replay")) }, "replay");
  const discard = el("button", { class: "act discard", type: "button", onclick: (ev) => (ev.stopPropagation(), mutate("/api/dlq/" + encodeURIComponent(e.id) + "/discard")) }, "discard");
  // the editor (GET /ops-dlq.js) opens on any button with data-edit
  const edit = el("button", { class: "act edit", type: "button", "data-edit": e.id }, "edit");
  replay.disabled = discard.disabled = e.state === "discarded" || e.state === "resolved";
  edit.disabled = e.state !== "open";
  return [edit, replay, discard];
}
function renderEntries(page) {
  $("#entries tbody").replaceChildren(
    ...page.entries.map((e) =>
      el("tr", { "data-id": e.id, onclick: () => showDetail(e.id).catch((err) => (err instanceof SignedOut ? signedOut("your session has ended: sign in again") : say(err.message, true))) },
        el("td", {}, e.failedAt),
        el("td", {}, e.id),
        el("td", { class: "event" }, e.routeId || e.eventId || "",
          e.routeId || e.key ? el("a", { class: "story", href: "/story/" + encodeURIComponent(e.routeId || e.eventId || e.key), onclick: (ev) => ev.stopPropagation() }, " story") : null),
        el("td", { class: "key" }, e.key || ""),
        el("td", {}, e.consumer),
        el("td", {}, e.reason),
        el("td", { class: "error" }, e.error),
        el("td", {}, e.deliveries),
        el("td", { class: "state state-" + e.state }, e.state),
        el("td", {}, ...actions(e))),
    ),
  );
  $("#more").textContent = page.entries.length < page.total ? "showing " + page.entries.length + " of " + page.total : page.total ? "" : "no entries";
  nextCursor = page.nextCursor || "";
  $("#older").hidden = !nextCursor;
  $("#newest").hidden = !cursor;
}
async function showDetail(id) {
  openId = id;
  const d = await getJson("/api/dlq/" + encodeURIComponent(id));
  const e = d.entry;
  $("#detail").hidden = false;
  $("#d-id").textContent = e.id;
  const fields = [["state", e.state], ["consumer", e.consumer], ["stream / seq", e.stream + " / " + e.seq], ["subject", e.subject],
    ["reason", e.reason], ["error", e.error], ["deliveries", e.deliveries], ["failed at", e.failedAt], ["replays", e.replays], ["DLQ seq", e.dlqSeq]];
  if (e.replayOf) fields.push(["replay of", e.replayOf]);
  $("#d-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
  $("#d-actions").replaceChildren(...actions(e));
  $("#d-payload").textContent = d.payload;
  $("#d-headers tbody").replaceChildren(...Object.entries(d.headers).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
  $("#d-timeline").replaceChildren(...e.history.map((h) => el("li", {}, h.at + " " + h.action + " by " + h.by)));
}
${dashboardScript}
// a refresh that answers after a newer one started (the filter changed meanwhile) is dropped, not drawn over it
let generation = 0;
async function refresh() {
  const mine = ++generation;
  try {
    const f = new FormData($("#filter"));
    const q = new URLSearchParams([...f].filter(([, v]) => v !== ""));
    q.set("limit", "100");
    if (cursor) q.set("cursor", cursor);
    const [me, st, page] = await Promise.all([getJson("/api/session"), getJson("/api/status"), getJson("/api/dlq?" + q)]);
    if (mine !== generation) return;
    signedIn(me.operator);
    renderWorkers(st);
    renderBars(st);
    refreshLag();
    renderEntries(page);
    if (openId) await showDetail(openId);
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    if (err instanceof SignedOut) signedOut();
    else say("refresh failed: " + err.message, true);
  }
}
// paging: a cursor is the DLQ sequence the page before ended at (stable while new entries arrive)
let cursor = "";
let nextCursor = "";
$("#filter").addEventListener("input", () => ((cursor = ""), refresh()));
$("#older").addEventListener("click", () => ((cursor = nextCursor), refresh()));
$("#newest").addEventListener("click", () => ((cursor = ""), refresh()));
document.addEventListener("dlq:changed", () => refresh());
$("#filter").addEventListener("submit", (e) => e.preventDefault());
$("#d-close").addEventListener("click", () => { openId = null; $("#detail").hidden = true; });
(function loop() {
  const next = () => setTimeout(loop, 3000);
  // signed out, it waits for the sign-in form (a page load) instead of asking again every few seconds
  if (!$("#signin").hidden) return;
  if ($("#auto").checked && !document.hidden) refresh().finally(next); else next();
})();
</script>
<script nonce="${nonce}" src="/ops-dlq.js"></script>
</body>
</html>
`
}
