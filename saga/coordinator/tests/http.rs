//! The operator API: every route against a filled [`SagaView`] and a recording command sink,
//! and the `choreo sagas` client against the served API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use choreo_coordinator::client::{self, ListArgs};
use choreo_coordinator::command::CommandRecord;
use choreo_coordinator::http::{self, ApiState, CommandSink, ListResponse};
use choreo_coordinator::telemetry;
use choreo_coordinator::view::SagaView;
use choreo_saga::{
    Command, CompensationState, Deadline, DeadlineKind, Definition, Millis, SagaState, Status,
    StepStatus, TimelineEntry, TimelineKind,
};
use choreo_schemas::Catalog;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const MINUTE: u64 = 60_000;

/// Records every command; fails while `fail` is set.
#[derive(Default)]
struct RecordingSink {
    sent: Mutex<Vec<CommandRecord>>,
    fail: AtomicBool,
}

impl CommandSink for RecordingSink {
    fn send(&self, record: CommandRecord) -> BoxFuture<'static, Result<(), String>> {
        let result = if self.fail.load(Ordering::SeqCst) {
            Err("broker down".to_owned())
        } else {
            self.sent.lock().expect("lock").push(record);
            Ok(())
        };
        Box::pin(async move { result })
    }
}

impl RecordingSink {
    fn sent(&self) -> Vec<CommandRecord> {
        self.sent.lock().expect("lock").clone()
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("fits")
}

fn order_def() -> Definition {
    Definition::reference_order_saga(&Catalog::reference()).expect("the reference saga loads")
}

/// `order-1`: running for 10 min, payment completed, a deadline pending, a timeline.
/// `order-2`: needs an operator, 2 min old. `a/b`: compensated, 30 s old (a correlation id
/// with a slash). `refund/r-1`: another definition, running, 1 min old.
fn fill(view: &SagaView, now: u64) -> SagaState {
    let def = order_def();
    let mut one = SagaState::new(&def, "order-1", Millis(now - 10 * MINUTE));
    one.status = Status::Running;
    one.started_at = Some(Millis(now - 10 * MINUTE));
    one.updated_at = Millis(now - MINUTE);
    one.steps[0].status = StepStatus::Completed;
    one.steps[0].started_at = Some(Millis(now - 10 * MINUTE));
    one.steps[0].finished_at = Some(Millis(now - 9 * MINUTE));
    one.steps[1].status = StepStatus::Running;
    one.steps[1].started_at = Some(Millis(now - 10 * MINUTE));
    one.deadlines.push(Deadline {
        kind: DeadlineKind::Step("inventory".into()),
        at: Millis(now + MINUTE),
    });
    one.timeline.entries.push_back(TimelineEntry {
        at: Millis(now - 10 * MINUTE),
        kind: TimelineKind::Received,
        what: "io.choreo.orders.OrderPlaced started the saga".into(),
    });
    one.timeline.entries.push_back(TimelineEntry {
        at: Millis(now - 9 * MINUTE),
        kind: TimelineKind::Received,
        what: "io.choreo.orders.PaymentAuthorized completed step payment".into(),
    });
    view.upsert(one.clone());

    let mut two = SagaState::new(&def, "order-2", Millis(now - 2 * MINUTE));
    two.status = Status::NeedsOperator;
    two.abort_reason = Some("payment declined".into());
    two.steps[1].status = StepStatus::Completed;
    two.steps[1].compensation = CompensationState::Stuck {
        event_id: uuid::Uuid::nil(),
        attempts: 4,
        reason: "ReleaseInventory was never acknowledged".into(),
    };
    view.upsert(two);

    let mut three = SagaState::new(&def, "a/b", Millis(now - 30_000));
    three.status = Status::Compensated;
    view.upsert(three);

    let mut refund = SagaState::new(&def, "r-1", Millis(now - MINUTE));
    refund.saga_id = "refund/r-1".into();
    refund.definition = "refund".into();
    refund.status = Status::Running;
    view.upsert(refund);
    one
}

struct Fixture {
    state: ApiState,
    sink: Arc<RecordingSink>,
    ready: Arc<AtomicBool>,
    order_1: SagaState,
}

fn fixture() -> Fixture {
    let view = Arc::new(SagaView::new());
    let order_1 = fill(&view, now_ms());
    let sink = Arc::new(RecordingSink::default());
    let ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ready);
    let state = ApiState {
        view,
        sink: Arc::clone(&sink) as Arc<dyn CommandSink>,
        ready: Arc::new(move || flag.load(Ordering::SeqCst)),
        metrics: None,
    };
    Fixture {
        state,
        sink,
        ready,
        order_1,
    }
}

