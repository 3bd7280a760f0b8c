//! The real tier's secure connections: Apache Kafka with a SASL_SSL listener (SCRAM-SHA-512 over
//! TLS, certificates made when the broker starts; see `broker::apache_kafka_secure`), one broker
//! for the whole file. `choreo run` over that listener runs the order saga with the services
//! on a Rust bus over the same listener; a wrong password, an ACL that denies the consumer group
//! or a saga topic, and a CA that did not sign the broker's certificate each stop it with one
//! clear line. Every replica runs at debug level with librdkafka's debug contexts on, and every
//! log is read for the passwords, which must never appear.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo_bus::error::Refused;
use choreo_bus::{Bus, BusConfig, BusError};
use choreo_integration_tests::broker::{
    SCRAM_RESTRICTED_USER, SCRAM_USER, TestBroker, shared_secure_broker,
};
use choreo_integration_tests::process::{Replica, ReplicaConfig};
use choreo_integration_tests::saga_scenarios::{
    Collector, check_exact, fast_order_saga_toml_with_acks, start_services,
};
use choreo_integration_tests::world::{drive, plan};
use choreo_schemas::MemoryRegistry;

/// librdkafka's debug contexts for a replica that runs for a while (`all` would log every
/// fetch): what it logs about its configuration, security and broker connections.
const KAFKA_DEBUG: &str = "generic,broker,security,conf,protocol,admin,eos,cgrp";

/// A registry served over REST and a scratch folder (replica logs), removed unless the test
/// failed.
struct Scene {
    dir: PathBuf,
    registry_url: String,
    registry: Arc<MemoryRegistry>,
    _server: tokio::task::JoinHandle<()>,
}

impl Scene {
    async fn new() -> Scene {
        let registry = Arc::new(MemoryRegistry::new());
        let (addr, server) = choreo_schemas::server::serve(
            Arc::clone(&registry) as Arc<dyn choreo_schemas::RegistryStore>,
            "127.0.0.1:0".parse().expect("address"),
        )
        .await
        .expect("registry");
        let dir =
            std::env::temp_dir().join(format!("choreo-secure-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scene {
            dir,
            registry_url: format!("http://{addr}"),
            registry,
            _server: server,
        }
    }

    /// A `choreo run` of the order saga with client `settings` (the secure listener's), at
    /// debug level with librdkafka's `kafka_debug` contexts.
    fn replica(
        &self,
        broker: &TestBroker,
        settings: &[(String, String)],
        kafka_debug: &str,
    ) -> ReplicaConfig {
        let definition = self.dir.join("order.toml");
        std::fs::write(&definition, fast_order_saga_toml_with_acks(30, 300)).expect("definition");
        let mut cfg = ReplicaConfig {
            bootstrap: broker.bootstrap.clone(),
            registry: self.registry_url.clone(),
            guarantee: "exactly_once",
            definition,
            group: format!("secure-{}", uuid::Uuid::new_v4().simple()),
            partitions: 4,
            mock: false,
            log_dir: self.dir.clone(),
            env: vec![
                ("CHOREO__LOG__LEVEL".into(), "debug".into()),
                ("CHOREO__KAFKA__CLIENT__DEBUG".into(), kafka_debug.into()),
            ],
        };
        cfg.use_client_settings(settings);
        cfg
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("replica logs kept in {}", self.dir.display());
        } else {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// A bus configuration with the client `settings` (the secure listener's).
fn bus_config(settings: &[(String, String)]) -> BusConfig {
    let mut config = BusConfig::new("").with_source("/tests/secure");
    for (k, v) in settings {
        if k == "bootstrap.servers" {
            config.bootstrap_servers.clone_from(v);
        } else {
            config = config.with_client_setting(k, v);
        }
    }
    config
}

/// `settings` with `key` set to `value`.
fn with(settings: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| {
            if k == key {
                (k.clone(), value.to_owned())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// Starts `choreo run` with `cfg` and waits for it to stop by itself: its one `choreo:` line
/// (the error it exits with) and its whole log. Fails when it exits 0 or keeps running.
async fn refused_start(cfg: &ReplicaConfig, instance: &str) -> (String, String) {
    let replica = Replica::start(cfg, instance).await.expect("starts");
    stopped_by_itself(replica, instance).await
}

/// Waits for `replica` to stop by itself: its one `choreo:` line and its whole log. Fails when
/// it exits 0 or keeps running.
async fn stopped_by_itself(mut replica: Replica, instance: &str) -> (String, String) {
    let status = replica
        .wait_exit(Duration::from_secs(120))
        .await
        .expect("stops by itself");
    let log = replica.log_text();
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("choreo: ")).collect();
    assert_eq!(lines.len(), 1, "one `choreo:` line; log:\n{log}");
    eprintln!("{instance}: {}", lines[0]);
    (lines[0].to_owned(), log)
}

/// The log holds no password of the secure listener's users (nor `extra`), and the debug lines
/// the test asked for, so that reading it for a secret means something.
fn assert_no_secret(log: &str, extra: &[&str]) {
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("librdkafka")),
        "the log has librdkafka's debug lines:\n{log}"
    );
    for secret in [SCRAM_USER.1, SCRAM_RESTRICTED_USER.1].iter().chain(extra) {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "a password is in the log: {leaks:#?}");
    }
}

/// The right SCRAM credentials over TLS: `choreo run` starts, the order saga's paths run to
/// their ends with the services and the driver on a Rust `Bus` and `Subscriber` connected to
/// the same SASL_SSL listener, and no password is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scram_over_tls_runs_the_order_saga_with_choreo_run_and_a_bus_on_that_listener() {
    let broker = shared_secure_broker().await.expect("a secure broker");
    let scene = Scene::new().await;
    let settings = broker.scram_settings(SCRAM_USER).expect("settings");
    let bus_config = bus_config(&settings);
    assert_ne!(
        bus_config.bootstrap_servers, broker.bootstrap,
        "the secure listener is not the plaintext one"
    );
    let bus = Bus::connect(bus_config, scene.registry.clone(), Duration::from_secs(60))
        .await
        .expect("the bus is let in");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&broker.bootstrap).expect("collector");

