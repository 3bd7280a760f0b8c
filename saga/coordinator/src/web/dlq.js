// Dead letters: every *.dlq topic with its origin and size; a topic's records (newest first,
// filtered by reason and kind, a page at a time) with their reason headers and payload
// (decoded where the registry can, else the raw bytes and why); and redrive — one record, the
// ones selected, or every matching record never redriven — republished to the origin topic,
// each after a dry run that says how many records it touches.
"use strict";

import {$, api, confirmDialog, el, field, json, post, short, when} from "./dom.js";

let session = {role: null};
let topic = null;          // the topic shown
let cursors = [];          // the `before` of each page shown (first page: none)
let page = {records: [], next: null};
const selected = new Set();

export function init(s) { session = s; }

const enc = encodeURIComponent;

export async function load() {
  try {
    const data = await api("/api/dlq");
    const body = el("tbody");
    for (const t of data.topics) {
      body.append(el("tr", {class: topic === t.topic ? "selected" : "", "data-topic": t.topic, onclick: () => openTopic(t.topic)},
        el("td", {}, t.topic), el("td", {}, t.origin), el("td", {class: "num"}, t.records)));
    }
    if (!data.topics.length) body.append(el("tr", {}, el("td", {colspan: 3, class: "muted"}, "no dead-letter topic")));
    $("dlq-topics").replaceChildren(el("table", {class: "sagas"},
      el("thead", {}, el("tr", {}, el("th", {}, "topic"), el("th", {}, "origin"), el("th", {}, "records"))), body));
  } catch (e) {
    $("dlq-topics").replaceChildren(el("p", {class: "msg err"}, e.message));
  }
  if (topic) await records();
}

function openTopic(t) {
  topic = t;
  cursors = [];
  selected.clear();
  for (const tr of document.querySelectorAll("#dlq-topics tr[data-topic]")) tr.classList.toggle("selected", tr.dataset.topic === t);
  records();
}

function filter() {
  const f = {};
  const reason = $("dlq-reason") && $("dlq-reason").value.trim();
  const kind = $("dlq-kind") && $("dlq-kind").value.trim();
  if (reason) f.reason = reason;
  if (kind) f.kind = kind;
  return f;
}

async function records() {
  const q = new URLSearchParams(filter());
  q.set("limit", "50");
  if (cursors.length) q.set("before", cursors[cursors.length - 1]);
  let msg = $("dlq-msg") ? {cls: $("dlq-msg").className, text: $("dlq-msg").textContent} : {cls: "msg", text: ""};
  try {
    page = await api("/api/dlq/" + enc(topic) + "?" + q.toString());
  } catch (e) {
    page = {records: [], next: null};
    msg = {cls: "msg err", text: e.message};
  }
  render(msg);
}

function row(r) {
  const box = el("input", {type: "checkbox", "data-id": r.id, checked: selected.has(r.id) || null,
    onchange: (ev) => { if (ev.target.checked) selected.add(r.id); else selected.delete(r.id); updateButtons(); }});
  const headers = el("table", {class: "headers"}, el("tbody", {},
    ...Object.entries(r.headers).map(([k, v]) => el("tr", {}, el("td", {class: "muted"}, k), el("td", {}, v)))));
  const payload = r.payload !== null && r.payload !== undefined ? json(r.payload)
    : el("div", {}, el("p", {class: "err"}, "not decoded: " + (r.payload_error || "no value")),
      r.payload_base64 ? el("pre", {class: "json"}, r.payload_base64) : null);
  const redriven = r.redriven.map((d) => el("li", {}, "redriven " + when(d.at_ms) + " by " + d.by + " to " + d.to.topic + "/" + d.to.partition + " @" + d.to.offset + (d.note ? " (" + d.note + ")" : "")));
  return el("tr", {"data-id": r.id, class: r.redriven.length ? "redriven" : ""},
    el("td", {}, box),
    el("td", {class: "muted"}, when(r.timestamp_ms)),
    el("td", {}, r.key == null ? el("span", {class: "muted"}, "(no key)") : r.key),
    el("td", {}, el("span", {class: "kind"}, r.kind), " ", r.reason),
    el("td", {class: "what"},
      el("details", {class: "payload"},
        el("summary", {}, (r.event_type ? short(r.event_type) : "unknown type") + " · from " + r.origin.topic + (r.origin.partition != null ? "/" + r.origin.partition + " @" + r.origin.offset : "")),
        el("div", {class: "meta muted"}, "id " + r.id + (r.handler ? " · handler " + r.handler : "") + (r.group ? " · group " + r.group : "") + " · attempts " + r.attempts + (r.ce_id ? " · ce_id " + r.ce_id : "")),
        payload, headers),
      redriven.length ? el("ul", {class: "redrives"}, ...redriven) : null),
    el("td", {}, el("button", {type: "button", class: "act", "data-redrive": r.id, disabled: session.role === "viewer" || null,
      onclick: () => redrive({ids: [r.id]}, "record " + r.id)}, r.redriven.length ? "Redrive again…" : "Redrive…")));
}

