// The crmbus console: plain JavaScript against the HTTP API, no framework, no build step.
// Every figure it shows comes from a documented API route; every action is an API call
// made with the key the user signed in with, so the server's checks decide what happens.
// Event content is untrusted: it is only ever put on the page as text (never as HTML).
"use strict";

const REFRESH_MS = 2000;
const SAMPLES = 60;
const KEY_STORE = "crmbus.console.key";

const app = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  seq: 0,
  who: null,
  refresh: null,
  busy: false,
  topicSamples: new Map(),
  lagSamples: new Map(),
  /** The previous /metrics reading: { t, series } (for rates between two readings). */
  lastMetrics: null,
  live: null,
};

// ---- small helpers ---------------------------------------------------------------------

/** An element with attributes (`on*` become listeners) and children (strings are text). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svgNs = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : String(n ?? ""));
const enc = encodeURIComponent;
const main = () => document.getElementById("main");

function say(text, bad) {
  const st = document.getElementById("status");
  st.className = bad ? "status bad" : "status";
  st.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { st.textContent = ""; }, bad ? 9000 : 5000);
}

/** Calls the API; answers the parsed JSON, or throws an Error holding the problem. */
async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (app.key) headers.Authorization = `Bearer ${app.key}`;
  let body;
  if (opts.body !== undefined) {
    headers["Content-Type"] = opts.contentType || "application/json";
    body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
  }
  const resp = await fetch(path, { method: opts.method || "GET", headers, body });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const detail = data && typeof data === "object" ? (data.detail || data.title) : text;
    const err = new Error(detail || `HTTP ${resp.status}`);
    err.status = resp.status;
    err.problem = data;
    throw err;
  }
  return data;
}

/** Whether the signed-in key has `kind` (publish, subscribe, dlq) on `topic`. */
function can(kind, topic) {
  const scopes = (app.who && app.who.scopes) || [];
  return scopes.some((sc) => {
    if (sc === "admin") return true;
    const [k, pattern] = sc.split(":");
    if (k !== kind || pattern === undefined) return false;
    const re = new RegExp(`^${pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\-]/g, "\\$&")).join(".*")}$`);
    return re.test(topic);
  });
}
const isAdmin = () => ((app.who && app.who.scopes) || []).includes("admin");

/** Asks in a modal dialog; resolves true when confirmed. */
function confirmAction(text, okLabel) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  ok.textContent = okLabel || "Confirm";
  return new Promise((resolve) => {
    const done = (v) => {
      ok.removeEventListener("click", yes);
      cancel.removeEventListener("click", no);
      dlg.removeEventListener("cancel", no);
      dlg.close();
      resolve(v);
    };
    const yes = () => done(true);
    const no = (e) => { if (e) e.preventDefault(); done(false); };
    ok.addEventListener("click", yes);
    cancel.addEventListener("click", no);
    dlg.addEventListener("cancel", no);
    dlg.showModal();
    cancel.focus();
  });
}

function table(caption, heads, rows, opts = {}) {
  // On a phone each row becomes a card; every cell names its column (data-label).
  const labels = heads.map((c) => (typeof c === "string" ? c : c.label));
  for (const row of rows) {
    [...row.children].forEach((cell, i) => { if (labels[i]) cell.dataset.label = labels[i]; });
  }
  const t = h("table", { id: opts.id, class: "cards" },
    h("caption", { class: opts.showCaption ? "" : "visually-hidden", text: caption }),
    h("thead", {}, h("tr", {}, heads.map((c) => h("th", { scope: "col", class: c.num ? "num" : "" }, c.label || c)))),
    h("tbody", {}, rows));
  return h("div", { class: "scroll" }, t);
}

const td = (v, cls) => h("td", { class: cls || "" }, v);
const num = (v) => td(fmt(v), "num");
const figure = (label, value, id) => h("div", { class: "figure" },
  h("span", { class: "label", text: label }), h("span", { class: "value", id, text: fmt(value) }));

function breakerBadge(state) {
  const cls = state === "closed" ? "ok" : state === "open" ? "bad" : "warn";
  return h("span", { class: `badge ${cls}`, text: state || "closed" });
}

function jsonBlock(value, label) {
  return h("pre", { class: "json", tabindex: 0, "aria-label": label || "JSON" }, JSON.stringify(value, null, 2));
}

/** Thrown when a page finishes loading after the user moved on: nothing is shown. */
class Stale extends Error {}

/** Shows a page; `ctx` (a route's) must still be the current route (null: always). */
function setPage(ctx, title, ...content) {
  if (ctx && ctx.seq !== app.seq) throw new Stale();
  const m = main();
  m.replaceChildren(h("h1", { text: title }), ...content.filter((n) => n !== null && n !== undefined && n !== false));
  document.title = `${title} · crmbus console`;
}

/** Refreshes the current page with `fn` every REFRESH_MS, if `ctx` is still current. */
function every(ctx, fn) {
  if (ctx.seq === app.seq) app.refresh = fn;
}

/** A CSS selector that finds `el` again after its container was rebuilt. */
function focusKey(el) {
  if (el.id) return `#${CSS.escape(el.id)}`;
  const tag = el.tagName.toLowerCase();
  for (const attr of ["aria-label", "href", "data-entry"]) {
    const v = el.getAttribute(attr);
    if (v !== null) return `${tag}[${attr}="${CSS.escape(v)}"]`;
  }
  return null;
}

/** Replaces a container's children, keeping keyboard focus on the same control. */
function swap(box, ...nodes) {
  const active = document.activeElement;
  const key = active && box.contains(active) ? focusKey(active) : null;
  box.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
  if (key) {
    const again = box.querySelector(key);
    if (again) again.focus({ preventScroll: true });
  }
}

function pushSample(map, key, sample) {
  const list = map.get(key) || [];
  list.push(sample);
  while (list.length > SAMPLES) list.shift();
  map.set(key, list);
  return list;
}

/** A sparkline of the publish rate (events/s) from a topic's samples. */
function sparkline(samples) {
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    rates.push(dt > 0 ? Math.max(0, (samples[i].events - samples[i - 1].events) / dt) : 0);
  }
  const w = 120, hgt = 24, max = Math.max(1, ...rates);
  const pts = rates.map((r, i) => `${(i / Math.max(1, SAMPLES - 2)) * w},${hgt - (r / max) * (hgt - 2) - 1}`).join(" ");
  const last = rates.length ? rates[rates.length - 1] : 0;
  const svg = s("svg", { class: "spark", width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": `publish rate ${last.toFixed(1)} events per second` },
    s("polyline", { points: pts || `0,${hgt - 1}`, fill: "none", stroke: "#0b5cad", "stroke-width": 1.5 }));
  return h("span", {}, svg, " ", h("span", { class: "muted", text: `${last.toFixed(1)}/s` }));
}

