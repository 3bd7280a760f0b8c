//! The HTTP ingest on Apache Kafka, driven by `curl` as a shell script would: an event posted
//! with a token lands on the catalog topic as Avro with the CloudEvents headers, keyed by its
//! subject, at the partition and offset the answer names, and starts a saga in a `choreo run`
//! replica; bad tokens and repeats produce nothing; with the broker down the answer is 503, and
//! the retry after it is back produces the event once.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use choreo_bus::wire::codec::Codec;
use choreo_integration_tests::broker::{free_port, real_broker};
use choreo_integration_tests::process::{Replica, choreo_binary};
use choreo_integration_tests::world::{PARTITIONS, World, reader_config};
use choreo_schemas::event::OrderPlaced;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

const TOKEN: &str = "checkout-token-0123456789";

fn config_file(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("ingest.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[ingest]
listen = "127.0.0.1:{port}"
delivery_timeout = "3s"

[[ingest.tokens]]
name = "checkout"
token_env = "TEST_CHECKOUT_TOKEN"
sources = ["/shop/checkout"]
types = ["io.choreo.orders.OrderPlaced"]
"#
        ),
    )
    .expect("config file");
    path
}

fn order(id: &str) -> String {
    json!({
        "order_id": id, "customer_id": "c-7",
        "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": {"amount_minor": 1999, "currency": "EUR"}}],
        "total": {"amount_minor": 1999, "currency": "EUR"},
        "shipping_address": "1 Main St"
    })
    .to_string()
}

