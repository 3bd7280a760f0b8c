//! The operator HTTP API (JSON), health and readiness probes, Prometheus metrics, and a small
//! web page.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/sagas?definition=&status=&min_age=&max_age=&limit=` | `{"sagas": [SagaSummary…], "counts": {status: n}}`, newest first |
//! | `GET /api/sagas/{definition}/{correlation_id}` | the saga's full [`SagaState`] (steps, deadlines, timeline), or 404 |
//! | `POST /api/sagas/{definition}/{correlation_id}/commands` | a [`Command`] body → 202 `{"command_id": …}`; 404 unknown saga, 400 bad body, 503 not published |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 when ready (partitions restored, view caught up), else 503 |
//! | `GET /metrics` | Prometheus text format (404 when no exporter is installed) |
//! | `GET /` | the operator page |
//!
//! Every error answer is JSON: `{"error": "…"}`. Any replica answers any query (the
//! [`SagaView`] holds every saga); commands travel through Kafka to the replica that owns the
//! saga ([`crate::command`]), so a 202 means "published", and the command's effect shows in the
//! saga's timeline once applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use choreo_saga::{Command, SagaState, Status, parse_duration};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command::CommandRecord;
use crate::view::{ListQuery, SagaSummary, SagaView};

/// The header naming who sends a command (free text, recorded in the saga's timeline).
pub const OPERATOR_HEADER: &str = "x-operator";

/// The most sagas one listing returns.
pub const MAX_LIMIT: usize = 10_000;

/// Every status, in the order a saga goes through them.
pub const ALL_STATUSES: [Status; 6] = [
    Status::Pending,
    Status::Running,
    Status::Compensating,
    Status::Completed,
    Status::Compensated,
    Status::NeedsOperator,
];

const MAX_OPERATOR_LEN: usize = 200;

/// Where the API hands operator commands: in production, the commands topic (see
/// [`crate::coordinator::CommandPublisher`]); in tests, a recording fake.
pub trait CommandSink: Send + Sync {
    /// Publishes `record`; resolves once it is durable (acknowledged by the broker). The error
    /// is shown to the operator.
    fn send(&self, record: CommandRecord) -> BoxFuture<'static, Result<(), String>>;
}

impl CommandSink for crate::coordinator::CommandPublisher {
    fn send(&self, record: CommandRecord) -> BoxFuture<'static, Result<(), String>> {
        let publisher = self.clone();
        Box::pin(async move { publisher.send(&record).await })
    }
}

/// What the API's handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Every saga's latest state.
    pub view: Arc<SagaView>,
    /// Where commands go.
    pub sink: Arc<dyn CommandSink>,
    /// Whether the process is ready to serve (`/readyz`).
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The Prometheus exporter `/metrics` renders, if installed.
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("sagas", &self.view.len())
            .field("ready", &(self.ready)())
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// The answer to `GET /api/sagas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse {
    /// The matching sagas, newest first.
    pub sagas: Vec<SagaSummary>,
    /// How many sagas the view holds in each status (every status, unfiltered).
    pub counts: BTreeMap<String, usize>,
}

/// The answer to an accepted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAccepted {
    /// The command's id (the saga's timeline names it once applied).
    pub command_id: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An API error: an HTTP status and a message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such saga or route.
    #[error("{0}")]
    NotFound(String),
    /// 503: a dependency (the commands topic) is unavailable.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// The largest command body accepted (413 above it): a command is a few fields, and an abort
/// reason at most `choreo_saga::MAX_REASON_BYTES`.
pub const MAX_COMMAND_BODY: usize = 16 * 1024;

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/sagas", get(list_sagas))
        .route("/api/sagas/{definition}/{correlation_id}", get(get_saga))
        .route(
            "/api/sagas/{definition}/{correlation_id}/commands",
            post(post_command).layer(axum::extract::DefaultBodyLimit::max(MAX_COMMAND_BODY)),
        )
        .fallback(not_found)
        .with_state(state)
}

