//! The in-process registry served over the subset of the Confluent REST API that the official
//! serializers (Java, Python, Go, .NET, Node) call, so a service in any language can register and
//! fetch schemas against choreo's embedded mode unchanged.
//!
//! Routes: `POST /subjects/{s}/versions`, `POST /subjects/{s}` (look-up), `GET /schemas/ids/{id}`,
//! `GET /schemas/ids/{id}/schema`, `GET /subjects`, `GET /subjects/{s}/versions`,
//! `GET /subjects/{s}/versions/{v|latest}`, `GET|PUT /config`, `GET|PUT /config/{s}`,
//! `POST /compatibility/subjects/{s}/versions/{v|latest}`.

use std::sync::Arc;
use subtle::ConstantTimeEq;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::compat::Compatibility;
use crate::error::RegistryError;
use crate::registry::{MemoryRegistry, RegistryStore, SubjectVersion};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The router serving `store` (reads from its view, writes through it); mount it at the root
/// of a listener.
pub fn router(store: Arc<dyn RegistryStore>) -> Router {
    router_with_token(store, None)
}

/// [`router`], with writes (registering, config changes) refused without
/// `Authorization: Bearer <write_token>` when it is set.
pub fn router_with_token(store: Arc<dyn RegistryStore>, write_token: Option<String>) -> Router {
    let state = Server {
        store,
        write_token: write_token.map(Arc::from),
    };
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(by_id))
        .route("/schemas/ids/{id}/schema", get(raw_by_id))
        .route("/config", get(get_global).put(put_global))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatible),
        )
        .with_state(state)
        .layer(axum::middleware::map_response(json_errors))
}

/// Answers the errors the router itself makes (a body that is not the JSON a route takes, a
/// path or method it does not serve) as the Confluent API does, `{"error_code": <status>,
/// "message": …}`, instead of axum's plain text: the serializers read an error's body as JSON.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        text
    };
    reply(
        status,
        json!({"error_code": status.as_u16(), "message": message}),
    )
}

/// Binds `addr` and serves [`router`] in the background; returns the bound address.
pub async fn serve(
    store: Arc<dyn RegistryStore>,
    addr: std::net::SocketAddr,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_app(router(store), addr).await
}

/// Serves an already built router (see [`router_with_token`]) on `addr`.
pub async fn serve_app(
    app: Router,
    addr: std::net::SocketAddr,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "schema registry server stopped");
        }
    });
    Ok((local, task))
}

#[derive(Clone)]
struct Server {
    store: Arc<dyn RegistryStore>,
    write_token: Option<Arc<str>>,
}

impl Server {
    fn view(&self) -> &MemoryRegistry {
        self.store.view()
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.write_token else {
            return Ok(());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Constant time in the token's content (the length is not secret).
        let same: bool = presented.as_bytes().ct_eq(token.as_bytes()).into();
        if same {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                40101,
                "writes to this registry need Authorization: Bearer <token>".into(),
            ))
        }
    }

    /// The schema of `id`, refreshing the view once before answering that it is unknown.
    async fn schema(&self, id: u32) -> Result<String, ApiError> {
        if let Some(s) = self.view().get(id) {
            return Ok(s);
        }
        self.store.refresh().await?;
        Ok(self.view().get(id).ok_or(RegistryError::UnknownId(id))?)
    }
}

struct ApiError(StatusCode, u32, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(self.0, json!({"error_code": self.1, "message": self.2}))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match &e {
            RegistryError::UnknownId(_) => ApiError(StatusCode::NOT_FOUND, 40403, e.to_string()),
            RegistryError::UnknownSubject(_) => {
                ApiError(StatusCode::NOT_FOUND, 40401, e.to_string())
            }
            RegistryError::InvalidSchema(_) => {
                ApiError(StatusCode::UNPROCESSABLE_ENTITY, 42201, e.to_string())
            }
            RegistryError::Incompatible { .. } => {
                ApiError(StatusCode::CONFLICT, 409, e.to_string())
            }
            RegistryError::LimitReached(_) => {
                ApiError(StatusCode::UNPROCESSABLE_ENTITY, 42299, e.to_string())
            }
            RegistryError::Transport { .. } => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, 50001, e.to_string())
            }
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigBody {
    compatibility: Compatibility,
}