/// `curl` posting one binary-mode event; returns (status, JSON body).
fn curl(port: u16, token: Option<&str>, source: &str, id: &str, order_id: &str) -> (u16, Value) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60"])
        .arg(format!("http://127.0.0.1:{port}/events"))
        .args(["-H", "content-type: application/json"])
        .args(["-H", "ce-specversion: 1.0"])
        .args(["-H", &format!("ce-id: {id}")])
        .args(["-H", &format!("ce-source: {source}")])
        .args(["-H", "ce-type: io.choreo.orders.OrderPlaced"])
        .args(["-H", &format!("ce-subject: {order_id}")])
        .args(["-d", &order(order_id)]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    let out = cmd.output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (
        code.trim().parse().expect("status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    reader_config(bootstrap)
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer")
}

/// The committed record of `topic` at (`partition`, `offset`).
fn record_at(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> OwnedMessage {
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("offset");
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            return m.detach();
        }
    }
    panic!("no record at {topic}/{partition}@{offset}");
}

/// Every committed record of `topic` (read until it has been quiet for two seconds).
fn all_records(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while quiet_since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(m.detach());
            quiet_since = Instant::now();
        }
    }
    out
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
    })
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ok = std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/healthz")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the ingest on port {port} did not answer /healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_curl_posts_lands_on_apache_kafka_where_the_answer_says_and_starts_a_saga() {
    let world = World::real_with_saga_topics().await;
    let port = free_port().expect("port");
    let mut cfg = world.replica_config("exactly_once", 60);
    cfg.env.push((
        "CHOREO_CONFIG".into(),
        config_file(&world.dir, port).display().to_string(),
    ));
    cfg.env.push(("TEST_CHECKOUT_TOKEN".into(), TOKEN.into()));
    let mut replica = Replica::start(&cfg, "ingest-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready");
    wait_healthy(port).await;
    let bootstrap = world.broker.bootstrap.clone();

    let (status, body) = curl(
        port,
        Some(TOKEN),
        "/shop/checkout",
        "curl-1",
        "order-curl-1",
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["topic"], "orders");
    assert_eq!(body["duplicate"], false);
    let partition = i32::try_from(body["partition"].as_i64().expect("partition")).expect("i32");
    let offset = body["offset"].as_i64().expect("offset");

    // At the partition and offset the answer named: key, headers, Avro value.
    let m = record_at(&bootstrap, "orders", partition, offset);
    assert_eq!(m.key(), Some(b"order-curl-1".as_slice()));
    assert_eq!(header(&m, "ce_id").as_deref(), Some("curl-1"));
    assert_eq!(header(&m, "ce_source").as_deref(), Some("/shop/checkout"));
    assert_eq!(
        header(&m, "ce_type").as_deref(),
        Some("io.choreo.orders.OrderPlaced")
    );
    assert_eq!(
        header(&m, "ce_correlationid").as_deref(),
        Some("order-curl-1")
    );
    assert_eq!(
        header(&m, "content-type").as_deref(),
        Some("application/avro")
    );
    assert!(header(&m, "traceparent").is_some());
    let codec = Codec::new(world.registry.clone());
    let placed: OrderPlaced = codec
        .decode(m.payload().expect("value"))
        .await
        .expect("Avro in the Confluent framing");
    assert_eq!(placed.order_id, "order-curl-1");
    assert_eq!(
        placed.channel, "web",
        "the v2 default filled the missing field"
    );

    // The coordinator read it: the saga exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !replica.has_saga("order/order-curl-1").await {
        assert!(Instant::now() < deadline, "the saga never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Repeats, missing and wrong tokens, and a token for another source: nothing produced.
    let (status, again) = curl(
        port,
        Some(TOKEN),
        "/shop/checkout",
        "curl-1",
        "order-curl-1",
    );
    assert_eq!(status, 202);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["offset"], body["offset"]);
    let (status, _) = curl(port, None, "/shop/checkout", "curl-2", "order-curl-2");
    assert_eq!(status, 401);
    let (status, _) = curl(
        port,
        Some("checkout-token-wrong-45678"),
        "/shop/checkout",
        "curl-3",
        "order-curl-3",
    );
    assert_eq!(status, 401);
    let (status, denied) = curl(
        port,
        Some(TOKEN),
        "/shop/payments",
        "curl-4",
        "order-curl-4",
    );
    assert_eq!(status, 403, "{denied}");
    let orders = all_records(&bootstrap, "orders");
    let ids: Vec<String> = orders.iter().filter_map(|m| header(m, "ce_id")).collect();
    assert_eq!(ids, ["curl-1"], "one record, produced once");
    replica.stop().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_broker_down_choreo_ingest_answers_503_and_the_retry_produces_once() {
    let broker = real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)");
    let mut world = World::new(broker).await.expect("world");
    if world.broker.log_path().is_none() {
        panic!("this test stops and restarts the broker: it needs the project's own Apache Kafka");
    }
    world
        .broker
        .create_topics(&[("orders", PARTITIONS)])
        .await
        .expect("topics");
    let port = free_port().expect("port");
    let log = std::fs::File::create(world.dir.join("ingest.log")).expect("log");
    let mut child = tokio::process::Command::new(choreo_binary().expect("choreo"))
        .arg("ingest")
        .env_remove("CHOREO_CONFIG")
        .arg("--config")
        .arg(config_file(&world.dir, port))
        .env("TEST_CHECKOUT_TOKEN", TOKEN)
        .env("CHOREO__KAFKA__BOOTSTRAP_SERVERS", &world.broker.bootstrap)
        .env("CHOREO__REGISTRY__URL", &world.registry_url)
        .env("CHOREO__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("choreo ingest");
    wait_healthy(port).await;
    let (status, body) = curl(port, Some(TOKEN), "/shop/checkout", "warm-up", "order-w");
    assert_eq!(status, 202, "{body}");

    world.broker.kill().await.expect("kill the broker");
    let (status, down) = curl(
        port,
        Some(TOKEN),
        "/shop/checkout",
        "during-outage",
        "order-o",
    );
    assert_eq!(status, 503, "{down}");
    assert!(
        down["error"].as_str().is_some_and(|e| e.contains("retry")),
        "{down}"
    );
    world.broker.restart().await.expect("restart the broker");
    let deadline = Instant::now() + Duration::from_secs(120);
    let retried = loop {
        let (status, body) = curl(
            port,
            Some(TOKEN),
            "/shop/checkout",
            "during-outage",
            "order-o",
        );
        if status == 202 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the broker never came back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(retried["duplicate"], false);
    let ids: Vec<String> = all_records(&world.broker.bootstrap, "orders")
        .iter()
        .filter_map(|m| header(m, "ce_id"))
        .collect();
    assert_eq!(
        ids.iter().filter(|i| *i == "during-outage").count(),
        1,
        "the event the 503 answered is in Kafka once, after the retry: {ids:?}"
    );
    child.kill().await.ok();
}
