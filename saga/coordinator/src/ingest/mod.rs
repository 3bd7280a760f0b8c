//! HTTP ingest: domain events over the CloudEvents HTTP binding, for languages and tools
//! without a Kafka client (a shell script with `curl`, a serverless function, a webhook).
//!
//! | route | answer |
//! |---|---|
//! | `POST /events` | one event (binary or structured mode) or a batch; see below |
//! | `GET /healthz` | 200 `ok` |
//!
//! Each event's data is JSON as a person writes it, checked against the catalog schema of its
//! `type` (the newest version, or the one `dataschema` names; [`shape`]), encoded to Avro in
//! the Confluent framing and produced with the idempotent producer to the type's topic: key =
//! `subject` (or the `partitionkey` extension), the CloudEvents Kafka headers every choreo
//! producer writes, `traceparent` continued.
//!
//! | status | when |
//! |---|---|
//! | 202 | produced and acknowledged by the broker: `{"id", "topic", "partition", "offset", "duplicate"}` |
//! | 400 | malformed request or data; the message names the attribute or the field path |
//! | 401 / 403 | no or an unknown bearer token / a token that may not send this source or type |
//! | 413 | the body is larger than `ingest.max_body_bytes` |
//! | 415 | not JSON data, nor a CloudEvents JSON content type |
//! | 422 | an event type (or a `dataschema` version) the catalog does not know |
//! | 429 | `ingest.max_in_flight` events are being produced already (retry) |
//! | 503 | Kafka or the schema registry is unreachable (retry) |
//!
//! A batch is validated all-or-nothing (one bad event: nothing is produced, and the error
//! names its index) and delivered per event (the answer lists each event's outcome; 503 when
//! any failed, and a retry of the whole batch produces only those, by identity). The answer
//! says so: `"validation": "all_or_nothing", "delivery": "per_event"`. Every error answer is
//! `{"error": "…"}` (with `"index"` in a batch). An event sent again with the same `source`
//! and `id` is produced once ([`dedup`]).

pub mod auth;
pub mod cloudevent;
pub mod dedup;
pub mod shape;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use choreo_bus::wire::codec::Codec;
use choreo_bus::wire::trace;
use choreo_bus::{Bus, BusError, Delivery, Envelope};
use choreo_schemas::Catalog;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::auth::{Auth, Denied, Grant};
use self::cloudevent::{Incoming, Mode, Refusal};
use self::dedup::Recent;

/// Counter of ingested events, labelled `outcome` (`produced`, `duplicate`, `rejected`,
/// `failed`).
pub const EVENTS: &str = "choreo_ingest_events_total";

/// One record for Kafka, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The topic.
    pub topic: String,
    /// The record key.
    pub key: String,
    /// The envelope (the record's headers).
    pub envelope: Envelope,
    /// The value: Avro in the Confluent framing.
    pub value: Vec<u8>,
}

/// Where the ingest produces: in production the bus's idempotent producer; in tests a fake.
pub trait EventSink: Send + Sync {
    /// Produces `record`; resolves once the broker acknowledged it. The error is shown to the
    /// client with a 503.
    fn publish(&self, record: Outgoing) -> BoxFuture<'static, Result<Delivery, String>>;
}

impl EventSink for Bus {
    fn publish(&self, r: Outgoing) -> BoxFuture<'static, Result<Delivery, String>> {
        let bus = self.clone();
        Box::pin(async move {
            bus.publish_envelope_keyed(&r.topic, &r.key, &r.envelope, &r.value)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The bus settings of the ingest's producer: `kafka`, waiting at most 1 ms to fill a batch
/// (`linger.ms`, unless `kafka.client` sets it) — each request waits for its acknowledgement.
pub fn producer_config(mut kafka: choreo_bus::BusConfig) -> choreo_bus::BusConfig {
    kafka
        .client
        .entry("linger.ms".into())
        .or_insert_with(|| "1".into());
    kafka
}

/// What the ingest is built from.
#[derive(Clone)]
pub struct IngestOptions {
    /// The event types it accepts, their topics and schemas.
    pub catalog: Arc<Catalog>,
    /// The codec (and through it the registry) that encodes the data.
    pub codec: Codec,
    /// Where records go.
    pub sink: Arc<dyn EventSink>,
    /// Who may send.
    pub auth: Auth,
    /// The largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// The most events being produced at once (429 above).
    pub max_in_flight: usize,
    /// How many recent event identities are remembered for deduplication.
    pub dedup_window: usize,
}

impl std::fmt::Debug for IngestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOptions")
            .field("auth", &self.auth)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .field("dedup_window", &self.dedup_window)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Ingest {
    catalog: Arc<Catalog>,
    codec: Codec,
    sink: Arc<dyn EventSink>,
    auth: Arc<Auth>,
    recent: Arc<Recent>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

/// The answer for one produced event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The event's `id`.
    pub id: String,
    /// The topic it was produced to.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Whether it had been produced before (this request produced nothing new).
    pub duplicate: bool,
}

/// One event's outcome in a batch answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchItem {
    /// Produced.
    Accepted(Accepted),
    /// Not produced (retry it).
    Failed {
        /// The event's `id`.
        id: String,
        /// Why.
        error: String,
    },
}

/// The answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAnswer {
    /// `all_or_nothing`: one invalid event and nothing is produced.
    pub validation: String,
    /// `per_event`: each event is produced on its own; `events` says which were.
    pub delivery: String,
    /// How many were produced (or had been).
    pub accepted: usize,
    /// How many were not.
    pub failed: usize,
    /// Each event's outcome, in the batch's order.
    pub events: Vec<BatchItem>,
}

/// An error answer.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    message: String,
    index: Option<usize>,
}

