//! What the operator console reads besides the list: the version filter and cursor paging
//! over HTTP, live updates (server-sent events), one saga's records, the definitions and their
//! graphs, and who a token is.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use choreo_coordinator::api_auth::{ApiAuth, ApiToken, Role};
use choreo_coordinator::http::live::{
    LIVE_INTERVAL, LiveMessage, MAX_CHANGES_PER_MESSAGE, MAX_LIVE_STREAMS,
};
use futures::StreamExt as _;
use tower::ServiceExt as _;

mod support;
use support::*;

const VIEWER: &str = "viewer-token-0123456789";

fn guarded(f: &mut Fixture) {
    f.state.auth = Arc::new(ApiAuth::Tokens(vec![
        ApiToken::from_secret("alice", Role::Operator, "operator-token-0123456789"),
        ApiToken::from_secret("victor", Role::Viewer, VIEWER),
    ]));
}

#[tokio::test]
async fn the_list_filters_by_version_and_pages_by_cursor() {
    let f = fixture();
    let (status, v) = get_json(&f.state, "/api/sagas?definition=order&version=1&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), ["order/a/b", "order/order-2"]);
    assert_eq!(v["total"], 3);
    let next = v["next"].as_str().expect("a next page").to_owned();
    let (_, v) = get_json(
        &f.state,
        &format!(
            "/api/sagas?definition=order&version=1&limit=2&before={}",
            urlencode(&next)
        ),
    )
    .await;
    assert_eq!(ids(&v), ["order/order-1"]);
    assert!(v["next"].is_null(), "the last page: {v}");
    assert_eq!(v["counts_by_definition"]["refund"]["running"], 1);
    assert_eq!(v["counts"]["running"], 2, "counts stay unfiltered");

    let (_, v) = get_json(&f.state, "/api/sagas?version=2").await;
    assert_eq!(v["total"], 0);
    let (_, v) = get_json(&f.state, "/api/sagas?version=v1").await;
    assert_eq!(v["total"], 4, "v1 reads as 1");
    for bad in ["/api/sagas?version=latest", "/api/sagas?before=yesterday"] {
        let (status, v) = get_json(&f.state, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    // A batch acts on every matching saga: a cursor is refused.
    let (status, v) = post(
        &f.state,
        "/api/sagas/batch",
        &json!({"filter": {"before": next}, "command": {"command": "resume"}, "dry_run": true})
            .to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A live stream through the router: its `sagas` messages, one by one.
struct Live {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl Live {
    async fn open(state: &ApiState, query: &str) -> Result<Live, StatusCode> {
        let resp = http::router(state.clone())
            .oneshot(
                Request::get(format!("/api/sagas/live{query}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        if resp.status() != StatusCode::OK {
            return Err(resp.status());
        }
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(ctype.starts_with("text/event-stream"), "{ctype}");
        Ok(Live {
            body: resp.into_body().into_data_stream(),
            buffer: String::new(),
        })
    }

    async fn next(&mut self) -> LiveMessage {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue;
                }
                assert!(block.starts_with("event: sagas\n"), "{block}");
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return serde_json::from_str(&data).expect("a live message");
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("a message within 30 s")
                .expect("the stream goes on")
                .expect("a chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn live_updates_say_what_changed_coalesced_and_filtered() {
    let f = fixture();
    let view = Arc::clone(&f.state.view);
    let mut live = Live::open(&f.state, "?status=running")
        .await
        .expect("opens");
    // At once: the counts, nothing changed yet.
    let first = live.next().await;
    assert!(first.changed.is_empty() && first.left.is_empty() && !first.reset);
    assert_eq!(first.counts["needs_operator"], 1);

    // Fifty sagas start, order-1 finishes: one message says it all.
    let def = order_def();
    for i in 0..50 {
        let mut s = SagaState::new(&def, format!("new-{i}"), Millis(now_ms()));
        s.status = Status::Running;
        view.upsert(s);
    }
    let mut done = f.order_1.clone();
    done.status = Status::Completed;
    view.upsert(done);
    let m = live.next().await;
    assert!(!m.reset);
    assert_eq!(
        m.changed.len(),
        50,
        "every new running saga, in one message"
    );
    assert!(m.changed.iter().all(|s| s.status == Status::Running));
    assert_eq!(
        m.left,
        ["order/order-1"],
        "no longer running: it leaves the list"
    );
    assert_eq!(m.counts["running"], 51);
    assert_eq!(m.counts["completed"], 1);
    assert!(m.seq > first.seq);

    // More changes than a message names: reload.
    for i in 0..=MAX_CHANGES_PER_MESSAGE {
        let mut s = SagaState::new(&def, format!("flood-{i}"), Millis(now_ms()));
        s.status = Status::Running;
        view.upsert(s);
    }
    let m = live.next().await;
    assert!(
        m.reset && m.changed.is_empty(),
        "{} changed",
        m.changed.len()
    );
}

/// On the runtime's virtual clock (paused: time moves only when every task waits), so the
/// interval is measured, not raced.
#[tokio::test(start_paused = true)]
async fn a_live_stream_sends_at_most_one_message_per_interval() {
    let f = fixture();
    let view = Arc::clone(&f.state.view);
    let mut live = Live::open(&f.state, "").await.expect("opens");
    live.next().await;
    let first = tokio::time::Instant::now();
    let mut s = f.order_1.clone();
    s.status = Status::Compensating;
    view.upsert(s.clone());
    let m = live.next().await;
    assert_eq!(m.changed.len(), 1);
    let second = tokio::time::Instant::now();
    assert!(
        second - first >= LIVE_INTERVAL,
        "a change right after a message waits for the interval: {:?}",
        second - first
    );
    s.status = Status::Compensated;
    view.upsert(s);
    live.next().await;
    assert!(tokio::time::Instant::now() - second >= LIVE_INTERVAL);
}

#[tokio::test]
async fn live_updates_need_a_token_and_are_bounded_in_number() {
    let mut f = fixture();
    guarded(&mut f);
    assert_eq!(
        Live::open(&f.state, "").await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let open = |state: ApiState| async move {
        let resp = http::router(state)
            .oneshot(
                Request::get("/api/sagas/live")
                    .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        (resp.status(), resp)
    };
    // Streams are counted while their bodies live; other tests of this binary may hold one.
    let mut held = Vec::new();
    let refused = loop {
        let (status, resp) = open(f.state.clone()).await;
        if status != StatusCode::OK {
            break status;
        }
        held.push(resp);
        assert!(held.len() <= MAX_LIVE_STREAMS, "no bound");
    };
    assert_eq!(refused, StatusCode::SERVICE_UNAVAILABLE);
    assert!(held.len() + 4 >= MAX_LIVE_STREAMS, "{} opened", held.len());
    held.pop();
    assert_eq!(
        open(f.state.clone()).await.0,
        StatusCode::OK,
        "a slot freed"
    );
}

#[tokio::test]
async fn a_sagas_records_are_read_for_its_lifetime_widened_by_a_margin() {
    let f = fixture();
    f.history.records.lock().expect("lock").push(SagaRecord {
        kind: "event".into(),
        topic: "orders".into(),
        partition: 2,
        offset: 7,
        timestamp_ms: Some(1),
        event_type: "io.choreo.orders.OrderPlaced".into(),
        id: "e-1".into(),
        source: "/shop".into(),
        causation_id: None,
        time: None,
        schema_id: Some(42),
        payload: Some(
            json!({"order_id": "order-1", "shipping_address": "<script>alert(1)</script>"}),
        ),
        payload_error: None,
    });
    let (status, v) = get_json(&f.state, "/api/sagas/order/order-1/events").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["events"][0]["type"], "io.choreo.orders.OrderPlaced");
    assert_eq!(
        v["events"][0]["payload"]["shipping_address"], "<script>alert(1)</script>",
        "the API hands values over as they are; the console shows them as text"
    );
    let q = f.history.queries.lock().expect("lock")[0].clone();
    let five_minutes = 5 * MINUTE;
    assert_eq!(
        (q.definition.as_str(), q.version, q.correlation_id.as_str()),
        ("order", 1, "order-1")
    );
    assert_eq!(q.from_ms, f.order_1.created_at.0 - five_minutes);
    assert_eq!(q.to_ms, f.order_1.updated_at.0 + five_minutes);
    assert_eq!(
        q.max_records,
        choreo_coordinator::history::DEFAULT_MAX_RECORDS
    );

    let (status, _) = get_json(
        &f.state,
        "/api/sagas/order/order-1/events?margin=1h&max_records=500",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let q = f.history.queries.lock().expect("lock")[1].clone();
    assert_eq!(q.from_ms, f.order_1.created_at.0 - 60 * MINUTE);
    assert_eq!(q.max_records, 500);

    for bad in [
        "/api/sagas/order/order-1/events?margin=soon",
        "/api/sagas/order/order-1/events?margin=30d",
        "/api/sagas/order/order-1/events?max_records=0",
    ] {
        let (status, v) = get_json(&f.state, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (status, _) = get_json(&f.state, "/api/sagas/order/nope/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.history.fail.store(true, Ordering::SeqCst);
    let (status, v) = get_json(&f.state, "/api/sagas/order/order-1/events").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("broker down")),
        "{v}"
    );
}

#[tokio::test]
async fn definitions_are_listed_and_each_version_answers_its_graph() {
    let f = fixture();
    let (status, v) = get_json(&f.state, "/api/definitions").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let d = &v["definitions"][0];
    assert_eq!(
        (d["name"].as_str(), d["version"].as_u64()),
        (Some("order"), Some(1))
    );
    assert_eq!(d["latest"], true);
    assert_eq!(d["steps"], json!(["payment", "inventory", "shipping"]));
    assert_eq!(v["counts"]["order"]["needs_operator"], 1);

    let (status, g) = get_json(&f.state, "/api/definitions/order/1").await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let shipping = g["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "shipping"))
        .expect("shipping");
    assert_eq!(shipping["after"], json!(["payment", "inventory"]));
    assert_eq!(shipping["layer"], 1);
    assert!(
        g["edges"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["from"] == "undo:shipping"
                && e["to"] == "undo:payment"
                && e["kind"] == "undo")),
        "{g}"
    );
    assert_eq!(
        g["mermaid"].as_str(),
        Some(choreo_saga::diagram::mermaid(&order_def()).as_str()),
        "the same Mermaid as choreo saga diagram"
    );
    let (status, _) = get_json(&f.state, "/api/definitions/order/v1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = get_json(&f.state, "/api/definitions/order/2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("order v1")),
        "{v}"
    );
    let (status, _) = get_json(&f.state, "/api/definitions/order/latest").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_token_can_ask_who_it_is() {
    let mut f = fixture();
    let (_, v) = get_json(&f.state, "/api/me").await;
    assert_eq!(v, json!({"name": null, "role": "operator"}), "an open API");
    guarded(&mut f);
    let (status, _) = get_json(&f.state, "/api/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(
        &f.state,
        Request::get("/api/me")
            .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"name": "victor", "role": "viewer"})
    );
}
