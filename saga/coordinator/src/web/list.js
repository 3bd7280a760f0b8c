// The saga list: counts per status, filters, paging by cursor, live updates, and batch actions
// over the current filter (dry run first: how many sagas, which; then the run on that many).
"use strict";

import {$, STATUSES, ago, api, badge, confirmDialog, el, field, post, when} from "./dom.js";

let hooks = {onFilter: () => {}, onOpen: () => {}};
let definitions = [];          // GET /api/definitions
let cursors = [];              // the `before` of each page shown so far (first page: none)
let page = {sagas: [], total: 0, next: null};
let selected = null;           // saga id shown in the detail pane
let lastCounts = null;
let timer = null;

const FILTERS = {
  definition: "f-definition", version: "f-version", status: "f-status", waiting_on: "f-waiting",
  stuck: "f-stuck", min_age: "f-min-age", max_age: "f-max-age", search: "f-search",
};

// The filters as query parameters (with the page's cursor and size when `paged`).
export function query(paged) {
  const q = new URLSearchParams();
  for (const [k, id] of Object.entries(FILTERS)) {
    const v = $(id).value.trim();
    if (v) q.set(k, v);
  }
  if (paged) {
    q.set("limit", $("f-limit").value);
    const before = cursors[cursors.length - 1];
    if (before) q.set("before", before);
  }
  return q;
}

function filterObject() {
  const f = {};
  for (const [k, v] of query(false)) f[k] = v;
  return f;
}

export function init(h) {
  hooks = h;
  for (const s of STATUSES) $("f-status").append(el("option", {value: s}, s.replace("_", " ")));
  for (const id of [...Object.values(FILTERS), "f-limit"]) {
    $(id).addEventListener("change", () => { cursors = []; reload(); hooks.onFilter(); });
  }
  $("f-definition").addEventListener("change", fillVersionsAndSteps);
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("f-clear").addEventListener("click", () => {
    for (const id of Object.values(FILTERS)) $(id).value = "";
    cursors = []; reload(); hooks.onFilter();
  });
  $("page-first").addEventListener("click", () => { cursors = []; reload(); });
  $("page-next").addEventListener("click", () => { if (page.next) { cursors.push(page.next); reload(); } });
  $("batch-open").addEventListener("click", batch);
}

export async function loadDefinitions() {
  try {
    definitions = (await api("/api/definitions")).definitions;
  } catch (_) { definitions = []; }
  const sel = $("f-definition");
  const current = sel.value;
  sel.replaceChildren(el("option", {value: ""}, "any"));
  for (const name of [...new Set(definitions.map((d) => d.name))]) sel.append(el("option", {value: name}, name));
  sel.value = current;
  fillVersionsAndSteps();
}

function fillVersionsAndSteps() {
  const name = $("f-definition").value;
  const versions = definitions.filter((d) => !name || d.name === name);
  const sel = $("f-version");
  const current = sel.value;
  sel.replaceChildren(el("option", {value: ""}, "any"));
  for (const v of [...new Set(versions.map((d) => d.version))].sort((a, b) => a - b)) sel.append(el("option", {value: v}, "v" + v));
  sel.value = [...sel.options].some((o) => o.value === current) ? current : "";
  $("step-names").replaceChildren(...[...new Set(versions.flatMap((d) => d.steps))].map((s) => el("option", {value: s})));
}

export function stepsOf(definition) {
  return [...new Set(definitions.filter((d) => !definition || d.name === definition).flatMap((d) => d.steps))];
}

let asked = 0;

export async function reload() {
  clearTimeout(timer);
  const mine = ++asked;
  try {
    const data = await api("/api/sagas?" + query(true).toString());
    // An answer to an older request (the filters changed meanwhile) is dropped.
    if (mine !== asked) return;
    page = {sagas: data.sagas, total: data.total, next: data.next};
    $("list-msg").textContent = "";
    $("list-msg").className = "msg";
    renderCounts(data);
    renderRows();
  } catch (e) {
    if (mine !== asked) return;
    $("list-msg").textContent = e.message;
    $("list-msg").className = "msg err";
  }
  // Filters on age change their answer as time passes, without any saga changing.
  const timed = ["f-stuck", "f-min-age", "f-max-age"].some((id) => $(id).value.trim());
  timer = setTimeout(reload, timed ? 10000 : 60000);
}

function renderCounts(data) {
  lastCounts = data;
  const def = $("f-definition").value;
  const counts = def ? (data.counts_by_definition[def] || {}) : data.counts;
  const box = $("counts");
  box.replaceChildren();
  for (const s of STATUSES) {
    box.append(el("button", {
      type: "button", class: "count" + ($("f-status").value === s ? " active" : ""), "data-status": s,
      title: "show only " + s.replace("_", " "),
      onclick: () => { $("f-status").value = $("f-status").value === s ? "" : s; cursors = []; reload(); hooks.onFilter(); },
    }, el("b", {}, counts[s] || 0), badge(s)));
  }
  const scope = def ? "of " + def : "in all";
  box.append(el("span", {class: "muted total"}, Object.values(counts).reduce((a, b) => a + b, 0) + " sagas " + scope));
}