impl Problem {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            index: None,
        }
    }
}

impl From<Refusal> for Problem {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Malformed(m) => Problem::new(StatusCode::BAD_REQUEST, m),
            Refusal::UnsupportedMedia(m) => Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
        }
    }
}

impl From<Denied> for Problem {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => Problem::new(StatusCode::UNAUTHORIZED, m),
            Denied::Forbidden(m) => Problem::new(StatusCode::FORBIDDEN, m),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let outcome = if self.status.is_server_error() {
            "failed"
        } else {
            "rejected"
        };
        metrics::counter!(EVENTS, "outcome" => outcome).increment(1);
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(i) = self.index {
            body["index"] = i.into();
        }
        let mut r = (self.status, Json(body)).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        r
    }
}

/// The ingest's routes.
pub fn router(options: IngestOptions) -> Router {
    let max_body = options.max_body_bytes;
    let state = Ingest {
        catalog: options.catalog,
        codec: options.codec,
        sink: options.sink,
        auth: Arc::new(options.auth),
        recent: Arc::new(Recent::new(options.dedup_window)),
        in_flight: Arc::new(Semaphore::new(options.max_in_flight)),
        max_in_flight: options.max_in_flight,
    };
    Router::new()
        .route(
            "/events",
            post(post_events).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no such route; events go to POST /events",
            )
        })
        .with_state(state)
}

/// Binds `addr` and serves [`router`] until `shutdown` is cancelled, then finishes the
/// requests in progress (every accepted event is answered). Returns the bound address and
/// the server task.
pub async fn serve(
    options: IngestOptions,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), crate::CoordinatorError> {
    let cannot = |e: std::io::Error| {
        crate::CoordinatorError::Startup(format!("cannot listen on {addr} (ingest.listen): {e}"))
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(cannot)?;
    let local = listener.local_addr().map_err(cannot)?;
    let app = router(options);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        match served {
            Ok(()) => tracing::info!(addr = %local, "event ingest stopped"),
            Err(e) => tracing::error!(addr = %local, error = %e, "event ingest failed"),
        }
    });
    tracing::info!(addr = %local, "event ingest listening");
    Ok((local, task))
}

async fn post_events(
    State(s): State<Ingest>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&s, &headers, body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn handle(
    s: &Ingest,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let grant = s.auth.identify(headers)?;
    let body = body.map_err(|r| {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the body is larger than this ingest accepts (ingest.max_body_bytes)".to_owned()
        } else {
            r.body_text()
        };
        Problem::new(status, message)
    })?;
    let mode = cloudevent::mode(headers)?;
    let header_trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(choreo_bus::TraceParent::parse);
    let incoming = match mode {
        Mode::Binary => vec![cloudevent::binary(headers, &body)?],
        Mode::Structured => vec![cloudevent::structured(&body, header_trace)?],
        Mode::Batch => cloudevent::batch(&body, header_trace)?,
    };
    let batch = mode == Mode::Batch;
    let mut records = Vec::with_capacity(incoming.len());
    for (i, event) in incoming.into_iter().enumerate() {
        let record = s.prepare(grant, event).await.map_err(|mut p| {
            if batch {
                p.message = format!("event [{i}]: {}", p.message);
                p.index = Some(i);
            }
            p
        })?;
        records.push(record);
    }
    let n = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let _permits = s.in_flight.try_acquire_many(n).map_err(|_| {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} events are being produced already (ingest.max_in_flight); retry shortly",
                s.max_in_flight
            ),
        )
    })?;
    let outcomes =
        futures::future::join_all(records.into_iter().map(|(source, r)| s.produce(source, r)))
            .await;
    if !batch {
        let outcome = outcomes.into_iter().next().expect("one event");
        return outcome
            .map(|a| (StatusCode::ACCEPTED, Json(a)).into_response())
            .map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, e));
    }
    let events: Vec<BatchItem> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(a) => BatchItem::Accepted(a),
            Err(e) => BatchItem::Failed {
                id: e.id,
                error: e.error,
            },
        })
        .collect();
    let failed = events
        .iter()
        .filter(|e| matches!(e, BatchItem::Failed { .. }))
        .count();
    let answer = BatchAnswer {
        validation: "all_or_nothing".into(),
        delivery: "per_event".into(),
        accepted: events.len() - failed,
        failed,
        events,
    };
    let status = if failed == 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = (status, Json(answer)).into_response();
    if failed > 0 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Ok(r)
}