/// Binds `addr` and serves [`router`] until `shutdown` is cancelled, then finishes the
/// requests in progress. Returns the bound address (useful with port 0) and the server task.
pub async fn serve(
    state: ApiState,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), crate::CoordinatorError> {
    let cannot = |e: std::io::Error| {
        crate::CoordinatorError::Startup(format!("cannot listen on {addr} (http.listen): {e}"))
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(cannot)?;
    let local = listener.local_addr().map_err(cannot)?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        match served {
            Ok(()) => tracing::info!(addr = %local, "operator API stopped"),
            Err(e) => tracing::error!(addr = %local, error = %e, "operator API failed"),
        }
    });
    tracing::info!(addr = %local, "operator API listening");
    Ok((local, task))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<ApiState>) -> (StatusCode, &'static str) {
    if (s.ready)() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    match &s.metrics {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiError::NotFound("no metrics exporter is installed".into()).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// The query string of `GET /api/sagas`, before validation. Empty values count as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    definition: Option<String>,
    status: Option<String>,
    min_age: Option<String>,
    max_age: Option<String>,
    limit: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Reads a status the way the API writes it (`needs_operator`).
pub fn parse_status(text: &str) -> Result<Status, String> {
    ALL_STATUSES
        .iter()
        .copied()
        .find(|s| s.to_string() == text)
        .ok_or_else(|| {
            let all: Vec<String> = ALL_STATUSES.iter().map(ToString::to_string).collect();
            format!(
                "unknown status \"{text}\" (expected one of {})",
                all.join(", ")
            )
        })
}

fn age_ms(name: &str, text: Option<String>) -> Result<Option<u64>, ApiError> {
    let Some(text) = non_empty(text) else {
        return Ok(None);
    };
    let d = parse_duration(&text).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))?;
    Ok(Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

impl ListParams {
    fn into_query(self) -> Result<ListQuery, ApiError> {
        let status = non_empty(self.status)
            .map(|s| parse_status(&s))
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?;
        let min_age_ms = age_ms("min_age", self.min_age)?;
        let max_age_ms = age_ms("max_age", self.max_age)?;
        if let (Some(min), Some(max)) = (min_age_ms, max_age_ms)
            && min > max
        {
            return Err(ApiError::BadRequest(
                "min_age is greater than max_age: no saga can match".into(),
            ));
        }
        let limit = match non_empty(self.limit) {
            None => None,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "limit: \"{l}\" is not a number between 1 and {MAX_LIMIT}"
                    )));
                }
            },
        };
        Ok(ListQuery {
            definition: non_empty(self.definition),
            status,
            min_age_ms,
            max_age_ms,
            limit,
        })
    }
}

async fn list_sagas(
    State(s): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = params.into_query()?;
    let sagas = s.view.list(&query, now_ms());
    let mut counts: BTreeMap<String, usize> =
        ALL_STATUSES.iter().map(|st| (st.to_string(), 0)).collect();
    for (status, n) in s.view.counts() {
        *counts.entry(status.to_string()).or_insert(0) += n;
    }
    Ok(Json(ListResponse { sagas, counts }))
}

fn saga_id(definition: &str, correlation_id: &str) -> String {
    format!("{definition}/{correlation_id}")
}

fn find(
    view: &SagaView,
    definition: &str,
    correlation_id: &str,
) -> Result<Arc<SagaState>, ApiError> {
    let id = saga_id(definition, correlation_id);
    view.get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no saga {id}")))
}

/// One saga as the API shows it: its state, plus the steps a compensating saga waits on.
async fn get_saga(
    State(s): State<ApiState>,
    Path((definition, correlation_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = find(&s.view, &definition, &correlation_id)?;
    let mut v = serde_json::to_value(state.as_ref())
        .map_err(|e| ApiError::Unavailable(format!("serialising {}: {e}", state.saga_id)))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("awaiting".into(), serde_json::json!(state.awaiting_steps()));
    }
    Ok(Json(v))
}

/// Checks what can be checked before the command travels: the step exists, the reason is
/// given. Whether the saga's status allows the command is decided when it is applied (the view
/// may be a moment behind); a refusal shows in the saga's timeline.
fn check_command(state: &SagaState, command: &Command) -> Result<(), ApiError> {
    match command {
        Command::Abort { reason } if reason.trim().is_empty() => {
            Err(ApiError::BadRequest("abort needs a reason".into()))
        }
        Command::Abort { reason } if reason.len() > choreo_saga::MAX_REASON_BYTES => {
            Err(ApiError::BadRequest(format!(
                "the abort reason is {} bytes long; at most {} are allowed",
                reason.len(),
                choreo_saga::MAX_REASON_BYTES
            )))
        }
        Command::Retry { step } | Command::Skip { step } if state.step(step).is_none() => {
            let steps: Vec<&str> = state.steps.iter().map(|s| s.name.as_str()).collect();
            Err(ApiError::BadRequest(format!(
                "saga {} has no step \"{step}\" (its steps: {})",
                state.saga_id,
                steps.join(", ")
            )))
        }
        _ => Ok(()),
    }
}

fn operator(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(OPERATOR_HEADER) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("X-Operator must be visible ASCII text".into()))?
        .trim();
    if v.len() > MAX_OPERATOR_LEN {
        return Err(ApiError::BadRequest(format!(
            "X-Operator is longer than {MAX_OPERATOR_LEN} characters"
        )));
    }
    Ok(Some(v.to_owned()).filter(|v| !v.is_empty()))
}

