// workers/portal-map.ts — the portal's live map, drawn in the browser as inline SVG from /api/trucks: no tiles, no
// script or image from anywhere else, so it runs under the page's Content-Security-Policy. Each truck is a marker at
// its last position, coloured by how old that position is, with its planned stops and the route line through them;
// the marker is focusable, and its ETA shows on hover (an SVG <title>) and, for the keyboard, on focus.

/** The legend: a truck's colour says how old its last position is (`positionAge` in /api/trucks). */
export const AGES = [
  { age: "fresh", label: "position under a minute old", colour: "#1a7f37" },
  { age: "late", label: "position a few minutes old", colour: "#b54708" },
  { age: "stale", label: "position stale", colour: "#c62828" },
  { age: "none", label: "no position yet (shown at its next stop)", colour: "#6b7280" },
] as const

/** Route colours, one per truck in turn: told apart from the age colours by line, not by fill. */
const ROUTES = ["#0b63ce", "#7c3aed", "#0e7490", "#be185d", "#4d7c0f", "#a16207", "#1e3a8a", "#9f1239"]

export const MAP_CSS = `
.map-wrap{position:relative}#map{display:block;width:100%;height:auto;background:#eef3f8;border-radius:6px;border:1px solid var(--line)}
#map .grid{stroke:#d5dde8;stroke-width:1}#map .route{fill:none;stroke-width:3;stroke-linejoin:round;stroke-linecap:round;opacity:.75}
#map .togo{fill:none;stroke:#5b6675;stroke-width:1.5;stroke-dasharray:4 4}#map .stop{fill:#fff;stroke-width:2}
#map .stop.next{stroke-width:4}#map .truck{cursor:pointer;outline:none}#map .truck circle{stroke:#fff;stroke-width:2.5}
#map .truck.age-none circle{fill:#fff;stroke:#6b7280;stroke-width:3}#map .truck text{font:600 13px system-ui,sans-serif;fill:var(--ink);paint-order:stroke;stroke:#fff;stroke-width:3px}
#map .truck:focus circle,#map .truck:hover circle{stroke:#111;stroke-width:4}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:10px 0 0;padding:0;list-style:none;font-size:13px;color:var(--mute)}
.legend li{display:flex;align-items:center;gap:6px}.dot{display:inline-block;width:12px;height:12px;border-radius:50%}
${AGES.map((a) => `.dot.age-${a.age}{background:${a.age === "none" ? "#fff" : a.colour};border:2px solid ${a.colour}}`).join("")}
#map-detail{min-height:1.45em;margin:8px 0 0;font-size:14px}
`

/**
 * Runs in the browser, after the page's other functions (`when`). Every value is set with setAttribute or
 * textContent, never as markup.
 */
