// The operator console: boots the parts, holds the token, follows live updates.
//
// Live updates come from GET /api/sagas/live (server-sent events), read with fetch so that the
// request carries the Authorization header like every other (EventSource cannot send one, and
// a token in the URL would end up in logs and history).
"use strict";

import {$, api, authHeaders, el, token} from "./dom.js";
import * as dlq from "./dlq.js";
import * as list from "./list.js";
import * as saga from "./saga.js";

export const session = {role: null, name: null};

async function who() {
  try {
    const me = await api("/api/me");
    session.role = me.role;
    session.name = me.name;
    $("who").replaceChildren(
      el("span", {class: "role role-" + me.role}, me.role === "viewer" ? "viewer (read only)" : me.role),
      me.name ? el("span", {class: "muted"}, " " + me.name) : "");
  } catch (e) {
    session.role = null;
    $("who").replaceChildren(el("span", {class: "err"}, e.status === 401 ? "no token" : "API unreachable"));
  }
  document.body.dataset.role = session.role || "none";
}

let liveAbort = null;
let liveRetry = null;

function setLive(state, text) {
  const l = $("live");
  l.className = "live live-" + state;
  l.textContent = text;
}

// Follows /api/sagas/live with the list's current filters; reconnects after a failure.
export function follow() {
  if (liveAbort) liveAbort.abort();
  clearTimeout(liveRetry);
  const ctrl = new AbortController();
  liveAbort = ctrl;
  run(ctrl).catch((e) => {
    if (ctrl.signal.aborted) return;
    setLive("down", "live: reconnecting");
    console.warn("live updates:", e);
    liveRetry = setTimeout(follow, 3000);
  });
}

async function run(ctrl) {
  const r = await fetch("/api/sagas/live?" + list.query(false).toString(), {headers: authHeaders(), signal: ctrl.signal});
  if (!r.ok) throw new Error("live updates answered " + r.status);
  setLive("up", "live");
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) throw new Error("the stream ended");
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (event === "sagas" && data.length) {
        const message = JSON.parse(data.join("\n"));
        list.onLive(message);
        saga.onLive(message);
        $("live").title = "live updates; last at " + new Date().toLocaleTimeString();
      }
    }
  }
}

async function start() {
  $("token").value = token.get();
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token.set($("token").value.trim());
    restart();
  });
  list.init({onFilter: follow, onOpen: saga.open});
  saga.init({session, onChange: () => list.reload()});
  dlq.init(session);
  for (const tab of document.querySelectorAll("header .tab")) tab.addEventListener("click", () => show(tab.dataset.view));
  await restart();
  setInterval(saga.tick, 1000);
  // Dead letters have no live stream: the open view reloads every 10 s.
  setInterval(() => { if (view === "dlq") dlq.load(); }, 10000);
}

let view = "sagas";

function show(name) {
  view = name;
  for (const tab of document.querySelectorAll("header .tab")) tab.classList.toggle("active", tab.dataset.view === name);
  $("view-sagas").hidden = name !== "sagas";
  $("view-dlq").hidden = name !== "dlq";
  if (name === "dlq") dlq.load();
}

async function restart() {
  await who();
  await list.loadDefinitions();
  await list.reload();
  saga.refresh();
  if (view === "dlq") await dlq.load();
  follow();
}

start();