async fn post_command(
    State(s): State<ApiState>,
    Path((definition, correlation_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    // The body is read whatever its content type, so `curl -d '{"command":"resume"}'` works.
    let command: Command = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not a command ({e}); expected e.g. {{\"command\":\"abort\",\"reason\":\"...\"}}, \
             {{\"command\":\"retry\",\"step\":\"...\"}}, {{\"command\":\"skip\",\"step\":\"...\"}} or \
             {{\"command\":\"resume\"}}"
        ))
    })?;
    let operator = operator(&headers)?;
    let state = find(&s.view, &definition, &correlation_id)?;
    check_command(&state, &command)?;
    let record = CommandRecord {
        id: uuid::Uuid::new_v4().to_string(),
        definition,
        correlation_id,
        command,
        operator,
    };
    let command_id = record.id.clone();
    let (saga, what) = (state.saga_id.clone(), format!("{:?}", record.command));
    s.sink.send(record).await.map_err(|e| {
        tracing::warn!(saga_id = %saga, command_id = %command_id, error = %e, "command not published");
        ApiError::Unavailable(format!("the command could not be published: {e}"))
    })?;
    tracing::info!(saga_id = %saga, command_id = %command_id, command = %what, "operator command published");
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id })))
}

/// The operator page: self-contained (no external assets), it polls the JSON API every 2 s.
pub const INDEX_HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>choreo — sagas</title>
<style>
  :root { --fg:#1d2430; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --accent:#2563eb; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:center; gap:1rem; padding:.75rem 1.25rem; background:#111827; color:#fff; }
  header h1 { font-size:1.1rem; margin:0; }
  header .state { margin-left:auto; font-size:.85rem; color:#cbd5e1; }
  main { display:grid; grid-template-columns: minmax(0,3fr) minmax(0,2fr); gap:1rem; padding:1rem 1.25rem; }
  section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:.75rem 1rem; min-width:0; }
  h2 { font-size:1rem; margin:.25rem 0 .75rem; }
  .counts { display:flex; flex-wrap:wrap; gap:.5rem; margin-bottom:.75rem; }
  .count { border:1px solid var(--line); border-radius:6px; padding:.35rem .6rem; cursor:pointer; background:#fff; }
  .count b { font-size:1.1rem; margin-right:.35rem; }
  .count.active { outline:2px solid var(--accent); }
  .filters { display:flex; flex-wrap:wrap; gap:.5rem; margin-bottom:.5rem; }
  input, select, button { font:inherit; padding:.3rem .5rem; border:1px solid #cbd5e1; border-radius:5px; background:#fff; }
  button { cursor:pointer; }
  button.danger { border-color:#dc2626; color:#dc2626; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); white-space:nowrap; overflow:hidden; text-overflow:ellipsis; max-width:22rem; }
  th { color:var(--muted); font-weight:600; font-size:.8rem; text-transform:uppercase; }
  tbody tr { cursor:pointer; }
  tbody tr:hover { background:#f1f5f9; }
  tbody tr.selected { background:#dbeafe; }
  .st { display:inline-block; padding:0 .45rem; border-radius:999px; font-size:.8rem; background:#e5e7eb; }
  .st-running { background:#dbeafe; } .st-pending { background:#f3f4f6; }
  .st-compensating { background:#fef3c7; } .st-completed { background:#dcfce7; }
  .st-compensated { background:#ede9fe; } .st-needs_operator { background:#fee2e2; color:#991b1b; font-weight:600; }
  .muted { color:var(--muted); }
  .actions { display:flex; flex-wrap:wrap; gap:.5rem; margin:.5rem 0 1rem; align-items:center; }
  .msg { margin:.25rem 0; min-height:1.2rem; }
  .msg.err { color:#b91c1c; } .msg.ok { color:#15803d; }
  .timeline td { white-space:normal; }
  @media (max-width: 900px) { main { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header><h1>choreo · sagas</h1><span class="state" id="state">loading…</span></header>
<main>
  <section>
    <div class="counts" id="counts"></div>
    <div class="filters">
      <input id="f-definition" placeholder="definition">
      <select id="f-status"><option value="">any status</option></select>
      <input id="f-min-age" placeholder="min age (5m)" size="10">
      <input id="f-max-age" placeholder="max age (1h)" size="10">
      <input id="f-limit" placeholder="limit" size="5" value="50">
    </div>
    <div class="msg err" id="list-msg"></div>
    <table>
      <thead><tr><th>saga</th><th>status</th><th>version</th><th>age</th><th>updated</th></tr></thead>
      <tbody id="rows"></tbody>
    </table>
  </section>
  <section id="detail"><h2>Select a saga</h2><p class="muted">Click a row to see its steps, deadlines and timeline, and to act on it.</p></section>
</main>
<script>
"use strict";
const STATUSES = ["pending","running","compensating","completed","compensated","needs_operator"];
let selected = null;
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}
function ago(ms) {
  let s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60 ? (s % 60) + "s" : "");
  if (s < 86400) return Math.floor(s / 3600) + "h" + (Math.floor(s / 60) % 60 ? (Math.floor(s / 60) % 60) + "m" : "");
  return Math.floor(s / 86400) + "d";
}
function when(ms) { return ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace("Z", ""); }
function badge(status) { return el("span", {class: "st st-" + status}, status); }
function path(def, id) { return "/api/sagas/" + encodeURIComponent(def) + "/" + encodeURIComponent(id); }
async function api(url, opts) {
  const r = await fetch(url, opts);
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  if (!r.ok) throw new Error((body && body.error) || (r.status + " " + text));
  return body;
}
for (const s of STATUSES) $("f-status").append(el("option", {value: s}, s));
for (const id of ["f-definition","f-status","f-min-age","f-max-age","f-limit"]) $(id).addEventListener("change", refresh);
async function refresh() {
  const q = new URLSearchParams();
  const add = (k, id) => { const v = $(id).value.trim(); if (v) q.set(k, v); };
  add("definition","f-definition"); add("status","f-status"); add("min_age","f-min-age"); add("max_age","f-max-age"); add("limit","f-limit");
  try {
    const data = await api("/api/sagas?" + q.toString());
    $("list-msg").textContent = "";
    const counts = $("counts"); counts.replaceChildren();
    for (const s of STATUSES) {
      const c = el("span", {class: "count" + ($("f-status").value === s ? " active" : ""), title: "show only " + s,
        onclick: () => { $("f-status").value = $("f-status").value === s ? "" : s; refresh(); }},
        el("b", {}, data.counts[s] || 0), badge(s));
      counts.append(c);
    }
    const rows = $("rows"); rows.replaceChildren();
    for (const s of data.sagas) {
      const tr = el("tr", {class: selected === s.saga_id ? "selected" : "", onclick: () => { selected = s.saga_id; show(s.definition, s.correlation_id); refresh(); }},
        el("td", {title: s.saga_id}, s.saga_id), el("td", {}, badge(s.status)), el("td", {}, "v" + s.version),
        el("td", {title: when(s.created_at)}, ago(s.created_at)), el("td", {title: when(s.updated_at)}, ago(s.updated_at) + " ago"));
      rows.append(tr);
    }
    if (!data.sagas.length) rows.append(el("tr", {}, el("td", {colspan: 5, class: "muted"}, "no saga matches")));
    $("state").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("list-msg").textContent = e.message;
    $("state").textContent = "API unreachable";
  }
  if (selected) { const [d, ...rest] = selected.split("/"); show(d, rest.join("/"), true); }
}
let lastShown = null;
let note = {saga: null, cls: "msg", text: ""};
async function show(def, id, quiet) {
  let s;
  try { s = await api(path(def, id)); } catch (e) { if (!quiet) $("detail").replaceChildren(el("h2", {}, def + "/" + id), el("p", {class: "msg err"}, e.message)); return; }
  const key = JSON.stringify(s);
  if (quiet && key === lastShown) return;
  lastShown = key;
  if (note.saga !== s.saga_id) note = {saga: s.saga_id, cls: "msg", text: ""};
  const msg = el("div", {class: note.cls}, note.text);
  const say = (cls, text) => { note = {saga: s.saga_id, cls, text}; msg.className = cls; msg.textContent = text; };
  const stepSel = el("select", {}); for (const st of s.steps) stepSel.append(el("option", {value: st.name}, st.name));
  async function send(command) {
    try {
      const r = await api(path(def, id) + "/commands", {method: "POST", headers: {"content-type": "application/json", "x-operator": "web"}, body: JSON.stringify(command)});
      say("msg ok", command.command + " sent (command " + r.command_id + "); its effect shows in the timeline once applied");
    } catch (e) { say("msg err", e.message); }
  }
  const actions = el("div", {class: "actions"},
    el("button", {class: "danger", onclick: () => { const reason = prompt("Why abort " + s.saga_id + "?"); if (reason) send({command: "abort", reason}); }}, "Abort…"),
    stepSel,
    el("button", {onclick: () => send({command: "retry", step: stepSel.value})}, "Retry compensation"),
    el("button", {onclick: () => { if (confirm("Skip step " + stepSel.value + "?")) send({command: "skip", step: stepSel.value}); }}, "Skip step"),
    el("button", {onclick: () => send({command: "resume"})}, "Resume"));
  const steps = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "step"), el("th", {}, "status"), el("th", {}, "started"), el("th", {}, "finished"), el("th", {}, "compensation"))));
  const sb = el("tbody"); steps.append(sb);
  for (const st of s.steps) {
    const c = st.compensation || {}; let comp = c.state || "";
    if (c.attempts) comp += " (" + c.attempts + " attempts)";
    if (c.reason) comp += ": " + c.reason;
    sb.append(el("tr", {}, el("td", {}, st.name + (st.late ? " (late)" : "")), el("td", {}, st.status), el("td", {}, when(st.started_at)), el("td", {}, when(st.finished_at)), el("td", {title: comp}, comp)));
  }
  const dl = el("ul");
  for (const d of s.deadlines) {
    const what = d.kind.kind + (d.kind.step ? " " + d.kind.step : "");
    const left = d.at - Date.now();
    dl.append(el("li", {}, what + " at " + when(d.at) + (left >= 0 ? " (in " + Math.round(left / 1000) + "s)" : " (overdue)")));
  }
  if (!s.deadlines.length) dl.append(el("li", {class: "muted"}, "none pending"));
  const tl = el("table", {class: "timeline"}); const tb = el("tbody"); tl.append(tb);
  for (const t of [...s.timeline.entries].reverse()) tb.append(el("tr", {}, el("td", {class: "muted"}, when(t.at)), el("td", {}, t.kind), el("td", {}, t.what)));
  if (s.timeline.dropped) tb.append(el("tr", {}, el("td", {colspan: 3, class: "muted"}, s.timeline.dropped + " older entries dropped")));
  $("detail").replaceChildren(
    el("h2", {}, s.saga_id, " ", badge(s.status)),
    el("div", {class: "muted"}, "definition " + s.definition + " v" + s.version + " · created " + when(s.created_at) + " · updated " + when(s.updated_at)),
    s.abort_reason ? el("p", {}, "Aborted: " + s.abort_reason) : "",
    (s.awaiting && s.awaiting.length) ? el("p", {}, "Waiting on: " + s.awaiting.join(", ")) : "",
    actions, msg,
    el("h2", {}, "Steps"), steps,
    el("h2", {}, "Deadlines"), dl,
    el("h2", {}, "Timeline (newest first)"), tl);
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"##;