export const MAP_CLIENT = `
var SVG_NS = "http://www.w3.org/2000/svg";
var AGE_COLOURS = ${JSON.stringify(Object.fromEntries(AGES.map((a) => [a.age, a.colour])))};
var ROUTE_COLOURS = ${JSON.stringify(ROUTES)};
// the drawing is sized to the map's width in CSS pixels, so markers and labels keep their size on a phone
var MAP_W = 1000, MAP_H = 560, MAP_PAD = 40;
function fitTo(map) {
  MAP_W = Math.max(280, Math.round(map.clientWidth || 1000));
  MAP_H = MAP_W < 600 ? Math.round(MAP_W * 1.1) : Math.round(Math.min(560, MAP_W * 0.56));
  MAP_PAD = MAP_W < 600 ? 28 : 40;
  map.setAttribute("viewBox", "0 0 " + MAP_W + " " + MAP_H);
}
function svg(tag, attrs, parent) {
  var e = document.createElementNS(SVG_NS, tag);
  Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
  if (parent) parent.appendChild(e);
  return e;
}
function titled(e, text) {
  svg("title", {}, e).textContent = text;
  return e;
}
// where a truck is drawn: its last position, or (none yet) its next planned stop
function placeOf(t) {
  if (t.position) return { lat: t.position.lat, lon: t.position.lon };
  var next = t.stops.filter(function (s) { return s.id === t.nextStopId; })[0] || t.stops[0];
  return next ? { lat: next.lat, lon: next.lon } : null;
}
// an equirectangular view of everything shown, scaled by the cosine of its middle latitude: true enough at city scale
function projection(trucks) {
  var pts = [];
  trucks.forEach(function (t) {
    var p = placeOf(t);
    if (p) pts.push(p);
    t.stops.forEach(function (s) { pts.push(s); });
  });
  if (pts.length === 0) return null;
  var lat = pts.map(function (p) { return p.lat; }), lon = pts.map(function (p) { return p.lon; });
  var minLat = Math.min.apply(null, lat), maxLat = Math.max.apply(null, lat);
  var minLon = Math.min.apply(null, lon), maxLon = Math.max.apply(null, lon);
  var k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
  var spanX = Math.max((maxLon - minLon) * k, 0.005), spanY = Math.max(maxLat - minLat, 0.005);
  var scale = Math.min((MAP_W - 2 * MAP_PAD) / spanX, (MAP_H - 2 * MAP_PAD) / spanY);
  var offX = (MAP_W - ((maxLon - minLon) * k) * scale) / 2, offY = (MAP_H - (maxLat - minLat) * scale) / 2;
  return function (p) {
    return [Math.round((offX + (p.lon - minLon) * k * scale) * 10) / 10, Math.round((offY + (maxLat - p.lat) * scale) * 10) / 10];
  };
}
function ago(iso, now) {
  var s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  return s < 90 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}
function truckText(t, now) {
  var where = t.position ? "last position " + ago(t.position.at, now) + " (" + when(t.position.at) + ")" : "no position reported yet";
  return "Truck " + t.truckId + ": ETA " + when(t.eta) + " (" + t.etaSource + "), next stop " + (t.nextStopId || "\\u2014") + ", " + where;
}
function drawMap(trucks, now) {
  var map = document.getElementById("map");
  var detail = document.getElementById("map-detail");
  var focused = document.activeElement && document.activeElement.getAttribute && document.activeElement.getAttribute("data-truck");
  fitTo(map);
  var at = projection(trucks);
  map.replaceChildren();
  for (var g = 1; g < 5; g++) {
    svg("line", { class: "grid", x1: 0, x2: MAP_W, y1: (g * MAP_H) / 5, y2: (g * MAP_H) / 5 }, map);
    svg("line", { class: "grid", y1: 0, y2: MAP_H, x1: (g * MAP_W) / 5, x2: (g * MAP_W) / 5 }, map);
  }
  if (!at) {
    var none = svg("text", { x: MAP_W / 2, y: MAP_H / 2, "text-anchor": "middle", fill: "#5b6675", "font-size": 22 }, map);
    none.textContent = "No trucks on the road.";
    detail.textContent = "";
    return;
  }
  var routes = svg("g", { class: "routes" }, map), markers = svg("g", { class: "markers" }, map);
  trucks.forEach(function (t, i) {
    var colour = ROUTE_COLOURS[i % ROUTE_COLOURS.length];
    var line = t.stops.map(function (s) { return at(s).join(","); }).join(" ");
    titled(svg("polyline", { class: "route", points: line, stroke: colour, "data-route": t.routeId }, routes), "Route " + t.routeId + " of truck " + t.truckId);
    var place = placeOf(t), xy = at(place);
    var next = t.stops.filter(function (s) { return s.id === t.nextStopId; })[0];
    if (t.position && next) svg("line", { class: "togo", x1: xy[0], y1: xy[1], x2: at(next)[0], y2: at(next)[1] }, routes);
    t.stops.forEach(function (s, n) {
      var p = at(s);
      var stop = svg("circle", { class: "stop" + (s.id === t.nextStopId ? " next" : ""), cx: p[0], cy: p[1], r: 5, stroke: colour }, routes);
      titled(stop, "Stop " + s.id + " (" + (n + 1) + " of " + t.stops.length + ") for truck " + t.truckId);
    });
    var text = truckText(t, now);
    var m = svg("g", { class: "truck age-" + t.positionAge, "data-truck": t.truckId, transform: "translate(" + xy[0] + " " + xy[1] + ")", tabindex: 0, role: "img", "aria-label": text }, markers);
    titled(m, text);
    svg("circle", { r: 10, fill: AGE_COLOURS[t.positionAge] || AGE_COLOURS.none, stroke: t.positionAge === "none" ? AGE_COLOURS.none : "#fff" }, m);
    // a label near the right edge goes on the marker's left, so it is not cut off
    var left = xy[0] > MAP_W - 130;
    svg("text", { x: left ? -14 : 14, y: 5, "text-anchor": left ? "end" : "start" }, m).textContent = t.truckId;
    function show() { detail.textContent = text; }
    m.addEventListener("focus", show);
    m.addEventListener("mouseenter", show);
  });
  if (focused) {
    var again = Array.prototype.filter.call(markers.children, function (c) { return c.getAttribute("data-truck") === focused; })[0];
    if (again) again.focus();
  }
}
`
