//! The operator HTTP API (JSON), health and readiness probes, Prometheus metrics, and a small
//! web page.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/sagas?definition=&status=&min_age=&max_age=&stuck=&waiting_on=&search=&limit=` | `{"sagas": [SagaSummary…], "counts": {status: n}}`, newest first |
//! | `GET /api/sagas/{definition}/{correlation_id}` | the saga's full [`SagaState`] (steps, deadlines, timeline), or 404 |
//! | `POST /api/sagas/{definition}/{correlation_id}/commands` | a [`Command`] body (abort, retry, skip, resume, approve, reject) → 202 `{"command_id": …}`; 404 unknown saga, 400 bad body, 503 not published. An `Idempotency-Key` header becomes the command's id: the saga applies it once, and the same request sent again after it was applied is answered 202 without publishing |
//! | `POST /api/sagas/batch` | `{"filter": {definition, status, min_age, max_age}, "command": Command, "dry_run": true}` → 200 `{"matched", "saga_ids"}`; without `dry_run`, `"expect": <matched>` is required and the command is published to every matching saga → 202 `{"published", "command_ids", "refused"}`; 409 when the matching set no longer has `expect` sagas |
//! | `/api/dlq…` | dead letters: topics, records, redrive ([`crate::dlq`]'s routes) |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 when ready (partitions restored, view caught up), else 503 |
//! | `GET /metrics` | Prometheus text format (404 when no exporter is installed) |
//! | `GET /` | the operator page |
//!
//! With tokens configured ([`ApiAuth::Tokens`]), `/api/…` needs `Authorization: Bearer
//! <token>`: a viewer may read, an operator may also send commands (401 without a known token,
//! 403 for a viewer's command); the token's name is recorded as who sent a command. Commands
//! must be `application/json` (415 otherwise). `/`, `/healthz`, `/readyz` and `/metrics` stay
//! open (the page holds no data; it asks for a token).
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

use crate::api_auth::{ApiAuth, Refusal, Role};
use crate::command::CommandRecord;
use crate::view::{ListQuery, SagaSummary, SagaView};

/// The header naming who sends a command (free text, recorded in the saga's timeline).
pub use crate::api_auth::OPERATOR_HEADER;

/// Operator commands published, by `command` (abort, retry, skip, resume, approve, reject).
pub const OPERATOR_COMMANDS: &str = "choreo_operator_commands_total";

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
    /// Who may read and act.
    pub auth: Arc<ApiAuth>,
    /// Dead letters (`/api/dlq…`); unset: those routes answer 503.
    pub dead_letters: Option<Arc<crate::dlq::DeadLetterDesk>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("sagas", &self.view.len())
            .field("ready", &(self.ready)())
            .field("metrics", &self.metrics.is_some())
            .field("auth", &matches!(*self.auth, ApiAuth::Tokens(_)))
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
    /// 401: no token, or an unknown one.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: the token's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such saga or route.
    #[error("{0}")]
    NotFound(String),
    /// 409: a batch whose matching sagas changed since its dry run.
    #[error("{0}")]
    Conflict(String),
    /// 415: a command that is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: a dependency (the commands topic) is unavailable.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated(m) => ApiError::Unauthenticated(m),
            Refusal::Forbidden(m) => ApiError::Forbidden(m),
        }
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
        .route(
            "/api/sagas/batch",
            post(post_batch).layer(axum::extract::DefaultBodyLimit::max(MAX_COMMAND_BODY)),
        )
        .route("/api/sagas/{definition}/{correlation_id}", get(get_saga))
        .route(
            "/api/sagas/{definition}/{correlation_id}/commands",
            post(post_command).layer(axum::extract::DefaultBodyLimit::max(MAX_COMMAND_BODY)),
        )
        .merge(crate::dlq::routes(
            state.dead_letters.clone(),
            Arc::clone(&state.auth),
        ))
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
    stuck: Option<String>,
    waiting_on: Option<String>,
    search: Option<String>,
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
        let stuck_ms = age_ms("stuck", self.stuck)?;
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
            stuck_ms,
            waiting_on: non_empty(self.waiting_on),
            search: non_empty(self.search),
            limit,
        })
    }
}

async fn list_sagas(
    State(s): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    s.auth.check(&headers, Role::Viewer)?;
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
    headers: HeaderMap,
    Path((definition, correlation_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.auth.check(&headers, Role::Viewer)?;
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
    if let Some(reason) = command.reason() {
        if reason.trim().is_empty() {
            return Err(ApiError::BadRequest(format!(
                "{} needs a reason (abort, approve and reject need a reason: it is recorded in the timeline)",
                command.name()
            )));
        }
        if reason.len() > choreo_saga::MAX_REASON_BYTES {
            return Err(ApiError::BadRequest(format!(
                "the {} reason is {} bytes long; at most {} are allowed",
                command.name(),
                reason.len(),
                choreo_saga::MAX_REASON_BYTES
            )));
        }
    }
    if let Some(step) = command.step()
        && state.step(step).is_none()
    {
        let steps: Vec<&str> = state.steps.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::BadRequest(format!(
            "saga {} has no step \"{step}\" (its steps: {})",
            state.saga_id,
            steps.join(", ")
        )));
    }
    Ok(())
}

fn operator(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    crate::api_auth::operator_named(headers).map_err(ApiError::BadRequest)
}

/// Who may send a command: an operator token (its name is who acted) or, on an open API, what
/// X-Operator says; and the body must be JSON.
fn acting_operator(s: &ApiState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let who = s.auth.check(headers, Role::Operator)?;
    require_json(headers)?;
    match who {
        Some(name) => Ok(Some(name)),
        None => operator(headers),
    }
}

/// Publishes `command` to one saga through the commands topic; its command id once durable.
async fn publish(
    s: &ApiState,
    definition: &str,
    correlation_id: &str,
    command: &Command,
    operator: Option<&String>,
    id: Option<String>,
) -> Result<String, String> {
    let record = CommandRecord {
        id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        definition: definition.to_owned(),
        correlation_id: correlation_id.to_owned(),
        command: command.clone(),
        operator: operator.cloned(),
    };
    let id = record.id.clone();
    s.sink.send(record).await?;
    metrics::counter!(OPERATOR_COMMANDS, "command" => command.name()).increment(1);
    Ok(id)
}

/// The `Idempotency-Key` header: the command's id, so that a request sent again acts once.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 128 && k.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key: 1 to 128 visible ASCII characters".into(),
        )),
    }
}

