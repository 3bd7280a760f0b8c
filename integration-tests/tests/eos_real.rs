//! Exactly-once, proven by record count on Apache Kafka: the coordinator killed with SIGKILL
//! again and again, replicas joining and dying every few seconds, a zombie replica thawed after
//! its partitions moved, and the broker itself killed and restarted. After each, a
//! read_committed consumer finds every command, compensation and completion event of every saga
//! exactly once, counted by saga, event type and event id.
//!
//! The tests of this file run one at a time (each starts its own broker and several processes;
//! two at once on two cores would turn timing into the subject of the test).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use choreo_bus::{Context, HandlerError, Subscription, Unhandled};
use choreo_integration_tests::broker::real_broker;
use choreo_integration_tests::process::Replica;
use choreo_integration_tests::saga_scenarios::{
    Collector, Counts, Path, check_committed_past, count_effects, start_services,
};
use choreo_integration_tests::world::{PARTITIONS, World, drive, plan, plan_dev_mix, rand_ms};
use choreo_schemas::event::OrderPlaced;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn world() -> World {
    let broker = real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)");
    assert!(
        broker.supports_transactions(),
        "these tests need a broker with transactions"
    );
    World::new(broker).await.expect("world")
}

/// Requires every effect exactly once as a read_committed consumer sees it; prints the counts.
fn assert_exact(what: &str, collector: &Collector, orders: &[(String, Path)]) -> Counts {
    let c = count_effects(collector, orders);
    eprintln!(
        "{what}: {} sagas, {} records read_committed: {} missing, {} duplicated, {} unexpected, {} with conflicting ids",
        orders.len(),
        c.records,
        c.missing,
        c.duplicated,
        c.unexpected,
        c.conflicting_ids
    );
    assert_eq!(
        (c.missing, c.duplicated, c.unexpected, c.conflicting_ids),
        (0, 0, 0, 0),
        "{what}: every effect exactly once (missing, duplicated, unexpected, conflicting ids)"
    );
    c
}

