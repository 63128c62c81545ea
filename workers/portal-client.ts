// workers/portal-client.ts — what runs in the customer's browser: the page's style and its one script (tables,
// invoice paging, the map from portal-map.ts, the refresh loop), as text the page inlines and the CSP hashes.
import { MAP_CLIENT, MAP_CSS } from "./portal-map.ts"

export const CSS = `
:root{--ink:#1d2430;--mute:#5b6675;--line:#e3e7ee;--bg:#f6f8fb;--accent:#0b63ce;--warn:#b54708;--warnbg:#fff4e5}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
h1{font-size:18px;margin:0}h2{font-size:16px;margin:0 0 8px}main{max-width:1100px;margin:0 auto;padding:20px 24px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px;margin-bottom:20px;overflow-x:auto}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:7px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td{white-space:nowrap}th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--mute)}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--mute);font-size:13px}.empty{color:var(--mute);padding:12px 8px}
.badge{display:inline-block;font-size:11px;font-weight:600;padding:1px 7px;border-radius:10px;margin-left:6px;vertical-align:1px}
.stale{background:var(--warnbg);color:var(--warn);border:1px solid #f5c58a}.tracked{background:#e8f1fd;color:var(--accent)}.planned{background:#eef0f3;color:var(--mute)}
form{display:flex;gap:8px;align-items:center;margin-bottom:10px}input{font:inherit;padding:5px 8px;border:1px solid var(--line);border-radius:6px}
button{font:inherit;padding:5px 12px;border:1px solid var(--accent);background:var(--accent);color:#fff;border-radius:6px;cursor:pointer}
#status{margin-left:auto}#status.bad{color:var(--warn)}header a{color:var(--accent)}.problem{color:var(--warn);font-weight:600}
.more{margin-top:10px}button:focus-visible,a:focus-visible,input:focus-visible{outline:3px solid #111;outline-offset:2px}
@media (max-width:600px){header{padding:12px 14px}main{padding:14px 10px}section{padding:12px}}
${MAP_CSS}`

/**
 * Runs in the browser. It builds every cell with textContent, never innerHTML: data can carry markup (a customer id
 * like `<script>`), and textContent shows it as text. Without a #portal element only the functions are defined, so a
 * test can run them against a stand-in document.
 */
export const CLIENT = `
"use strict";
function money(cents, currency) {
  var whole = String(Math.floor(cents / 100)).replace(/\\B(?=(\\d{3})+(?!\\d))/g, ",");
  return currency + " " + whole + "." + String(cents % 100).padStart(2, "0");
}
function when(iso) {
  var d = iso ? new Date(iso) : null;
  // a time the browser cannot read (a leap second) is shown as sent
  return d === null ? "\\u2014" : isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").replace(/\\.\\d+Z$/, " UTC");
}
function cell(text, cls) {
  var td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text == null ? "\\u2014" : String(text);
  return td;
}
function badge(text, cls) {
  var b = document.createElement("span");
  b.className = "badge " + cls;
  b.textContent = text;
  return b;
}
function asOfCell(entry) {
  var td = cell(when(entry.updatedAt));
  if (entry.stale) td.appendChild(badge("stale", "stale"));
  return td;
}
function row(cells) {
  var tr = document.createElement("tr");
  cells.forEach(function (c) { tr.appendChild(c); });
  return tr;
}
function fill(id, rows, columns, emptyText) {
  var body = document.getElementById(id);
  if (rows.length === 0) {
    var td = cell(emptyText, "empty");
    td.colSpan = columns;
    rows = [row([td])];
  }
  body.replaceChildren.apply(body, rows);
}
function truckRow(t) {
  var eta = cell(when(t.eta));
  eta.appendChild(badge(t.etaSource, t.etaSource));
  return row([cell(t.truckId), cell(t.customerId), cell(t.routeId), cell(t.nextStopId),
    cell(t.remainingKm == null ? null : t.remainingKm.toFixed(1) + " km", "num"), eta, asOfCell(t)]);
}
function invoiceRow(i) {
  var tr = row([cell(i.invoiceId), cell(i.routeId), cell(i.truckId), cell(money(i.totalCents, i.currency), "num"), asOfCell(i)]);
  tr.setAttribute("data-invoice", i.invoiceId);
  return tr;
}
// inside a function: a global "var status" would be window.status, which turns whatever is assigned into a string
function main(page) {
  var statusLine = document.getElementById("status");
  var more = document.getElementById("more");
  var nextCursor = page.getAttribute("data-next") || null;
  var pagedFurther = false;
  var shown = {};
  Array.prototype.forEach.call(document.querySelectorAll("#invoices tr[data-invoice]"), function (tr) { shown[tr.getAttribute("data-invoice")] = true; });
  // the session cookie goes along: the API answers for the signed-in customer only
  function get(path) {
    return fetch(path, { headers: { accept: "application/json" } }).then(function (r) {
      // the sign-in expired: the page itself then shows how to sign in again
      if (r.status === 401) location.assign("/");
      // the portal is rebuilding its data from the streams: nothing partial is shown as the whole
      if (r.status === 503) return r.json().then(function (b) { throw new Error(b && b.rebuilding ? "rebuilding, " + Math.round(100 * b.progress) + "% done" : "HTTP 503"); });
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }
  function setMore(next) {
    nextCursor = next;
    more.hidden = !next;
  }
  function rowsOf(invoices) {
    return invoices.filter(function (i) { return !shown[i.invoiceId]; }).map(function (i) { shown[i.invoiceId] = true; return invoiceRow(i); });
  }
  function refresh() {
    var jobs = [get("/api/trucks").then(function (d) {
      fill("trucks", d.trucks.map(truckRow), 7, "No trucks on the road.");
      drawMap(d.trucks, Date.now());
      document.getElementById("trucks-asof").textContent = "as of " + when(d.asOf);
    }), get("/api/invoices").then(function (d) {
      var body = document.getElementById("invoices");
      if (!pagedFurther) {
        shown = {};
        fill("invoices", rowsOf(d.invoices), 5, "No invoices yet.");
        setMore(d.next);
      } else {
        // older pages are open: only what is new goes on top, nothing shown twice
        var fresh = rowsOf(d.invoices);
        if (fresh.length) body.prepend.apply(body, fresh);
      }
      document.getElementById("invoices-asof").textContent = "as of " + when(d.asOf);
    })];
    Promise.all(jobs).then(function () {
      statusLine.className = "muted";
      statusLine.textContent = "updated " + when(new Date().toISOString());
    }, function (err) {
      statusLine.className = "muted bad";
      statusLine.textContent = "could not refresh (" + err.message + "); showing the last data";
    });
  }
  more.addEventListener("click", function () {
    if (!nextCursor) return;
    more.disabled = true;
    get("/api/invoices?cursor=" + encodeURIComponent(nextCursor)).then(function (d) {
      pagedFurther = true;
      var rows = rowsOf(d.invoices);
      var body = document.getElementById("invoices");
      if (rows.length) body.append.apply(body, rows);
      setMore(d.next);
    }, function (err) {
      statusLine.className = "muted bad";
      statusLine.textContent = "could not load older invoices (" + err.message + ")";
    }).then(function () { more.disabled = false; });
  });
  refresh();
  setInterval(refresh, Number(page.getAttribute("data-refresh-ms")) || 5000);
}
`

// the map's functions come before main runs
const START = `
if (typeof document !== "undefined" && document.getElementById("portal")) main(document.getElementById("portal"));
`

/** The page's one script: the table functions, the map, then the start. Its hash is the only script the CSP allows. */
export const SCRIPT = CLIENT + MAP_CLIENT + START