    let cfg = scene.replica(broker, &settings, KAFKA_DEBUG);
    let mut replica = Replica::start(&cfg, "scram-0").await.expect("starts");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready over SASL_SSL");
    let orders = plan(8);
    drive(bus.clone(), orders.clone(), 0)
        .await
        .expect("the driver publishes over SASL_SSL");
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    collector
        .wait_terminal(&ids, Duration::from_secs(120))
        .await
        .expect("every saga ends");
    check_exact(&collector, &orders).expect("each path's events, once");
    replica.stop().await.expect("stops");
    services.shutdown().await.expect("services stop");
    let log = std::fs::read_to_string(scene.dir.join("scram-0.log")).expect("log");
    assert_no_secret(&log, &[]);
}

/// A wrong password: `choreo run` exits non-zero with one line that says the SASL login failed,
/// naming the mechanism and the user and never a password (nor anywhere in its debug log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_scram_password_stops_choreo_run_with_one_line_naming_mechanism_and_user() {
    const WRONG: &str = "wrong-password-Jx5tQ";
    let broker = shared_secure_broker().await.expect("a secure broker");
    let scene = Scene::new().await;
    let settings = with(
        &broker.scram_settings(SCRAM_USER).expect("settings"),
        "sasl.password",
        WRONG,
    );
    let (line, log) = refused_start(&scene.replica(broker, &settings, "all"), "wrong").await;
    assert!(
        line.contains("authentication failed")
            && line.contains("SCRAM-SHA-512")
            && line.contains(SCRAM_USER.0),
        "{line}"
    );
    assert_no_secret(&log, &[WRONG]);
}

/// A service's bus with a wrong password: `Bus::connect` refuses it at once with one line that
/// says the SASL login failed, naming the mechanism and the user and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_scram_password_refuses_bus_connect_with_one_line_naming_mechanism_and_user() {
    const WRONG: &str = "wrong-password-Kb8vR";
    let broker = shared_secure_broker().await.expect("a secure broker");
    let scene = Scene::new().await;
    let settings = with(
        &broker.scram_settings(SCRAM_USER).expect("settings"),
        "sasl.password",
        WRONG,
    );
    let refused = Bus::connect(
        bus_config(&settings),
        scene.registry.clone(),
        Duration::from_secs(60),
    )
    .await
    .expect_err("a wrong password is refused");
    let line = refused.to_string();
    assert!(
        matches!(refused, BusError::Refused(Refused::Authentication { .. })),
        "{line}"
    );
    assert!(
        line.contains("authentication failed")
            && line.contains("SCRAM-SHA-512")
            && line.contains(SCRAM_USER.0)
            && !line.contains(WRONG)
            && !line.contains('\n'),
        "{line}"
    );
}