/// Every saga's status, as the replica's operator API reports it, is the one its path calls
/// for.
async fn assert_statuses(replica: &Replica, orders: &[(String, Path)], step: usize) {
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for (id, path) in orders.iter().step_by(step) {
        let expected = path.status();
        let got = client
            .get(format!("{}/api/sagas/order/{id}", replica.api))
            .send()
            .await
            .ok();
        let status = match got {
            Some(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned)),
            None => None,
        };
        if status.as_deref() != Some(expected) {
            wrong.push(format!("{id}: {status:?}, expected {expected}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} sagas in the wrong state, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

async fn finish(services: Subscription, replicas: Vec<Replica>) {
    for r in replicas {
        r.stop().await.expect("a replica stops cleanly");
    }
    services.shutdown().await.expect("services stop");
}

/// 10 000 order sagas with `choreo dev`'s failure mix (declines, stock-outs, failed shipments,
/// silent services whose deadlines fire) while the only coordinator is killed with SIGKILL at
/// random moments, six times, and restarted each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_under_repeated_sigkill_of_the_coordinator() {
    let _one = ONE_AT_A_TIME.lock().await;
    let world = world().await;
    let cfg = world.replica_config("exactly_once", 60);
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let committed = Collector::start(&world.broker.bootstrap).expect("collector");
    let uncommitted = Collector::start_uncommitted(&world.broker.bootstrap).expect("collector");
    let mut replica = Replica::start(&cfg, "crash-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    let orders = plan_dev_mix(10_000);
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    let driver = tokio::spawn(drive(bus.clone(), orders.clone(), 200));
    let (mut mid_run, kills) = (0, 6);
    for k in 0..kills {
        replica
            .wait_ready(Duration::from_secs(120))
            .await
            .expect("ready");
        // A random moment once the replica is working again.
        tokio::time::sleep(Duration::from_millis(2000 + rand_ms(5000))).await;
        let done = committed.terminal_count(&ids);
        replica.kill().await.expect("SIGKILL");
        eprintln!(
            "kill {}/{kills}: {done} of {} sagas finished",
            k + 1,
            ids.len()
        );
        if done > 0 && done < ids.len() {
            mid_run += 1;
        }
        replica = Replica::start(&cfg, "crash-0").await.expect("restart");
    }
    assert!(
        mid_run >= 5,
        "at least 5 kills landed while sagas ran ({mid_run})"
    );
    driver
        .await
        .expect("driver")
        .expect("every input published");
    committed
        .wait_terminal(&ids, Duration::from_secs(600))
        .await
        .expect("every saga reaches a terminal event");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_exact("exactly-once under SIGKILL", &committed, &orders);
    let leaked = count_effects(&uncommitted, &orders);
    eprintln!(
        "the same topics read_uncommitted: {} records, {} duplicates from transactions the kills aborted",
        leaked.records, leaked.duplicated
    );
    replica
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    assert_statuses(&replica, &orders, 1).await;
    let group = cfg.group.clone();
    finish(services, vec![replica]).await;
    // Every input was committed with the transaction that decided it (a replica that did not
    // commit its offsets would read every input again after each restart).
    check_committed_past(&world.broker.bootstrap, &group, &committed)
        .expect("offsets committed with the decisions");
}

/// Three replicas in one group; every few seconds one is killed (SIGKILL) or started, at least
/// ten membership changes while 5 000 sagas run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_under_replica_churn() {
    let _one = ONE_AT_A_TIME.lock().await;
    let world = world().await;
    let cfg = world.replica_config("exactly_once", 60);
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let names = ["churn-a", "churn-b", "churn-c"];
    let mut live: Vec<Option<Replica>> = Vec::new();
    for n in names {
        let mut r = Replica::start(&cfg, n).await.expect("replica");
        r.wait_ready(Duration::from_secs(90)).await.expect("ready");
        live.push(Some(r));
    }
    let orders = plan_dev_mix(5_000);
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    let driver = tokio::spawn(drive(bus.clone(), orders.clone(), 150));
    let mut changes = 0;
    let started = Instant::now();
    while changes < 12 {
        tokio::time::sleep(Duration::from_millis(2500 + rand_ms(2000))).await;
        let alive: Vec<usize> = (0..names.len()).filter(|i| live[*i].is_some()).collect();
        let dead: Vec<usize> = (0..names.len()).filter(|i| live[*i].is_none()).collect();
        // Kill while at least two live, else start one; alternate otherwise.
        let kill = alive.len() >= 2 && (dead.is_empty() || changes % 2 == 0);
        if kill {
            let i = alive[usize::try_from(rand_ms(alive.len() as u64)).unwrap_or(0)];
            live[i]
                .take()
                .expect("alive")
                .kill()
                .await
                .expect("SIGKILL");
            eprintln!(
                "churn {}: killed {} at {:?}",
                changes + 1,
                names[i],
                started.elapsed()
            );
        } else {
            let i = dead[0];
            live[i] = Some(Replica::start(&cfg, names[i]).await.expect("start"));
            eprintln!(
                "churn {}: started {} at {:?}",
                changes + 1,
                names[i],
                started.elapsed()
            );
        }
        changes += 1;
    }
    let terminal_during_churn = collector.terminal_count(&ids);
    for (i, n) in names.iter().enumerate() {
        if live[i].is_none() {
            live[i] = Some(Replica::start(&cfg, n).await.expect("start"));
        }
    }
    let mut replicas: Vec<Replica> = live.into_iter().flatten().collect();
    for r in &mut replicas {
        r.wait_ready(Duration::from_secs(120)).await.expect("ready");
    }
    eprintln!(
        "{changes} membership changes; {terminal_during_churn} of {} sagas finished during them",
        ids.len()
    );
    assert!(
        terminal_during_churn > 0 && terminal_during_churn < ids.len(),
        "the churn happened while sagas ran"
    );
    driver.await.expect("driver").expect("published");
    collector
        .wait_terminal(&ids, Duration::from_secs(600))
        .await
        .expect("every saga terminal");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_exact("exactly-once under replica churn", &collector, &orders);
    for r in &mut replicas {
        r.wait_ready(Duration::from_secs(60)).await.expect("ready");
        assert_statuses(r, &orders, 1).await;
    }
    finish(services, replicas).await;
}

/// A replica frozen (SIGSTOP) with work in hand past its session timeout, while the other
/// replica takes its partitions; thawed (SIGCONT), its next commit is fenced — one log line
/// says so — and nothing of what it did after the freeze becomes visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_replica_is_fenced_when_it_thaws() {
    let _one = ONE_AT_A_TIME.lock().await;
    let world = world().await;
    let cfg = world.replica_config("exactly_once", 60);
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let mut zombie = Replica::start(&cfg, "zombie-a").await.expect("a");
    zombie
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("a ready");
    let mut other = Replica::start(&cfg, "zombie-b").await.expect("b");
    other
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("b ready");
    let orders = plan(3000);
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    let driver = tokio::spawn(drive(bus.clone(), orders.clone(), 150));
    tokio::time::sleep(Duration::from_secs(4)).await;
    zombie.pause().await.expect("SIGSTOP");
    let frozen_at = collector.terminal_count(&ids);
    // Session timeout (6 s) and transaction timeout pass; the other replica takes over.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let moved_on = collector.terminal_count(&ids);
    eprintln!("frozen with {frozen_at} sagas finished; {moved_on} finished while it was frozen");
    assert!(
        moved_on > frozen_at,
        "the other replica took over the frozen one's partitions"
    );
    zombie.resume().await.expect("SIGCONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let fenced_line = loop {
        // choreo's own line (librdkafka may say more, in its own words).
        if let Some(l) = zombie
            .log_text()
            .lines()
            .find(|l| l.contains("choreo_coordinator") && l.contains("fenced:"))
        {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the thawed replica logged no fencing:\n{}",
            zombie.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("the thawed replica: {fenced_line}");
    driver.await.expect("driver").expect("published");
    collector
        .wait_terminal(&ids, Duration::from_secs(300))
        .await
        .expect("every saga terminal");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_exact("exactly-once with a zombie", &collector, &orders);
    let mut replicas = vec![other];
    if zombie.is_running() {
        replicas.push(zombie);
    }
    finish(services, replicas).await;
}

/// The broker killed with SIGKILL mid-run and restarted on the same data directory: the
/// coordinator and a bus subscriber resume by themselves; the coordinator's effects stay exact
/// and the subscriber loses nothing (at-least-once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_crash_loses_nothing_and_duplicates_no_decision() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut world = world().await;
    // Step deadlines far past the outage: after a broker crash, a transaction can stay open
    // on a partition for over a minute (seen here: the changelog's last stable offset stood
    // still for 30 s and more), hiding later records from read_committed services; a 60 s step
    // deadline then fires and compensates a happy saga, a decision the test is not about. An
    // input that is really lost still leaves its saga unfinished past 300 s and fails the test.
    let cfg = world.replica_config("exactly_once", 300);
    // Publishes wait out the outage (the default 30 s delivery timeout is about its length).
    let bus = world
        .bus_with_delivery_timeout(Some(Duration::from_secs(120)))
        .expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    // A bus subscriber of its own beside the coordinator: every order placed must reach it.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let watcher = bus
        .subscriber("order-watcher")
        .unhandled(Unhandled::Skip)
        .client_setting("session.timeout.ms", "6000")
        .handle("watch", move |e: OrderPlaced, _ctx: Context| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .map_err(|_| HandlerError::permanent("poisoned"))?
                    .insert(e.order_id);
                Ok(())
            }
        })
        .start()
        .expect("watcher");
    let mut replica = Replica::start(&cfg, "crash-broker-0")
        .await
        .expect("replica");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    let orders = plan(3000);
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    let driver = tokio::spawn(drive(bus.clone(), orders.clone(), 150));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = collector.terminal_count(&ids);
    world.broker.kill().await.expect("SIGKILL the broker");
    eprintln!(
        "broker killed with {before} of {} sagas finished",
        ids.len()
    );
    // Down for longer than the transaction timeout (10 s): the restarted broker times out the
    // transaction open at the kill while loading, before its partitions have a leader, and
    // drops those partitions' abort markers (Apache Kafka 4.4, one node). The coordinator
    // must close them as aborted itself, or its next commit closes them as committed.
    tokio::time::sleep(Duration::from_secs(12)).await;
    world
        .broker
        .restart()
        .await
        .expect("the broker restarts on its data");
    eprintln!("broker restarted");
    driver
        .await
        .expect("driver")
        .expect("every input published (publishes retried)");
    collector
        .wait_terminal(&ids, Duration::from_secs(600))
        .await
        .expect("every saga terminal after the broker came back");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        replica.is_running(),
        "the coordinator rode out the broker crash"
    );
    let dropped = broker_dropped_markers(&world);
    eprintln!(
        "the restarted broker {} abort markers of the transaction open at the kill",
        if dropped { "dropped" } else { "wrote all" }
    );
    assert_exact("exactly-once across a broker crash", &collector, &orders);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = seen.lock().map(|s| s.len()).unwrap_or(0);
        if n == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bus subscriber handled {n} of {} orders after the broker crash",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the bus subscriber handled all {} orders (at-least-once, none lost)",
        ids.len()
    );
    watcher.shutdown().await.expect("watcher stops");
    finish(services, vec![replica]).await;
}

