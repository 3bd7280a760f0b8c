// One saga: status, what it waits on, actions (each after a confirmation), its definition's
// diagram with this saga's position marked, steps with their state and data, deadlines with the
// time left, and the timeline merged with the saga's records read back from Kafka (every input,
// emitted event and operator command with its payload).
"use strict";

import {$, api, badge, confirmDialog, el, field, json, post, sagaPath, short, when} from "./dom.js";
import {draw} from "./graph.js";

let hooks = {session: {role: null}, onChange: () => {}};
let current = null;        // {definition, id}
let state = null;          // the saga's state, as last fetched
let records = null;        // its records, as last fetched
let graphs = new Map();    // "name/version" → graph
let note = {saga: null, cls: "msg", text: ""};
let reloadTimer = null;
let recordsTimer = null;
let recordsAt = 0;

export function init(h) { hooks = h; }

export function open(definition, id) {
  current = {definition, id};
  state = null;
  records = null;
  refresh();
}

export function refresh() {
  if (current) load(true);
}

// A live message naming this saga (or a reset): load it again at once, and its records at most
// every 2 s — but always once more after the last change, so that the records of a burst of
// changes (an abort, then compensating, then compensated) are all shown in the end.
export function onLive(m) {
  if (!current || !state) return;
  if (m.reset || m.left.includes(state.saga_id) || m.changed.some((s) => s.saga_id === state.saga_id)) {
    clearTimeout(reloadTimer);
    clearTimeout(recordsTimer);
    const due = recordsAt + 2000 - Date.now();
    if (due <= 100) {
      reloadTimer = setTimeout(() => load(true), 100);
    } else {
      reloadTimer = setTimeout(() => load(false), 100);
      recordsTimer = setTimeout(() => load(true), due);
    }
  }
}

async function graphOf(s) {
  const key = s.definition + "/" + s.version;
  if (!graphs.has(key)) {
    try {
      graphs.set(key, await api("/api/definitions/" + encodeURIComponent(s.definition) + "/" + s.version));
    } catch (_) { return null; }
  }
  return graphs.get(key);
}

async function load(withRecords) {
  const {definition, id} = current;
  let s;
  try {
    s = await api(sagaPath(definition, id));
  } catch (e) {
    if (current && current.id === id) {
      $("detail").replaceChildren(el("h2", {}, definition + "/" + id), el("p", {class: "msg err"}, e.message));
    }
    return;
  }
  if (!current || current.id !== id || current.definition !== definition) return;
  state = s;
  if (withRecords || !records) {
    recordsAt = Date.now();
    try {
      records = await api(sagaPath(definition, id) + "/events");
    } catch (e) {
      records = {error: e.message, events: []};
    }
  }
  if (!current || current.id !== id) return;
  render(s, await graphOf(s), records);
}

function say(cls, text) {
  note = {saga: state && state.saga_id, cls, text};
  const m = $("saga-msg");
  if (m) { m.className = cls; m.textContent = text; }
}

// Every action: a dialog that says what it does, asks what it needs, then sends it.
function action(name, label, {step, reason, danger, explain, steps}) {
  const s = state;
  const stepSel = el("select", {id: "action-step"}, ...(steps || s.steps.map((st) => st.name)).map((n) => el("option", {value: n}, n)));
  const why = el("textarea", {id: "action-reason", rows: 3, placeholder: "recorded in the saga's timeline"});
  return el("button", {
    type: "button", class: danger ? "danger" : "act", "data-action": name, disabled: hooks.session.role === "viewer" || null,
    title: hooks.session.role === "viewer" ? "your token is a viewer's: it may not act" : explain,
    onclick: async () => {
      const body = [el("p", {}, explain)];
      if (step) body.push(field("step", stepSel));
      if (reason) body.push(field("reason", why));
      const sent = await confirmDialog({
        title: label + " " + s.saga_id + "?",
        body, danger, ok: label,
        check: () => (reason && !why.value.trim() ? label.toLowerCase() + " needs a reason" : null),
        run: () => {
          const command = {command: name};
          if (step) command.step = stepSel.value;
          if (reason) command.reason = why.value.trim();
          return post(sagaPath(s.definition, s.correlation_id) + "/commands", command);
        },
      });
      if (sent) {
        say("msg ok", name + " sent (command " + sent.command_id + "); its effect shows in the timeline once applied");
        hooks.onChange();
      }
    },
  }, label + "…");
}

