//! What the operator API's tests share (the `choreo sagas` client's tests in `saga/cli/` use
//! it too): a filled [`SagaView`], a recording command sink, and request helpers.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use axum::body::Body;
pub use axum::http::{Request, StatusCode, header};
pub use choreo_coordinator::command::CommandRecord;
pub use choreo_coordinator::http::{self, ApiState, CommandSink, ListResponse};
pub use choreo_coordinator::telemetry;
pub use choreo_coordinator::view::SagaView;
pub use choreo_saga::{
    Command, CompensationState, Deadline, DeadlineKind, Definition, Millis, SagaState, Status,
    StepStatus, TimelineEntry, TimelineKind,
};
pub use choreo_schemas::Catalog;
use futures::future::BoxFuture;
pub use serde_json::{Value, json};
use tower::ServiceExt as _;

pub const MINUTE: u64 = 60_000;

/// Records every command; fails while `fail` is set.
#[derive(Default)]
pub struct RecordingSink {
    pub sent: Mutex<Vec<CommandRecord>>,
    pub fail: AtomicBool,
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
    pub fn sent(&self) -> Vec<CommandRecord> {
        self.sent.lock().expect("lock").clone()
    }
}

pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("fits")
}

pub fn order_def() -> Definition {
    Definition::reference_order_saga(&Catalog::reference()).expect("the reference saga loads")
}

/// `order-1`: running for 10 min, payment completed, a deadline pending, a timeline.
/// `order-2`: needs an operator, 2 min old. `a/b`: compensated, 30 s old (a correlation id
/// with a slash). `refund/r-1`: another definition, running, 1 min old.
pub fn fill(view: &SagaView, now: u64) -> SagaState {
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

pub struct Fixture {
    pub state: ApiState,
    pub sink: Arc<RecordingSink>,
    pub ready: Arc<AtomicBool>,
    pub order_1: SagaState,
}

pub fn fixture() -> Fixture {
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
        auth: Arc::new(choreo_coordinator::api_auth::ApiAuth::Open),
        dead_letters: None,
    };
    Fixture {
        state,
        sink,
        ready,
        order_1,
    }
}

/// Sends one request through the router; answers the status, the content type and the body.
pub async fn call(state: &ApiState, req: Request<Body>) -> (StatusCode, String, String) {
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

pub async fn get(state: &ApiState, uri: &str) -> (StatusCode, String, String) {
    call(
        state,
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

pub async fn get_json(state: &ApiState, uri: &str) -> (StatusCode, Value) {
    let (status, ctype, body) = get(state, uri).await;
    assert!(
        ctype.starts_with("application/json"),
        "{uri}: content type {ctype}, body {body}"
    );
    (status, serde_json::from_str(&body).expect("JSON"))
}

pub async fn post(
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

pub fn ids(v: &Value) -> Vec<String> {
    v["sagas"]
        .as_array()
        .expect("sagas")
        .iter()
        .map(|s| s["saga_id"].as_str().expect("saga_id").to_owned())
        .collect()
}
