// Browser tests of the crmbus console: headless Debian Chromium, driven by playwright-core,
// against a real `crmbus serve` (target/debug/crmbus, or CRMBUS_BIN) on an ephemeral
// loopback port with a fresh data directory and real API keys. A support engineer's night:
// find the poisoned lead in the dead letters, read its error, redrive it, watch the dead
// letters empty and the lag drop; replay a subscription with a seek; and a key without the
// `dlq` scope is offered no redrive, which the API refuses anyway.
//
// Screenshots of every page at desktop and phone width go to target/console-screenshots/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.env.CRMBUS_BIN || join(repo, "target/debug/crmbus");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = join(repo, "target/console-screenshots");
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const WAIT = 20000;

const run = `${process.pid}${Date.now().toString(36)}`;
const TOPIC = `leads-${run}`;
const SUB = `lead-sync-${run}`;
const SCHEMA_TYPE = `com.acme.lead.scored.${run}`;
const POISON = "lead-7";

let dataDir, server, base, rootKey, supportKey, dlqKey, browser, page;
const pageErrors = [];
const consoleErrors = [];

/** Makes a key offline in the (stopped) server's data directory; answers the key. */
function makeKey(name, ...scopes) {
  const out = execFileSync(bin, ["keys", "create", name, ...scopes.flatMap((s) => ["--scope", s]), "--data-dir", dataDir],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const m = out.match(/crmbus_[A-Za-z0-9_-]+/);
  assert.ok(m, `keys create printed no key: ${out}`);
  return m[0];
}

async function api(path, { method = "GET", body, key = rootKey } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

async function ok(path, opts) {
  const r = await api(path, opts);
  assert.ok(r.status < 300, `${opts?.method || "GET"} ${path} answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body;
}

const lead = (subject, type, data) => ({ specversion: "1.0", id: `${subject}-${type}-${Math.random().toString(36).slice(2)}`, source: "/crm/leads", type, subject, data });

/** Pulls what the subscription has and acks it, except the poisoned lead, nacked with an error. */
async function work({ poison = true } = {}) {
  const r = await ok(`/v1/subscriptions/${SUB}/pull`, { method: "POST", body: { max_events: 100, wait_ms: 200 } });
  const bad = r.deliveries.filter((d) => poison && d.event.subject === POISON && d.event.type === "lead.converted");
  const good = r.deliveries.filter((d) => !bad.includes(d));
  if (good.length) await ok(`/v1/subscriptions/${SUB}/ack`, { method: "POST", body: { ack_ids: good.map((d) => d.ack_id) } });
  if (bad.length) {
    await ok(`/v1/subscriptions/${SUB}/nack`, { method: "POST", body: { ack_ids: bad.map((d) => d.ack_id), error: "ERP rejected lead-7: account acct-0 does not exist" } });
  }
  return r.deliveries.length;
}

async function until(what, fn, timeout = WAIT) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function screenshot(name) {
  // Every control has a name a screen reader can say (a label, an aria-label or its text).
  const unnamed = await page.$$eval("input, select, textarea, button", (els) => els
    .filter((e) => !(e.getAttribute("aria-label") || (e.labels && e.labels.length) || e.textContent.trim()))
    .map((e) => e.outerHTML.slice(0, 120)));
  assert.deepEqual(unnamed, [], `controls without a name on the ${name} page`);
  // Text contrast of at least 4.5:1 against the background it sits on (WCAG AA), for
  // every visible element holding text (disabled controls are exempt, as WCAG has it).
  const poor = await page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
      }
      return [255, 255, 255];
    };
    const out = [];
    for (const el of document.querySelectorAll("body *")) {
      if (el.closest("svg, dialog:not([open]), .visually-hidden, [hidden]") || el.disabled) continue;
      const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join("").trim();
      if (!text || !el.getClientRects().length) continue;
      const fg = lum(rgb(getComputedStyle(el).color));
      const bg = lum(background(el));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      if (ratio < 4.5) out.push(`${el.tagName.toLowerCase()} "${text.slice(0, 30)}": ${ratio.toFixed(2)}`);
    }
    return out;
  });
  assert.deepEqual(poor, [], `text below 4.5:1 contrast on the ${name} page`);
  // No value the script failed to render (this run's events hold no null).
  const text = await page.locator("main").innerText();
  assert.doesNotMatch(text, /\bnull\b|\bundefined\b|\[object Object\]|NaN/, `a stray value on the ${name} page`);
  for (const [size, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(viewport);
    await page.waitForTimeout(50);
    await page.screenshot({ path: join(shots, `${name}-${size}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

/** Opens a console route in a fresh load of the page (a query that changes each time, so
 *  even the route shown now is drawn anew) and waits until it is drawn. */
let visits = 0;
async function visit(hash) {
  await page.goto(`${base}/?visit=${++visits}${hash}`);
  await page.waitForFunction((h) => document.getElementById("main").dataset.route === h, hash, { timeout: WAIT });
}

async function signIn(key) {
  await page.goto(`${base}/`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Pages" }).waitFor();
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), "crmbus-console-"));
  rootKey = makeKey("root", "admin");
  supportKey = makeKey("support-night", `subscribe:${TOPIC}`);
  dlqKey = makeKey("dlq-oncall", `dlq:${TOPIC}`);
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], { stdio: ["ignore", "pipe", "pipe"] });
  base = await new Promise((resolveUrl, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`crmbus serve did not say where it listens: ${seen}`)), 30000);
    const look = (chunk) => {
      seen += chunk;
      const m = seen.match(/listening on (https?:\/\/\S+)/);
      if (m) { clearTimeout(timer); resolveUrl(m[1]); }
    };
    server.stdout.on("data", look);
    server.stderr.on("data", look);
    server.on("exit", (code) => reject(new Error(`crmbus serve exited (${code}): ${seen}`)));
  });

  // A topic of leads, a pull subscription that holds a key whose event exhausted its one
  // attempt, and a worker that fails the poisoned lead.
  await ok("/v1/topics", { method: "POST", body: { name: TOPIC, partitions: 2 } });
  await ok(`/v1/topics/${TOPIC}/subscriptions`, { method: "POST", body: { name: SUB, retry: { max_attempts: 1 }, on_exhausted: "hold" } });
  const events = [];
  for (let i = 1; i <= 10; i++) events.push(lead(`lead-${i}`, "lead.created", { lead_id: `lead-${i}`, name: `Buyer ${i}`, email: `buyer${i}@example.com` }));
  events.push(lead(POISON, "lead.converted", { lead_id: POISON, account_id: "acct-0", deal_id: "deal-77" }));
  events.push(lead(POISON, "lead.assigned", { lead_id: POISON, owner: "sam" }));
  events.push(lead("lead-3", "lead.converted", { lead_id: "lead-3", account_id: "acct-12", deal_id: "deal-31" }));
  for (const e of events) await ok(`/v1/topics/${TOPIC}/events`, { method: "POST", body: e });
  await until("the poisoned lead in the DLQ", async () => {
    await work();
    const s = await ok(`/v1/subscriptions/${SUB}`);
    return s.status.dlq_size === 1 && s.status.in_flight === 0 && s.status.lag > 0;
  });

  // Two versions of a schema for the schema page.
  const v1 = { type: "object", properties: { lead_id: { type: "string" }, score: { type: "integer" } }, required: ["lead_id"], additionalProperties: false };
  const v2 = { ...v1, properties: { ...v1.properties, reason: { type: "string" } } };
  await ok(`/v1/schemas/${SCHEMA_TYPE}/versions`, { method: "POST", body: { schema: v1 } });
  await ok(`/v1/schemas/${SCHEMA_TYPE}/versions`, { method: "POST", body: { schema: v2 } });

  browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  page = await browser.newPage({ viewport: DESKTOP });
  // Any script error fails the run (the last test) rather than passing unseen.
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // A refused request (403), a missing asset (404) or a blocked script or style shows up
  // here; the 401s of signing in with a bad key are expected.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().includes("status of 401")) consoleErrors.push(m.text()); });
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("the console is served from the binary and asks for a key", async () => {
  await page.goto(`${base}/`);
  await page.getByLabel("API key").waitFor();
  await screenshot("sign-in");
  await page.getByLabel("API key").fill("crmbus_0000_not-a-key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "refused" }).waitFor();
  await signIn(rootKey);
});

test("the overview shows topics and the subscription's lag, parked keys and dead letters", async () => {
  await visit(`#/`);
  const row = page.locator(`tr[data-subscription="${SUB}"]`);
  await row.waitFor();
  assert.equal(await row.locator('td[data-field="dlq"]').innerText(), "1");
  assert.notEqual(await row.locator('td[data-field="lag"]').innerText(), "0");
  assert.equal(await page.locator(`tr[data-topic="${TOPIC}"] td[data-field="events"]`).innerText(), "13");
  // Flow analytics from /metrics: events by type, and the latency of acked deliveries.
  const created = page.locator(`tr[data-flow="${TOPIC}/lead.created"] td`);
  await created.first().waitFor();
  assert.equal(await created.nth(2).innerText(), "10");
  const latency = page.locator(`tr[data-latency="${SUB}"] td`);
  await latency.first().waitFor();
  assert.ok(Number((await latency.nth(2).innerText()).replace(/,/g, "")) >= 10);
  // Mean and p99 (a bucket bound) are durations.
  assert.match(await latency.nth(3).innerText(), /^\d+(\.\d+)? m?s$/);
  assert.match(await latency.nth(4).innerText(), /^\d+(\.\d+)? m?s$/);
  await screenshot("overview");
});

test("a support engineer finds the poisoned lead, reads its error, redrives it, and watches the DLQ empty and the lag drop", async () => {
  await visit(`#/`);
  await page.locator(`tr[data-subscription="${SUB}"] td[data-field="dlq"] a`).click();
  await page.locator("#dlq-table").waitFor();
  const row = page.locator("#dlq-table tbody tr", { hasText: POISON });
  assert.equal(await row.count(), 1);
  assert.match(await row.innerText(), /lead\.converted/);
  await row.getByRole("button", { name: /Open/ }).click();
  const entry = page.locator("#dlq-entry");
  await entry.waitFor();
  assert.match(await entry.locator("#dlq-errors").innerText(), /ERP rejected lead-7: account acct-0 does not exist/);
  assert.match(await entry.locator("pre.json").innerText(), /deal-77/);
  const before = await ok(`/v1/subscriptions/${SUB}`);
  assert.ok(before.status.lag > 0, "the held key keeps the lag up");
  await screenshot("dead-letters");

  // Redrive asks first; cancelling does nothing.
  await page.locator("#redrive-one").click();
  await page.locator("#confirm").waitFor({ state: "visible" });
  await page.locator("#confirm-cancel").click();
  assert.equal((await ok(`/v1/subscriptions/${SUB}`)).status.dlq_size, 1);
  await page.locator("#redrive-one").click();
  await page.locator("#confirm-ok").click();
  await page.locator("#status", { hasText: "Redrove 1 dead letter" }).waitFor();

  // The ERP was fixed: the worker now takes lead-7, and the key's next event flows.
  await until("the redriven lead and its key's next event acked", async () => {
    await work({ poison: false });
    const s = await ok(`/v1/subscriptions/${SUB}`);
    return s.status.dlq_size === 0 && s.status.lag === 0;
  });
  // The page sees it on its own refresh.
  await page.locator('#dlq-summary[data-dlq="0"][data-lag="0"]').waitFor({ timeout: WAIT });
  await page.locator("#dlq-empty").waitFor();
  const audit = await page.locator("#audit-table").innerText();
  assert.match(audit, /root/);
  assert.match(audit, /redrive/);
});

test("a subscription is sought to the earliest event after a preview of what that replays", async () => {
  await visit(`#/subscriptions/${SUB}`);
  await page.locator("#sub-lag").waitFor();
  assert.equal(await page.locator("#sub-lag").innerText(), "0");
  await page.getByLabel("Move the cursor to").selectOption("earliest");
  await page.getByRole("button", { name: "Preview" }).click();
  await page.locator("#seek-preview", { hasText: "13 events are ahead" }).waitFor();
  await page.locator("#seek-button").click();
  await page.locator("#confirm-ok").click();
  await page.locator("#status", { hasText: "lag 13" }).waitFor();
  await page.locator("#sub-lag", { hasText: "13" }).waitFor();
  assert.equal((await ok(`/v1/subscriptions/${SUB}`)).status.lag, 13);
  await screenshot("subscription");
  // Back to the end, so the lead pages below start quiet.
  await ok(`/v1/subscriptions/${SUB}/seek`, { method: "POST", body: { to: "latest" } });
});

test("a parked key is shown with the event it waits on", async () => {
  await ok(`/v1/topics/${TOPIC}/events`, { method: "POST", body: lead(POISON, "lead.converted", { lead_id: POISON, account_id: "acct-0" }) });
  await ok(`/v1/topics/${TOPIC}/events`, { method: "POST", body: lead(POISON, "lead.updated", { lead_id: POISON }) });
  await until("the key held again", async () => {
    await work();
    return (await ok(`/v1/subscriptions/${SUB}`)).status.parked_keys === 1;
  });
  await visit(`#/subscriptions/${SUB}`);
  const parked = page.locator("#parked-table tbody tr", { hasText: POISON });
  await parked.waitFor();
  assert.match(await parked.innerText(), /a dead letter/);
  await parked.getByRole("link", { name: /^\d+-\d+$/ }).click();
  await page.locator("#event-view").waitFor();
  assert.match(await page.locator("#event-view").innerText(), /lead\.converted/);
});

test("a topic's events are browsed, filtered, viewed and tailed live", async () => {
  await visit(`#/topics/${TOPIC}`);
  await page.locator("#events-table").waitFor();
  await page.getByLabel("Type is").fill("lead.converted");
  const rows = page.locator("#events-table tbody tr");
  await until("the filter", async () => (await rows.count()) === 3);
  await rows.first().getByRole("button", { name: /View event/ }).click();
  assert.match(await page.locator("#event-view").innerText(), /account_id/);
  await page.getByLabel("Type is").fill("");
  // Paging over both partitions, four at a time, reaches every event exactly once.
  const total = (await ok(`/v1/topics/${TOPIC}`)).events;
  await page.getByLabel("At most").fill("4");
  await page.getByRole("button", { name: "Load events" }).click();
  await until("the first page of four", async () => (await rows.count()) === 4);
  for (let i = 0; i < 20 && await page.locator("#browse-more").count(); i++) {
    const before = await rows.count();
    await page.locator("#browse-more").click();
    await until("the next page", async () => (await rows.count()) > before || (await page.locator("#browse-more").count()) === 0);
  }
  assert.equal(await page.locator("#browse-more").count(), 0, "Load more never ran out");
  assert.equal(await rows.count(), total);
  const offsets = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.offset));
  assert.equal(new Set(offsets).size, total, "an event was listed twice");
  await page.locator("#live-toggle").click();
  await page.locator("#live-toggle", { hasText: "Stop live tail" }).waitFor();
  // The stream starts at the end: publish until one arrives (the first may race its start).
  await until("a live event", async () => {
    await ok(`/v1/topics/${TOPIC}/events`, { method: "POST", body: lead("lead-99", "lead.created", { lead_id: "lead-99", name: "Live Buyer" }) });
    return (await page.locator("#live-tail li", { hasText: "lead-99" }).count()) > 0;
  });
  await screenshot("topic");
  await page.locator("#live-toggle").click();
});

