// Drives choreo's operator console in headless Chromium (Debian's chromium, through
// playwright-core) the way an operator would, and checks what it sees. Run by
// integration-tests/tests/console_real.rs against a coordinator on Apache Kafka:
//
//   node drive.js CONFIG.json
//
// CONFIG: {"url", "operator_token", "viewer_token", "shots" (a folder for screenshots),
// "sagas": {"stuck", "needs_operator": [..], "approve", "xss", "viewer_target"} (saga ids),
// "dead_letter": {"topic", "id", "saga"} (a dead letter whose redrive completes a step of
// `saga`)}.
// Prints one JSON line {"ok": true, "checked": [...]} and exits 0, or says what failed and
// exits 1 (with a screenshot of the moment, failure.png).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const {chromium} = require("playwright-core");

const WAIT = 60000;
const SCRIPT = "<script>alert(1)</script>";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const checked = [];
const problems = [];
let page;

function check(what, ok, detail) {
  if (!ok) throw new Error(what + (detail ? ": " + detail : ""));
  checked.push(what);
}

// A screenshot of the window, scrolled to the top or to `selector`.
async function shot(name, selector) {
  fs.mkdirSync(config.shots, {recursive: true});
  await page.evaluate((sel) => {
    const e = sel && document.querySelector(sel);
    if (e) e.scrollIntoView({block: "start"}); else window.scrollTo(0, 0);
  }, selector || null);
  await page.screenshot({path: path.join(config.shots, name + ".png")});
}

// Sets the console's filters (every other one cleared) and waits for the list to show `want`
// exactly (saga ids, in any order).
async function filter(values, want) {
  await page.click("#f-clear");
  for (const [id, value] of Object.entries(values)) {
    const el = page.locator("#" + id);
    if ((await el.evaluate((e) => e.tagName)) === "SELECT") await el.selectOption(String(value));
    else { await el.fill(String(value)); await el.dispatchEvent("change"); }
  }
  await page.waitForFunction((want) => {
    const ids = [...document.querySelectorAll("#rows tr[data-saga]")].map((r) => r.dataset.saga).sort();
    return JSON.stringify(ids) === JSON.stringify([...want].sort());
  }, want, {timeout: WAIT}).catch(async () => {
    const ids = await page.$$eval("#rows tr[data-saga]", (rows) => rows.map((r) => r.dataset.saga));
    throw new Error("the list with " + JSON.stringify(values) + " shows " + JSON.stringify(ids) + ", expected " + JSON.stringify(want));
  });
}

async function open(sagaId) {
  await page.click(`#rows tr[data-saga="${sagaId}"]`);
  await page.waitForFunction((id) => {
    const t = document.getElementById("saga-title");
    return t && t.textContent === id;
  }, sagaId, {timeout: WAIT});
}

async function waitStatus(status) {
  await page.waitForSelector(`#detail h2 .st[data-status="${status}"]`, {timeout: WAIT}).catch(async () => {
    const now = await page.$eval("#detail h2 .st", (e) => e.dataset.status).catch(() => "none");
    throw new Error("the open saga never showed " + status + " (it shows " + now + ")");
  });
}

// The confirmation dialog: fills the given fields, confirms.
async function confirm(fields) {
  await page.waitForSelector("#dialog[open]", {timeout: WAIT});
  for (const [sel, value] of Object.entries(fields || {})) {
    const el = page.locator(sel);
    if ((await el.evaluate((e) => e.tagName)) === "SELECT") await el.selectOption(value);
    else await el.fill(value);
  }
  await page.click("#dialog-ok");
}

async function useToken(token, role) {
  await page.fill("#token", token);
  await page.click("#token-form button[type=submit]");
  await page.waitForSelector(`#who .role-${role}`, {timeout: WAIT});
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "choreo-console-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHOREO_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: {width: 1280, height: 800},
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    page = await context.newPage();
    page.on("dialog", async (d) => { problems.push("a browser dialog opened: " + d.type() + " " + d.message()); await d.dismiss(); });
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    await run(config.sagas);
    check("no script from an event ran, no page error", problems.length === 0, problems.join("; "));
    console.log(JSON.stringify({ok: true, checked}));
  } catch (e) {
    if (page) await shot("failure").catch(() => {});
    console.error("console check failed: " + e.message);
    if (problems.length) console.error("also: " + problems.join("; "));
    console.error("checked before: " + checked.join(" | "));
    process.exitCode = 1;
  } finally {
    await context.close();
    fs.rmSync(profile, {recursive: true, force: true});
  }
}