function actions(s) {
  const running = s.steps.filter((st) => st.status === "running").map((st) => st.name);
  const bar = el("div", {class: "actions"},
    action("abort", "Abort", {reason: true, danger: true, explain: "Abort the saga: its completed steps are compensated (in reverse order), steps in flight are awaited."}),
    action("retry", "Retry", {step: true, explain: "Emit the step's stuck or unacknowledged compensation again (or, for a step whose outcome is unknown, compensate it anyway), with a fresh retry budget."}),
    action("skip", "Skip", {step: true, danger: true, explain: "Running: count the step as done without its success event. Compensating or needing an operator: count its compensation as done (handled by hand)."}),
    action("resume", "Resume", {explain: "Leave needs operator: stuck compensations wait for their acknowledgement again."}),
    action("approve", "Approve", {step: true, reason: true, steps: running.length ? running : undefined, explain: "Complete a started step as its success event would (an approval by a person); the saga goes on."}),
    action("reject", "Reject", {step: true, reason: true, danger: true, steps: running.length ? running : undefined, explain: "Fail a started step as its failure event would: the saga aborts and compensates."}));
  if (hooks.session.role === "viewer") bar.append(el("span", {class: "muted"}, "read only: a viewer's token may not act"));
  return bar;
}

function compensationText(c) {
  if (!c) return "";
  switch (c.state) {
    case "not_started": return "";
    case "emitted": return "emitted, awaiting ack (attempt " + c.attempts + ")";
    case "done": return "done";
    case "acknowledged": return "acknowledged " + when(c.at);
    case "stuck": return "STUCK after " + c.attempts + " attempts: " + c.reason;
    case "skipped": return "skipped by an operator";
    default: return c.state;
  }
}

function steps(s) {
  const body = el("tbody");
  for (const st of s.steps) {
    body.append(el("tr", {"data-step": st.name, "data-state": st.status},
      el("td", {}, st.name, st.late ? " (late)" : ""),
      el("td", {}, el("span", {class: "step step-" + st.status}, st.status)),
      el("td", {}, when(st.started_at)), el("td", {}, when(st.finished_at)),
      el("td", {class: "comp"}, compensationText(st.compensation), st.needs_operator ? el("div", {class: "err"}, st.needs_operator) : ""),
      el("td", {class: "data"}, st.data ? el("code", {}, JSON.stringify(st.data)) : "")));
  }
  return el("table", {class: "steps"},
    el("thead", {}, el("tr", {}, ...["step", "status", "started", "finished", "compensation", "data"].map((h) => el("th", {}, h)))), body);
}

function deadlines(s) {
  const ul = el("ul", {class: "deadlines"});
  for (const d of [...s.deadlines].sort((a, b) => a.at - b.at)) {
    const what = d.kind.kind === "saga" ? "the saga's deadline" : (d.kind.kind === "compensation_ack" ? "acknowledgement of " : "step ") + d.kind.step;
    ul.append(el("li", {}, what + " at " + when(d.at) + " ", el("b", {class: "left", "data-at": d.at}, left(d.at))));
  }
  if (!s.deadlines.length) ul.append(el("li", {class: "muted"}, "none pending"));
  return ul;
}

function left(at) {
  const ms = at - Date.now();
  if (ms < 0) return "(overdue by " + Math.round(-ms / 1000) + "s)";
  const s = Math.round(ms / 1000);
  return "(in " + (s >= 3600 ? Math.floor(s / 3600) + "h" : "") + (s >= 60 ? Math.floor(s / 60) % 60 + "m" : "") + (s % 60) + "s)";
}

// Every second: the time left of each deadline shown.
export function tick() {
  for (const b of document.querySelectorAll(".left[data-at]")) b.textContent = left(Number(b.dataset.at));
}