const COLOURS = ["#0b5cad", "#a4161a", "#1e6b34", "#8a4b00", "#6a1b9a", "#00695c", "#ad1457", "#37474f"];

/** A line chart of lag per partition over the samples kept this session. */
function lagChart(samples, partitions) {
  const w = 600, hgt = 180, pad = 24;
  let max = 1;
  for (const smp of samples) for (const v of Object.values(smp.lags)) max = Math.max(max, v);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `lag per partition over the last ${samples.length} samples; highest ${max}` });
  svg.append(s("text", { x: 4, y: 14, "font-size": 11, fill: "#4f5761" }, document.createTextNode(`max ${fmt(max)}`)));
  partitions.forEach((p, i) => {
    const pts = samples.map((smp, j) => {
      const x = pad + (j / Math.max(1, SAMPLES - 1)) * (w - 2 * pad);
      const y = hgt - pad - ((smp.lags[p] || 0) / max) * (hgt - 2 * pad);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    }).join(" ");
    svg.append(s("polyline", { points: pts, fill: "none", stroke: COLOURS[i % COLOURS.length], "stroke-width": 2 }));
  });
  // Swatches drawn in SVG: the page's policy allows no inline styles.
  const legend = h("div", { class: "legend" }, partitions.map((p, i) =>
    h("span", {}, s("svg", { width: 14, height: 6, "aria-hidden": "true" },
      s("rect", { width: 14, height: 6, fill: COLOURS[i % COLOURS.length] })), ` partition ${p}`)));
  return h("div", {}, svg, legend);
}

// ---- sign-in ---------------------------------------------------------------------------

async function signIn() {
  try {
    app.who = await api("/v1/whoami");
  } catch (e) {
    app.who = null;
    if (e.status === 401) return showLogin(app.key ? `That key was refused: ${e.message}` : "");
    return showLogin(`The server did not answer: ${e.message}`);
  }
  document.getElementById("nav").hidden = false;
  const who = document.getElementById("who");
  who.textContent = app.who.keys_required
    ? `Signed in as ${app.who.actor} · ${app.who.scopes.join(", ")}`
    : "No key needed on this server (everything allowed)";
  document.getElementById("sign-out").hidden = !app.who.keys_required;
  route();
}

function showLogin(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("sign-out").hidden = true;
  app.refresh = null;
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h("form", { class: "panel login", onsubmit: (e) => {
    e.preventDefault();
    app.key = input.value.trim();
    sessionStorage.setItem(KEY_STORE, app.key);
    signIn();
  } },
  h("label", { for: "api-key" }, "API key", input),
  h("p", { class: "muted", text: "A key made with `crmbus keys create`. It stays in this tab only and is sent to this server alone." }),
  message ? h("p", { class: "error", role: "alert", text: message }) : null,
  h("div", { class: "actions" }, h("button", { type: "submit", text: "Sign in" })));
  app.seq++;
  setPage(null, "Sign in to crmbus", form);
  input.focus();
}

// ---- router ----------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}

async function route() {
  if (!app.who) return;
  stopLive();
  app.refresh = null;
  // A message about the page left behind does not follow to the next.
  document.getElementById("status").textContent = "";
  const ctx = { seq: ++app.seq };
  try {
    const { parts, query } = parseHash();
    const page = parts[0] || "overview";
    const section = page === "topics" || page === "subscriptions" ? "overview" : page;
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.page === section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (page === "overview") await overviewPage(ctx);
    else if (page === "topics" && parts[1]) await topicPage(ctx, parts[1], query);
    else if (page === "subscriptions" && parts[1]) await subscriptionPage(ctx, parts[1]);
    else if (page === "dlq") await dlqPage(ctx, parts[1], query);
    else if (page === "schemas") await schemasPage(ctx, parts[1], query);
    else setPage(ctx, "Not found", h("p", {}, "No such page. ", h("a", { href: "#/", text: "Overview" })));
  } catch (e) {
    if (e instanceof Stale || ctx.seq !== app.seq) return;
    if (e.status === 401) return showLogin(`The key stopped working: ${e.message}`);
    setPage(ctx, "Something went wrong", h("p", { class: "error", role: "alert", text: e.message }));
  }
  if (ctx.seq === app.seq) {
    // Which route the page now shows, once it is fully drawn (tests wait for it).
    main().dataset.route = location.hash || "#/";
    main().focus({ preventScroll: true });
  }
}

async function tick() {
  if (!app.refresh || app.busy || document.visibilityState === "hidden") return;
  app.busy = true;
  const fn = app.refresh;
  try { await fn(); } catch (e) {
    if (e.status === 401) showLogin(`The key stopped working: ${e.message}`);
  } finally { app.busy = false; }
}

// ---- flow analytics (from /metrics) ------------------------------------------------------

/** Prometheus text as [{ name, labels, value }] (crmbus_ series only): the label block is
 *  read quote-aware, the value is the first token after it (a timestamp or an exemplar
 *  after that is ignored), and ±Inf and NaN are read as numbers. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("crmbus_")) continue;
    const name = line.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/)[0];
    let i = name.length;
    const labels = {};
    if (line[i] === "{") {
      i++;
      while (i < line.length && line[i] !== "}") {
        const key = line.slice(i).match(/^\s*,?\s*([a-zA-Z_][a-zA-Z0-9_]*)="/);
        if (!key) break;
        i += key[0].length;
        let value = "";
        while (i < line.length && line[i] !== '"') {
          if (line[i] === "\\" && i + 1 < line.length) {
            const c = line[i + 1];
            value += c === "n" ? "\n" : c;
            i += 2;
          } else value += line[i++];
        }
        i++;
        labels[key[1]] = value;
      }
      i++;
    }
    const token = line.slice(i).trim().split(/\s+/)[0];
    const value = token === "+Inf" ? Infinity : token === "-Inf" ? -Infinity : Number(token);
    out.push({ name, labels, value });
  }
  return out;
}

const seriesKey = (name, labels) => `${name}|${Object.entries(labels).filter(([k]) => k !== "le").map(([k, v]) => `${k}=${v}`).join(",")}`;

/** A quantile of a cumulative histogram's buckets ([[le, count]] in le order), as seconds. */
function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const found = buckets.find(([, c]) => c >= q * total);
  return found ? found[0] : null;
}

