//! The in-process registry: ids, subjects, compatibility enforcement, and the Confluent REST API
//! served over HTTP and spoken by the `ConfluentRegistry` client.

use std::sync::Arc;

use choreo_schemas::event::{OrderPlaced, OrderPlacedV1};
use choreo_schemas::{
    CachedRegistry, Compatibility, ConfluentRegistry, Event, MemoryRegistry, RegistryError,
    SchemaRegistry,
};

const SUBJECT: &str = "orders-io.choreo.orders.OrderPlaced";

#[tokio::test]
async fn ids_are_stable_and_versions_accumulate() {
    let reg = MemoryRegistry::new();
    let a = reg
        .register(SUBJECT, OrderPlacedV1::schema_text())
        .await
        .expect("v1");
    let again = reg
        .register(SUBJECT, OrderPlacedV1::schema_text())
        .await
        .expect("v1 again");
    assert_eq!(a, again, "registering twice gives the same id");
    let b = reg
        .register(SUBJECT, OrderPlaced::schema_text())
        .await
        .expect("v2 is BACKWARD");
    assert_ne!(a, b);
    assert_eq!(reg.versions(SUBJECT).expect("subject").len(), 2);
    // Same schema under another subject keeps its global id.
    let c = reg
        .register(
            "other-io.choreo.orders.OrderPlaced",
            OrderPlacedV1::schema_text(),
        )
        .await
        .expect("other");
    assert_eq!(a, c);
    assert_eq!(
        reg.schema_by_id(b).await.expect("by id"),
        OrderPlaced::schema_text()
    );
    assert!(matches!(
        reg.schema_by_id(a ^ 1).await,
        Err(RegistryError::UnknownId(_))
    ));
}