/// A record that was not produced.
#[derive(Debug)]
struct NotProduced {
    id: String,
    error: String,
}

impl From<NotProduced> for String {
    fn from(n: NotProduced) -> String {
        n.error
    }
}

impl Ingest {
    /// Checks one event (authorization, catalog, data) and encodes it: every refusal happens
    /// here, before anything is produced.
    async fn prepare(
        &self,
        grant: Option<&Grant>,
        e: Incoming,
    ) -> Result<(String, Outgoing), Problem> {
        auth::allows(grant, &e.source, &e.event_type)?;
        let Some(info) = self.catalog.event(&e.event_type) else {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "event type {} is not in the catalog (known: {})",
                    e.event_type,
                    self.catalog
                        .events()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let version = match e.dataschema.as_deref() {
            None => None,
            Some(uri) => cloudevent::dataschema_version(uri)
                .map_err(|m| Problem::new(StatusCode::BAD_REQUEST, m))?,
        };
        let schema = match version {
            None => info.latest(),
            Some(v) => info
                .versions
                .iter()
                .find(|s| s.version == v)
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "{} has no schema version {v} (the catalog has 1 to {})",
                            e.event_type,
                            info.latest().version
                        ),
                    )
                })?,
        };
        let correlation = e
            .subject
            .clone()
            .or_else(|| e.partition_key.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "subject is missing: it is the correlation id (the record key), e.g. the \
                     order id (or set the partitionkey extension)",
                )
            })?;
        shape::check(&schema.schema, &e.data).map_err(|m| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "data does not fit {} v{}: {m}",
                    e.event_type, schema.version
                ),
            )
        })?;
        let value = self
            .codec
            .encode_json_version(&info.topic, &self.catalog, &e.event_type, version, &e.data)
            .await
            .map_err(|err| match err {
                BusError::Encode { reason, .. } => Problem::new(StatusCode::BAD_REQUEST, reason),
                other => Problem::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
            })?;
        let key = e
            .partition_key
            .clone()
            .unwrap_or_else(|| correlation.clone());
        let mut envelope = Envelope::new(
            e.id,
            e.source.clone(),
            e.event_type,
            correlation,
            None,
            e.traceparent,
        );
        // The caller's trace context as it came; `produce` joins it.
        envelope.traceparent = e.traceparent;
        if let Some(t) = e.time {
            envelope.time = t;
        }
        Ok((
            e.source,
            Outgoing {
                topic: info.topic.clone(),
                key,
                envelope,
                value,
            },
        ))
    }

    /// Produces one record, once per identity.
    async fn produce(&self, source: String, mut record: Outgoing) -> Result<Accepted, NotProduced> {
        let id = record.envelope.id.clone();
        // A child of the caller's traceparent; the record produced names it (or, with
        // OpenTelemetry, the publish span under it).
        let span = tracing::info_span!(
            "choreo.ingest",
            otel.name = "ingest",
            otel.kind = "server",
            messaging.message.id = %id,
            messaging.destination.name = %record.topic,
            correlation_id = %record.envelope.correlation_id,
            event_type = %record.envelope.event_type,
            source = %source,
        );
        record.envelope.traceparent = Some(trace::join(&span, record.envelope.traceparent));
        let sink = Arc::clone(&self.sink);
        let produced = self
            .recent
            .once(&source, &id, || sink.publish(record))
            .instrument(span)
            .await;
        match produced {
            Ok((d, duplicate)) => {
                let outcome = if duplicate { "duplicate" } else { "produced" };
                metrics::counter!(EVENTS, "outcome" => outcome).increment(1);
                Ok(Accepted {
                    id,
                    topic: d.topic,
                    partition: d.partition,
                    offset: d.offset,
                    duplicate,
                })
            }
            Err(error) => {
                metrics::counter!(EVENTS, "outcome" => "failed").increment(1);
                Err(NotProduced {
                    id,
                    error: format!("not produced (Kafka unreachable?), retry: {error}"),
                })
            }
        }
    }
}
