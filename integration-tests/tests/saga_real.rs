//! The real-broker tier for the coordinator: the order saga's paths, exactly-once under SIGKILL
//! (librdkafka's mock cluster hosted in a process of its own), effectively-once under SIGKILL
//! (the real broker: nisshi here, which refuses transactions), two replicas sharing the work with
//! one restarted mid-run, and a deadline that survives a restart.

use std::sync::Arc;
use std::time::Duration;

use choreo_bus::{Bus, BusConfig, Subscription};
use choreo_coordinator::Guarantee;
use choreo_integration_tests::broker::{BrokerKind, TestBroker, hosted_mock, real_broker};
use choreo_integration_tests::process::{Replica, ReplicaConfig};
use choreo_integration_tests::saga_scenarios::{
    self, Collector, Path, SAGA_TOPICS, SagaEnv, check_after_dedup, check_exact,
    fast_order_saga_toml_with_acks, start_services,
};
use choreo_schemas::{Catalog, MemoryRegistry};
use futures::StreamExt;

const PARTITIONS: i32 = 4;

struct World {
    broker: TestBroker,
    registry_url: String,
    registry: Arc<MemoryRegistry>,
    _server: tokio::task::JoinHandle<()>,
    dir: std::path::PathBuf,
}

impl World {
    async fn new(broker: TestBroker) -> World {
        let registry = Arc::new(MemoryRegistry::new());
        let (addr, server) = choreo_schemas::server::serve(
            Arc::clone(&registry),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await
        .expect("registry server");
        let dir =
            std::env::temp_dir().join(format!("choreo-saga-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        World {
            broker,
            registry_url: format!("http://{addr}"),
            registry,
            _server: server,
            dir,
        }
    }

    fn bus(&self) -> Bus {
        let mut kafka = BusConfig::new(&self.broker.bootstrap).with_source("/tests/driver");
        if self.broker.kind == BrokerKind::HostedMock {
            kafka = kafka.tuned_for_embedded_broker();
        }
        Bus::new(kafka, self.registry.clone()).expect("bus")
    }

    /// A replica running the order saga with `step_secs` step deadlines and acknowledgement
    /// deadlines long enough that no compensation is re-emitted while a replica restarts (a
    /// re-emission repeats the event id by design; these tests count records).
    fn replica_config(&self, guarantee: &'static str, step_secs: u64) -> ReplicaConfig {
        let definition = self.dir.join(format!("order-{step_secs}s.toml"));
        std::fs::write(&definition, fast_order_saga_toml_with_acks(step_secs, 120))
            .expect("definition file");
        ReplicaConfig {
            bootstrap: self.broker.bootstrap.clone(),
            registry: self.registry_url.clone(),
            guarantee,
            definition,
            group: format!("coordinator-{}", uuid::Uuid::new_v4().simple()),
            partitions: PARTITIONS,
            mock: self.broker.kind == BrokerKind::HostedMock,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The mock cluster in its own process, with every topic the coordinator needs.
async fn hosted() -> TestBroker {
    let mut topics: Vec<(String, i32)> = SAGA_TOPICS
        .iter()
        .map(|t| ((*t).to_owned(), PARTITIONS))
        .collect();
    topics.push(("choreo.saga-state".into(), PARTITIONS));
    topics.push(("choreo.saga-commands".into(), PARTITIONS));
    for t in SAGA_TOPICS.iter().chain(["choreo.saga-commands"].iter()) {
        topics.push((format!("{t}.dlq"), 1));
    }
    let refs: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    hosted_mock(env!("CARGO_BIN_EXE_choreo-mock-broker"), &refs)
        .await
        .expect("hosted mock cluster")
}

async fn real() -> TestBroker {
    real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)")
}

fn env_for(world: &World, guarantee: Guarantee) -> SagaEnv {
    SagaEnv {
        bootstrap: world.broker.bootstrap.clone(),
        registry: world.registry.clone(),
        embedded: None,
        guarantee,
        partitions: PARTITIONS,
        mock: world.broker.kind == BrokerKind::HostedMock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_saga_paths_on_the_real_broker() {
    let world = World::new(real().await).await;
    let guarantee = if world.broker.supports_transactions() {
        Guarantee::ExactlyOnce
    } else {
        Guarantee::EffectivelyOnce
    };
    saga_scenarios::order_saga_paths(&env_for(&world, guarantee))
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_saga_paths_on_the_hosted_mock_cluster() {
    let world = World::new(hosted().await).await;
    saga_scenarios::order_saga_paths(&env_for(&world, Guarantee::ExactlyOnce))
        .await
        .expect("scenario");
}

/// A broker without transactions, with exactly-once configured: one clear line at start-up,
/// never a silent downgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_transactions_are_reported_at_start_up() {
    let world = World::new(real().await).await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let opts = env
        .options(
            saga_scenarios::fast_order_saga(&Catalog::reference()).expect("def"),
            "refused-0",
        )
        .expect("options");
    let started = choreo_coordinator::start(opts).await;
    if world.broker.supports_transactions() {
        // A broker with transactions: exactly-once starts.
        started
            .expect("exactly-once starts on a broker with transactions")
            .shutdown()
            .await
            .expect("stops");
        return;
    }
    let err = started
        .expect_err("exactly-once must not start without transactions")
        .to_string();
    assert!(
        err.contains("refused transactions") && err.contains("effectively_once"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
}

/// `n` sagas, mostly happy, every failure path represented. Deadline paths are left out: a
/// replica restart takes longer than their (short) deadlines, which would then rightly fire
/// for happy sagas too; `a_deadline_survives_a_restart` covers deadlines across restarts.
fn plan(n: usize) -> Vec<(String, Path)> {
    const FAILURES: [Path; 3] = [
        Path::PaymentDeclined,
        Path::InventoryUnavailable,
        Path::ShippingFailed,
    ];
    (0..n)
        .map(|i| {
            let path = if i % 3 == 0 {
                FAILURES[(i / 3) % FAILURES.len()]
            } else {
                Path::Happy
            };
            (format!("{}{i}", path.prefix()), path)
        })
        .collect()
}

async fn drive_all(bus: Bus, orders: Vec<(String, Path)>) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(orders)
        .map(|(id, path)| {
            let bus = bus.clone();
            async move { path.drive(&bus, &id).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Runs `n` sagas while a coordinator process is killed with SIGKILL `kills` times at random
/// moments and restarted each time; returns the collector and the orders.
async fn sigkill_run(
    world: &World,
    guarantee: &'static str,
    n: usize,
    kills: usize,
) -> (Collector, Vec<(String, Path)>, Subscription) {
    let cfg = world.replica_config(guarantee, 120);
    let bus = world.bus();
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let mut replica = Replica::start(&cfg, "crash-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    let orders = plan(n);
    let driver = tokio::spawn(drive_all(bus.clone(), orders.clone()));
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    let mut mid_run = 0;
    for k in 0..kills {
        // Kill a replica that is working: ready (partitions restored), then a random moment.
        replica
            .wait_ready(Duration::from_secs(120))
            .await
            .expect("ready");
        tokio::time::sleep(Duration::from_millis(200 + rand_ms(1500))).await;
        let done = collector.terminal_count(&ids);
        replica.kill().await.expect("SIGKILL");
        eprintln!(
            "kill {}/{kills}: {done} of {n} sagas finished at that moment",
            k + 1
        );
        if done > 0 && done < n {
            mid_run += 1;
        }
        replica = Replica::start(&cfg, "crash-0").await.expect("restart");
    }
    assert!(
        mid_run > 0,
        "at least one kill landed while sagas were running"
    );
    driver
        .await
        .expect("driver task")
        .expect("every input published");
    collector
        .wait_terminal(&ids, Duration::from_secs(300))
        .await
        .expect("every saga reaches a terminal event");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(replica.is_running(), "the last replica is still running");
    replica.stop().await.expect("clean stop");
    (collector, orders, services)
}

fn rand_ms(max: u64) -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32) % max
}

/// Exactly-once under SIGKILL. Where the broker implements transactions (Apache Kafka or
/// Redpanda, through `KAFKA_BOOTSTRAP_SERVERS` or testcontainers), every compensation and
/// completion event is present exactly once as a read_committed consumer sees it.
///
/// On this machine the only broker that accepts transactions is librdkafka's mock cluster, and
/// it does not isolate them: its Fetch ignores the isolation level and reports the log end as
/// the last stable offset, EndTxn writes no markers, and TxnOffsetCommit stores nothing
/// (librdkafka 2.12.1, `rdkafka_mock_handlers.c`). Records of a transaction aborted by a kill
/// are therefore visible, and a restarted replica re-reads its inputs. There the run checks
/// what the mock can show: the coordinator runs its transactional path through every kill, every
/// saga ends in the right state, and each effect is present at least once and exactly once after
/// deduplication by its deterministic event id; it prints how many records the mock let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_under_sigkill() {
    let broker = real().await;
    if broker.supports_transactions() {
        let world = World::new(broker).await;
        let (collector, orders, services) = sigkill_run(&world, "exactly_once", 2000, 5).await;
        check_exact(&collector, &orders)
            .expect("every effect exactly once, as a read_committed consumer sees it");
        eprintln!(
            "exactly-once on {:?}: {} sagas, {} emitted events, each once",
            world.broker.kind,
            orders.len(),
            collector.all().len()
        );
        services.shutdown().await.expect("services stop");
        return;
    }
    drop(broker);
    let world = World::new(hosted().await).await;
    let (collector, orders, services) = sigkill_run(&world, "exactly_once", 2000, 5).await;
    let dups = check_after_dedup(&collector, &orders)
        .expect("every effect at least once, exactly once after dedup by event id");
    eprintln!(
        "exactly-once path on the hosted mock cluster: {} sagas, {} emitted records, {dups} repeated records (same event id) from aborted transactions the mock does not hide",
        orders.len(),
        collector.all().len()
    );
    services.shutdown().await.expect("services stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn effectively_once_under_sigkill_on_the_real_broker() {
    let world = World::new(real().await).await;
    let (collector, orders, services) = sigkill_run(&world, "effectively_once", 2000, 5).await;
    let dups = check_after_dedup(&collector, &orders)
        .expect("every effect at least once, exactly once after dedup by event id");
    eprintln!(
        "effectively-once: {} sagas, {} emitted records, {dups} duplicates dropped by event id",
        orders.len(),
        collector.all().len()
    );
    services.shutdown().await.expect("services stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_work_and_survive_a_restart() {
    let world = World::new(hosted().await).await;
    let cfg = world.replica_config("exactly_once", 120);
    let bus = world.bus();
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let mut a = Replica::start(&cfg, "replica-a").await.expect("a");
    let mut b = Replica::start(&cfg, "replica-b").await.expect("b");
    a.wait_ready(Duration::from_secs(90))
        .await
        .expect("a ready");
    b.wait_ready(Duration::from_secs(90))
        .await
        .expect("b ready");
    let orders = plan(1000);
    let driver = tokio::spawn(drive_all(bus.clone(), orders.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.stop().await.expect("b stops cleanly mid-run");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut b = Replica::start(&cfg, "replica-b").await.expect("b again");
    b.wait_ready(Duration::from_secs(90))
        .await
        .expect("b ready again");
    driver.await.expect("driver").expect("published");
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    collector
        .wait_terminal(&ids, Duration::from_secs(300))
        .await
        .expect("every saga terminal");
    tokio::time::sleep(Duration::from_secs(4)).await;
    check_exact(&collector, &orders).expect("exactly once across replicas");
    // Whichever replica is asked answers for every saga.
    for (id, _) in orders.iter().step_by(97) {
        assert!(
            a.has_saga(&format!("order/{id}")).await,
            "replica a knows {id}"
        );
        assert!(
            b.has_saga(&format!("order/{id}")).await,
            "replica b knows {id}"
        );
    }
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
    services.shutdown().await.expect("services stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_survives_a_restart() {
    let world = World::new(hosted().await).await;
    // Payment must answer within 6 s; it never does, and the coordinator is down meanwhile.
    let cfg = world.replica_config("exactly_once", 6);
    let bus = world.bus();
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let mut replica = Replica::start(&cfg, "deadline-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    let id = "paysilent-restart-1";
    Path::PaymentDeadline.drive(&bus, id).await.expect("inputs");
    let saga = format!("order/{id}");
    let started = std::time::Instant::now();
    while !replica.has_saga(&saga).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the saga was committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.kill().await.expect("SIGKILL before the deadline");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "killed before the deadline was due"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        !collector.by_order().contains_key(id),
        "nothing emitted while the coordinator was down"
    );
    let mut replica = Replica::start(&cfg, "deadline-0").await.expect("restart");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    collector
        .wait_terminal(&[id.to_owned()], Duration::from_secs(120))
        .await
        .expect("the deadline fired after the restart");
    tokio::time::sleep(Duration::from_secs(2)).await;
    check_exact(&collector, &[(id.to_owned(), Path::PaymentDeadline)])
        .expect("compensated exactly once");
    replica.stop().await.expect("stop");
    services.shutdown().await.expect("services stop");
}

/// Topics of one saga with different partition counts stop the start-up with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_that_are_not_co_partitioned_are_refused_at_start_up() {
    let world = World::new(real().await).await;
    choreo_integration_tests::broker::create_topics(
        &world.broker.bootstrap,
        &[("orders", 4), ("payments", 2)],
    )
    .await
    .expect("topics");
    let env = env_for(&world, Guarantee::EffectivelyOnce);
    let opts = env
        .options(
            saga_scenarios::fast_order_saga(&Catalog::reference()).expect("def"),
            "copart-0",
        )
        .expect("options");
    let err = choreo_coordinator::start(opts)
        .await
        .expect_err("must refuse")
        .to_string();
    assert!(
        err.contains("not co-partitioned")
            && err.contains("orders=4")
            && err.contains("payments=2"),
        "{err}"
    );
}