#[tokio::test]
async fn an_id_means_one_schema_whatever_was_registered_before_and_in_every_registry() {
    // Before: ids followed the order of registration, so an event type added on upgrade (its
    // name sorting first) re-pointed the ids records already in Kafka carry.
    let catalog = choreo_schemas::Catalog::reference();
    let all: Vec<(String, String)> = catalog
        .events()
        .flat_map(|e| {
            e.versions
                .iter()
                .map(|v| (e.subject(), v.text.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let forward = MemoryRegistry::new();
    let mut ids = Vec::new();
    for (subject, text) in &all {
        ids.push(forward.register(subject, text).await.expect("registers"));
    }
    // Another registry (another process, or this one after a restart) that first saw a new
    // event type, then the catalog backwards.
    let other = MemoryRegistry::new();
    other
        .register(
            "aaa-new.Event",
            r#"{"type":"record","name":"Event","namespace":"new","fields":[{"name":"x","type":"int"}]}"#,
        )
        .await
        .expect("new type");
    for ((subject, text), id) in all.iter().zip(&ids).rev() {
        assert_eq!(
            other.register(subject, text).await.expect("registers"),
            *id,
            "{subject}: the same id"
        );
    }
    let distinct: std::collections::HashSet<u32> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "one id per schema");
    assert!(ids.iter().all(|id| (1..=0x7FFF_FFFF).contains(id)));
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_with_the_field() {
    let reg = MemoryRegistry::new();
    reg.register(SUBJECT, OrderPlacedV1::schema_text())
        .await
        .expect("v1");
    let broken = OrderPlaced::schema_text().replace("\"default\": \"web\",", "");
    let err = reg.register(SUBJECT, &broken).await.expect_err("refused");
    assert!(matches!(err, RegistryError::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("channel"), "{err}");
    reg.set_compatibility(Some(SUBJECT), Compatibility::None);
    reg.register(SUBJECT, &broken)
        .await
        .expect("NONE accepts anything");
}

#[tokio::test]
async fn the_rest_api_serves_the_confluent_client() {
    let reg = Arc::new(MemoryRegistry::new());
    let (addr, task) = choreo_schemas::server::serve(
        Arc::clone(&reg) as Arc<dyn choreo_schemas::RegistryStore>,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("bind");
    let client = ConfluentRegistry::new(&format!("http://{addr}"));
    let id = client
        .register(SUBJECT, OrderPlacedV1::schema_text())
        .await
        .expect("register over REST");
    assert_eq!(reg.get(id).as_deref(), Some(OrderPlacedV1::schema_text()));
    let text = client.schema_by_id(id).await.expect("fetch over REST");
    assert_eq!(
        apache_avro::Schema::parse_str(&text)
            .expect("parses")
            .canonical_form(),
        OrderPlacedV1::schema().canonical_form()
    );
    let broken = OrderPlaced::schema_text().replace("\"default\": \"web\",", "");
    let err = client
        .register(SUBJECT, &broken)
        .await
        .expect_err("409 over REST");
    assert!(
        err.to_string().contains("409") || err.to_string().contains("ncompatible"),
        "{err}"
    );
    let cached = CachedRegistry::new(Arc::new(client));
    assert_eq!(
        cached
            .id_for(SUBJECT, OrderPlacedV1::schema_text())
            .await
            .expect("id"),
        id
    );
    assert!(cached.schema(id).await.is_ok());
    assert!(cached.cached(id).is_some());
    task.abort();
}

/// Found by fuzzing (`integration-tests/fuzz`, target `registry`): a body that is not the JSON
/// a route takes, an unknown path or a method a path does not serve were answered in plain
/// text, which the serializers cannot read; every error is Confluent's JSON.
#[tokio::test]
async fn every_error_of_the_rest_api_is_json() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let reg = Arc::new(MemoryRegistry::new());
    let (addr, task) = choreo_schemas::server::serve(
        reg as Arc<dyn choreo_schemas::RegistryStore>,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("bind");
    let subject = format!("/subjects/{SUBJECT}/versions");
    for (method, path, body, status) in [
        ("POST", subject.as_str(), "{\"schema\": \"\\x\"}", 400),
        ("POST", subject.as_str(), "{\"schema\": 1}", 422),
        ("POST", subject.as_str(), "", 400),
        ("GET", "/subject", "", 404),
        ("DELETE", subject.as_str(), "", 405),
        ("GET", "/schemas/ids/not-a-number", "", 400),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\
             Content-Type: application/vnd.schemaregistry.v1+json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("answer");
        let (head, json) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{method} {path}: {head}"
        );
        let json: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {json}"));
        assert_eq!(json["error_code"], status, "{method} {path}: {json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
    task.abort();
}

/// What one registry holds is bounded: a subject takes at most `MAX_VERSIONS_PER_SUBJECT`
/// versions and a schema at most `MAX_SCHEMA_TEXT_BYTES`; past either, registering is refused
/// (and nothing is added), while what is registered stays readable and registrable again.
#[test]
fn the_registry_refuses_to_grow_past_its_limits() {
    use choreo_schemas::registry::{MAX_SCHEMA_TEXT_BYTES, MAX_VERSIONS_PER_SUBJECT};
    let reg = MemoryRegistry::new();
    reg.set_compatibility(Some("grow"), Compatibility::None);
    let schema = |i: usize| {
        format!(r#"{{"type":"record","name":"Grow","fields":[{{"name":"f{i}","type":"long"}}]}}"#)
    };
    for i in 0..MAX_VERSIONS_PER_SUBJECT {
        reg.register_schema("grow", &schema(i))
            .expect("within the limit");
    }
    let refused = reg
        .register_schema("grow", &schema(MAX_VERSIONS_PER_SUBJECT))
        .expect_err("one version too many");
    assert!(
        matches!(refused, RegistryError::LimitReached(_)),
        "{refused}"
    );
    assert!(
        reg.register_schema("grow", &schema(0)).is_ok(),
        "a registered schema registers again"
    );
    let huge = format!(
        r#"{{"type":"record","name":"Huge","doc":"{}","fields":[]}}"#,
        "x".repeat(MAX_SCHEMA_TEXT_BYTES)
    );
    assert!(matches!(
        reg.register_schema("huge", &huge),
        Err(RegistryError::InvalidSchema(_))
    ));
}

/// One request to `app`: (status, body).
async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tower::ServiceExt as _;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/vnd.schemaregistry.v1+json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = app
        .clone()
        .oneshot(
            req.body(axum::body::Body::from(body.to_owned()))
                .expect("request"),
        )
        .await
        .expect("answer");
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// With a write token, every route that changes the registry (registering a version, the global
/// and a subject's compatibility) refuses a request without it or with another token (401,
/// nothing changed) and takes it with the token; every read (and the look-up and compatibility
/// check, which change nothing) stays open; routes of other registries that would delete or
/// change things (DELETE on subjects and versions, /mode) are not served at all.
#[tokio::test]
async fn the_write_token_guards_every_write_and_config_route_and_reads_stay_open() {
    const TOKEN: &str = "registry-write-token-7Yq";
    let reg = Arc::new(MemoryRegistry::new());
    let app = choreo_schemas::server::router_with_token(
        Arc::clone(&reg) as Arc<dyn choreo_schemas::RegistryStore>,
        Some(TOKEN.to_owned()),
    );
    let schema = serde_json::json!({"schema": OrderPlacedV1::schema_text()}).to_string();
    let config = r#"{"compatibility":"NONE"}"#;
    let writes = [
        (
            "POST",
            format!("/subjects/{SUBJECT}/versions"),
            schema.as_str(),
        ),
        ("PUT", "/config".to_owned(), config),
        ("PUT", format!("/config/{SUBJECT}"), config),
    ];
    let bearer = format!("Bearer {TOKEN}");
    let refused = [
        None,
        Some("Bearer registry-write-token-7Yx"),
        Some("Bearer "),
        Some("registry-write-token-7Yq"),
        Some("Basic cmVnaXN0cnk6cmVnaXN0cnk="),
    ];
    for (method, path, body) in &writes {
        for auth in refused {
            let (status, text) = call(&app, method, path, auth, body).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {text}");
            assert!(text.contains("Authorization: Bearer"), "{text}");
        }
    }
    assert!(
        reg.subjects().is_empty(),
        "a refused write registered nothing"
    );
    assert_eq!(reg.compatibility(None), Compatibility::Backward);
    assert_eq!(reg.compatibility(Some(SUBJECT)), Compatibility::Backward);

    for (method, path, body) in &writes {
        let (status, text) = call(&app, method, path, Some(&bearer), body).await;
        assert_eq!(status, 200, "{method} {path} with the token: {text}");
    }
    assert_eq!(reg.subjects(), vec![SUBJECT.to_owned()]);
    assert_eq!(reg.compatibility(None), Compatibility::None);
    assert_eq!(reg.compatibility(Some(SUBJECT)), Compatibility::None);

    let id = reg.versions(SUBJECT).expect("versions")[0].id;
    let reads = [
        ("GET", "/subjects".to_owned(), ""),
        ("GET", format!("/subjects/{SUBJECT}/versions"), ""),
        ("GET", format!("/subjects/{SUBJECT}/versions/latest"), ""),
        ("GET", format!("/subjects/{SUBJECT}/versions/1"), ""),
        ("GET", format!("/schemas/ids/{id}"), ""),
        ("GET", format!("/schemas/ids/{id}/schema"), ""),
        ("GET", "/config".to_owned(), ""),
        ("GET", format!("/config/{SUBJECT}"), ""),
        ("POST", format!("/subjects/{SUBJECT}"), schema.as_str()),
        (
            "POST",
            format!("/compatibility/subjects/{SUBJECT}/versions/latest"),
            schema.as_str(),
        ),
    ];
    for (method, path, body) in &reads {
        let (status, text) = call(&app, method, path, None, body).await;
        assert_eq!(status, 200, "{method} {path} without a token: {text}");
    }

    let unserved = [
        ("DELETE", format!("/subjects/{SUBJECT}")),
        ("DELETE", format!("/subjects/{SUBJECT}/versions/1")),
        ("DELETE", format!("/config/{SUBJECT}")),
        ("DELETE", "/config".to_owned()),
        ("PUT", "/mode".to_owned()),
        ("PUT", format!("/mode/{SUBJECT}")),
    ];
    for (method, path) in &unserved {
        for auth in [None, Some(bearer.as_str())] {
            let (status, text) = call(&app, method, path, auth, config).await;
            assert!(
                status == 404 || status == 405,
                "{method} {path} is not served: {status} {text}"
            );
        }
    }
    assert_eq!(reg.versions(SUBJECT).expect("versions").len(), 1);
    assert_eq!(reg.compatibility(Some(SUBJECT)), Compatibility::None);
}

/// An id the registry does not know yet is asked for again: registered a moment later, it is
/// found (a late registration must not be answered from a memory of "unknown").
#[tokio::test]
async fn an_id_registered_after_a_miss_is_found_on_the_next_lookup() {
    let inner = Arc::new(MemoryRegistry::new());
    let cached = CachedRegistry::new(Arc::clone(&inner) as Arc<dyn SchemaRegistry>);
    // Ids follow from the schema (the same in every registry): learn the one it will get.
    let id = MemoryRegistry::new()
        .register(SUBJECT, OrderPlacedV1::schema_text())
        .await
        .expect("v1 elsewhere");
    assert!(matches!(
        cached.schema(id).await,
        Err(RegistryError::UnknownId(_))
    ));
    let registered = inner
        .register(SUBJECT, OrderPlacedV1::schema_text())
        .await
        .expect("v1");
    assert_eq!(registered, id, "the id missed a moment ago");
    assert!(cached.schema(id).await.is_ok(), "found once registered");
}

/// A batch is planned in order on a copy: a second version of a subject is checked against the
/// first one of the same batch, and nothing is registered by planning.
#[test]
fn a_batch_is_planned_in_order_without_registering_anything() {
    let reg = MemoryRegistry::new();
    let items = vec![
        (SUBJECT.to_owned(), OrderPlacedV1::schema_text().to_owned()),
        (SUBJECT.to_owned(), OrderPlaced::schema_text().to_owned()),
        (SUBJECT.to_owned(), OrderPlacedV1::schema_text().to_owned()),
    ];
    let planned = reg.plan_register_all(&items).expect("plan");
    let summary: Vec<(u32, bool)> = planned.iter().map(|(v, new)| (v.version, *new)).collect();
    assert_eq!(
        summary,
        vec![(1, true), (2, true), (1, false)],
        "v1, then v2 after it, then v1 again is version 1, not new"
    );
    assert!(reg.subjects().is_empty(), "planning registered nothing");
}

#[tokio::test]
async fn register_many_gives_the_ids_register_gives() {
    let (one, many) = (MemoryRegistry::new(), MemoryRegistry::new());
    let items = vec![
        (SUBJECT.to_owned(), OrderPlacedV1::schema_text().to_owned()),
        (SUBJECT.to_owned(), OrderPlaced::schema_text().to_owned()),
    ];
    let mut ids = Vec::new();
    for (subject, text) in &items {
        ids.push(one.register(subject, text).await.expect("register"));
    }
    assert_eq!(
        many.register_many(&items).await.expect("register_many"),
        ids
    );
}

/// A registry that counts the registrations that reach it.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryRegistry,
    registrations: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl SchemaRegistry for Counting {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        self.registrations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.register(subject, schema).await
    }

    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        self.inner.schema_by_id(id).await
    }
}

/// The cache registers each (subject, text) once, keeps two versions of a subject and two
/// subjects of one text apart, and answers every later ask from memory with the id the
/// registry gave.
#[tokio::test]
async fn the_cache_registers_each_subject_and_text_once_and_keeps_them_apart() {
    let counting = Arc::new(Counting::default());
    let cached = CachedRegistry::new(Arc::clone(&counting) as Arc<dyn SchemaRegistry>);
    let v1 = OrderPlacedV1::schema_text();
    let v2 = OrderPlaced::schema_text();
    let other = "other-subject-value";
    let first = cached.id_for(SUBJECT, v1).await.expect("v1");
    let second = cached.id_for(SUBJECT, v2).await.expect("v2");
    let elsewhere = cached.id_for(other, v1).await.expect("v1 elsewhere");
    assert_ne!(first, second, "two versions, two ids");
    for _ in 0..3 {
        assert_eq!(cached.id_for(SUBJECT, v1).await.expect("v1"), first);
        assert_eq!(cached.id_for(SUBJECT, v2).await.expect("v2"), second);
        assert_eq!(cached.id_for(other, v1).await.expect("v1"), elsewhere);
    }
    assert_eq!(
        counting
            .registrations
            .load(std::sync::atomic::Ordering::SeqCst),
        3,
        "each (subject, text) reached the registry once"
    );
}