function render(msg) {
  const reason = el("input", {id: "dlq-reason", size: 18, placeholder: "contains…", value: filter().reason || ""});
  const kind = el("input", {id: "dlq-kind", size: 12, placeholder: "e.g. decode", value: filter().kind || ""});
  const apply = () => { cursors = []; selected.clear(); records(); };
  reason.addEventListener("change", apply);
  kind.addEventListener("change", apply);
  const viewer = session.role === "viewer";
  const body = el("tbody");
  for (const r of page.records) body.append(row(r));
  if (!page.records.length) body.append(el("tr", {}, el("td", {colspan: 6, class: "muted"}, "no dead letter matches")));
  $("dlq-title").textContent = topic;
  $("dlq-records").replaceChildren(
    el("form", {class: "filters", onsubmit: (ev) => ev.preventDefault()},
      el("label", {}, "reason", reason), el("label", {}, "kind", kind)),
    el("div", {class: "toolbar"},
      el("button", {type: "button", id: "dlq-redrive-selected", class: "act", disabled: true,
        onclick: () => redrive({ids: [...selected]}, selected.size + " selected record(s)")}, "Redrive selected…"),
      el("button", {type: "button", id: "dlq-redrive-all", class: "act", disabled: viewer || null,
        title: viewer ? "your token is a viewer's: it may not act" : "every record the filter matches that was never redriven",
        onclick: () => redrive({filter: filter()}, "every matching record never redriven")}, "Redrive all matching…"),
      viewer ? el("span", {class: "muted"}, "read only: a viewer's token may not redrive") : null),
    el("div", {class: msg.cls, id: "dlq-msg", role: "status"}, msg.text),
    el("table", {class: "dlq"},
      el("thead", {}, el("tr", {}, ...["", "dead-lettered", "key", "reason", "record", ""].map((h) => el("th", {}, h)))), body),
    el("div", {class: "pager"},
      el("button", {type: "button", disabled: !cursors.length || null, onclick: () => { cursors = []; records(); }}, "Newest"),
      el("button", {type: "button", id: "dlq-next", disabled: !page.next || null, onclick: () => { cursors.push(page.next); records(); }}, "Older →")));
  updateButtons();
}

function updateButtons() {
  const b = $("dlq-redrive-selected");
  if (!b) return;
  b.disabled = selected.size === 0 || session.role === "viewer";
  b.textContent = "Redrive selected (" + selected.size + ")…";
}

function say(cls, text) {
  const m = $("dlq-msg");
  if (m) { m.className = cls; m.textContent = text; }
}

// A redrive: the dry run says how many records (and which) it republishes; then the run on
// exactly that many.
async function redrive(selection, what) {
  const url = "/api/dlq/" + enc(topic) + "/redrive";
  const note = el("input", {id: "redrive-note", size: 40, placeholder: "why (kept with the redrive)"});
  let preview;
  try {
    preview = await post(url, Object.assign({dry_run: true}, selection));
  } catch (e) { say("msg err", e.message); return; }
  if (preview.matched === 0) {
    say("msg", "nothing to redrive" + (preview.refused.length ? ": " + preview.refused.map((r) => r.id + " " + r.reason).join("; ") : ""));
    return;
  }
  const shown = preview.ids.slice(0, 20);
  const done = await confirmDialog({
    title: "Redrive " + preview.matched + " record" + (preview.matched === 1 ? "" : "s") + " to " + topic.replace(/\.dlq$/, "") + "?",
    body: [
      el("p", {id: "redrive-count", "data-matched": preview.matched}, "Republishes ", el("b", {}, preview.matched), " record(s) (" + what + ") to the origin topic, key, value and headers as they were, marked as redriven:"),
      el("ul", {class: "ids"}, ...shown.map((id) => el("li", {}, id + (preview.already_redriven.includes(id) ? " (redriven before)" : ""))),
        preview.matched > shown.length ? el("li", {class: "muted"}, "… and " + (preview.matched - shown.length) + " more") : null),
      preview.refused.length ? el("p", {class: "err"}, "left out: " + preview.refused.map((r) => r.id + ": " + r.reason).join("; ")) : null,
      field("note", note),
    ],
    ok: "Redrive " + preview.matched,
    run: () => {
      const body = Object.assign({expect: preview.matched}, selection);
      if (note.value.trim()) body.note = note.value.trim();
      return post(url, body);
    },
  });
  if (!done) return;
  selected.clear();
  await records();
  let text = "redriven " + done.redriven.length + ": " + done.redriven.map((r) => r.id + " → " + r.to.topic + "/" + r.to.partition + " @" + r.to.offset).join(", ");
  if (done.refused.length) text += "; left out: " + done.refused.map((r) => r.id + ": " + r.reason).join("; ");
  if (done.remaining) text += "; " + done.remaining + " more match: run it again";
  say(done.refused.length ? "msg err" : "msg ok", text);
}