const seconds = (v) => (v === null || v === undefined ? "–" : !Number.isFinite(v) ? "over the top bucket" : v < 1 ? `${(v * 1000).toFixed(v < 0.01 ? 2 : 0)} ms` : `${v.toFixed(2)} s`);

/** The flow by type and the end-to-end latency per subscription, from two readings. */
function flowTables(series, now) {
  const last = app.lastMetrics;
  const dt = last ? (now - last.t) / 1000 : 0;
  const before = (name, labels) => (last ? last.values.get(seriesKey(name, labels)) : undefined);
  const rate = (name, s) => {
    const prev = before(name, s.labels);
    return dt > 0 && prev !== undefined ? Math.max(0, (s.value - prev) / dt) : null;
  };
  const values = new Map(series.filter((s) => !("le" in s.labels)).map((s) => [seriesKey(s.name, s.labels), s.value]));
  // The unlabelled series are the catalog's zeroes from the start: not a topic's.
  const typeRows = series.filter((s) => s.name === "crmbus_type_events_total" && s.labels.topic).map((s) => {
    const bytes = series.find((b) => b.name === "crmbus_type_bytes_total" && b.labels.topic === s.labels.topic && b.labels.type === s.labels.type);
    const evRate = rate("crmbus_type_events_total", s);
    const byRate = bytes ? rate("crmbus_type_bytes_total", bytes) : null;
    return h("tr", { "data-flow": `${s.labels.topic}/${s.labels.type}` }, td(s.labels.topic), td(s.labels.type), num(s.value),
      td(evRate === null ? "–" : `${evRate.toFixed(1)}/s`, "num"), td(byRate === null ? "–" : `${fmt(Math.round(byRate))} B/s`, "num"));
  });
  const latRows = series.filter((s) => s.name === "crmbus_delivery_latency_seconds_count" && s.labels.group).map((c) => {
    const { topic, group } = c.labels;
    const sum = series.find((x) => x.name === "crmbus_delivery_latency_seconds_sum" && x.labels.topic === topic && x.labels.group === group);
    const buckets = series.filter((x) => x.name === "crmbus_delivery_latency_seconds_bucket" && x.labels.topic === topic && x.labels.group === group)
      .map((x) => [x.labels.le === "+Inf" ? Infinity : Number(x.labels.le), x.value]).sort((a, b) => a[0] - b[0]);
    const dc = c.value - (before(c.name, c.labels) ?? c.value);
    const ds = sum ? sum.value - (before(sum.name, sum.labels) ?? sum.value) : 0;
    const recent = dc > 0 ? ds / dc : null;
    const mean = c.value && sum ? sum.value / c.value : null;
    return h("tr", { "data-latency": group }, td(group), td(topic), num(c.value), td(seconds(mean), "num"),
      td(seconds(quantile(buckets, 0.99)), "num"), td(seconds(recent), "num"));
  });
  app.lastMetrics = { t: now, values };
  return [
    typeRows.length
      ? table("Flow by type", ["Topic", "Type", { label: "Events", num: true }, { label: "Events/s", num: true }, { label: "Bytes/s", num: true }], typeRows, { id: "flow-table" })
      : h("p", { class: "muted", text: "Nothing published over HTTP since this server started." }),
    latRows.length
      ? table("End-to-end latency", ["Subscription", "Topic", { label: "Acked", num: true }, { label: "Mean", num: true }, { label: "p99 (bucket)", num: true }, { label: "Mean, last 2 s", num: true }], latRows, { id: "latency-table" })
      : h("p", { class: "muted", text: "No delivery acked since this server started." }),
  ];
}

// ---- overview --------------------------------------------------------------------------

async function overviewPage(ctx) {
  const topicsBox = h("div", { id: "topics" });
  const subsBox = h("div", { id: "subscriptions" });
  const flowBox = h("div", { id: "flow" });
  const latencyBox = h("div", { id: "latency" });
  setPage(ctx, "Overview",
    h("p", { class: "muted", text: `Refreshes every ${REFRESH_MS / 1000} s.` }),
    h("h2", { text: "Topics" }), topicsBox,
    h("h2", { text: "Subscriptions" }), subsBox,
    h("h2", { text: "Flow by type (this server, since it started)" }), flowBox,
    h("h2", { text: "End-to-end latency: append to ack" }), latencyBox);
  const refresh = async () => {
    // /metrics may be refused (another recorder in the process): the rest still shows.
    const [topics, subs, metricsText] = await Promise.all([api("/v1/topics"), api("/v1/subscriptions"), api("/metrics").catch(() => "")]);
    const now = Date.now();
    const [flow, latency] = flowTables(parseMetrics(typeof metricsText === "string" ? metricsText : ""), now);
    swap(flowBox, flow);
    swap(latencyBox, latency);
    const trows = topics.topics.map((t) => {
      // The rate counts appends (next offsets), not events kept: retention does not hide it.
      const appended = t.partition_info.reduce((a, p) => a + p.next_offset, 0);
      const samples = pushSample(app.topicSamples, t.name, { t: now, events: appended });
      return h("tr", { "data-topic": t.name },
        td(h("a", { href: `#/topics/${enc(t.name)}`, text: t.name })),
        num(t.partitions), h("td", { class: "num", "data-field": "events" }, fmt(t.events)), td(sparkline(samples)));
    });
    swap(topicsBox, trows.length
      ? table("Topics", ["Topic", { label: "Partitions", num: true }, { label: "Events", num: true }, "Publish rate"], trows, { id: "topics-table" })
      : h("p", { class: "muted", text: "No topics yet." }));
    const srows = subs.subscriptions.map((sub) => {
      const st = sub.status;
      pushSample(app.lagSamples, sub.name, { t: now, lags: Object.fromEntries(st.partitions.map((p) => [p.partition, p.lag])) });
      return h("tr", { "data-subscription": sub.name },
        td(h("a", { href: `#/subscriptions/${enc(sub.name)}`, text: sub.name })),
        td(h("a", { href: `#/topics/${enc(sub.topic)}`, text: sub.topic })),
        td((sub.config.target && sub.config.target.kind) || "pull", "hide-narrow"),
        h("td", { class: "num", "data-field": "lag" }, fmt(st.lag)),
        num(st.in_flight), num(st.parked_keys), td(breakerBadge(st.breaker)),
        h("td", { class: "num", "data-field": "dlq" }, st.dlq_size ? h("a", { href: `#/dlq/${enc(sub.name)}`, text: fmt(st.dlq_size) }) : "0"));
    });
    swap(subsBox, srows.length
      ? table("Subscriptions", ["Subscription", "Topic", { label: "Target" }, { label: "Lag", num: true }, { label: "In flight", num: true }, { label: "Parked keys", num: true }, "Breaker", { label: "Dead letters", num: true }], srows, { id: "subscriptions-table" })
      : h("p", { class: "muted", text: "No subscriptions yet." }));
    // The target column is the one a phone hides.
    for (const th of subsBox.querySelectorAll("th:nth-child(3)")) th.classList.add("hide-narrow");
  };
  await refresh();
  every(ctx, refresh);
}

