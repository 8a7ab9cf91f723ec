// The Quartzite dashboard: reads the admin API of the server that served it
// and acts through it. No framework and no request to any other origin; the
// charts are SVG drawn here.
"use strict";

const REFRESH_MS = 3000;
const TOKEN_KEY = "quartzite.token";
const SVG_NS = "http://www.w3.org/2000/svg";

const hist = { cursors: [null], page: 0, next: null, expanded: new Set(), filter: { job: "", status: "" } };

// ---- small helpers ---------------------------------------------------------

function $(selector) {
  return document.querySelector(selector);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function when(ms) {
  if (ms === null || ms === undefined) return el("span", { class: "muted" }, "—");
  const d = new Date(ms);
  const secs = Math.round((ms - Date.now()) / 1000);
  const rel = Math.abs(secs) < 1 ? "now" : secs > 0 ? `in ${span(secs)}` : `${span(-secs)} ago`;
  return el("time", { datetime: d.toISOString(), title: d.toISOString(), "data-ms": ms }, `${d.toLocaleString()} (${rel})`);
}

function span(secs) {
  if (secs < 60) return `${secs}s`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ${secs % 60}s`;
  if (secs < 86400) return `${Math.floor(secs / 3600)}h ${Math.floor((secs % 3600) / 60)}m`;
  return `${Math.floor(secs / 86400)}d ${Math.floor((secs % 86400) / 3600)}h`;
}

function millis(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, empty))]));
}

function jobPath(key) {
  const [group, name] = key.split("/");
  return `${encodeURIComponent(group)}/${encodeURIComponent(name)}`;
}

// ---- the API -----------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `HTTP ${this.status} ${this.code}: ${this.message}`;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  // The server takes changes only with a JSON content type (no cross-site form can send one).
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let response;
  try {
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) init.body = JSON.stringify(body);
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiFailure(0, "unreachable", `the server did not answer (${e.message})`);
  }
  const text = await response.text();
  let answer = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch (_) {
    answer = null;
  }
  if (!response.ok) {
    const err = answer && answer.error;
    if (err && err.code) throw new ApiFailure(response.status, err.code, err.message || "");
    throw new ApiFailure(response.status, "http_error", text.slice(0, 200) || response.statusText);
  }
  return answer;
}

function say(text, kind) {
  const box = $("#message");
  box.hidden = false;
  box.className = kind;
  box.replaceChildren(el("span", { id: "message-text" }, text), el("button", { type: "button", class: "close", onclick: () => (box.hidden = true) }, "×"));
}

// ---- views -------------------------------------------------------------------

async function act(key, action) {
  try {
    const answer = await api("POST", `/api/v1/jobs/${jobPath(key)}/${action}`);
    const done = action === "run-now" ? `fired ${key} (fire ${answer.fire_id})` : `${key} is now ${answer.state}`;
    say(done, "ok");
  } catch (e) {
    say(`${action} ${key} refused: ${e}`, "error");
  }
  refresh();
}

// Replays the failed fires of the last day, of the job filtered on (or of
// all): each fire runs again once, however often this is clicked.
async function replayFailed() {
  const job = $("#history-job").value.trim() || "*";
  try {
    const answer = await api("POST", "/api/v1/history/replay", { job, status: "failed", since: "24h" });
    say(`replayed ${answer.started} failed fire(s) of ${job}; ${answer.already_replayed} replayed before`, "ok");
  } catch (e) {
    say(`replay of ${job} refused: ${e}`, "error");
  }
  refresh();
}

// What a job may reach, a line per grant: patterns, config keys and secret
// names (the API never holds a secret's value).
function grantLines(g) {
  if (g && g.error) return [el("span", { class: "error" }, g.error)];
  const lines = [];
  for (const p of (g && g.http) || []) lines.push(`http ${p}`);
  for (const p of (g && g.emit) || []) lines.push(`emit ${p}`);
  for (const s of (g && g.secret) || []) lines.push(`secret ${s.name} to ${s.url}`);
  for (const k of Object.keys((g && g.config) || {})) lines.push(`config ${k}`);
  for (const c of (g && g.ca) || []) lines.push(`trust a CA for ${c.url}`);
  for (const n of (g && g.private_networks) || []) lines.push(`network ${n}`);
  if (g && g.allow_private) lines.push("private addresses");
  if (lines.length === 0) return [el("span", { class: "muted" }, "none")];
  return lines.map((l) => el("div", {}, l));
}

function renderJobs(body) {
  const rows = body.items.map((j) => {
    const schedules = (j.triggers || []).map((t) => el("div", { title: t.trigger_key }, t.schedule, t.state !== "WAITING" ? el("span", { class: "muted" }, ` (${t.state.toLowerCase()})`) : null));
    return el("tr", { "data-job": j.job_key, class: j.paused ? "paused" : "" },
      el("td", { class: "key" }, j.job_key),
      el("td", {}, j.module),
      el("td", { class: "grants" }, ...grantLines(j.grants)),
      el("td", {}, ...schedules),
      el("td", { class: `state ${j.state}`, title: j.pause_note || "" }, j.state,
        j.pause_note ? el("div", { class: "muted pause-note" }, j.pause_note) : null,
        j.paused_until_ms ? el("div", { class: "muted" }, "until ", when(j.paused_until_ms)) : null),
      el("td", { class: "next-fire" }, when(j.next_fire_ms)),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "pause", disabled: j.paused, onclick: () => act(j.job_key, "pause") }, "Pause"),
        el("button", { type: "button", class: "resume", disabled: !j.paused, onclick: () => act(j.job_key, "resume") }, "Resume"),
        el("button", { type: "button", class: "run-now", onclick: () => act(j.job_key, "run-now") }, "Run now")));
  });
  fill($("#jobs-table tbody"), rows, 7, "No jobs.");
}

function renderExecutions(body) {
  const rows = body.items.map((f) => el("tr", { "data-fire": f.fire_id },
    el("td", {}, f.job_key),
    el("td", { class: "mono" }, f.fire_id),
    el("td", {}, when(f.scheduled_ms)),
    el("td", { class: f.waiting_for ? "waiting-for" : "" },
      f.state + (f.recovering ? " (recovering)" : "") + (f.waiting_for ? " — waiting for " + f.waiting_for : "")),
    el("td", { class: "mono" }, f.node_id || "—"),
    el("td", {}, f.attempt),
    el("td", {}, when(f.lease_until_ms))));
  fill($("#executions-table tbody"), rows, 7, "Nothing in flight.");
}

function historyQuery() {
  const q = new URLSearchParams({ limit: "25" });
  if (hist.filter.job) q.set("job", hist.filter.job);
  if (hist.filter.status) q.set("status", hist.filter.status);
  const cursor = hist.cursors[hist.page];
  if (cursor) q.set("cursor", cursor);
  return `/api/v1/history?${q}`;
}

function renderHistory(body) {
  const rows = [];
  for (const h of body.items) {
    const lag = h.scheduled_ms === null ? null : h.started_ms - h.scheduled_ms;
    const row = el("tr", { class: `run ${h.status}`, "data-id": h.id, tabindex: 0, title: "Show details" },
      el("td", {}, when(h.started_ms)),
      el("td", {}, h.job_key),
      el("td", { class: `status ${h.status}` }, h.status),
      el("td", {}, h.attempt),
      el("td", {}, millis(h.duration_ms)),
      el("td", {}, millis(lag)),
      el("td", { class: "mono" }, h.node_id || "—"));
    const details = el("tr", { class: "details", "data-for": h.id, hidden: !hist.expanded.has(h.id) },
      el("td", { colspan: 7 }, detailsOf(h)));
    const toggle = () => {
      details.hidden = !details.hidden;
      if (details.hidden) hist.expanded.delete(h.id);
      else hist.expanded.add(h.id);
    };
    row.addEventListener("click", toggle);
    row.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        toggle();
      }
    });
    rows.push(row, details);
  }
  fill($("#history-table tbody"), rows, 7, "No history matches.");
  // Forget rows opened on other pages or since deleted by retention.
  const shown = new Set(body.items.map((h) => h.id));
  for (const id of hist.expanded) if (!shown.has(id)) hist.expanded.delete(id);
  hist.next = body.next_cursor;
  $("#history-prev").disabled = hist.page === 0;
  $("#history-next").disabled = !hist.next;
  const first = hist.page * 25;
  $("#history-info").textContent = body.items.length ? `${first + 1}–${first + body.items.length} of ${body.total}` : `0 of ${body.total}`;
}

// The line a reader wants first: the error of a failed run, why a fire was
// skipped, or why a run was not a normal completion.
function reasonOf(d) {
  if (!d || typeof d !== "object") return null;
  const o = d.outcome;
  if (o && typeof o === "object") {
    if (o.status === "completed") return null;
    if (o.status === "timed-out") return `timed out after ${millis(o.timeout_ms)}`;
    if (o.status === "skipped") return `skipped (${o.reason}): ${o.detail}`;
    if (o.message) return `${o.status}${o.limit ? ` (${o.limit})` : ""}: ${o.message}`;
    return o.status;
  }
  const why = [d.reason, d.detail || d.error].filter(Boolean).join(": ");
  return why || null;
}

function detailsOf(h) {
  const reason = reasonOf(h.details);
  const parts = [];
  if (reason) parts.push(el("p", { class: `reason ${h.status}` }, reason));
  parts.push(el("dl", {},
    el("dt", {}, "Fire"), el("dd", { class: "mono" }, h.fire_id || "—"),
    el("dt", {}, "Trigger"), el("dd", {}, h.trigger_key || "—"),
    el("dt", {}, "Scheduled"), el("dd", {}, when(h.scheduled_ms)),
    el("dt", {}, "Ended"), el("dd", {}, when(h.ended_ms))));
  parts.push(el("pre", { class: "json" }, JSON.stringify(h.details, null, 2)));
  return el("div", {}, ...parts);
}

function renderEvents(body) {
  const rows = body.items.map((e) => el("tr", { "data-event": e.event_id },
    el("td", {}, when(e.created_ms)),
    el("td", { class: "name" }, e.name),
    el("td", { class: "mono" }, e.key || "—"),
    el("td", { class: "fires" }, e.fires),
    el("td", {}, e.depth),
    el("td", {}, e.source_job || "operator"),
    el("td", { class: "mono payload" }, JSON.stringify(e.payload))));
  fill($("#events-table tbody"), rows, 7, "No events accepted.");
}

function renderAlertRules(body) {
  const rows = body.items.map((r) => el("tr", { "data-rule": r.name },
    el("td", {}, r.name),
    el("td", {}, r.condition),
    el("td", {}, r.job_pattern || "every job"),
    el("td", {}, r.condition === "consecutive-failures" ? r.threshold : "—"),
    el("td", { class: "mono" }, r.webhook),
    el("td", {}, r.source)));
  fill($("#alert-rules-table tbody"), rows, 6, "No alert rules.");
}

function renderDeliveries(body) {
  const rows = body.items.map((d) => el("tr", { "data-delivery": d.delivery_id, class: d.state },
    el("td", {}, when(d.created_ms)),
    el("td", {}, d.rule),
    el("td", {}, d.job_key || "—"),
    el("td", { class: "state" }, d.state),
    el("td", {}, d.attempts),
    el("td", {}, d.last_status || "—"),
    el("td", {}, d.state === "pending" ? when(d.next_at_ms) : "—"),
    el("td", { class: "error" }, d.last_error || "")));
  fill($("#deliveries-table tbody"), rows, 8, "No alerts delivered.");
}

function renderModules(body) {
  const rows = body.items.map((m) => el("tr", { "data-module": `${m.name}@${m.version}` },
    el("td", {}, m.name),
    el("td", {}, m.version),
    el("td", { class: "mono", title: m.digest }, m.digest.slice(0, 19) + "…"),
    el("td", {}, m.wit_version),
    el("td", {}, `${(m.size / 1024).toFixed(1)} KiB`),
    el("td", {}, when(Date.parse(m.created_at)))));
  fill($("#modules-table tbody"), rows, 6, "No modules stored.");
}

function renderNodes(body) {
  const rows = body.items.map((n) => el("tr", { "data-node": n.node_id, class: n.alive ? "" : "dead" },
    el("td", { class: "mono" }, n.node_id),
    el("td", {}, n.alive ? "alive" : "dead"),
    el("td", {}, when(n.heartbeat_ms)),
    el("td", {}, when(n.started_ms)),
    el("td", {}, n.version),
    el("td", {}, n.wit_versions),
    el("td", {}, n.running)));
  fill($("#nodes-table tbody"), rows, 7, "No nodes have checked in.");
}

function renderLocks(body) {
  const rows = body.items.map((l) => el("tr", {},
    el("td", {}, l.name),
    el("td", { class: "mono" }, l.holder || "—"),
    el("td", {}, l.token),
    el("td", {}, when(l.acquired_ms)),
    el("td", {}, when(l.lease_until_ms))));
  fill($("#locks-table tbody"), rows, 5, "No locks held.");
}

// ---- charts --------------------------------------------------------------------

const W = 640;
const H = 200;
const PAD = { left: 48, right: 8, top: 10, bottom: 24 };

function frame(id, label, max, body) {
  const plotH = H - PAD.top - PAD.bottom;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart-svg" });
  for (const frac of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - frac);
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: PAD.left - 4, y: y + 4, class: "axis", "text-anchor": "end" }, formatTick(max * frac)));
  }
  root.append(...body);
  $(id).replaceChildren(root);
}

function formatTick(v) {
  return v >= 1000 ? `${(v / 1000).toFixed(1)}k` : String(Math.round(v * 10) / 10);
}

function timeLabels(stats, x) {
  const fmt = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return [
    svg("text", { x: x(0), y: H - 6, class: "axis", "text-anchor": "start" }, fmt(stats.from_ms)),
    svg("text", { x: x(stats.buckets.length), y: H - 6, class: "axis", "text-anchor": "end" }, fmt(stats.to_ms)),
  ];
}

function renderCharts(stats) {
  const b = stats.buckets;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (plotW * i) / Math.max(b.length, 1);
  const bw = Math.max(plotW / Math.max(b.length, 1) - 1, 1);

  const maxCount = Math.max(1, ...b.map((k) => k.total));
  const y = (v, max) => PAD.top + plotH * (1 - v / max);
  const bars = [];
  b.forEach((k, i) => {
    if (!k.total) return;
    const label = `${new Date(k.start_ms).toLocaleTimeString()}: ${k.total} rows, ${k.failures} failures (${Object.entries(k.counts).map(([s, n]) => `${s} ${n}`).join(", ")})`;
    const ok = k.total - k.failures;
    if (ok > 0) bars.push(svg("rect", { x: x(i), y: y(ok, maxCount), width: bw, height: plotH * (ok / maxCount), class: "bar ok", "data-start": k.start_ms, "data-count": ok }, svg("title", {}, label)));
    if (k.failures > 0) bars.push(svg("rect", { x: x(i), y: y(k.total, maxCount), width: bw, height: plotH * (k.failures / maxCount), class: "bar fail", "data-start": k.start_ms, "data-count": k.failures }, svg("title", {}, label)));
  });
  frame("#chart-executions", "Runs and failures per bucket", maxCount, [...bars, ...timeLabels(stats, x)]);

  const maxLag = Math.max(1, ...b.map((k) => k.lag_max_ms || 0));
  const series = [];
  for (const [field, cls] of [["lag_max_ms", "max"], ["lag_p99_ms", "p99"], ["lag_p50_ms", "p50"]]) {
    const pts = b.map((k, i) => (k[field] === null ? null : [x(i) + bw / 2, y(k[field], maxLag), k])).filter(Boolean);
    if (pts.length > 1) series.push(svg("polyline", { points: pts.map(([px, py]) => `${px},${py}`).join(" "), class: `line ${cls}` }));
    for (const [px, py, k] of pts) {
      series.push(svg("circle", { cx: px, cy: py, r: 3, class: `point ${cls}`, "data-start": k.start_ms, "data-lag": k[field] },
        svg("title", {}, `${new Date(k.start_ms).toLocaleTimeString()}: ${cls} ${k[field]} ms over ${k.lag_samples} runs`)));
    }
  }
  frame("#chart-lag", "Fire lag per bucket", maxLag, [...series, ...timeLabels(stats, x)]);
  // Which attempts the lag covers, as the API says (the metric's attempt="first").
  $("#lag-attempts").textContent = stats.lag_attempts ? `, ${stats.lag_attempts} attempts` : "";
}

// ---- refresh ---------------------------------------------------------------------

const views = [
  ["jobs", () => "/api/v1/jobs", renderJobs],
  ["executions", () => "/api/v1/fires", renderExecutions],
  ["history", historyQuery, renderHistory],
  ["charts", () => {
    const [minutes, bucket] = $("#chart-window").value.split(":");
    return `/api/v1/stats/runs?minutes=${minutes}&bucket=${bucket}`;
  }, renderCharts],
  ["events", () => "/api/v1/events?limit=20", renderEvents],
  ["alert rules", () => "/api/v1/alerts", renderAlertRules],
  ["deliveries", () => "/api/v1/alerts/deliveries?limit=20", renderDeliveries],
  ["modules", () => "/api/v1/modules", renderModules],
  ["nodes", () => "/api/v1/cluster/nodes", renderNodes],
  ["locks", () => "/api/v1/cluster/locks", renderLocks],
];

let timer = null;
let refreshing = false;
let again = false;

async function refresh() {
  clearTimeout(timer);
  if (refreshing) {
    // An action or a filter changed something while a refresh was under way.
    again = true;
    return;
  }
  refreshing = true;
  again = false;
  const failures = [];
  await Promise.all(views.map(async ([name, path, render]) => {
    try {
      render(await api("GET", path()));
    } catch (e) {
      failures.push(`${name}: ${e}`);
    }
  }));
  refreshing = false;
  const status = $("#status");
  status.className = failures.length ? "error" : "muted";
  status.textContent = failures.length
    ? `Could not load ${failures.join("; ")}`
    : `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`;
  document.body.dataset.refreshed = String(Date.now());
  timer = setTimeout(refresh, again ? 0 : REFRESH_MS);
}

function showTokenState() {
  $("#token-state").textContent = token() ? "token set for this tab" : "no token: read only";
}

function start() {
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("#token").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("#token").value = "";
    showTokenState();
    refresh();
  });
  $("#token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    refresh();
  });
  $("#history-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    hist.filter = { job: $("#history-job").value.trim(), status: $("#history-status").value };
    hist.cursors = [null];
    hist.page = 0;
    refresh();
  });
  $("#history-replay").addEventListener("click", replayFailed);
  $("#history-next").addEventListener("click", () => {
    if (!hist.next) return;
    hist.cursors[hist.page + 1] = hist.next;
    hist.page += 1;
    refresh();
  });
  $("#history-prev").addEventListener("click", () => {
    if (hist.page === 0) return;
    hist.page -= 1;
    refresh();
  });
  $("#chart-window").addEventListener("change", refresh);
  showTokenState();
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