function renderRows() {
  const rows = $("rows");
  rows.replaceChildren();
  const now = Date.now();
  for (const s of page.sagas) rows.append(row(s, now));
  if (!page.sagas.length) rows.append(el("tr", {}, el("td", {colspan: 5, class: "muted"}, "no saga matches")));
  const first = (cursors.length ? "page " + (cursors.length + 1) : "newest");
  $("matching").textContent = page.total + " saga" + (page.total === 1 ? "" : "s") + " match";
  $("page-info").textContent = first + " · " + page.sagas.length + " shown of " + page.total;
  $("page-next").disabled = !page.next;
  $("page-first").disabled = cursors.length === 0;
  const viewer = document.body.dataset.role === "viewer";
  $("batch-open").disabled = page.total === 0 || viewer;
  $("batch-open").title = viewer ? "your token is a viewer's: it may not act" : "one command to every saga the filter matches, after a dry run";
}

function row(s, now) {
  return el("tr", {
    class: selected === s.saga_id ? "selected" : "", "data-saga": s.saga_id,
    onclick: () => open(s),
  },
  el("td", {title: s.saga_id}, s.saga_id), el("td", {}, badge(s.status)), el("td", {}, "v" + s.version),
  el("td", {title: when(s.created_at)}, ago(s.created_at, now)),
  el("td", {title: when(s.updated_at)}, ago(s.updated_at, now) + " ago"));
}

function open(s) {
  selected = s.saga_id;
  for (const tr of $("rows").querySelectorAll("tr")) tr.classList.toggle("selected", tr.dataset.saga === selected);
  hooks.onOpen(s.definition, s.correlation_id);
}

// A live message: counts, and the changed sagas put in place (the first page also takes the
// new ones that match); `reset` reloads the page.
export function onLive(m) {
  if (m.reset) { reload(); return; }
  if (lastCounts) renderCounts(Object.assign({}, lastCounts, {counts: m.counts, counts_by_definition: m.counts_by_definition}));
  if (!m.changed.length && !m.left.length) return;
  const byId = new Map(page.sagas.map((s) => [s.saga_id, s]));
  for (const id of m.left) {
    if (byId.delete(id)) page.total = Math.max(0, page.total - 1);
  }
  const limit = Number($("f-limit").value);
  for (const s of m.changed) {
    if (byId.has(s.saga_id)) byId.set(s.saga_id, s);
    else if (cursors.length === 0) { byId.set(s.saga_id, s); page.total += 1; }
  }
  const order = (a, b) => b.created_at - a.created_at || (a.saga_id < b.saga_id ? -1 : 1);
  const sagas = [...byId.values()].sort(order);
  if (cursors.length === 0 && sagas.length > limit) {
    const last = sagas[limit - 1];
    page.next = last.created_at + ":" + last.saga_id;
  }
  page.sagas = sagas.slice(0, limit);
  renderRows();
}

// "Retry every needs-operator saga of order v1": the command over the current filter, after a
// dry run that says how many sagas (and which) it goes to.
async function batch() {
  const filter = filterObject();
  const command = el("select", {id: "batch-command"},
    ...["retry", "skip", "resume", "abort", "approve", "reject"].map((c) => el("option", {value: c}, c)));
  const step = el("input", {id: "batch-step", list: "step-names", placeholder: "step"});
  const reason = el("textarea", {id: "batch-reason", rows: 2, placeholder: "recorded in each saga's timeline"});
  const described = Object.entries(filter).map(([k, v]) => k + " = " + v).join(", ") || "no filter: every saga";
  const needsStep = () => ["retry", "skip", "approve", "reject"].includes(command.value);
  const needsReason = () => ["abort", "approve", "reject"].includes(command.value);
  const body = () => {
    const c = {command: command.value};
    if (needsStep()) c.step = step.value.trim();
    if (needsReason()) c.reason = reason.value.trim();
    return c;
  };
  const preview = await confirmDialog({
    title: "Act on every matching saga",
    body: [el("p", {}, "Filter: ", el("code", {}, described)), field("command", command), field("step", step), field("reason", reason)],
    ok: "Count the sagas…",
    check: () => (needsStep() && !step.value.trim() ? "name the step" : needsReason() && !reason.value.trim() ? command.value + " needs a reason" : null),
    run: async () => ({command: body(), answer: await post("/api/sagas/batch", {filter, command: body(), dry_run: true})}),
  });
  if (!preview) return;
  const {answer} = preview;
  if (answer.matched === 0) { say("nothing matches the filter: no command sent", "msg"); return; }
  const shown = answer.saga_ids.slice(0, 20);
  const done = await confirmDialog({
    title: "Send " + preview.command.command + " to " + answer.matched + " saga" + (answer.matched === 1 ? "" : "s") + "?",
    body: [
      el("p", {id: "batch-count", "data-matched": answer.matched}, "This ", el("b", {}, preview.command.command),
        preview.command.step ? " of step " + preview.command.step : "", " goes to ", el("b", {}, answer.matched),
        " saga" + (answer.matched === 1 ? "" : "s") + ", each through the commands topic:"),
      el("ul", {class: "ids"}, ...shown.map((id) => el("li", {}, id)),
        answer.matched > shown.length ? el("li", {class: "muted"}, "… and " + (answer.matched - shown.length) + " more") : null),
    ],
    ok: "Send to " + answer.matched,
    danger: ["abort", "reject", "skip"].includes(preview.command.command),
    run: () => post("/api/sagas/batch", {filter, command: preview.command, expect: answer.matched}),
  });
  if (!done) return;
  let text = preview.command.command + " sent to " + done.published + " of " + answer.matched + " saga(s)";
  for (const r of done.refused) text += "; not sent to " + r.saga_id + ": " + r.error;
  say(text, done.refused.length ? "msg err" : "msg ok");
  reload();
}

function say(text, cls) {
  $("batch-msg").textContent = text;
  $("batch-msg").className = cls;
}