async function run(s) {
  await page.goto(config.url);
  // No token yet: the console says it needs one.
  await page.waitForFunction(() => /token/.test(document.getElementById("list-msg").textContent), null, {timeout: WAIT});
  check("without a token the console asks for one", true);
  await useToken(config.operator_token, "operator");
  await page.waitForSelector("#rows tr[data-saga]", {timeout: WAIT});
  await page.waitForSelector("#live.live-up", {timeout: WAIT});
  check("live updates connected", true);
  await shot("console-list");

  // A stuck saga, found by filter: waiting on shipping, unchanged for 2 s.
  await filter({"f-waiting": "shipping", "f-stuck": "2s"}, [s.stuck]);
  check("the stuck saga is found by the waiting-on and stuck filters", true);
  await open(s.stuck);
  check("it waits on shipping", /shipping/.test(await page.textContent("#waiting-on")));
  await page.waitForSelector('[data-node="step:shipping"][data-state="running"]', {timeout: WAIT});
  await page.waitForSelector('[data-node="step:payment"][data-state="completed"]', {timeout: WAIT});
  check("the diagram marks shipping running and payment completed", true);
  await page.waitForSelector('tr.record[data-type="io.choreo.orders.ShipmentRequested"]', {timeout: WAIT});
  check("the timeline shows the emitted ShipmentRequested record", true);
  const deadline = await page.textContent(".left[data-at]");
  check("a deadline shows its time left", /\(in \d/.test(deadline), deadline);
  await shot("console-saga");
  await page.click('tr.record[data-type="io.choreo.orders.OrderPlaced"] summary');
  await page.click('tr.record[data-type="io.choreo.orders.ShipmentRequested"] summary');
  await shot("console-timeline", "#detail h3:last-of-type");

  // Abort it, with a confirmation and a reason; it compensates.
  await page.click('button[data-action="abort"]');
  await confirm({"#action-reason": "customer cancelled by phone"});
  await page.waitForFunction(() => /abort sent/.test(document.getElementById("saga-msg").textContent), null, {timeout: WAIT});
  await waitStatus("compensated");
  await page.waitForSelector('tr.record[data-type="io.choreo.orders.RefundPayment"]', {timeout: WAIT});
  await page.waitForSelector('tr.record[data-type="io.choreo.orders.ReleaseInventory"]', {timeout: WAIT});
  await page.waitForSelector('[data-node="compensated"].current', {timeout: WAIT});
  check("aborted, it compensates: refund and release emitted, the diagram at compensated", true);
  const commands = await page.$$eval("tr.record .kind", (k) => k.map((e) => e.textContent));
  check("the abort is in the timeline as a command record", commands.some((k) => k.startsWith("command")), commands.join(","));
  await shot("console-compensated");

  // A batch retry over a filter: every needs-operator saga of order v1.
  await filter({"f-definition": "order", "f-version": "1", "f-status": "needs_operator"}, s.needs_operator);
  await page.click("#batch-open");
  await confirm({"#batch-command": "retry", "#batch-step": "inventory"});
  await page.waitForSelector("#batch-count", {timeout: WAIT});
  const matched = await page.getAttribute("#batch-count", "data-matched");
  check("the batch says how many sagas it touches before it runs", matched === String(s.needs_operator.length), matched);
  await shot("console-batch");
  await page.click("#dialog-ok");
  await page.waitForFunction((n) => document.getElementById("batch-msg").textContent.startsWith("retry sent to " + n + " of " + n), s.needs_operator.length, {timeout: WAIT});
  await page.waitForFunction(() => document.querySelector('.count[data-status="needs_operator"] b').textContent === "0", null, {timeout: WAIT});
  await page.waitForSelector("#rows td.muted", {timeout: WAIT});
  check("the batch retry ran on each and they left needs operator", true);

  // Redrive a dead letter and see it handled: the payment it carries completes its step.
  const dl = config.dead_letter;
  await page.click("#tab-dlq");
  await page.waitForSelector(`#dlq-topics tr[data-topic="${dl.topic}"]`, {timeout: WAIT});
  await page.click(`#dlq-topics tr[data-topic="${dl.topic}"]`);
  await page.waitForSelector(`table.dlq tr[data-id="${dl.id}"]`, {timeout: WAIT});
  await page.click(`table.dlq tr[data-id="${dl.id}"] summary`);
  const reasonCell = await page.textContent(`table.dlq tr[data-id="${dl.id}"] td:nth-child(4)`);
  check("the dead letter shows its reason", /unknown_schema_id/.test(reasonCell), reasonCell);
  await shot("console-dlq");
  await page.click(`button[data-redrive="${dl.id}"]`);
  await page.waitForSelector("#redrive-count", {timeout: WAIT});
  const redriving = await page.getAttribute("#redrive-count", "data-matched");
  check("the redrive says how many records it republishes", redriving === "1", redriving);
  await confirm({"#redrive-note": "the payment schema is registered now"});
  await page.waitForFunction(() => /^redriven 1/.test(document.getElementById("dlq-msg").textContent), null, {timeout: WAIT});
  await page.waitForFunction((id) => {
    const r = document.querySelector(`table.dlq tr[data-id="${id}"] ul.redrives`);
    return r && /by alice/.test(r.textContent);
  }, dl.id, {timeout: WAIT});
  check("the dead letter shows it was redriven, by whom", true);
  await page.click("#tab-sagas");
  await filter({"f-search": dl.saga.split("/").pop()}, [dl.saga]);
  await open(dl.saga);
  await page.waitForSelector('[data-node="step:payment"][data-state="completed"]', {timeout: WAIT});
  check("redriven, the payment is handled: its step completed", true);

  // Approve a step that waits for a person.
  await filter({"f-search": s.approve.split("/").pop()}, [s.approve]);
  await open(s.approve);
  await page.waitForSelector('[data-node="step:approval"][data-state="running"]', {timeout: WAIT});
  await page.click('button[data-action="approve"]');
  await confirm({"#action-step": "approval", "#action-reason": "checked the address with the customer"});
  await waitStatus("completed");
  await page.waitForSelector('[data-node="step:approval"][data-state="completed"]', {timeout: WAIT});
  check("an approved step completes and the saga with it", true);

  // A field holding <script> shows as text.
  await filter({"f-search": s.xss.split("/").pop()}, [s.xss]);
  await open(s.xss);
  await page.waitForSelector("#abort-reason .value", {timeout: WAIT});
  const reason = await page.$eval("#abort-reason .value", (e) => e.textContent);
  check("the abort reason from the event shows as text", reason.includes(SCRIPT), reason);
  await page.waitForSelector('tr.record[data-type="io.choreo.orders.OrderPlaced"]', {timeout: WAIT});
  await page.click('tr.record[data-type="io.choreo.orders.OrderPlaced"] summary');
  const payload = await page.$eval('tr.record[data-type="io.choreo.orders.OrderPlaced"] pre.json', (e) => e.textContent);
  check("the payload's field shows as text", payload.includes('"shipping_address": "' + SCRIPT + '"'), payload);
  const scripts = await page.$$eval("script", (list) => list.map((e) => e.getAttribute("src") || "(inline)"));
  check("no script element but the console's own", JSON.stringify(scripts) === JSON.stringify(["/ui/app.js"]), JSON.stringify(scripts));
  const markup = await page.$$eval("#detail *", (list) => list.filter((e) => ["SCRIPT", "IMG", "IFRAME", "OBJECT"].includes(e.tagName)).length);
  check("nothing from an event became markup", markup === 0, String(markup));
  await shot("console-escaped", 'tr.record[data-type="io.choreo.orders.PaymentDeclined"]');

  // A viewer's token reads but cannot act.
  await useToken(config.viewer_token, "viewer");
  await filter({"f-search": s.viewer_target.split("/").pop()}, [s.viewer_target]);
  await open(s.viewer_target);
  const enabled = await page.$$eval("button[data-action]", (b) => b.filter((x) => !x.disabled).map((x) => x.dataset.action));
  check("a viewer is offered no action", enabled.length === 0, enabled.join(","));
  check("nor a batch", await page.$eval("#batch-open", (b) => b.disabled));
  const [def, id] = [s.viewer_target.split("/")[0], s.viewer_target.split("/").slice(1).join("/")];
  const forced = await page.evaluate(async ({def, id, token}) => {
    const r = await fetch("/api/sagas/" + encodeURIComponent(def) + "/" + encodeURIComponent(id) + "/commands", {
      method: "POST", headers: {"content-type": "application/json", authorization: "Bearer " + token},
      body: JSON.stringify({command: "abort", reason: "a viewer tries"})});
    return {status: r.status, body: await r.text()};
  }, {def, id, token: config.viewer_token});
  check("a viewer's command is refused by the API (403)", forced.status === 403, JSON.stringify(forced));
  await shot("console-viewer");
}

main();