// ---- topic -----------------------------------------------------------------------------

function eventRow(stored, onOpen) {
  const ev = stored.event || {};
  return h("tr", { "data-offset": `${stored.partition}-${stored.offset}` },
    num(stored.partition), num(stored.offset),
    td(stored.appended_at, "hide-narrow"), td(ev.type), td(ev.subject || ""),
    td(h("button", { type: "button", class: "secondary", onclick: () => onOpen(stored), "aria-label": `View event ${stored.partition}-${stored.offset}`, text: "View" })));
}

function eventView(stored) {
  const ev = stored.event || {};
  const attrs = Object.entries(ev).filter(([k]) => k !== "data" && k !== "data_base64");
  const typeLink = ev.type ? h("a", { href: `#/schemas/${enc(ev.type)}`, text: `schemas of ${ev.type}` }) : null;
  return h("section", { class: "panel", id: "event-view", "aria-label": "Event" },
    h("h2", { text: `Event ${stored.partition}-${stored.offset}` }),
    table("Attributes", ["Attribute", "Value"], [
      h("tr", {}, td("partition / offset"), td(`${stored.partition} / ${stored.offset}`)),
      h("tr", {}, td("appended at"), td(stored.appended_at || "")),
      ...attrs.map(([k, v]) => h("tr", {}, td(k), td(typeof v === "string" ? v : JSON.stringify(v)))),
    ]),
    h("p", {}, "Schema: ", ev.dataschema ? h("code", { text: ev.dataschema }) : "none named", typeLink ? " · " : "", typeLink),
    h("h3", { text: "Data" }),
    jsonBlock(ev.data !== undefined ? ev.data : ev.data_base64, "Event data"));
}

async function topicPage(ctx, name, query) {
  const topic = await api(`/v1/topics/${enc(name)}`);
  const parts = h("div");
  let ends = Object.fromEntries(topic.partition_info.map((p) => [String(p.partition), p.next_offset]));
  const renderParts = (t) => swap(parts, table("Partitions",
    ["Partition", { label: "First offset", num: true }, { label: "Next offset", num: true }, { label: "Events", num: true }],
    t.partition_info.map((p) => h("tr", {}, num(p.partition), num(p.first_offset), num(p.next_offset), num(p.events)))));
  renderParts(topic);

  const partSel = h("select", { id: "browse-partition" }, h("option", { value: "", text: "all" }),
    topic.partition_info.map((p) => h("option", { value: p.partition, text: p.partition })));
  const fromOffset = h("input", { id: "browse-offset", type: "number", min: 0, inputmode: "numeric" });
  const fromTime = h("input", { id: "browse-time", type: "datetime-local", step: 1 });
  const limit = h("input", { id: "browse-limit", type: "number", min: 1, max: 1000, value: 50 });
  const typeFilter = h("input", { id: "browse-type", type: "search", placeholder: "lead.converted" });
  const textFilter = h("input", { id: "browse-text", type: "search", placeholder: "any text in the event" });
  const results = h("div", { id: "browse-results" });
  const view = h("div", { id: "event-view-box" });
  // Where the next page starts, per partition read (the `next` answers).
  let cursors = {};
  let loaded = [];
  const more = () => Object.entries(cursors).some(([p, c]) => c < (ends[p] ?? 0));

  const open = (stored) => { view.replaceChildren(eventView(stored)); view.querySelector("h2").setAttribute("tabindex", "-1"); view.querySelector("h2").focus(); };
  const show = () => {
    const ty = typeFilter.value.trim();
    const text = textFilter.value.trim().toLowerCase();
    const shown = loaded.filter((e) => (!ty || (e.event && e.event.type === ty)) && (!text || JSON.stringify(e.event).toLowerCase().includes(text)));
    swap(results,
      h("p", { class: "muted", text: `${shown.length} of ${loaded.length} loaded events match.` }),
      table("Events", [{ label: "Partition", num: true }, { label: "Offset", num: true }, { label: "Appended" }, "Type", "Subject", ""], shown.map((e) => eventRow(e, open)), { id: "events-table" }),
      more() ? h("button", { type: "button", class: "secondary", id: "browse-more", onclick: () => loadMore(), text: "Load more" }) : null);
    for (const th of results.querySelectorAll("th:nth-child(3)")) th.classList.add("hide-narrow");
  };
  const load = async () => {
    const q = new URLSearchParams();
    if (partSel.value !== "") q.set("partition", partSel.value);
    if (fromOffset.value !== "") q.set("from", fromOffset.value);
    else if (fromTime.value) q.set("from_time", new Date(fromTime.value).toISOString());
    q.set("limit", limit.value || 50);
    try {
      const r = await api(`/v1/topics/${enc(name)}/events?${q}`);
      loaded = r.events;
      cursors = { ...r.next };
      show();
    } catch (e) { say(e.message, true); }
  };
  // The next page: each partition read on from its own cursor, in partition order, until
  // the page is full (one `from` for all partitions would re-read the fullest one).
  const loadMore = async () => {
    try {
      const t = await api(`/v1/topics/${enc(name)}`);
      ends = Object.fromEntries(t.partition_info.map((p) => [String(p.partition), p.next_offset]));
      let room = Number(limit.value) || 50;
      const seen = new Set(loaded.map((e) => `${e.partition}-${e.offset}`));
      for (const p of Object.keys(cursors).sort((a, b) => a - b)) {
        if (room <= 0) break;
        if (cursors[p] >= (ends[p] ?? 0)) continue;
        const r = await api(`/v1/topics/${enc(name)}/events?partition=${p}&from=${cursors[p]}&limit=${room}`);
        const fresh = r.events.filter((e) => !seen.has(`${e.partition}-${e.offset}`));
        loaded = loaded.concat(fresh);
        room -= fresh.length;
        cursors[p] = r.next[p] ?? cursors[p];
        if (!r.events.length) cursors[p] = ends[p];
      }
      show();
    } catch (e) { say(e.message, true); }
  };

  const tail = h("ol", { id: "live-tail", class: "muted", "aria-live": "off" });
  const tailBtn = h("button", { type: "button", class: "secondary", id: "live-toggle", text: "Start live tail" });
  const tailStopped = (why) => {
    stopLive();
    tailBtn.textContent = "Start live tail";
    if (why) say(why, true);
  };
  tailBtn.addEventListener("click", async () => {
    if (app.live) { tailStopped(); return; }
    tailBtn.disabled = true;
    try {
      const tok = await api(`/v1/topics/${enc(name)}/stream-token`, { method: "POST", body: { ttl_seconds: 600 } });
      // The user may have moved to another page while the token was made.
      if (ctx.seq !== app.seq) return;
      stopLive();
      const es = new EventSource(`${tok.stream_url}&from=latest`);
      es.onmessage = (m) => {
        let stored;
        try { stored = JSON.parse(m.data); } catch { return; }
        const ev = stored.event || {};
        tail.prepend(h("li", {}, `${stored.partition}-${stored.offset} ${ev.type || ""} ${ev.subject || ""} `,
          h("button", { type: "button", class: "secondary", onclick: () => open(stored), text: "View" })));
        while (tail.children.length > 100) tail.lastChild.remove();
      };
      // The server's reason (a revoked key), or a reconnect refused (the token expired).
      es.addEventListener("error", (m) => {
        if (m.data) tailStopped(`Live tail ended: ${m.data}`);
        else if (es.readyState === EventSource.CLOSED) tailStopped("Live tail ended: the stream closed. Start it again.");
      });
      app.live = es;
      tailBtn.textContent = "Stop live tail";
    } catch (e) { say(e.message, true); } finally { tailBtn.disabled = false; }
  });

  setPage(ctx, `Topic ${name}`,
    h("div", { class: "grid" }, figure("Partitions", topic.partitions), figure("Events", topic.events, "topic-events"),
      figure("Schemas required", topic.require_schemas ? "yes" : "no")),
    parts,
    h("h2", { text: "Browse" }),
    h("form", { class: "form", onsubmit: (e) => { e.preventDefault(); load(); } },
      h("label", { for: "browse-partition" }, "Partition", partSel),
      h("label", { for: "browse-offset" }, "From offset", fromOffset),
      h("label", { for: "browse-time" }, "Or from time", fromTime),
      h("label", { for: "browse-limit" }, "At most", limit),
      h("button", { type: "submit", text: "Load events" })),
    h("div", { class: "form" },
      h("label", { for: "browse-type" }, "Type is", typeFilter),
      h("label", { for: "browse-text" }, "Contains", textFilter)),
    results, view,
    h("h2", { text: "Live tail" }), h("div", { class: "actions" }, tailBtn), tail);
  typeFilter.addEventListener("input", show);
  textFilter.addEventListener("input", show);
  every(ctx, async () => renderParts(await api(`/v1/topics/${enc(name)}`)));
  if (query.get("partition") !== null && query.get("offset") !== null) {
    partSel.value = query.get("partition");
    fromOffset.value = query.get("offset");
    limit.value = 1;
    await load();
    if (loaded[0]) open(loaded[0]);
  } else {
    await load();
  }
}

