// What every part of the console shares: building elements (every value inserted as text,
// never as markup), the API client (bearer token from this tab's sessionStorage, never a
// cookie), time formatting and the confirmation dialog.
"use strict";

export const STATUSES = ["pending", "running", "compensating", "completed", "compensated", "needs_operator"];

export const $ = (id) => document.getElementById(id);

// An element with attributes and children. Children that are not nodes become text nodes:
// whatever a value holds ("<script>…"), it shows as text.
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = "http://www.w3.org/2000/svg";

// An SVG element; its text children are text nodes too.
export function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  setAttrs(e, attrs);
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.setAttribute("class", v);
    else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
}

export function badge(status) {
  return el("span", {class: "st st-" + status, "data-status": status}, status.replace("_", " "));
}

// JSON shown as text, indented.
export function json(value) {
  return el("pre", {class: "json"}, JSON.stringify(value, null, 2));
}

export function ago(ms, now) {
  let s = Math.max(0, Math.round(((now || Date.now()) - ms) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60 ? (s % 60) + "s" : "");
  if (s < 86400) return Math.floor(s / 3600) + "h" + (Math.floor(s / 60) % 60 ? (Math.floor(s / 60) % 60) + "m" : "");
  return Math.floor(s / 86400) + "d" + (Math.floor(s / 3600) % 24 ? (Math.floor(s / 3600) % 24) + "h" : "");
}

export function when(ms) {
  return ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

export function short(eventType) {
  return String(eventType || "").split(".").pop();
}

// The API's bearer token: in this tab only (sessionStorage), sent in Authorization.
const TOKEN_KEY = "choreo-token";
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (t) => { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); },
};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function authHeaders(extra) {
  const t = token.get();
  return Object.assign({}, extra || {}, t ? {authorization: "Bearer " + t} : {});
}

export async function api(url, opts) {
  opts = Object.assign({}, opts || {});
  opts.headers = authHeaders(opts.headers);
  let r;
  try { r = await fetch(url, opts); } catch (e) { throw new ApiError(0, "the API cannot be reached: " + e.message); }
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  if (r.status === 401) throw new ApiError(401, "this API needs a token: enter it at the top right");
  if (!r.ok) throw new ApiError(r.status, (body && body.error) || (r.status + " " + text));
  return body;
}

export function post(url, body) {
  return api(url, {method: "POST", headers: {"content-type": "application/json", "x-operator": "console"}, body: JSON.stringify(body)});
}

export function sagaPath(definition, id) {
  return "/api/sagas/" + encodeURIComponent(definition) + "/" + encodeURIComponent(id);
}

// The confirmation dialog. `body` is a list of nodes (inputs, text); `check()` returns an
// error message or null before `run()` goes; `run()` may throw (shown in the dialog) or
// return a message for the caller. Resolves with run()'s result, or null when cancelled.
export function confirmDialog({title, body, ok, danger, check, run}) {
  const dialog = $("dialog");
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...(body || []));
  $("dialog-msg").textContent = "";
  $("dialog-msg").className = "msg";
  const okButton = $("dialog-ok");
  okButton.textContent = ok || "Confirm";
  okButton.className = danger ? "danger" : "act";
  okButton.disabled = false;
  return new Promise((resolve) => {
    const done = (v) => {
      okButton.onclick = null; $("dialog-cancel").onclick = null; dialog.oncancel = null;
      if (dialog.open) dialog.close();
      resolve(v);
    };
    $("dialog-cancel").onclick = () => done(null);
    dialog.oncancel = () => done(null);
    okButton.onclick = async (ev) => {
      ev.preventDefault();
      const problem = check ? check() : null;
      if (problem) { $("dialog-msg").textContent = problem; $("dialog-msg").className = "msg err"; return; }
      okButton.disabled = true;
      try { done(await run()); } catch (e) {
        $("dialog-msg").textContent = e.message; $("dialog-msg").className = "msg err"; okButton.disabled = false;
      }
    };
    dialog.showModal();
  });
}

// A labelled field for a dialog.
export function field(label, input) {
  return el("label", {class: "field"}, el("span", {}, label), input);
}
