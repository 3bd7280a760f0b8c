//! The operator console in a real browser: headless Chromium (Debian's chromium, driven by
//! playwright-core; `integration-tests/console/`) against `choreo run` on Apache Kafka with an
//! operator's and a viewer's token. The test makes the situations an operator meets — a saga
//! stuck on a shipping service that never answers, sagas needing an operator, a saga waiting
//! for an approval, an event whose field holds `<script>alert(1)</script>` — then the browser
//! finds the stuck saga by filter, aborts it and sees it compensate, runs a batch retry, redrives
//! a dead letter (a payment framed with a schema the registry lacked, until it was registered)
//! and sees its saga take it, approves a step, checks that the `<script>` shows as text and that
//! a viewer cannot act; and this test checks the outcomes through the API and Kafka.
//!
//! Screenshots go to `<target dir>/console-screenshots/`; with `CHOREO_UPDATE_SCREENSHOTS=1`
//! also to `saga/coordinator/src/web/screenshots/`, where the README shows them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use choreo_bus::wire::framing::frame;
use choreo_coordinator::api_auth::sha256_hex;
use choreo_integration_tests::broker::real_broker;
use choreo_integration_tests::dead_letters::send_raw;
use choreo_integration_tests::process::{Replica, manifest_dir};
use choreo_integration_tests::saga_scenarios::{Path, order, start_services};
use choreo_integration_tests::world::World;
use choreo_schemas::event::{
    InventoryReserved, InventoryUnavailable, Money, PaymentAuthorized, PaymentDeclined,
};
use choreo_schemas::{Event, SchemaRegistry, schema_id_of};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};

const OPERATOR: &str = "alice-operator-token-0123456789";
const VIEWER: &str = "victor-viewer-token-0123456789";
const SCRIPT: &str = "<script>alert(1)</script>";

