// workers/ops-story.ts — the story page (/story/<id>): one route's or truck's events in time order, its dead letters
// with replays and who made them, the trace ids, and what is missing (mesh/admin/trace.ts). Like the dashboard it
// holds no data: its script reads /api/story/<id> with the operator's session, and every value goes in as text.

export function storyPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LogiFlow ops · story</title>
<style nonce="${nonce}">
  :root { font: 14px/1.45 system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
  body { margin: 0; }
  header { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: baseline; padding: .7rem 1.2rem; background: #1d2330; color: #fff; }
  header h1 { font-size: 1.1rem; margin: 0; overflow-wrap: anywhere; }
  header a { color: #cfd8ea; }
  main { padding: 1rem 1.2rem; display: grid; gap: 1rem; max-width: 80rem; }
  section { background: #fff; border-radius: 6px; padding: .8rem 1rem; box-shadow: 0 1px 2px #0001; min-width: 0; }
  h2 { font-size: 1rem; margin: 0 0 .6rem; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem .8rem; margin: 0; }
  dt { color: #5a6275; } dd { margin: 0; overflow-wrap: anywhere; }
  ol#lines { list-style: none; margin: 0; padding: 0; }
  ol#lines li { display: grid; grid-template-columns: 15rem 9rem minmax(0, 1fr); gap: .2rem .8rem; padding: .35rem 0; border-bottom: 1px solid #e7e9ee; }
  ol#lines time, .where { color: #5a6275; font-variant-numeric: tabular-nums; }
  .event { font-weight: 600; }
  .event.dead-lettered { color: #c0392b; } .event.replayed { color: #2e7d32; } .event.discarded { color: #7a7f8c; }
  .text, .where { overflow-wrap: anywhere; }
  .where { grid-column: 3; font-size: .9em; }
  ul#missing li { color: #a14a00; font-weight: 600; }
  ul#missing li.none { color: #2e7d32; }
  code { overflow-wrap: anywhere; }
  #message { min-height: 1.2rem; margin: 0; }
  #message.bad { color: #c0392b; }
  a:focus-visible, button:focus-visible { outline: 3px solid #3b7ddd; outline-offset: 2px; }
  @media (max-width: 700px) {
    header, main { padding-left: .7rem; padding-right: .7rem; }
    ol#lines li { grid-template-columns: minmax(0, 1fr); }
    .where { grid-column: 1; }
  }
</style>
</head>
<body>
<header>
  <a href="/">ops dashboard</a>
  <h1>Story of <code id="sid"></code></h1>
</header>
<main>
  <p id="message" role="status"></p>
  <section id="facts-box" hidden><h2>About</h2><dl id="facts"></dl></section>
  <section id="missing-box" hidden><h2>Missing</h2><ul id="missing"></ul></section>
  <section id="lines-box" hidden><h2>In time order</h2><ol id="lines"></ol></section>
  <section id="traces-box" hidden><h2>Trace ids</h2><ul id="traces"></ul></section>
  <p><button id="refresh" type="button">refresh</button> <a id="json" href="#">as JSON</a></p>
</main>
<script nonce="${nonce}">
"use strict";
const $ = (s) => document.querySelector(s);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) k === "class" ? (e.className = v) : e.setAttribute(k, v);
  for (const c of children) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
}
const id = decodeURIComponent(location.pathname.replace(/^\\/story\\//, ""));
const api = "/api/story/" + encodeURIComponent(id);
$("#sid").textContent = id;
$("#json").href = api;
function say(text, bad) { $("#message").textContent = text; $("#message").className = bad ? "bad" : ""; }
function render(s) {
  const facts = [["kind", s.kind], ["truck", s.truckId]];
  if (s.routeId) facts.push(["route", s.routeId], ["customer", s.customerId]);
  facts.push(["events", s.lines.length]);
  $("#facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
  $("#missing").replaceChildren(...(s.missing.length ? s.missing.map((m) => el("li", {}, m)) : [el("li", { class: "none" }, "nothing")]));
  $("#lines").replaceChildren(...s.lines.map((l) => el("li", { "data-event": l.event },
    el("time", { datetime: l.at }, l.at),
    el("span", { class: "event " + l.event }, l.event),
    el("span", { class: "text" }, l.text),
    l.stream || l.traceId ? el("span", { class: "where" }, [l.stream ? l.stream + " #" + l.seq : "", l.traceId ? "trace " + l.traceId : ""].filter(Boolean).join(" · ")) : null)));
  $("#traces").replaceChildren(...(s.traceIds.length ? s.traceIds.map((t) => el("li", {}, el("code", {}, t))) : [el("li", {}, "none")]));
  for (const b of ["#facts-box", "#missing-box", "#lines-box", "#traces-box"]) $(b).hidden = false;
}
async function load() {
  say("loading…");
  try {
    const r = await fetch(api, { headers: { accept: "application/json" } });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) {
      say("");
      return void $("#message").replaceChildren("Sign in first: ", el("a", { href: "/" }, "open the ops dashboard"), " and use your sign-in link, then come back.");
    }
    if (!r.ok) return say(body.error || r.status + " " + r.statusText, true);
    render(body);
    say("as of " + new Date().toLocaleTimeString());
  } catch (err) {
    say("could not load the story: " + err.message, true);
  }
}
$("#refresh").addEventListener("click", load);
load();
</script>
</body>
</html>
`
}