test("the schema page shows versions side by side and validates a pasted event", async () => {
  await visit(`#/schemas`);
  await page.locator("#schemas-table").getByRole("link", { name: SCHEMA_TYPE }).waitFor();
  await screenshot("schemas");
  await page.locator("#schemas-table").getByRole("link", { name: SCHEMA_TYPE }).click();
  await page.locator("#schema-diff .line.add").first().waitFor();
  assert.match(await page.locator("#schema-diff .line.add").allInnerTexts().then((t) => t.join("\n")), /reason/);
  const { uri } = await ok(`/v1/schemas/${SCHEMA_TYPE}/versions/2`);
  await page.getByLabel("A CloudEvent (structured JSON)").fill(JSON.stringify({
    specversion: "1.0", id: "v-1", source: "/console", type: SCHEMA_TYPE, dataschema: uri, data: { score: "high" },
  }));
  await page.locator("#validate-button").click();
  await page.locator("#validate-result", { hasText: "not valid" }).waitFor();
  assert.match(await page.locator("#validate-result").innerText(), /lead_id|score/);
  await screenshot("schema-versions");
});

test("a key without the dlq scope sees no redrive button, and the API refuses a redrive anyway", async () => {
  await page.locator("#sign-out").click();
  await signIn(supportKey);
  await visit(`#/dlq/${SUB}`);
  await page.locator("#dlq-forbidden").waitFor();
  assert.equal(await page.locator("#redrive-one, #redrive-selected, #redrive-filter, #discard-one").count(), 0);
  assert.equal(await page.getByRole("button", { name: /redrive/i }).count(), 0);
  await screenshot("dead-letters-without-scope");
  const dlq = await ok(`/v1/subscriptions/${SUB}/dlq`);
  assert.equal(dlq.entries.length, 1);
  const refused = await api(`/v1/subscriptions/${SUB}/dlq/redrive`, { method: "POST", key: supportKey, body: { entries: [dlq.entries[0].id] } });
  assert.equal(refused.status, 403);
  assert.equal((await ok(`/v1/subscriptions/${SUB}`)).status.dlq_size, 1, "the refused redrive changed nothing");
  // Its own topic's subscription page is still there to read.
  await visit(`#/subscriptions/${SUB}`);
  await page.locator("#sub-lag").waitFor();
});

test("an on-call key with only the dlq scope discards the dead letter from the keyboard, and the audit log names it", async () => {
  await page.locator("#sign-out").click();
  await signIn(dlqKey);
  await visit(`#/dlq/${SUB}`);
  const open = page.locator("#dlq-table tbody tr", { hasText: POISON }).getByRole("button", { name: /Open/ });
  await open.focus();
  await page.keyboard.press("Enter");
  await page.locator("#discard-one").focus();
  await page.keyboard.press("Enter");
  // The dialog opens with the harmless choice focused; Tab reaches the confirmation.
  await page.locator("#confirm[open]").waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "confirm-cancel");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "confirm-ok");
  await page.keyboard.press("Enter");
  await page.locator("#status", { hasText: "Discarded" }).waitFor();
  await page.locator("#dlq-empty").waitFor();
  assert.equal((await ok(`/v1/subscriptions/${SUB}`)).status.dlq_size, 0);
  const audit = await page.locator("#audit-table tbody tr").first().innerText();
  assert.match(audit, /dlq-oncall/);
  assert.match(audit, /discard/);
});

test("no page raised a script error or logged a refused request or blocked asset", () => {
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});
