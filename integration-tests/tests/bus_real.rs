//! The real-broker tier: every bus scenario against a broker in another process
//! (`KAFKA_BOOTSTRAP_SERVERS`, testcontainers' Apache Kafka, or nisshi — see
//! `choreo_integration_tests::broker`), with the registry served over the Confluent REST API, and
//! a subscriber process killed mid-batch and restarted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo_bus::PublishOptions;
use choreo_integration_tests::broker::{TestBroker, real_broker};
use choreo_integration_tests::scenarios::{self, Env, PATIENCE};
use choreo_schemas::event::{Money, PaymentAuthorized};
use choreo_schemas::{ConfluentRegistry, MemoryRegistry};

struct Real {
    env: Env,
    registry_url: String,
    _broker: TestBroker,
    _server: tokio::task::JoinHandle<()>,
}

async fn real() -> Real {
    let broker = real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)");
    let (addr, server) = choreo_schemas::server::serve(
        Arc::new(MemoryRegistry::new()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("registry server");
    let registry_url = format!("http://{addr}");
    Real {
        env: Env {
            bootstrap: broker.bootstrap.clone(),
            registry: Arc::new(ConfluentRegistry::new(&registry_url)),
            embedded: None,
        },
        registry_url,
        _broker: broker,
        _server: server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_with_every_header() {
    scenarios::round_trip_with_every_header(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_per_partition_under_concurrency() {
    scenarios::ordering_per_partition_under_concurrency(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retryable_failure_then_success() {
    scenarios::retryable_failure_then_success(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_goes_to_the_dead_letter_topic() {
    scenarios::poison_goes_to_the_dead_letter_topic(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_event_id_handled_once() {
    scenarios::duplicate_event_id_handled_once(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_event_read_by_v2_reader() {
    scenarios::v1_event_read_by_v2_reader(&real().await.env)
        .await
        .expect("scenario");
}

fn handled_ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect()
}

/// A subscriber process killed with SIGKILL mid-batch and restarted loses nothing: every event
/// is handled at least once, and re-handled ones are only those after the last commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_killed_mid_batch_loses_nothing() {
    let real = real().await;
    let env = &real.env;
    let topic = env.topic("kill", 2).await.expect("topic");
    let bus = env.bus("/tests/kill").expect("bus");
    const N: usize = 600;
    let mut ids = HashSet::new();
    for i in 0..N {
        let e = PaymentAuthorized {
            order_id: format!("order-{}", i % 50),
            payment_id: format!("p-{i}"),
            amount: Money {
                amount_minor: i64::try_from(i).expect("small"),
                currency: "EUR".into(),
            },
        };
        let d = bus
            .publish_with(&e, PublishOptions::default().with_topic(&topic))
            .await
            .expect("publish");
        ids.insert(d.id);
    }
    let dir = std::env::temp_dir().join(format!("choreo-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("handled.txt");
    let group = format!("kill-{}", uuid::Uuid::new_v4().simple());
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_choreo-test-consumer"))
            .args([
                "--bootstrap",
                &env.bootstrap,
                "--registry",
                &real.registry_url,
                "--topic",
                &topic,
                "--group",
                &group,
            ])
            .arg("--out")
            .arg(&out)
            .args(["--work-ms", "5"])
            .kill_on_drop(true)
            .spawn()
            .expect("consumer process starts")
    };
    let mut first = spawn();
    let deadline = Instant::now() + PATIENCE;
    while handled_ids(&out).len() < N / 4 {
        assert!(
            Instant::now() < deadline,
            "the first consumer handled {} events",
            handled_ids(&out).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");
    let at_kill = handled_ids(&out).len();
    assert!(at_kill < N, "killed mid-batch ({at_kill} of {N} handled)");
    let mut second = spawn();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen: HashSet<String> = handled_ids(&out).into_iter().collect();
        if ids.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart, {} of {N} events handled",
            ids.intersection(&seen).count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.start_kill().expect("stop");
    let _ = second.wait().await;
    let all = handled_ids(&out);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), N, "every event handled, nothing extra");
    eprintln!(
        "kill test: {N} events, {at_kill} handled before SIGKILL, {} re-handled after restart (at-least-once)",
        all.len() - N
    );
    std::fs::remove_dir_all(&dir).ok();
}
