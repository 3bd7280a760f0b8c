//! The operator HTTP API (JSON), health and readiness probes, Prometheus metrics, and the
//! operator console (a web page).
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/sagas?definition=&version=&status=&min_age=&max_age=&stuck=&waiting_on=&search=&limit=&before=` | `{"sagas": [SagaSummary…], "total", "next", "counts": {status: n}, "counts_by_definition"}`, newest first; `next` is the `before` of the following page |
//! | `GET /api/sagas/live?<the list's filters>` | server-sent events: at most one `sagas` message a second with the counts and the summaries of the sagas that changed (see [`live`]) |
//! | `GET /api/sagas/{definition}/{correlation_id}` | the saga's full [`SagaState`] (steps, deadlines, timeline), or 404 |
//! | `GET /api/sagas/{definition}/{correlation_id}/events?margin=5m&max_records=` | the saga's records read back from Kafka, payloads decoded ([`crate::history`]) |
//! | `POST /api/sagas/{definition}/{correlation_id}/commands` | a [`Command`] body (abort, retry, skip, resume, approve, reject) → 202 `{"command_id": …}`; 404 unknown saga, 400 bad body, 503 not published. An `Idempotency-Key` header becomes the command's id: the saga applies it once, and the same request sent again after it was applied is answered 202 without publishing |
//! | `POST /api/sagas/batch` | `{"filter": {the list's filters}, "command": Command, "dry_run": true}` → 200 `{"matched", "saga_ids"}`; without `dry_run`, `"expect": <matched>` is required and the command is published to every matching saga → 202 `{"published", "command_ids", "refused"}`; 409 when the matching set no longer has `expect` sagas |
//! | `GET /api/definitions` | every definition version this coordinator runs, with its sagas' counts |
//! | `GET /api/definitions/{name}/{version}` | the definition's graph: steps, dependencies, edges, compensations, Mermaid text ([`choreo_saga::diagram::Graph`]) |
//! | `GET /api/me` | who the token is: `{"name", "role"}` |
//! | `/api/dlq…` | dead letters: topics, records, redrive ([`crate::dlq`]'s routes) |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 when ready (partitions restored, view caught up), else 503 |
//! | `GET /metrics` | Prometheus text format (404 when no exporter is installed) |
//! | `GET /`, `GET /ui/{file}` | the operator console (compiled into the binary, no external assets) |
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
//!
//! ## Layout
//!
//! - this file: the shared state, errors, the router and the server;
//! - `sagas.rs`: listing, one saga, its records, commands and batches;
//! - `live.rs`: the live updates (server-sent events);
//! - `definitions.rs`: the definitions and their graphs;
//! - `page.rs`: the console's files (`web/`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use choreo_saga::{Definitions, SagaState, Status};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api_auth::{ApiAuth, Refusal, Role};
use crate::command::CommandRecord;
use crate::history::HistorySource;
use crate::view::SagaView;

mod definitions;
pub mod live;
mod page;
mod sagas;

pub use crate::view::ALL_STATUSES;
pub use definitions::{DefinitionSummary, DefinitionsResponse};
pub use page::{ASSETS, CONTENT_SECURITY_POLICY, INDEX_HTML};
pub use sagas::{
    BatchAccepted, BatchPreview, BatchRefusal, CommandAccepted, DEFAULT_HISTORY_MARGIN_MS,
    ListResponse, MAX_HISTORY_MARGIN_MS, parse_status,
};

/// The header naming who sends a command (free text, recorded in the saga's timeline).
pub use crate::api_auth::OPERATOR_HEADER;

/// Operator commands published, by `command` (abort, retry, skip, resume, approve, reject).
pub const OPERATOR_COMMANDS: &str = "choreo_operator_commands_total";

/// The most sagas one listing returns, and the most one batch acts on.
pub const MAX_LIMIT: usize = 10_000;

/// The largest command body accepted (413 above it): a command is a few fields, and an abort
/// reason at most `choreo_saga::MAX_REASON_BYTES`.
pub const MAX_COMMAND_BODY: usize = 16 * 1024;

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
    /// The definitions the coordinator runs (their graphs).
    pub definitions: Arc<Definitions>,
    /// Where a saga's records are read back from (Kafka).
    pub history: Arc<dyn HistorySource>,
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
    /// 503: a dependency (the commands topic, Kafka) is unavailable.
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

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    let command_body = || axum::extract::DefaultBodyLimit::max(MAX_COMMAND_BODY);
    Router::new()
        .route("/", get(page::index))
        .route("/ui/{file}", get(page::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/me", get(me))
        .route("/api/sagas", get(sagas::list_sagas))
        .route("/api/sagas/live", get(live::live))
        .route(
            "/api/sagas/batch",
            post(sagas::post_batch).layer(command_body()),
        )
        .route(
            "/api/sagas/{definition}/{correlation_id}",
            get(sagas::get_saga),
        )
        .route(
            "/api/sagas/{definition}/{correlation_id}/events",
            get(sagas::get_events),
        )
        .route(
            "/api/sagas/{definition}/{correlation_id}/commands",
            post(sagas::post_command).layer(command_body()),
        )
        .route("/api/definitions", get(definitions::list))
        .route("/api/definitions/{name}/{version}", get(definitions::one))
        .merge(crate::dlq::routes(
            state.dead_letters.clone(),
            Arc::clone(&state.auth),
        ))
        .fallback(not_found)
        .with_state(state)
}

/// Binds `addr` and serves [`router`] until `shutdown` is cancelled, then finishes the
/// requests in progress (live streams end at once). Returns the bound address (useful with
/// port 0) and the server task.
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
    let app = router(state).layer(Extension(live::Shutdown(shutdown.clone())));
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

/// The answer to `GET /api/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// The token's name (`null` on an API without tokens).
    pub name: Option<String>,
    /// What it may do: `viewer` or `operator`.
    pub role: Role,
}

/// Who the token is, so that the console offers a viewer no action.
async fn me(State(s): State<ApiState>, headers: HeaderMap) -> Result<Json<Me>, ApiError> {
    let (name, role) = s.auth.identify(&headers)?;
    Ok(Json(Me { name, role }))
}

/// Counts per status under the API's names, every status present.
pub(crate) fn status_counts(
    counts: &std::collections::BTreeMap<Status, usize>,
) -> std::collections::BTreeMap<String, usize> {
    let mut out: std::collections::BTreeMap<String, usize> =
        ALL_STATUSES.iter().map(|st| (st.to_string(), 0)).collect();
    for (status, n) in counts {
        *out.entry(status.to_string()).or_insert(0) += n;
    }
    out
}

pub(crate) fn find(
    view: &SagaView,
    definition: &str,
    correlation_id: &str,
) -> Result<Arc<SagaState>, ApiError> {
    let id = format!("{definition}/{correlation_id}");
    view.get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no saga {id}")))
}