/// An ACL denies the principal the coordinator's consumer group: one line naming the principal
/// and the group, and what the coordinator needs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acl_denying_the_consumer_group_stops_choreo_run_with_one_line_naming_it() {
    let broker = shared_secure_broker().await.expect("a secure broker");
    let scene = Scene::new().await;
    let settings = broker
        .scram_settings(SCRAM_RESTRICTED_USER)
        .expect("settings");
    let cfg = scene.replica(broker, &settings, "all");
    broker
        .deny(SCRAM_RESTRICTED_USER.0, &["--group", &cfg.group])
        .await
        .expect("ACL");
    let (line, log) = refused_start(&cfg, "group").await;
    assert!(
        line.contains(&format!("User:{}", SCRAM_RESTRICTED_USER.0))
            && line.contains(&format!("consumer group {}", cfg.group))
            && line.contains("GROUP_AUTHORIZATION_FAILED"),
        "{line}"
    );
    assert_no_secret(&log, &[]);
}

/// An ACL denies the principal one of the saga's topics (its changelog): one line naming the
/// principal and the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acl_denying_a_saga_topic_stops_choreo_run_with_one_line_naming_it() {
    let broker = shared_secure_broker().await.expect("a secure broker");
    let scene = Scene::new().await;
    let settings = broker
        .scram_settings(SCRAM_RESTRICTED_USER)
        .expect("settings");
    let cfg = scene.replica(broker, &settings, "all");
    let changelog = format!("{}.saga-state", cfg.group);
    broker
        .deny(SCRAM_RESTRICTED_USER.0, &["--topic", &changelog])
        .await
        .expect("ACL");
    let (line, log) = refused_start(&cfg, "topic").await;
    assert!(
        line.contains(&format!("User:{}", SCRAM_RESTRICTED_USER.0))
            && line.contains(&format!("topic {changelog}"))
            && line.contains("TOPIC_AUTHORIZATION_FAILED"),
        "{line}"
    );
    assert_no_secret(&log, &[]);
}

/// An ACL denying the coordinator's consumer group, added while `choreo run` is running and
/// orders are coming in: the replica stops with one line naming the principal and the group,
/// rather than retrying its batches (or fetching nothing) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acl_denying_the_group_added_while_running_stops_choreo_run_with_one_line_naming_it() {
    let broker = shared_secure_broker().await.expect("a secure broker");
    let scene = Scene::new().await;
    let settings = broker
        .scram_settings(SCRAM_RESTRICTED_USER)
        .expect("settings");
    let cfg = scene.replica(broker, &settings, KAFKA_DEBUG);
    let mut replica = Replica::start(&cfg, "late-acl").await.expect("starts");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready before the ACL");
    broker
        .deny(SCRAM_RESTRICTED_USER.0, &["--group", &cfg.group])
        .await
        .expect("ACL");
    let bus = Bus::connect(
        bus_config(&broker.scram_settings(SCRAM_USER).expect("settings")),
        scene.registry.clone(),
        Duration::from_secs(60),
    )
    .await
    .expect("bus");
    drive(bus, plan(4), 0).await.expect("orders published");
    let (line, log) = stopped_by_itself(replica, "late-acl").await;
    assert!(
        line.contains(&format!("User:{}", SCRAM_RESTRICTED_USER.0))
            && line.contains(&format!("consumer group {}", cfg.group))
            && line.contains("GROUP_AUTHORIZATION_FAILED"),
        "{line}"
    );
    assert_no_secret(&log, &[]);
}

/// A client trusting a CA that did not sign the broker's certificate: one line saying TLS
/// failed, naming the CA file it trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ca_that_did_not_sign_the_broker_stops_choreo_run_with_one_tls_line() {
    let broker = shared_secure_broker().await.expect("a secure broker");
    let scene = Scene::new().await;
    let other_ca = broker.tls_files().expect("files").other_ca.clone();
    let settings = with(
        &broker.scram_settings(SCRAM_USER).expect("settings"),
        "ssl.ca.location",
        &other_ca.display().to_string(),
    );
    let (line, log) = refused_start(&scene.replica(broker, &settings, "all"), "ca").await;
    assert!(
        line.contains("TLS") && line.contains(&other_ca.display().to_string()),
        "{line}"
    );
    assert_no_secret(&log, &[]);
}
