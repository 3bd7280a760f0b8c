//! The operator API: every route against a filled [`SagaView`](choreo_coordinator::view::SagaView)
//! and a recording command sink.

use std::sync::atomic::Ordering;

mod support;
use support::*;

#[tokio::test]
async fn health_and_readiness() {
    let f = fixture();
    let (status, _, body) = get(&f.state, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let (status, _, _) = get(&f.state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    f.ready.store(true, Ordering::SeqCst);
    let (status, _, body) = get(&f.state, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
}

#[tokio::test]
async fn metrics_render_prometheus_text() {
    let mut f = fixture();
    let (status, _) = get_json(&f.state, "/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no exporter installed");

    let handle = telemetry::install_prometheus().expect("installs");
    let again = telemetry::install_prometheus().expect("a second call returns the first handle");
    metrics::counter!(telemetry::INPUTS, telemetry::LABEL_KIND => "event").increment(3);
    metrics::histogram!(telemetry::TRANSACTION_COMMIT_SECONDS).record(0.004);
    f.state.metrics = Some(again);
    let (status, ctype, body) = get(&f.state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert!(
        body.contains("choreo_inputs_total{kind=\"event\"} 3"),
        "{body}"
    );
    assert!(
        body.contains("# HELP choreo_inputs_total"),
        "described: {body}"
    );
    assert!(
        body.contains("choreo_transaction_commit_seconds_bucket{le=\"0.005\"} 1"),
        "seconds buckets: {body}"
    );
    assert!(
        handle.render().contains("choreo_inputs_total"),
        "both handles render the same recorder"
    );
}

#[tokio::test]
async fn the_page_is_self_contained_html() {
    let f = fixture();
    let (status, ctype, body) = get(&f.state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(body.starts_with("<!doctype html>"));
    assert!(body.contains("/api/sagas"));
    assert!(body.contains("setInterval(refresh, 2000)"));
    for action in ["abort", "retry", "skip", "resume"] {
        assert!(
            body.contains(&format!("command: \"{action}\"")),
            "{action} button"
        );
    }
    assert!(
        !body.contains("src=\"http") && !body.contains("href=\"http"),
        "no external assets"
    );
}

#[tokio::test]
async fn get_one_saga() {
    let f = fixture();
    let (status, body) = get_json(&f.state, "/api/sagas/order/order-1").await;
    assert_eq!(status, StatusCode::OK);
    let state: SagaState = serde_json::from_value(body.clone()).expect("a SagaState");
    assert_eq!(state, f.order_1);
    assert_eq!(body["status"], "running");
    assert_eq!(body["steps"][0]["name"], "payment");
    assert_eq!(
        body["deadlines"][0]["kind"],
        json!({"kind": "step", "step": "inventory"})
    );
    assert_eq!(
        body["timeline"]["entries"]
            .as_array()
            .expect("entries")
            .len(),
        2
    );

    let (status, body) = get_json(&f.state, "/api/sagas/order/a%2Fb").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an encoded slash is part of the correlation id"
    );
    assert_eq!(body["saga_id"], "order/a/b");

    let (status, body) = get_json(&f.state, "/api/sagas/order/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "no saga order/nope"}));

    let (status, body) = get_json(&f.state, "/api/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "no such route"}));
}

#[tokio::test]
async fn list_with_filters_and_counts() {
    let f = fixture();
    let (status, body) = get_json(&f.state, "/api/sagas").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&body),
        ["order/a/b", "refund/r-1", "order/order-2", "order/order-1"],
        "newest first"
    );
    assert_eq!(
        body["counts"],
        json!({"pending": 0, "running": 2, "compensating": 0, "completed": 0, "compensated": 1, "needs_operator": 1})
    );
    let parsed: ListResponse = serde_json::from_value(body).expect("a ListResponse");
    assert_eq!(parsed.sagas[0].correlation_id, "a/b");

    let cases: &[(&str, &[&str])] = &[
        (
            "definition=order",
            &["order/a/b", "order/order-2", "order/order-1"],
        ),
        ("status=needs_operator", &["order/order-2"]),
        ("status=running&definition=refund", &["refund/r-1"]),
        ("min_age=5m", &["order/order-1"]),
        ("max_age=90s", &["order/a/b", "refund/r-1"]),
        ("min_age=90s&max_age=5m", &["order/order-2"]),
        ("limit=2", &["order/a/b", "refund/r-1"]),
        (
            "status=&definition=&limit=",
            &["order/a/b", "refund/r-1", "order/order-2", "order/order-1"],
        ),
        ("status=completed", &[]),
        // Stuck: not finished, and unchanged this long (a/b is compensated: never stuck).
        ("stuck=90s", &["order/order-2"]),
        (
            "stuck=30s",
            &["refund/r-1", "order/order-2", "order/order-1"],
        ),
        ("waiting_on=inventory", &["order/order-1"]),
        ("waiting_on=inventory&stuck=5m", &[]),
        ("search=order-", &["order/order-2", "order/order-1"]),
        ("search=%2F", &["order/a/b"]),
    ];
    for (query, expected) in cases {
        let (status, body) = get_json(&f.state, &format!("/api/sagas?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(ids(&body), *expected, "{query}");
    }
}

#[tokio::test]
async fn list_rejects_bad_filters() {
    let f = fixture();
    let cases = [
        (
            "status=stuck",
            "status: unknown status \"stuck\" (expected one of pending, running, compensating, completed, compensated, needs_operator)",
        ),
        ("min_age=soon", "min_age: malformed duration"),
        ("max_age=5", "max_age: malformed duration"),
        ("stuck=soon", "stuck: "),
        (
            "limit=0",
            "limit: \"0\" is not a number between 1 and 10000",
        ),
        ("limit=ten", "limit: \"ten\" is not a number"),
        ("min_age=1h&max_age=1m", "min_age is greater than max_age"),
        ("colour=red", "unknown field `colour`"),
    ];
    for (query, message) in cases {
        let (status, body) = get_json(&f.state, &format!("/api/sagas?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains(message), "{query}: {error}");
    }
}

#[tokio::test]
async fn commands_are_published() {
    let f = fixture();
    let (status, body) = post(
        &f.state,
        "/api/sagas/order/order-1/commands",
        r#"{"command":"abort","reason":"customer called"}"#,
        Some("alice"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["command_id"].as_str().expect("command_id").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let (status, _) = post(
        &f.state,
        "/api/sagas/order/order-2/commands",
        r#"{"command":"retry","step":"inventory"}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = post(
        &f.state,
        "/api/sagas/order/order-2/commands",
        r#"{"command":"skip","step":"inventory"}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // JSON with a charset is JSON.
    let req = Request::post("/api/sagas/order/a%2Fb/commands")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(r#"{"command":"resume"}"#))
        .expect("request");
    let (status, _, _) = call(&f.state, req).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let sent = f.sink.sent();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        sent[0],
        CommandRecord {
            id,
            definition: "order".into(),
            correlation_id: "order-1".into(),
            command: Command::Abort {
                reason: "customer called".into()
            },
            operator: Some("alice".into()),
        }
    );
    assert_eq!(
        sent[1].command,
        Command::Retry {
            step: "inventory".into()
        }
    );
    assert_eq!(sent[1].operator, None);
    assert_eq!(
        sent[2].command,
        Command::Skip {
            step: "inventory".into()
        }
    );
    assert_eq!(
        (sent[3].correlation_id.as_str(), &sent[3].command),
        ("a/b", &Command::Resume)
    );
    assert_ne!(sent[1].id, sent[2].id, "every command has its own id");
}

#[tokio::test]
async fn bad_commands_are_refused() {
    let f = fixture();
    let uri = "/api/sagas/order/order-1/commands";
    let cases = [
        (
            uri,
            "not json",
            StatusCode::BAD_REQUEST,
            "the body is not a command",
        ),
        (
            uri,
            r#"{"command":"explode"}"#,
            StatusCode::BAD_REQUEST,
            "unknown variant `explode`",
        ),
        (
            uri,
            r#"{"command":"retry"}"#,
            StatusCode::BAD_REQUEST,
            "missing field `step`",
        ),
        (
            uri,
            r#"{"command":"abort","reason":"  "}"#,
            StatusCode::BAD_REQUEST,
            "abort needs a reason",
        ),
        (
            uri,
            r#"{"command":"skip","step":"paymnt"}"#,
            StatusCode::BAD_REQUEST,
            "saga order/order-1 has no step \"paymnt\" (its steps: payment, inventory, shipping)",
        ),
        (
            "/api/sagas/order/nope/commands",
            r#"{"command":"resume"}"#,
            StatusCode::NOT_FOUND,
            "no saga order/nope",
        ),
    ];
    for (uri, body, expected, message) in cases {
        let (status, answer) = post(&f.state, uri, body, None).await;
        assert_eq!(status, expected, "{body}: {answer}");
        let error = answer["error"].as_str().expect("an error message");
        assert!(error.contains(message), "{body}: {error}");
    }
    assert!(f.sink.sent().is_empty(), "nothing was published");

    f.sink.fail.store(true, Ordering::SeqCst);
    let (status, answer) = post(&f.state, uri, r#"{"command":"resume"}"#, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer["error"],
        "the command could not be published: broker down"
    );
}

#[tokio::test]
async fn a_command_that_is_not_json_is_refused_before_it_is_read() {
    // What a cross-site form or a plain-text fetch can send without asking first.
    let f = fixture();
    for ctype in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut req = Request::post("/api/sagas/order/order-1/commands");
        if let Some(c) = ctype {
            req = req.header(header::CONTENT_TYPE, c);
        }
        let (status, _, body) = call(
            &f.state,
            req.body(Body::from(r#"{"command":"resume"}"#))
                .expect("request"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ctype:?}: {body}"
        );
        assert!(body.contains("application/json"), "{body}");
    }
    assert!(f.sink.sent().is_empty(), "nothing was published");
}

mod with_tokens {
    use super::*;
    use choreo_coordinator::api_auth::{ApiAuth, ApiToken, Role, sha256_hex};
    use std::sync::Arc;

    const OPERATOR: &str = "operator-token-0123456789";
    const VIEWER: &str = "viewer-token-0123456789";

    fn guarded() -> Fixture {
        let mut f = fixture();
        f.state.auth = Arc::new(ApiAuth::Tokens(vec![
            ApiToken::from_sha256_hex("alice", Role::Operator, &sha256_hex(OPERATOR))
                .expect("hash"),
            ApiToken::from_sha256_hex("victor", Role::Viewer, &sha256_hex(VIEWER)).expect("hash"),
        ]));
        f
    }

    async fn send(
        f: &Fixture,
        req: axum::http::request::Builder,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let req = match token {
            Some(t) => req.header(header::AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        };
        let (status, _, body) = call(
            &f.state,
            req.body(Body::from(body.to_owned())).expect("request"),
        )
        .await;
        (status, body)
    }

    #[tokio::test]
    async fn sagas_are_shown_only_to_a_known_token() {
        let f = guarded();
        for uri in ["/api/sagas", "/api/sagas/order/order-1"] {
            for token in [None, Some("not-a-token")] {
                let (status, body) = send(&f, Request::get(uri), token, "").await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {token:?}: {body}");
                assert!(!body.contains("order-1\","), "{body}");
            }
            for token in [VIEWER, OPERATOR] {
                let (status, body) = send(&f, Request::get(uri), Some(token), "").await;
                assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            }
        }
        // Probes, metrics and the page (which holds no data) stay open.
        for uri in ["/healthz", "/"] {
            let (status, _) = send(&f, Request::get(uri), None, "").await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
    }

    #[tokio::test]
    async fn only_an_operator_acts_and_is_recorded_as_who_acted() {
        let f = guarded();
        let uri = "/api/sagas/order/order-1/commands";
        let json = || Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        let abort = r#"{"command":"abort","reason":"fraud"}"#;
        let (status, body) = send(&f, json(), None, abort).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = send(&f, json(), Some(VIEWER), abort).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body.contains("victor") && body.contains("operator role"),
            "{body}"
        );
        assert!(f.sink.sent().is_empty(), "nothing published for a viewer");

        // The token's name is who acted, whatever X-Operator claims.
        let (status, body) = send(
            &f,
            json().header("X-Operator", "mallory"),
            Some(OPERATOR),
            abort,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let sent = f.sink.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].operator.as_deref(), Some("alice"));
    }
}

#[tokio::test]
async fn approvals_travel_as_commands_and_need_a_reason() {
    let f = fixture();
    let uri = "/api/sagas/order/order-1/commands";
    let (status, body) = post(
        &f.state,
        uri,
        r#"{"command":"approve","step":"inventory","reason":"counted by hand"}"#,
        Some("alice"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for (body, message) in [
        (
            r#"{"command":"reject","step":"inventory","reason":" "}"#,
            "need a reason",
        ),
        (
            r#"{"command":"approve","step":"inventory"}"#,
            "missing field `reason`",
        ),
        (
            r#"{"command":"approve","step":"invntory","reason":"x"}"#,
            "has no step \"invntory\"",
        ),
    ] {
        let (status, answer) = post(&f.state, uri, body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{answer}"
        );
    }
    let sent = f.sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].command,
        Command::Approve {
            step: "inventory".into(),
            reason: "counted by hand".into()
        }
    );
}

#[tokio::test]
async fn a_batch_says_how_many_sagas_it_touches_and_runs_only_on_that_many() {
    let f = fixture();
    let uri = "/api/sagas/batch";
    let running = r#""filter": {"status": "running"}"#;
    let retry = r#""command": {"command": "abort", "reason": "supplier gone"}"#;
    let (status, preview) = post(
        &f.state,
        uri,
        &format!("{{{running}, {retry}, \"dry_run\": true}}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["matched"], 2, "{preview}");
    let mut ids: Vec<&str> = preview["saga_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["order/order-1", "refund/r-1"]);
    assert!(f.sink.sent().is_empty(), "a dry run publishes nothing");

    let (status, answer) = post(&f.state, uri, &format!("{{{running}, {retry}}}"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expect"),
        "{answer}"
    );
    let (status, answer) = post(
        &f.state,
        uri,
        &format!("{{{running}, {retry}, \"expect\": 3}}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        f.sink.sent().is_empty(),
        "nothing published on a changed set"
    );

    let (status, answer) = post(
        &f.state,
        uri,
        &format!("{{{running}, {retry}, \"expect\": 2}}"),
        Some("alice"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["published"], 2);
    let sent = f.sink.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|r| r.operator.as_deref() == Some("alice")
        && r.command
            == Command::Abort {
                reason: "supplier gone".into()
            }));
    let mut targets: Vec<String> = sent
        .iter()
        .map(|r| format!("{}/{}", r.definition, r.correlation_id))
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, ["order/order-1", "refund/r-1"]);

    // A command a saga cannot take is refused for it, per saga.
    let (status, answer) = post(
        &f.state,
        uri,
        r#"{"filter": {"definition": "order", "status": "needs_operator"}, "command": {"command": "skip", "step": "nope"}, "expect": 1}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["published"], 0);
    assert_eq!(answer["refused"][0]["saga_id"], "order/order-2", "{answer}");
    assert_eq!(f.sink.sent().len(), 2);
}

/// `Idempotency-Key` is the command's id: the saga applies an id once, and the same request
/// sent again after the saga applied it is answered alike without publishing a second command.
#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_command_act_once() {
    let f = fixture();
    let key = "ticket-77-abort";
    let request = || {
        Request::post("/api/sagas/order/order-1/commands")
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(
                r#"{"command":"abort","reason":"customer called"}"#,
            ))
            .expect("request")
    };
    let (status, _, body) = call(&f.state, request()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["command_id"], key);
    assert_eq!(f.sink.sent().len(), 1);
    assert_eq!(f.sink.sent()[0].id, key, "the key is the record's id");

    // The owning replica applied it; the view shows the state it committed.
    let mut applied = f.order_1.clone();
    let acted = choreo_saga::apply_command(
        &order_def(),
        &mut applied,
        key,
        &Command::Abort {
            reason: "customer called".into(),
        },
        Millis(now_ms()),
    );
    assert!(!acted.is_empty());
    f.state.view.upsert(applied);
    let (status, _, body) = call(&f.state, request()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let again: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(again["command_id"], key);
    assert_eq!(f.sink.sent().len(), 1, "nothing published the second time");

    for bad in ["", "has space", &"k".repeat(129)] {
        let req = Request::post("/api/sagas/order/order-1/commands")
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", bad)
            .body(Body::from(r#"{"command":"resume"}"#))
            .expect("request");
        let (status, _, _) = call(&f.state, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
}

/// The dead-letter routes check what they can before they need Kafka: the topic is a
/// dead-letter topic, a redrive is JSON, within its size, and names ids or a filter; an API
/// without a dead-letter desk says so (503).
#[tokio::test]
async fn dead_letter_requests_are_checked_before_kafka_is_asked() {
    let f = fixture();
    let (status, v) = get_json(&f.state, "/api/dlq").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "dead letters are not served by this API");
    let (status, v) = get_json(&f.state, "/api/dlq/orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a dead-letter topic")),
        "{v}"
    );
    let (status, v) = get_json(&f.state, "/api/dlq/orders.dlq?limit=501").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = get_json(&f.state, "/api/dlq/orders.dlq?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = get_json(&f.state, "/api/dlq/orders.dlq/0/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");

    let redrive = "/api/dlq/orders.dlq/redrive";
    let (status, _, _) = call(
        &f.state,
        Request::post(redrive)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(
                r#"{"ids": ["orders.dlq/0/1"], "dry_run": true}"#,
            ))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let too_large = format!(r#"{{"ids": ["{}"]}}"#, "x".repeat(200 * 1024));
    let (status, _, _) = call(
        &f.state,
        Request::post(redrive)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(too_large))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    for (body, says) in [
        (r#"{"dry_run": true}"#, "either ids or filter"),
        (r#"{"ids": [], "dry_run": true}"#, "ids is empty"),
        (
            r#"{"ids": ["payments.dlq/0/1"], "dry_run": true}"#,
            "not a record of orders.dlq",
        ),
        (
            r#"{"ids": ["orders.dlq/zero/1"], "dry_run": true}"#,
            "partition is not a number",
        ),
        (
            r#"{"filter": {"kind": "x"}, "ids": ["orders.dlq/0/1"]}"#,
            "either ids or filter",
        ),
        (r#"{"filter": {"colour": "red"}}"#, "not a redrive"),
        (
            r#"{"filter": {}, "note": "too long", "dry_run": 1}"#,
            "not a redrive",
        ),
    ] {
        let (status, v) = post(&f.state, redrive, body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(says)),
            "{body}: {v}"
        );
    }
    let long_note = format!(r#"{{"filter": {{}}, "note": "{}"}}"#, "n".repeat(2000));
    let (status, v) = post(&f.state, redrive, &long_note, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = post(
        &f.state,
        redrive,
        r#"{"filter": {}, "dry_run": true}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}