/// A transaction of the coordinator's transactional id left open on the changelog by a broker
/// crash, whose abort markers the restarted broker drops (it times the transaction out while
/// its partitions have no leader yet), is closed as aborted when the coordinator starts: its
/// records never become visible to a read_committed reader, although the coordinator's own
/// commits (same producer id) land on the same partitions after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_the_broker_left_open_is_closed_as_aborted_not_committed() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

    let _one = ONE_AT_A_TIME.lock().await;
    let mut world = world().await;
    let cfg = world.replica_config("exactly_once", 300);
    let bus = world
        .bus_with_delivery_timeout(Some(Duration::from_secs(120)))
        .expect("bus");
    let services = start_services(&bus).expect("services");
    // A first run creates the topics; then it stops, and its transactional id is the test's.
    let mut first = Replica::start(&cfg, "leftover-0").await.expect("replica");
    first
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    first.stop().await.expect("stops");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &world.broker.bootstrap)
        .set("transactional.id", format!("{}-leftover-0", cfg.group))
        .set("transaction.timeout.ms", "10000")
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    producer.begin_transaction().expect("begin");
    for p in 0..PARTITIONS {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&changelog_of(&cfg.group))
                    .key(&format!("leftover-{p}"))
                    .partition(p),
                Duration::from_secs(10),
            )
            .await
            .expect("a leftover record written");
    }
    // The records are on the broker, the transaction open: the broker dies, stays down past
    // the transaction timeout, and comes back.
    world.broker.kill().await.expect("SIGKILL the broker");
    drop(producer);
    tokio::time::sleep(Duration::from_secs(12)).await;
    world.broker.restart().await.expect("the broker restarts");
    let dropped = broker_dropped_markers(&world);
    assert!(
        dropped,
        "the restarted broker wrote the abort markers itself: this test no longer reaches the case it is for"
    );
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let mut replica = Replica::start(&cfg, "leftover-0").await.expect("replica");
    // Patient: without the sweep, restore waits out the open transaction on every partition.
    replica
        .wait_ready(Duration::from_secs(240))
        .await
        .expect("ready");
    // Sagas on every partition: the coordinator's commits land after the leftovers.
    let orders = plan(60);
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    drive(bus.clone(), orders.clone(), 0)
        .await
        .expect("inputs published");
    collector
        .wait_terminal(&ids, Duration::from_secs(120))
        .await
        .expect("every saga terminal");
    let leftovers = committed_keys(
        &world.broker.bootstrap,
        &changelog_of(&cfg.group),
        "leftover-",
    )
    .await
    .expect("reading the changelog");
    eprintln!("leftover records visible read_committed: {leftovers} (of {PARTITIONS} written)");
    assert_eq!(
        leftovers, 0,
        "the open transaction's records were closed as committed by the coordinator's next commit"
    );
    assert_exact("after the leftover transaction", &collector, &orders);
    finish(services, vec![replica]).await;
}

/// The changelog of a coordinator group (named after it).
fn changelog_of(group: &str) -> String {
    choreo_coordinator::coordinator::derived_topic(group, "saga-state")
}

/// Whether the restarted broker's log says it dropped transaction markers for partitions it
/// found no leader for.
fn broker_dropped_markers(world: &World) -> bool {
    world
        .broker
        .log_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|log| log.contains("Couldn't find leader endpoint for partitions"))
}

/// Records of `topic` whose key starts with `prefix`, read read_committed from the beginning
/// (the first within 60 s) until nothing new comes for 5 s.
async fn committed_keys(bootstrap: &str, topic: &str, prefix: &str) -> anyhow::Result<usize> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{ClientConfig, Message};

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("leftovers-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut n = 0;
    let mut wait = Duration::from_secs(60);
    while let Ok(m) = tokio::time::timeout(wait, consumer.recv()).await {
        let m = m?;
        wait = Duration::from_secs(5);
        if m.key().is_some_and(|k| k.starts_with(prefix.as_bytes())) {
            n += 1;
        }
    }
    Ok(n)
}