function stopLive() {
  if (app.live) { app.live.close(); app.live = null; }
}

// ---- subscription ----------------------------------------------------------------------

async function subscriptionPage(ctx, name) {
  let sub = await api(`/v1/subscriptions/${enc(name)}`);
  const figures = h("div", { class: "grid", id: "sub-figures" });
  const cursor = h("div", { id: "sub-cursor" });
  const chart = h("div", { id: "sub-chart" });
  const parked = h("div", { id: "sub-parked" });
  const schedule = h("div", { id: "sub-schedule" });
  const render = () => {
    const st = sub.status;
    const samples = pushSample(app.lagSamples, name, { t: Date.now(), lags: Object.fromEntries(st.partitions.map((p) => [p.partition, p.lag])) });
    swap(figures, figure("Lag", st.lag, "sub-lag"), figure("In flight", st.in_flight), figure("Pulled, not acked", st.leased),
      figure("Parked keys", st.parked_keys, "sub-parked-count"),
      h("div", { class: "figure" }, h("span", { class: "label", text: "Breaker" }), breakerBadge(st.breaker)),
      h("div", { class: "figure" }, h("span", { class: "label", text: "Dead letters" }),
        h("a", { class: "value", id: "sub-dlq", href: `#/dlq/${enc(name)}`, text: fmt(st.dlq_size) })),
      figure("Delivered", st.delivered), figure("Acked", st.acked), figure("Retried", st.retried));
    swap(cursor, table("Cursor per partition", [{ label: "Partition", num: true }, { label: "Committed", num: true }, { label: "Next offset", num: true }, { label: "Lag", num: true }],
      st.partitions.map((p) => h("tr", {}, num(p.partition), num(p.committed), num(p.next_offset), num(p.lag))), { id: "cursor-table" }));
    swap(chart, lagChart(samples, st.partitions.map((p) => p.partition)));
    const eventLink = (p) => h("a", { href: `#/topics/${enc(sub.topic)}?partition=${p.partition}&offset=${p.offset}`, text: `${p.partition}-${p.offset}` });
    const cut = st.parked_keys > st.parked.length
      ? h("p", { class: "muted", text: `The first ${fmt(st.parked.length)} of ${fmt(st.parked_keys)} parked keys, by partition and offset.` })
      : null;
    swap(parked, cut, st.parked.length
      ? table("Parked keys", ["Key", "Waits on event", "Because of", { label: "Queued", num: true }, "Last error"],
        st.parked.map((p) => h("tr", {}, td(p.key), td(eventLink(p)),
          td(p.waiting_on === "retry" ? "a retry" : h("a", { href: `#/dlq/${enc(name)}`, text: "a dead letter" })),
          num(p.queued), td(p.last_error || ""))), { id: "parked-table" })
      : h("p", { class: "muted", text: "No key is parked." }));
    const retries = st.parked.filter((p) => p.waiting_on === "retry").sort((a, b) => a.next_attempt_at.localeCompare(b.next_attempt_at));
    swap(schedule, retries.length
      ? table("Retry schedule", ["Next attempt at", "Event", "Key", { label: "Attempts so far", num: true }],
        retries.map((p) => h("tr", {}, td(p.next_attempt_at), td(eventLink(p)), td(p.key), num(p.attempts))))
      : h("p", { class: "muted", text: "No event is waiting for a retry." }));
  };
  const cfg = sub.config;
  const target = cfg.target || { kind: "pull" };
  const policy = cfg.retry ? Object.entries(cfg.retry).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(", ") : v}`).join(" · ") : "the server's default";

  // Seek / replay with a preview of what it replays.
  const mode = h("select", { id: "seek-mode" },
    h("option", { value: "earliest", text: "the earliest event" }), h("option", { value: "latest", text: "the end (skip everything)" }),
    h("option", { value: "time", text: "a time" }), h("option", { value: "offset", text: "an offset in every partition" }));
  const seekTime = h("input", { id: "seek-time", type: "datetime-local", step: 1 });
  const seekOffset = h("input", { id: "seek-offset", type: "number", min: 0, inputmode: "numeric" });
  const preview = h("p", { id: "seek-preview", "aria-live": "polite" });
  const seekTarget = () => {
    if (mode.value === "earliest" || mode.value === "latest") return mode.value;
    if (mode.value === "time") {
      if (!seekTime.value) throw new Error("Choose a time to seek to.");
      return { time: new Date(seekTime.value).toISOString() };
    }
    if (seekOffset.value === "") throw new Error("Give an offset to seek to.");
    return { offsets: Object.fromEntries(sub.status.partitions.map((p) => [String(p.partition), Number(seekOffset.value)])) };
  };
  /** Events the subscription would have to deliver after the seek, per the topic now. */
  const replayCount = async (to) => {
    const topic = await api(`/v1/topics/${enc(sub.topic)}`);
    let total = 0;
    for (const p of topic.partition_info) {
      let from;
      if (to === "earliest") from = p.first_offset;
      else if (to === "latest") from = p.next_offset;
      else if (to.offsets) from = Math.min(Math.max(Number(to.offsets[String(p.partition)]), p.first_offset), p.next_offset);
      else {
        const r = await api(`/v1/topics/${enc(sub.topic)}/events?partition=${p.partition}&from_time=${enc(to.time)}&limit=1`);
        from = r.events.length ? r.events[0].offset : p.next_offset;
      }
      total += Math.max(0, p.next_offset - from);
    }
    return total;
  };
  const previewBtn = h("button", { type: "button", class: "secondary", id: "seek-preview-button", text: "Preview" });
  const seekBtn = h("button", { type: "button", id: "seek-button", class: "danger", text: "Seek" });
  previewBtn.addEventListener("click", async () => {
    try {
      const n = await replayCount(seekTarget());
      preview.textContent = `After this seek, ${fmt(n)} events are ahead of the subscription (lag now ${fmt(sub.status.lag)}).`;
    } catch (e) { preview.textContent = e.message; }
  });
  seekBtn.addEventListener("click", async () => {
    let to, n;
    try { to = seekTarget(); n = await replayCount(to); } catch (e) { say(e.message, true); return; }
    const where = typeof to === "string" ? to : to.time ? `time ${to.time}` : `offset ${seekOffset.value}`;
    if (!await confirmAction(`Seek ${name} to ${where}? ${fmt(n)} events will be ahead of it (redelivered, or skipped when fewer than now).`, "Seek")) return;
    try {
      const r = await api(`/v1/subscriptions/${enc(name)}/seek`, { method: "POST", body: { to } });
      const lag = r.partitions.reduce((a, p) => a + p.lag, 0);
      say(`Sought ${name} to ${where}: lag ${fmt(lag)}.`);
      sub = await api(`/v1/subscriptions/${enc(name)}`);
      render();
    } catch (e) { say(`Seek refused: ${e.message}`, true); }
  });
  const canSeek = can("subscribe", sub.topic);
  const seekSection = canSeek
    ? h("section", { class: "panel", id: "seek", "aria-labelledby": "seek-title" },
      h("h2", { id: "seek-title", text: "Replay or skip: seek" }),
      h("div", { class: "form" },
        h("label", { for: "seek-mode" }, "Move the cursor to", mode),
        h("label", { for: "seek-time" }, "Time (for a time)", seekTime),
        h("label", { for: "seek-offset" }, "Offset (for an offset)", seekOffset)),
      h("div", { class: "actions" }, previewBtn, seekBtn), preview)
    : h("p", { class: "muted", id: "seek", text: `Your key has no subscribe scope on ${sub.topic}: seeking is not offered.` });

  setPage(ctx, `Subscription ${name}`,
    h("p", {}, "Topic ", h("a", { href: `#/topics/${enc(sub.topic)}`, text: sub.topic }),
      ` · target ${target.kind}${target.url ? ` (${target.url})` : ""} · ordering ${cfg.ordering || "per key"} · retry: ${policy}`,
      target.disabled ? h("span", { class: "error", text: ` · disabled: ${target.disabled.reason}` }) : ""),
    figures,
    h("h2", { text: "Lag per partition" }), chart, cursor,
    h("h2", { text: "Parked keys" }), parked,
    h("h2", { text: "Retry schedule" }), schedule,
    seekSection);
  render();
  every(ctx, async () => { sub = await api(`/v1/subscriptions/${enc(name)}`); render(); });
}