fn check_type(body: &SchemaBody) -> Result<(), ApiError> {
    match body.schema_type.as_deref() {
        None | Some("AVRO") => Ok(()),
        Some(other) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("schema type {other} is not supported; this registry holds Avro schemas"),
        )),
    }
}

fn version_json(v: &SubjectVersion) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema})
}

fn pick(reg: &MemoryRegistry, subject: &str, version: &str) -> Result<SubjectVersion, ApiError> {
    let all = reg.versions(subject)?;
    let found = if version == "latest" || version == "-1" {
        all.last().cloned()
    } else {
        version
            .parse::<u32>()
            .ok()
            .and_then(|n| all.iter().find(|v| v.version == n).cloned())
    };
    found.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            40402,
            format!("version {version} of {subject} not found"),
        )
    })
}

async fn subjects(State(srv): State<Server>) -> Response {
    ok(json!(srv.view().subjects()))
}

async fn register(
    State(srv): State<Server>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    Json(body): Json<SchemaBody>,
) -> Result<Response, ApiError> {
    srv.authorize(&headers)?;
    check_type(&body)?;
    let v = srv.store.register_version(&subject, &body.schema).await?;
    Ok(ok(json!({"id": v.id})))
}

async fn lookup(
    State(srv): State<Server>,
    Path(subject): Path<String>,
    Json(body): Json<SchemaBody>,
) -> Result<Response, ApiError> {
    check_type(&body)?;
    match srv.view().lookup(&subject, &body.schema)? {
        Some(v) => Ok(ok(version_json(&v))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            40403,
            "schema not found".into(),
        )),
    }
}

async fn versions(
    State(srv): State<Server>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let v: Vec<u32> = srv
        .view()
        .versions(&subject)?
        .iter()
        .map(|v| v.version)
        .collect();
    Ok(ok(json!(v)))
}

async fn version(
    State(srv): State<Server>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(ok(version_json(&pick(srv.view(), &subject, &version)?)))
}

async fn by_id(State(srv): State<Server>, Path(id): Path<u32>) -> Result<Response, ApiError> {
    let schema = srv.schema(id).await?;
    Ok(ok(json!({"schema": schema})))
}

async fn raw_by_id(State(srv): State<Server>, Path(id): Path<u32>) -> Result<Response, ApiError> {
    let schema = srv.schema(id).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(&schema).unwrap_or(Value::String(schema)),
    ))
}

async fn get_global(State(srv): State<Server>) -> Response {
    ok(json!({"compatibilityLevel": srv.view().compatibility(None)}))
}

async fn put_global(
    State(srv): State<Server>,
    headers: HeaderMap,
    Json(body): Json<ConfigBody>,
) -> Result<Response, ApiError> {
    srv.authorize(&headers)?;
    srv.store.set_rule(None, body.compatibility).await?;
    Ok(ok(json!({"compatibility": body.compatibility})))
}

async fn get_subject_config(State(srv): State<Server>, Path(subject): Path<String>) -> Response {
    ok(json!({"compatibilityLevel": srv.view().compatibility(Some(&subject))}))
}

async fn put_subject_config(
    State(srv): State<Server>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ConfigBody>,
) -> Result<Response, ApiError> {
    srv.authorize(&headers)?;
    srv.store
        .set_rule(Some(&subject), body.compatibility)
        .await?;
    Ok(ok(json!({"compatibility": body.compatibility})))
}

async fn compatible(
    State(srv): State<Server>,
    Path((subject, _version)): Path<(String, String)>,
    Json(body): Json<SchemaBody>,
) -> Result<Response, ApiError> {
    check_type(&body)?;
    match srv.view().check(&subject, &body.schema) {
        Ok(()) => Ok(ok(json!({"is_compatible": true}))),
        Err(RegistryError::Incompatible { reason, .. }) => {
            Ok(ok(json!({"is_compatible": false, "messages": [reason]})))
        }
        Err(e) => Err(e.into()),
    }
}