/// JSON only: a form or a text body (what a cross-site page can send without asking first) is
/// refused before it is read.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::api_auth::is_json(headers) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "a command must be sent as Content-Type: application/json".into(),
        ))
    }
}

/// The body of `POST /api/sagas/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    #[serde(default)]
    filter: ListParams,
    command: Command,
    #[serde(default)]
    dry_run: bool,
    expect: Option<usize>,
}

/// The answer to a batch's dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPreview {
    /// How many sagas the filter matches now.
    pub matched: usize,
    /// Which (newest first).
    pub saga_ids: Vec<String>,
}

/// The answer to a batch that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAccepted {
    /// Commands published.
    pub published: usize,
    /// Their ids, in the order of the sagas.
    pub command_ids: Vec<String>,
    /// Sagas the command could not be sent to, with why (e.g. no such step).
    pub refused: Vec<BatchRefusal>,
}

/// A saga of a batch the command was not sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRefusal {
    /// The saga.
    pub saga_id: String,
    /// Why.
    pub error: String,
}

/// One command to every saga a filter matches ("retry every needs-operator saga of order"):
/// first a dry run that says how many, then the run itself with that number as `expect`, so
/// that it touches what the operator saw (409 otherwise). Each command goes through the
/// commands topic like a single one.
async fn post_batch(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let operator = acting_operator(&s, &headers)?;
    let req: BatchRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not a batch ({e}); expected {{\"filter\": {{\"definition\": \"order\", \"status\": \"needs_operator\"}}, \"command\": {{\"command\": \"retry\", \"step\": \"payment\"}}, \"dry_run\": true}}"
        ))
    })?;
    let mut query = req.filter.into_query()?;
    query.limit = Some(query.limit.unwrap_or(MAX_LIMIT));
    let matched = s.view.list(&query, now_ms());
    let saga_ids: Vec<String> = matched.iter().map(|m| m.saga_id.clone()).collect();
    if req.dry_run {
        return Ok(Json(BatchPreview {
            matched: saga_ids.len(),
            saga_ids,
        })
        .into_response());
    }
    match req.expect {
        None => {
            return Err(ApiError::BadRequest(format!(
                "a batch runs only with \"expect\": the number of sagas its dry run matched (now {})",
                saga_ids.len()
            )));
        }
        Some(n) if n != saga_ids.len() => {
            return Err(ApiError::Conflict(format!(
                "the filter matches {} sagas now, not {n}: run the dry run again",
                saga_ids.len()
            )));
        }
        Some(_) => {}
    }
    let mut out = BatchAccepted {
        published: 0,
        command_ids: Vec::new(),
        refused: Vec::new(),
    };
    for m in &matched {
        let Some(state) = s.view.get(&m.saga_id) else {
            continue;
        };
        if let Err(e) = check_command(&state, &req.command) {
            out.refused.push(BatchRefusal {
                saga_id: m.saga_id.clone(),
                error: e.to_string(),
            });
            continue;
        }
        let id = publish(
            &s,
            &m.definition,
            &m.correlation_id,
            &req.command,
            operator.as_ref(),
            None,
        )
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!(
                "published {} of {} commands, then: {e}",
                out.published,
                matched.len()
            ))
        })?;
        out.published += 1;
        out.command_ids.push(id);
    }
    tracing::info!(published = out.published, refused = out.refused.len(), command = ?req.command, "operator batch published");
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

async fn post_command(
    State(s): State<ApiState>,
    Path((definition, correlation_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let operator = acting_operator(&s, &headers)?;
    let command: Command = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not a command ({e}); expected e.g. {{\"command\":\"abort\",\"reason\":\"...\"}}, \
             {{\"command\":\"retry\",\"step\":\"...\"}}, {{\"command\":\"skip\",\"step\":\"...\"}} or \
             {{\"command\":\"resume\"}}"
        ))
    })?;
    let key = idempotency_key(&headers)?;
    let state = find(&s.view, &definition, &correlation_id)?;
    if let Some(k) = &key
        && choreo_saga::command_applied(&state, k)
    {
        // The same request again: it acted once, and the answer is the same.
        return Ok((
            StatusCode::ACCEPTED,
            Json(CommandAccepted {
                command_id: k.clone(),
            }),
        ));
    }
    check_command(&state, &command)?;
    let saga = &state.saga_id;
    let command_id = publish(
        &s,
        &definition,
        &correlation_id,
        &command,
        operator.as_ref(),
        key,
    )
    .await
    .map_err(|e| {
        tracing::warn!(saga_id = %saga, error = %e, "command not published");
        ApiError::Unavailable(format!("the command could not be published: {e}"))
    })?;
    tracing::info!(saga_id = %saga, command_id = %command_id, command = ?command, "operator command published");
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id })))
}

/// The operator page (`src/web/index.html`, compiled in): self-contained (no external
/// assets), it polls the JSON API every 2 s.
pub const INDEX_HTML: &str = include_str!("web/index.html");