// ---- dead letters ----------------------------------------------------------------------

/** A subscription from the list (any key may read it; its own GET needs `subscribe`). */
async function findSubscription(name) {
  const subs = await api("/v1/subscriptions");
  const sub = subs.subscriptions.find((x) => x.name === name);
  if (!sub) {
    const err = new Error(`No subscription named ${name}.`);
    err.status = 404;
    throw err;
  }
  return sub;
}

async function dlqPage(ctx, name, query) {
  if (!name) {
    const box = h("div", { id: "dlq-subscriptions-box" });
    const refreshList = async () => {
      const subs = await api("/v1/subscriptions");
      const rows = subs.subscriptions.map((sub) => h("tr", {},
        td(h("a", { href: `#/dlq/${enc(sub.name)}`, text: sub.name })), td(sub.topic), num(sub.status.dlq_size), num(sub.status.lag)));
      swap(box, rows.length
        ? table("Subscriptions and their dead letters", ["Subscription", "Topic", { label: "Dead letters", num: true }, { label: "Lag", num: true }], rows, { id: "dlq-subscriptions" })
        : h("p", { class: "muted", text: "No subscriptions yet." }));
    };
    await refreshList();
    setPage(ctx, "Dead letters", box);
    every(ctx, refreshList);
    return;
  }
  const sub = await findSubscription(name);
  if (!can("dlq", sub.topic)) {
    setPage(ctx, `Dead letters of ${name}`,
      h("p", { id: "dlq-forbidden", class: "panel", text: `Your key has no dlq scope on topic ${sub.topic} (it has ${app.who.scopes.join(", ")}): its dead letters are not shown and cannot be redriven or discarded here.` }),
      h("p", {}, `Dead letters: ${fmt(sub.status.dlq_size)} · lag ${fmt(sub.status.lag)} · `, h("a", { href: `#/subscriptions/${enc(name)}`, text: "the subscription" })));
    return;
  }
  const fType = h("input", { id: "dlq-type", type: "search", value: query.get("type") || "" });
  const fError = h("input", { id: "dlq-error", type: "search", value: query.get("error") || "" });
  const fSince = h("input", { id: "dlq-since", type: "datetime-local", step: 1 });
  const fUntil = h("input", { id: "dlq-until", type: "datetime-local", step: 1 });
  const list = h("div", { id: "dlq-list" });
  const detail = h("div", { id: "dlq-detail" });
  const summary = h("p", { id: "dlq-summary", "aria-live": "polite", tabindex: -1 });
  const audit = h("div", { id: "dlq-audit" });
  const selected = new Set();
  let entries = [];
  // The filter last submitted (what the list shows, and what "redrive all matching" uses).
  let applied = {};
  // The list is read again when the queue's size changes, on Filter, and after an action;
  // the tick reads only the subscription's figures. Answers older than the newest
  // request are dropped.
  let shownSize = null;
  let requests = 0;

  const readFilter = () => {
    const f = {};
    if (fType.value.trim()) f.type = fType.value.trim();
    if (fError.value.trim()) f.error = fError.value.trim();
    if (fSince.value) f.since = new Date(fSince.value).toISOString();
    if (fUntil.value) f.until = new Date(fUntil.value).toISOString();
    return f;
  };
  const act = async (what, body, text) => {
    if (!await confirmAction(text, what === "discard" ? "Discard" : "Redrive")) return;
    try {
      if (what === "discard") {
        await api(`/v1/subscriptions/${enc(name)}/dlq/${enc(body)}`, { method: "DELETE" });
        say(`Discarded ${body}.`);
      } else {
        const r = await api(`/v1/subscriptions/${enc(name)}/dlq/redrive`, { method: "POST", body });
        say(`Redrove ${fmt(r.redriven)} dead letter${r.redriven === 1 ? "" : "s"}.`);
      }
      selected.clear();
      detail.replaceChildren();
      await reload();
      summary.focus();
    } catch (e) { say(`Refused: ${e.message}`, true); }
  };
  const openEntry = async (id) => {
    try {
      const e = await api(`/v1/subscriptions/${enc(name)}/dlq/${enc(id)}`);
      const ev = e.event || {};
      const errors = e.recent_errors && e.recent_errors.length ? e.recent_errors : [e.last_error];
      detail.replaceChildren(h("section", { class: "panel", id: "dlq-entry", "aria-label": `Dead letter ${e.id}` },
        h("h2", { tabindex: -1, text: `Dead letter ${e.id}: ${ev.type || ""}` }),
        table("Dead letter", ["Field", "Value"], [
          h("tr", {}, td("Event"), td(`${ev.id || ""} · ${ev.source || ""}`)),
          h("tr", {}, td("Key"), td(e.key)),
          h("tr", {}, td("Attempts"), td(fmt(e.attempts))),
          h("tr", {}, td("First failure"), td(e.first_failure)),
          h("tr", {}, td("Last failure"), td(e.last_failure)),
          h("tr", {}, td("Holds its key back"), td(e.held ? "yes" : "no")),
          h("tr", {}, td("Being redriven"), td(e.redriving ? "yes" : "no")),
        ]),
        h("h3", { text: `The errors of the last ${errors.length} of ${fmt(e.attempts)} attempt(s), oldest first` }),
        h("ol", { id: "dlq-errors" }, errors.map((x) => h("li", { class: "error", text: x }))),
        h("h3", { text: "Event" }), jsonBlock(ev, "The dead-lettered event"),
        h("div", { class: "actions" },
          h("button", { type: "button", id: "redrive-one", onclick: () => act("redrive", { entries: [e.id] }, `Redrive ${e.id} (${ev.type || "event"} ${ev.subject || ""}) to ${name}? It is delivered again, and its key resumes after it.`), text: "Redrive this event" }),
          h("button", { type: "button", class: "danger", id: "discard-one", onclick: () => act("discard", e.id, `Discard ${e.id} for good? Its key resumes without it; the event stays in the topic.`), text: "Discard" }))));
      detail.querySelector("h2").focus();
    } catch (err) { say(err.message, true); }
  };
  const figures = (st) => {
    summary.textContent = `${fmt(entries.length)} shown · ${fmt(st.dlq_size)} in the queue · lag ${fmt(st.lag)}`;
    summary.dataset.dlq = st.dlq_size;
    summary.dataset.lag = st.lag;
  };
  const reload = async () => {
    const mine = ++requests;
    const q = new URLSearchParams(applied);
    const [r, s2, log] = await Promise.all([
      api(`/v1/subscriptions/${enc(name)}/dlq?${q}`),
      findSubscription(name),
      api(`/v1/subscriptions/${enc(name)}/audit`),
    ]);
    if (mine !== requests) return;
    entries = r.entries;
    shownSize = s2.status.dlq_size;
    for (const id of [...selected]) if (!entries.some((e) => e.id === id)) selected.delete(id);
    figures(s2.status);
    swap(list, entries.length
      ? table("Dead letters", ["Select", "Entry", "Type", "Key", { label: "Attempts", num: true }, "Last failure", "Last error", "Open"],
        entries.map((e) => {
          const box = h("input", { type: "checkbox", "aria-label": `Select ${e.id}`, checked: selected.has(e.id), onchange: (ev) => { if (ev.target.checked) selected.add(e.id); else selected.delete(e.id); } });
          return h("tr", { "data-entry": e.id }, td(box), td(e.id), td((e.event && e.event.type) || ""), td(e.key), num(e.attempts),
            td(e.last_failure), td(h("span", { class: "error", text: e.last_error })),
            td(h("button", { type: "button", class: "secondary", onclick: () => openEntry(e.id), "aria-label": `Open ${e.id}`, text: "Open" })));
        }), { id: "dlq-table" })
      : h("p", { class: "muted", id: "dlq-empty", text: "No dead letters match." }));
    swap(audit, log.entries.length
      ? table("Audit log", ["When", "Who", "Action", "Entry", "Type"], log.entries.slice(-20).reverse().map((a) =>
        h("tr", {}, td(a.at), td(a.who), td(a.action), td(a.entry), td(a.event_type))), { id: "audit-table" })
      : h("p", { class: "muted", text: "Nothing done yet." }));
  };
  const poll = async () => {
    const s2 = await findSubscription(name);
    if (s2.status.dlq_size !== shownSize) await reload();
    else figures(s2.status);
  };
  applied = readFilter();
  await reload();
  setPage(ctx, `Dead letters of ${name}`,
    h("p", {}, "Topic ", h("a", { href: `#/topics/${enc(sub.topic)}`, text: sub.topic }), " · ",
      h("a", { href: `#/subscriptions/${enc(name)}`, text: "the subscription (replay with a seek)" })),
    h("form", { class: "form", onsubmit: (e) => { e.preventDefault(); applied = readFilter(); reload().catch((err) => say(err.message, true)); } },
      h("label", { for: "dlq-type" }, "Type", fType),
      h("label", { for: "dlq-error" }, "Error contains", fError),
      h("label", { for: "dlq-since" }, "Failed since", fSince),
      h("label", { for: "dlq-until" }, "Failed until", fUntil),
      h("button", { type: "submit", text: "Filter" })),
    summary,
    h("div", { class: "actions" },
      h("button", { type: "button", id: "redrive-selected", onclick: () => {
        if (!selected.size) return say("Select dead letters first.", true);
        act("redrive", { entries: [...selected] }, `Redrive the ${selected.size} selected dead letter(s) of ${name}?`);
      }, text: "Redrive selected" }),
      h("button", { type: "button", class: "secondary", id: "redrive-filter", onclick: () => {
        const f = applied;
        const body = Object.keys(f).length ? { filter: f } : { all: true };
        act("redrive", body, `Redrive every dead letter of ${name}${Object.keys(f).length ? " matching the filter" : ""} (${fmt(entries.length)} shown now)?`);
      }, text: "Redrive all matching" })),
    list, detail,
    h("h2", { text: "Audit log (latest 20)" }), audit);
  every(ctx, poll);
}