/// Sends one request through the router; answers the status, the content type and the body.
async fn call(state: &ApiState, req: Request<Body>) -> (StatusCode, String, String) {
    let resp = http::router(state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        ctype,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

async fn get(state: &ApiState, uri: &str) -> (StatusCode, String, String) {
    call(
        state,
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

async fn get_json(state: &ApiState, uri: &str) -> (StatusCode, Value) {
    let (status, ctype, body) = get(state, uri).await;
    assert!(
        ctype.starts_with("application/json"),
        "{uri}: content type {ctype}, body {body}"
    );
    (status, serde_json::from_str(&body).expect("JSON"))
}

async fn post(
    state: &ApiState,
    uri: &str,
    body: &str,
    operator: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(op) = operator {
        req = req.header("X-Operator", op);
    }
    let (status, _, body) = call(
        state,
        req.body(Body::from(body.to_owned())).expect("request"),
    )
    .await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

fn ids(v: &Value) -> Vec<String> {
    v["sagas"]
        .as_array()
        .expect("sagas")
        .iter()
        .map(|s| s["saga_id"].as_str().expect("saga_id").to_owned())
        .collect()
}

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
    // Any content type: the body is what counts.
    let req = Request::post("/api/sagas/order/a%2Fb/commands")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
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
async fn the_client_talks_to_the_served_api() {
    let f = fixture();
    let shutdown = CancellationToken::new();
    let (addr, task) = http::serve(
        f.state.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        shutdown.clone(),
    )
    .await
    .expect("serves");
    let api = format!("http://{addr}");

    let text = client::list(&api, &ListArgs::default())
        .await
        .expect("list");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "pending 0 · running 2 · compensating 0 · completed 0 · compensated 1 · needs_operator 1 (total 4)"
    );
    assert!(
        lines[2].starts_with("SAGA ") && lines[2].contains("STATUS"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("order/a/b ") && lines[3].contains("compensated"),
        "{text}"
    );
    assert!(
        lines[6].starts_with("order/order-1 ")
            && lines[6].contains("running")
            && lines[6].contains("10m0s"),
        "{text}"
    );

    let filtered = ListArgs {
        status: Some("needs_operator".into()),
        ..ListArgs::default()
    };
    let text = client::list(&api, &filtered).await.expect("list");
    assert!(
        text.contains("order/order-2") && !text.contains("order/order-1"),
        "{text}"
    );
    let none = ListArgs {
        definition: Some("shipping".into()),
        ..ListArgs::default()
    };
    assert!(
        client::list(&api, &none)
            .await
            .expect("list")
            .contains("no saga matches")
    );

    let bad = ListArgs {
        min_age: Some("soon".into()),
        ..ListArgs::default()
    };
    let e = client::list(&api, &bad)
        .await
        .expect_err("a bad filter")
        .to_string();
    assert!(
        e.starts_with("the API answered 400 Bad Request: min_age: malformed duration"),
        "{e}"
    );

    let text = client::get(&api, "order", "order-1").await.expect("get");
    assert!(text.contains("saga        order/order-1"), "{text}");
    assert!(text.contains("status      running"), "{text}");
    assert!(text.contains("definition  order v1"), "{text}");
    assert!(text.contains("STEP"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("payment ") && l.contains("completed")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("inventory ") && l.contains("running")),
        "{text}"
    );
    assert!(
        text.contains("deadline of step \"inventory\"  in "),
        "{text}"
    );
    assert!(
        text.contains("PaymentAuthorized completed step payment"),
        "{text}"
    );

    let text = client::get(&api, "order", "order-2").await.expect("get");
    assert!(text.contains("aborted     payment declined"), "{text}");
    assert!(
        text.contains("NEEDS AN OPERATOR: step inventory: ReleaseInventory was never acknowledged"),
        "{text}"
    );
    assert!(text.contains("STUCK after 4 attempts"), "{text}");
    assert!(text.contains("none pending"), "{text}");

    let text = client::get(&api, "order", "a/b")
        .await
        .expect("a correlation id with a slash");
    assert!(text.contains("saga        order/a/b"), "{text}");

    let e = client::get(&api, "order", "nope")
        .await
        .expect_err("unknown")
        .to_string();
    assert_eq!(e, "the API answered 404 Not Found: no saga order/nope");

    let text = client::send_command(
        &api,
        "order",
        "order-1",
        Command::Abort {
            reason: "fraud".into(),
        },
    )
    .await
    .expect("abort");
    assert!(
        text.starts_with("abort accepted for order/order-1 (command "),
        "{text}"
    );
    let text = client::send_command_as(&api, "order", "a/b", Command::Resume, Some("bob"))
        .await
        .expect("resume");
    assert!(text.starts_with("resume accepted for order/a/b"), "{text}");
    let sent = f.sink.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].command,
        Command::Abort {
            reason: "fraud".into()
        }
    );
    assert_eq!(sent[1].correlation_id, "a/b");
    assert_eq!(sent[1].operator.as_deref(), Some("bob"));
    assert!(text.contains(&sent[1].id));

    let e = client::send_command(
        &api,
        "order",
        "order-1",
        Command::Retry {
            step: "nope".into(),
        },
    )
    .await
    .expect_err("unknown step")
    .to_string();
    assert!(
        e.starts_with("the API answered 400 Bad Request: saga order/order-1 has no step \"nope\""),
        "{e}"
    );

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the server stops on cancel")
        .expect("the server task ends cleanly");
    let e = client::list(&api, &ListArgs::default())
        .await
        .expect_err("the server is gone");
    assert!(
        format!("{e:#}").contains("cannot reach the choreo API"),
        "{e:#}"
    );
}

#[tokio::test]
async fn the_cli_arguments_parse() {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }
    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Sagas(client::SagasArgs),
    }

    let Top::Sagas(args) = Cli::try_parse_from([
        "choreo",
        "sagas",
        "list",
        "--status",
        "running",
        "--min-age",
        "5m",
        "--limit",
        "3",
        "--api",
        "http://x:1",
    ])
    .expect("parses")
    .command;
    assert_eq!(args.api, "http://x:1");
    assert_eq!(
        args.command,
        client::SagasCommand::List(ListArgs {
            definition: None,
            status: Some("running".into()),
            min_age: Some("5m".into()),
            max_age: None,
            limit: Some(3),
        })
    );

    let Top::Sagas(args) = Cli::try_parse_from([
        "choreo", "sagas", "abort", "order", "o-1", "--reason", "fraud",
    ])
    .expect("parses")
    .command;
    assert_eq!(
        args.command,
        client::SagasCommand::Abort {
            saga: client::SagaRef {
                definition: "order".into(),
                correlation_id: "o-1".into()
            },
            reason: "fraud".into()
        }
    );
    for argv in [
        &[
            "choreo", "sagas", "retry", "order", "o-1", "--step", "payment",
        ][..],
        &[
            "choreo", "sagas", "skip", "order", "o-1", "--step", "payment",
        ],
        &["choreo", "sagas", "resume", "order", "o-1"],
        &["choreo", "sagas", "get", "order", "o-1", "--json"],
    ] {
        Cli::try_parse_from(argv).expect("parses");
    }
    assert!(
        Cli::try_parse_from(["choreo", "sagas", "abort", "order", "o-1"]).is_err(),
        "--reason is required"
    );
    assert!(
        Cli::try_parse_from(["choreo", "sagas", "retry", "order", "o-1"]).is_err(),
        "--step is required"
    );
}
