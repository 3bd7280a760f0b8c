//! The dead-letter routes of the operator API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/dlq` | `{"topics": [{"topic", "origin", "records"}…]}`: every `*.dlq` topic |
//! | `GET /api/dlq/{topic}?reason=&kind=&limit=50&before=` | `{"records": [DeadLetter…], "next": cursor or null}`, newest first |
//! | `GET /api/dlq/{topic}/{partition}/{offset}` | one [`DeadLetter`], or 404 |
//! | `POST /api/dlq/{topic}/redrive` | `{"ids": […]}` or `{"filter": {"reason", "kind"}}` (and an optional `"note"`: why); with `"dry_run": true` → 200 `{"matched", "ids", "refused", "already_redriven"}`; else `"expect": <matched>` is required → 202 `{"redriven": [{"id", "to", "again"}], "refused": [{"id", "reason"}], "remaining"}`, 409 when the matching set changed |
//!
//! Viewers read; a redrive needs the operator role and `Content-Type: application/json` (415),
//! its body at most [`MAX_REDRIVE_BODY`] (413), its ids at most [`MAX_REDRIVE`], its texts
//! bounded. Every error is `{"error": "…"}`. A filter picks the records that were never
//! redriven; ids pick exactly those (a second redrive is done, and shown as `"again"`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::record::{
    DEFAULT_LIMIT, DlqId, Filter, MAX_LIMIT, MAX_REDRIVE, MAX_REDRIVE_BODY, MAX_REDRIVE_NOTE, Page,
    RedriveDone, Selection, TopicList, check_topic,
};
use super::{DeadLetter, DeadLetterDesk, DeskError, ids_of};
use crate::api_auth::{ApiAuth, Refusal, Role, is_json, operator_named};

#[derive(Clone)]
struct DlqState {
    desk: Option<Arc<DeadLetterDesk>>,
    auth: Arc<ApiAuth>,
}

/// The dead-letter routes, to merge into the operator API's router. Without a desk they answer
/// 503.
pub fn routes<S>(desk: Option<Arc<DeadLetterDesk>>, auth: Arc<ApiAuth>) -> Router<S> {
    Router::new()
        .route("/api/dlq", get(list_topics))
        .route("/api/dlq/{topic}", get(list_records))
        .route(
            "/api/dlq/{topic}/redrive",
            post(redrive).layer(DefaultBodyLimit::max(MAX_REDRIVE_BODY)),
        )
        .route("/api/dlq/{topic}/{partition}/{offset}", get(one_record))
        .with_state(DlqState { desk, auth })
}

/// An error answer.
#[derive(Debug)]
struct DlqError(StatusCode, String);

impl IntoResponse for DlqError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

fn bad(message: impl Into<String>) -> DlqError {
    DlqError(StatusCode::BAD_REQUEST, message.into())
}

impl From<Refusal> for DlqError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated(m) => DlqError(StatusCode::UNAUTHORIZED, m),
            Refusal::Forbidden(m) => DlqError(StatusCode::FORBIDDEN, m),
        }
    }
}

impl From<DeskError> for DlqError {
    fn from(e: DeskError) -> Self {
        let status = match &e {
            DeskError::NotFound(_) => StatusCode::NOT_FOUND,
            DeskError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DeskError::Conflict(_) => StatusCode::CONFLICT,
            DeskError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        DlqError(status, e.to_string())
    }
}

impl DlqState {
    fn desk(&self) -> Result<&DeadLetterDesk, DlqError> {
        self.desk.as_deref().ok_or_else(|| {
            DlqError(
                StatusCode::SERVICE_UNAVAILABLE,
                "dead letters are not served by this API".into(),
            )
        })
    }
}

fn topic_checked(topic: &str) -> Result<(), DlqError> {
    check_topic(topic).map_err(|e| DlqError(StatusCode::NOT_FOUND, e))
}

async fn list_topics(
    State(s): State<DlqState>,
    headers: HeaderMap,
) -> Result<Json<TopicList>, DlqError> {
    s.auth.check(&headers, Role::Viewer)?;
    Ok(Json(s.desk()?.topics().await?))
}

/// The query string of a listing. Empty values count as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    reason: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

async fn list_records(
    State(s): State<DlqState>,
    headers: HeaderMap,
    Path(topic): Path<String>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, DlqError> {
    s.auth.check(&headers, Role::Viewer)?;
    let Query(p) = params.map_err(|e| bad(e.body_text()))?;
    topic_checked(&topic)?;
    let filter = Filter {
        reason: p.reason,
        kind: p.kind,
    }
    .checked()
    .map_err(bad)?;
    let limit = match p.limit.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "limit: \"{l}\" is not a number between 1 and {MAX_LIMIT}"
                ))
            })?,
    };
    let before = p.before.filter(|b| !b.trim().is_empty());
    Ok(Json(
        s.desk()?
            .page(&topic, filter, limit, before.as_deref())
            .await?,
    ))
}