// ---- schemas ---------------------------------------------------------------------------

/** Lines of `a` and `b` with their longest common subsequence marked: [[kind, text]]. */
function lineDiff(a, b) {
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const left = [], right = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { left.push(["same", a[i++]]); right.push(["same", b[j++]]); }
    else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) right.push(["add", b[j++]]);
    else left.push(["del", a[i++]]);
  }
  return [left, right];
}

async function schemasPage(ctx, type, query) {
  const list = await api("/v1/schemas");
  const validateBox = h("textarea", { id: "validate-input", spellcheck: "false", "aria-describedby": "validate-help" });
  const validateOut = h("div", { id: "validate-result", "aria-live": "polite" });
  const validate = h("section", { class: "panel", "aria-labelledby": "validate-title" },
    h("h2", { id: "validate-title", text: "Validate an event" }),
    h("label", { for: "validate-input", class: "inline" }, "A CloudEvent (structured JSON)"),
    validateBox,
    h("p", { id: "validate-help", class: "muted", text: "Checked as a publish would check it; nothing is written." }),
    h("div", { class: "actions" }, h("button", { type: "button", id: "validate-button", onclick: async () => {
      try {
        const r = await api("/v1/schemas/validate", { method: "POST", body: validateBox.value, contentType: "application/cloudevents+json" });
        validateOut.replaceChildren(r.valid
          ? h("p", { class: "badge ok", text: `valid${r.dataschema ? ` against ${r.dataschema}` : ""}` })
          : h("div", {}, h("p", { class: "error", text: "not valid:" }), h("ul", {}, r.errors.map((e) => h("li", { text: `${e.field || "/"}: ${e.message}` })))));
      } catch (e) { validateOut.replaceChildren(h("p", { class: "error", text: e.message })); }
    }, text: "Validate" })),
    validateOut);
  if (!type) {
    const rows = list.types.map((t) => h("tr", {}, td(h("a", { href: `#/schemas/${enc(t.event_type)}`, text: t.event_type })),
      td(t.mode), td(t.versions.join(", ")), num(t.latest ?? "")));
    setPage(ctx, "Schemas", rows.length
      ? table("Registered event types", ["Type", "Compatibility", "Versions", { label: "Latest", num: true }], rows, { id: "schemas-table" })
      : h("p", { class: "muted", text: "No schemas registered." }), validate);
    return;
  }
  const info = list.types.find((t) => t.event_type === type);
  if (!info) {
    setPage(ctx, `Schema ${type}`, h("p", { class: "error", text: `No schema is registered for ${type}.` }), validate);
    return;
  }
  const versions = info.versions;
  const pick = (id, v) => h("select", { id }, versions.map((x) => h("option", { value: x, selected: x === v, text: `version ${x}` })));
  const latest = versions[versions.length - 1];
  const left = pick("diff-left", Number(query.get("a")) || versions[Math.max(0, versions.length - 2)]);
  const right = pick("diff-right", Number(query.get("b")) || latest);
  const diffBox = h("div", { id: "schema-diff" });
  const showDiff = async () => {
    const [a, b] = await Promise.all([left.value, right.value].map((v) => api(`/v1/schemas/${enc(type)}/versions/${v}`)));
    const [l, r] = lineDiff(JSON.stringify(a.schema, null, 2).split("\n"), JSON.stringify(b.schema, null, 2).split("\n"));
    const side = (lines, label) => h("pre", { class: "json", tabindex: 0, "aria-label": label },
      lines.map(([k, t]) => h("span", { class: `line ${k}` }, `${k === "add" ? "+ " : k === "del" ? "- " : "  "}${t}`)));
    const changed = l.filter(([k]) => k === "del").length + r.filter(([k]) => k === "add").length;
    diffBox.replaceChildren(h("p", { class: "muted", text: `${changed} changed line(s) between version ${a.version} and ${b.version}.` }),
      h("div", { class: "diff" }, side(l, `version ${a.version}`), side(r, `version ${b.version}`)),
      h("p", {}, "URIs: ", h("code", { text: a.uri }), " · ", h("code", { text: b.uri })));
  };
  left.addEventListener("change", showDiff);
  right.addEventListener("change", showDiff);
  setPage(ctx, `Schema ${type}`,
    h("p", {}, `Compatibility mode: ${info.mode} · versions ${versions.join(", ")} · `, h("a", { href: "#/schemas", text: "all schemas" })),
    h("h2", { text: "Versions side by side" }),
    h("div", { class: "form" }, h("label", { for: "diff-left" }, "Left", left), h("label", { for: "diff-right" }, "Right", right)),
    diffBox, validate);
  const newest = await api(`/v1/schemas/${enc(type)}/versions/${latest}`);
  validateBox.value = JSON.stringify({ specversion: "1.0", id: "try-1", source: "/console", type, dataschema: newest.uri, data: {} }, null, 2);
  await showDiff();
}

// ---- start -----------------------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  app.key = "";
  app.who = null;
  stopLive();
  showLogin("Signed out.");
});
window.addEventListener("hashchange", route);
setInterval(tick, REFRESH_MS);
signIn();