/// `setup.sh`'s node (with playwright-core and Chromium found), installing them once.
fn console_node() -> String {
    let out = std::process::Command::new("bash")
        .arg(format!("{}/console/setup.sh", manifest_dir()))
        .stderr(Stdio::inherit())
        .output()
        .expect("runs integration-tests/console/setup.sh");
    assert!(
        out.status.success(),
        "integration-tests/console/setup.sh failed (it says what is missing above)"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `<target dir>/console-screenshots`.
fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.parent()
        .and_then(std::path::Path::parent)
        .expect("target dir")
        .join("console-screenshots")
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .expect("answers");
        let status = r.status();
        let v: Value = r.json().await.expect("JSON");
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn command(&self, saga: &str, command: Value) {
        let r = self
            .http
            .post(format!("{}/api/sagas/{saga}/commands", self.base))
            .bearer_auth(OPERATOR)
            .json(&command)
            .send()
            .await
            .expect("sent");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::ACCEPTED,
            "{saga} {command}"
        );
    }

    /// Waits until `check` holds for the answer to `GET path`.
    async fn until(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(OPERATOR)
                .send()
                .await;
            if let Ok(r) = r
                && let Ok(v) = r.json::<Value>().await
                && check(&v)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "never {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `check` holds for the saga's state.
    async fn wait(&self, saga: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self
                .http
                .get(format!("{}/api/sagas/{saga}", self.base))
                .bearer_auth(OPERATOR)
                .send()
                .await;
            if let Ok(r) = r
                && let Ok(v) = r.json::<Value>().await
                && check(&v)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "{saga} never {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn records(&self, saga: &str) -> Vec<Value> {
        self.get(&format!("/api/sagas/{saga}/events")).await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn step_is(v: &Value, step: &str, status: &str) -> bool {
    v["steps"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["name"] == step && s["status"] == status))
}

fn has(records: &[Value], event_type: &str) -> bool {
    records
        .iter()
        .any(|r| r["type"] == format!("io.choreo.orders.{event_type}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_works_through_the_console_in_a_real_browser() {
    let node = console_node();
    let world = World::new(
        real_broker()
            .await
            .expect("a real broker for the real tier (this tier never skips)"),
    )
    .await
    .expect("world");
    let config = world.dir.join("console.toml");
    std::fs::write(
        &config,
        format!(
            "[[http.tokens]]\nname = \"alice\"\nrole = \"operator\"\nsha256 = \"{}\"\n\n[[http.tokens]]\nname = \"victor\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            sha256_hex(OPERATOR),
            sha256_hex(VIEWER)
        ),
    )
    .expect("config file");
    let mut cfg = world.replica_config("exactly_once", 600);
    cfg.definition = format!("{}/console/order.toml", manifest_dir()).into();
    cfg.env
        .push(("CHOREO_CONFIG".into(), config.display().to_string()));
    let mut replica = Replica::start(&cfg, "console-0").await.expect("choreo run");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready");
    let api = Api {
        base: replica.api.clone(),
        http: reqwest::Client::new(),
    };
    let bus = world.bus().expect("bus");
    // Payment, inventory and shipping acknowledge every compensation; shipping answers every
    // order but shipsilent-…; nobody answers the inventory of invsilent-….
    let services = start_services(&bus).expect("services");

    // First (before any payment is published, which would register its schema): a payment
    // framed with a schema the registry does not have yet. The coordinator dead-letters it;
    // its saga waits for its payment.
    let redriven = "happy-5001";
    bus.publish(&order(redriven)).await.expect("placed");
    bus.publish(&InventoryReserved {
        order_id: redriven.into(),
        reservation_id: format!("res-{redriven}"),
        items: vec![],
    })
    .await
    .expect("reserved");
    let pay = PaymentAuthorized {
        order_id: redriven.into(),
        payment_id: format!("pay-{redriven}"),
        amount: Money {
            amount_minor: 1000,
            currency: "EUR".into(),
        },
    };
    let schema = PaymentAuthorized::schema();
    let body = choreo_bus::wire::codec::encode_body(schema, &pay).expect("encodes");
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &world.broker.bootstrap)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    send_raw(
        &raw,
        "payments",
        Some(redriven),
        &frame(schema_id_of(&schema.canonical_form()), &body),
        "pay-5001",
    )
    .await
    .expect("sent");
    let dead_letter = api
        .until(
            "/api/dlq/payments.dlq",
            "the coordinator's dead letter",
            |v| {
                v["records"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["handler"] == "saga-coordinator"))
            },
        )
        .await["records"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["handler"] == "saga-coordinator"))
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .expect("a dead letter id");
    // The fix: the schema is registered (the other orders' payments would register it too).
    world
        .registry
        .register(
            "payments-io.choreo.orders.PaymentAuthorized",
            PaymentAuthorized::schema_text(),
        )
        .await
        .expect("registered");

    let stuck = "order/shipsilent-1042";
    let needs_operator = ["order/invsilent-2001", "order/invsilent-2002"];
    let approve = "order/happy-3001";
    let viewer_target = "order/happy-3004";
    let xss = "order/xss-4001";
    Path::ShippingDeadline
        .drive(&bus, "shipsilent-1042")
        .await
        .expect("stuck");
    for id in needs_operator {
        Path::InventoryDeadline
            .drive(&bus, id.trim_start_matches("order/"))
            .await
            .expect("needs operator");
    }
    for n in 3001..=3004 {
        Path::Happy
            .drive(&bus, &format!("happy-{n}"))
            .await
            .expect("happy");
    }
    for n in 3101..=3102 {
        Path::PaymentDeclined
            .drive(&bus, &format!("declined-{n}"))
            .await
            .expect("declined");
    }
    let mut placed = order("xss-4001");
    placed.shipping_address = SCRIPT.into();
    bus.publish(&placed).await.expect("placed");
    bus.publish(&PaymentDeclined {
        order_id: "xss-4001".into(),
        reason: SCRIPT.into(),
    })
    .await
    .expect("declined");
    bus.publish(&InventoryUnavailable {
        order_id: "xss-4001".into(),
        reason: "out of stock".into(),
        missing_skus: vec![],
    })
    .await
    .expect("unavailable");

    api.wait(stuck, "waits on shipping", |v| {
        step_is(v, "shipping", "running")
    })
    .await;
    for id in needs_operator {
        api.wait(id, "needs an operator", |v| v["status"] == "needs_operator")
            .await;
    }
    for n in 3001..=3004 {
        api.wait(&format!("order/happy-{n}"), "waits for its approval", |v| {
            step_is(v, "approval", "running")
        })
        .await;
    }
    for n in 3002..=3003 {
        let saga = format!("order/happy-{n}");
        api.command(
            &saga,
            json!({"command": "approve", "step": "approval", "reason": "checked"}),
        )
        .await;
        api.wait(&saga, "completed", |v| v["status"] == "completed")
            .await;
    }
    api.wait(xss, "compensated", |v| v["status"] == "compensated")
        .await;

    // The browser, through every step an operator takes.
    let shots = screenshots();
    std::fs::remove_dir_all(&shots).ok();
    let run = world.dir.join("console-run.json");
    std::fs::write(
        &run,
        json!({
            "url": format!("{}/", api.base),
            "operator_token": OPERATOR,
            "viewer_token": VIEWER,
            "shots": shots,
            "sagas": {
                "stuck": stuck,
                "needs_operator": needs_operator,
                "approve": approve,
                "xss": xss,
                "viewer_target": viewer_target,
            },
            "dead_letter": {
                "topic": "payments.dlq",
                "id": dead_letter,
                "saga": format!("order/{redriven}"),
            },
        })
        .to_string(),
    )
    .expect("run file");
    let out = tokio::process::Command::new(&node)
        .arg(format!("{}/console/drive.js", manifest_dir()))
        .arg(&run)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the console check failed (screenshot of the moment: {}/failure.png): {stderr}",
        shots.display()
    );
    let summary: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("the driver's summary");
    assert_eq!(summary["ok"], true, "{summary}");

    // What the browser did, as the API and the records in Kafka tell it.
    let s = api.get(&format!("/api/sagas/{stuck}")).await;
    assert_eq!(s["status"], "compensated", "{s}");
    assert!(
        s["abort_reason"]
            .as_str()
            .is_some_and(|r| r.contains("customer cancelled by phone")),
        "{s}"
    );
    let r = api.records(stuck).await;
    assert!(
        has(&r, "RefundPayment") && has(&r, "ReleaseInventory"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|c| c["kind"] == "command" && c["type"] == "abort" && c["source"] == "alice"),
        "the abort went through the commands topic as alice: {r:?}"
    );
    for id in needs_operator {
        let s = api.get(&format!("/api/sagas/{id}")).await;
        assert_eq!(s["status"], "compensated", "{id}: {s}");
        let r = api.records(id).await;
        assert!(has(&r, "ReleaseInventory"), "{id}: {r:?}");
        assert!(
            r.iter()
                .any(|c| c["kind"] == "command" && c["type"] == "retry"),
            "{id}: one retry each, through the commands topic: {r:?}"
        );
    }
    let s = api.get(&format!("/api/sagas/{approve}")).await;
    assert_eq!(s["status"], "completed", "{s}");
    let s = api.get(&format!("/api/sagas/order/{redriven}")).await;
    assert!(
        step_is(&s, "payment", "completed"),
        "the redriven payment was handled: {s}"
    );
    let d = api.get(&format!("/api/dlq/{dead_letter}")).await;
    assert_eq!(d["redriven"][0]["by"], "alice", "{d}");
    assert_eq!(d["redriven"][0]["to"]["topic"], "payments", "{d}");
    let s = api.get(&format!("/api/sagas/{viewer_target}")).await;
    assert_eq!(s["status"], "running", "the viewer changed nothing: {s}");
    assert!(
        !api.records(viewer_target)
            .await
            .iter()
            .any(|c| c["kind"] == "command"),
        "no command from the viewer reached the commands topic"
    );

    if std::env::var("CHOREO_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let into = format!("{}/../saga/coordinator/src/web/screenshots", manifest_dir());
        std::fs::create_dir_all(&into).expect("screenshots folder");
        for name in [
            "console-list",
            "console-saga",
            "console-timeline",
            "console-batch",
            "console-dlq",
            "console-escaped",
        ] {
            std::fs::copy(
                shots.join(format!("{name}.png")),
                format!("{into}/{name}.png"),
            )
            .expect("screenshot copied");
        }
    }
    replica.stop().await.expect("stops");
    services.shutdown().await.expect("services stop");
}