// The timeline entries (text, from the state) and the records (payloads, from Kafka), by time.
function timeline(s, graph, recs) {
  const emitted = new Set();
  if (graph) {
    for (const st of graph.steps) {
      if (st.emits_on_start) emitted.add(st.emits_on_start);
      if (st.compensation) emitted.add(st.compensation.event);
    }
    if (graph.on_complete) emitted.add(graph.on_complete);
    if (graph.on_abort) emitted.add(graph.on_abort);
  }
  // A record whose event id a timeline entry names joins that entry (its payload under the
  // entry's text); the others (commands, records the timeline never kept) stand on their own.
  const records = recs.events || [];
  const joined = new Set();
  const items = s.timeline.entries.map((t) => {
    const r = records.find((r) => r.id && r.id.length >= 8 && !joined.has(r) && t.what.includes(r.id));
    if (r) joined.add(r);
    return {at: t.at, entry: t, record: r};
  });
  for (const r of records) if (!joined.has(r)) items.push({at: r.timestamp_ms, record: r});
  items.sort((a, b) => (a.at - b.at) || (a.entry ? -1 : 1));
  const details = (r) => el("details", {class: "payload"},
    el("summary", {}, r.kind === "command" ? "command " + r.type + (r.source ? " by " + r.source : "") : short(r.type) + " payload"),
    el("div", {class: "meta muted"}, r.topic + "/" + r.partition + " @" + r.offset,
      r.id ? " · id " + r.id : "", r.source && r.kind !== "command" ? " · source " + r.source : "",
      r.causation_id ? " · caused by " + r.causation_id : "", r.time ? " · time " + r.time : ""),
    r.payload !== null && r.payload !== undefined ? json(r.payload) : el("p", {class: "err"}, r.payload_error || "no payload"));
  const body = el("tbody");
  for (const it of items.reverse()) {
    const r = it.record;
    if (it.entry) {
      body.append(el("tr", {class: "entry kind-" + it.entry.kind + (r ? " record" : ""), "data-type": r ? r.type : null},
        el("td", {class: "muted"}, when(it.at)), el("td", {}, el("span", {class: "kind"}, it.entry.kind)),
        el("td", {class: "what"}, it.entry.what, r ? details(r) : null)));
    } else {
      const kind = r.kind === "command" ? "command" : emitted.has(r.type) ? "emitted" : "received";
      body.append(el("tr", {class: "record only", "data-type": r.type},
        el("td", {class: "muted"}, when(it.at)), el("td", {}, el("span", {class: "kind kind-record"}, kind + " (record)")),
        el("td", {class: "what"}, r.kind === "command" ? "" : r.type + " ", details(r))));
    }
  }
  const notes = [];
  if (s.timeline.dropped) notes.push(el("p", {class: "muted"}, s.timeline.dropped + " older timeline entries dropped (the records below still show)"));
  if (recs.error) notes.push(el("p", {class: "err"}, "records not read: " + recs.error));
  if (recs.stopped_early) notes.push(el("p", {class: "err"}, "records: stopped early: " + recs.stopped_early));
  if (recs.scanned !== undefined) notes.push(el("p", {class: "muted"}, (recs.events || []).length + " records of this saga among " + recs.scanned + " read from " + (recs.partitions || []).length + " partitions, " + when(recs.from_ms) + " to " + when(recs.to_ms)));
  return [...notes, el("table", {class: "timeline"}, body)];
}

function render(s, graph, recs) {
  if (note.saga !== s.saga_id) note = {saga: s.saga_id, cls: "msg", text: ""};
  const alerts = [];
  if (s.abort_reason) alerts.push(el("p", {class: "alert", id: "abort-reason"}, "Aborted: ", el("span", {class: "value"}, s.abort_reason)));
  if (s.awaiting && s.awaiting.length) alerts.push(el("p", {class: "alert"}, "Waiting on: " + s.awaiting.join(", ")));
  const waiting = s.steps.filter((st) => st.status === "running").map((st) => st.name);
  if (s.status === "running" && waiting.length) alerts.push(el("p", {class: "info", id: "waiting-on"}, "Waiting on: " + waiting.join(", ")));
  for (const st of s.steps) {
    if (st.compensation && st.compensation.state === "stuck") alerts.push(el("p", {class: "alert err"}, "Needs an operator: step " + st.name + ": " + st.compensation.reason));
    else if (st.needs_operator) alerts.push(el("p", {class: "alert err"}, "Needs an operator: step " + st.name + ": " + st.needs_operator));
  }
  const diagram = graph ? draw(graph, s) : el("p", {class: "muted"}, "this coordinator does not run " + s.definition + " v" + s.version);
  const mermaid = graph ? el("details", {class: "mermaid"}, el("summary", {}, "Mermaid text"), el("pre", {id: "mermaid-text"}, graph.mermaid)) : "";
  $("detail").replaceChildren(
    el("h2", {}, el("span", {id: "saga-title"}, s.saga_id), " ", badge(s.status)),
    el("div", {class: "muted"}, "definition " + s.definition + " v" + s.version + " · created " + when(s.created_at) + " · updated " + when(s.updated_at)),
    ...alerts,
    actions(s),
    el("div", {class: note.cls, id: "saga-msg", role: "status"}, note.text),
    el("h3", {}, "Diagram"), diagram, mermaid,
    el("h3", {}, "Steps"), steps(s),
    el("h3", {}, "Deadlines"), deadlines(s),
    el("h3", {}, "Timeline and records (newest first)"), ...timeline(s, graph, recs));
}
