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