async fn one_record(
    State(s): State<DlqState>,
    headers: HeaderMap,
    Path((topic, partition, offset)): Path<(String, String, String)>,
) -> Result<Json<DeadLetter>, DlqError> {
    s.auth.check(&headers, Role::Viewer)?;
    topic_checked(&topic)?;
    let id = DlqId::parse(&format!("{topic}/{partition}/{offset}"))
        .map_err(|e| DlqError(StatusCode::NOT_FOUND, e))?;
    Ok(Json(s.desk()?.get(&id).await?))
}

/// The body of a redrive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    expect: Option<usize>,
    /// Why (kept with the redrive).
    #[serde(default)]
    note: Option<String>,
}

const EXAMPLE: &str = r#"{"ids": ["orders.dlq/0/5"], "dry_run": true} or {"filter": {"kind": "unknown_schema_id"}, "dry_run": true}, then the same with "expect": <matched> instead of "dry_run""#;

async fn redrive(
    State(s): State<DlqState>,
    headers: HeaderMap,
    Path(topic): Path<String>,
    body: Bytes,
) -> Result<Response, DlqError> {
    let who = s.auth.check(&headers, Role::Operator)?;
    if !is_json(&headers) {
        return Err(DlqError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a redrive must be sent as Content-Type: application/json".into(),
        ));
    }
    let by = match who {
        Some(name) => name,
        None => operator_named(&headers)
            .map_err(bad)?
            .unwrap_or_else(|| "anonymous".into()),
    };
    topic_checked(&topic)?;
    let req: RedriveRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body is not a redrive ({e}); expected {EXAMPLE}"
        ))
    })?;
    let selection = match (req.ids, req.filter) {
        (Some(ids), None) => {
            if ids.is_empty() {
                return Err(bad("ids is empty: name at least one record"));
            }
            if ids.len() > MAX_REDRIVE {
                return Err(bad(format!(
                    "{} ids: at most {MAX_REDRIVE} per redrive",
                    ids.len()
                )));
            }
            ids_of(&topic, &ids).map_err(bad)?
        }
        (None, Some(filter)) => Selection::Filter(filter.checked().map_err(bad)?),
        _ => {
            return Err(bad(format!(
                "give either ids or filter; expected {EXAMPLE}"
            )));
        }
    };
    let note = req
        .note
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if let Some(r) = &note
        && r.len() > MAX_REDRIVE_NOTE
    {
        return Err(bad(format!(
            "the note is {} bytes long; at most {MAX_REDRIVE_NOTE} are allowed",
            r.len()
        )));
    }
    let desk = s.desk()?;
    if req.dry_run {
        return Ok(Json(desk.preview(&topic, selection).await?).into_response());
    }
    let Some(expect) = req.expect else {
        return Err(bad(
            "a redrive runs only with \"expect\": the number of records its dry run matched",
        ));
    };
    let done: RedriveDone = desk
        .redrive(&topic, selection, expect, &by, note.as_deref())
        .await?;
    tracing::info!(topic = %topic, redriven = done.redriven.len(), refused = done.refused.len(), remaining = done.remaining, by = %by, "operator redrive");
    Ok((StatusCode::ACCEPTED, Json(done)).into_response())
}
