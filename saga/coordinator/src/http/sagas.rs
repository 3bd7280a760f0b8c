//! The saga routes: listing (filters, cursor paging, counts), one saga, its records read back
//! from Kafka, operator commands, and batches over a filter.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use choreo_saga::{Command, SagaState, Status, parse_duration};
use serde::{Deserialize, Serialize};

use super::{
    ALL_STATUSES, ApiError, ApiState, MAX_LIMIT, OPERATOR_COMMANDS, find, now_ms, status_counts,
};
use crate::api_auth::Role;
use crate::command::CommandRecord;
use crate::history::{DEFAULT_MAX_RECORDS, HistoryQuery, MAX_RECORDS, SagaRecords};
use crate::view::{Cursor, ListQuery, SagaSummary};

/// The answer to `GET /api/sagas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse {
    /// The page's sagas, newest first.
    pub sagas: Vec<SagaSummary>,
    /// How many sagas match the filters, on every page.
    #[serde(default)]
    pub total: usize,
    /// The `before` of the next page, when there is one.
    #[serde(default)]
    pub next: Option<String>,
    /// How many sagas the view holds in each status (every status, unfiltered).
    pub counts: BTreeMap<String, usize>,
    /// The same, per definition.
    #[serde(default)]
    pub counts_by_definition: BTreeMap<String, BTreeMap<String, usize>>,
}

/// The answer to an accepted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAccepted {
    /// The command's id (the saga's timeline names it once applied).
    pub command_id: String,
}

/// The query string of `GET /api/sagas`, before validation. Empty values count as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    definition: Option<String>,
    version: Option<String>,
    status: Option<String>,
    min_age: Option<String>,
    max_age: Option<String>,
    stuck: Option<String>,
    waiting_on: Option<String>,
    search: Option<String>,
    limit: Option<String>,
    before: Option<String>,
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
    pub(super) fn into_query(self) -> Result<ListQuery, ApiError> {
        let version = non_empty(self.version)
            .map(|v| {
                v.trim_start_matches('v').parse::<u32>().map_err(|_| {
                    ApiError::BadRequest(format!("version: \"{v}\" is not a version number"))
                })
            })
            .transpose()?;
        let before = non_empty(self.before)
            .map(|c| Cursor::parse(&c).map_err(|e| ApiError::BadRequest(format!("before: {e}"))))
            .transpose()?;
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
            version,
            status,
            min_age_ms,
            max_age_ms,
            stuck_ms,
            waiting_on: non_empty(self.waiting_on),
            search: non_empty(self.search),
            limit,
            before,
        })
    }
}

pub(super) async fn list_sagas(
    State(s): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    s.auth.check(&headers, Role::Viewer)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = params.into_query()?;
    let page = s.view.list(&query, now_ms());
    Ok(Json(ListResponse {
        sagas: page.sagas,
        total: page.total,
        next: page.next.map(|c| c.to_string()),
        counts: status_counts(&s.view.counts()),
        counts_by_definition: s
            .view
            .counts_by_definition()
            .iter()
            .map(|(d, c)| (d.clone(), status_counts(c)))
            .collect(),
    }))
}

/// One saga as the API shows it: its state, plus the steps a compensating saga waits on.
pub(super) async fn get_saga(
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

/// The query string of `GET /api/sagas/{definition}/{correlation_id}/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsParams {
    margin: Option<String>,
    max_records: Option<String>,
}

/// The window a history read widens the saga's life by when the request names none: records
/// are timed by their producers, a little before the coordinator saw them.
pub const DEFAULT_HISTORY_MARGIN_MS: u64 = 5 * 60 * 1000;
/// The widest margin a history read takes.
pub const MAX_HISTORY_MARGIN_MS: u64 = 7 * 24 * 3600 * 1000;

/// The saga's records read back from Kafka: everything it received and emitted and every
/// command sent to it, from its creation (less the margin) to its last change (plus the
/// margin), payloads decoded. The console merges them with the timeline by time.
pub(super) async fn get_events(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((definition, correlation_id)): Path<(String, String)>,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Json<SagaRecords>, ApiError> {
    s.auth.check(&headers, Role::Viewer)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let margin = age_ms("margin", params.margin)?.unwrap_or(DEFAULT_HISTORY_MARGIN_MS);
    if margin > MAX_HISTORY_MARGIN_MS {
        return Err(ApiError::BadRequest(format!(
            "margin: at most {}",
            choreo_saga::format_duration(std::time::Duration::from_millis(MAX_HISTORY_MARGIN_MS))
        )));
    }
    let max_records = match non_empty(params.max_records) {
        None => DEFAULT_MAX_RECORDS,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=MAX_RECORDS).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "max_records: \"{m}\" is not a number between 1 and {MAX_RECORDS}"
                )));
            }
        },
    };
    let state = find(&s.view, &definition, &correlation_id)?;
    let query = HistoryQuery {
        definition: state.definition.clone(),
        version: state.version,
        correlation_id: state.correlation_id.clone(),
        from_ms: state.created_at.0.saturating_sub(margin),
        to_ms: state.updated_at.0.saturating_add(margin),
        max_records,
    };
    let records = s.history.read(query).await.map_err(|e| {
        tracing::warn!(saga_id = %state.saga_id, error = %e, "history read failed");
        ApiError::Unavailable(format!("the saga's records could not be read: {e}"))
    })?;
    Ok(Json(records))
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
pub(super) async fn post_batch(
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
    if query.before.is_some() {
        return Err(ApiError::BadRequest(
            "a batch acts on every saga its filter matches: it takes no \"before\"".into(),
        ));
    }
    query.limit = Some(query.limit.unwrap_or(MAX_LIMIT));
    let page = s.view.list(&query, now_ms());
    if page.next.is_some() && query.limit == Some(MAX_LIMIT) {
        return Err(ApiError::BadRequest(format!(
            "the filter matches {} sagas; a batch acts on at most {MAX_LIMIT}: narrow the filter",
            page.total
        )));
    }
    let matched = page.sagas;
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

pub(super) async fn post_command(
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
