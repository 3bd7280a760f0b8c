//! The real-broker tier for the coordinator, on Apache Kafka (each test with a broker of its
//! own, since the saga topics have fixed names): the order saga's paths, a broker that refuses
//! transactions, effectively-once under SIGKILL, two replicas sharing the work, a deadline that
//! survives a restart only through the changelog, and co-partitioning refused at start-up. The
//! heavier exactly-once proofs (crashes, churn, zombies, a broker crash) are in `eos_real.rs`.

use std::time::Duration;

use choreo_coordinator::Guarantee;
use choreo_integration_tests::broker::{
    BrokerKind, TestBroker, apache_kafka_with, hosted_mock, real_broker,
};
use choreo_integration_tests::process::Replica;
use choreo_integration_tests::saga_scenarios::{
    self, Collector, Path, SAGA_TOPICS, SagaEnv, check_after_dedup, check_exact, send_abort,
    start_services,
};
use choreo_integration_tests::world::{PARTITIONS, World, drive, plan, rand_ms};
use choreo_schemas::Catalog;

/// The mock cluster in its own process, with every topic the coordinator needs.
async fn hosted() -> TestBroker {
    // librdkafka's mock cluster does not answer CreateTopics: the topics are made when it
    // starts, exactly the list the scenarios' coordinator asks for.
    let env = SagaEnv {
        bootstrap: String::new(),
        registry: std::sync::Arc::new(choreo_schemas::MemoryRegistry::new()),
        embedded: None,
        guarantee: Guarantee::ExactlyOnce,
        partitions: PARTITIONS,
        mock: true,
    };
    let opts = env
        .options(
            saga_scenarios::fast_order_saga(&Catalog::reference()).expect("definition"),
            "topics",
        )
        .expect("options");
    let mut topics: Vec<(String, i32)> = opts
        .required_topics()
        .expect("topics")
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    for t in SAGA_TOPICS {
        if !topics.iter().any(|(n, _)| n == t) {
            topics.push(((*t).to_owned(), PARTITIONS));
        }
    }
    let refs: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    hosted_mock(env!("CARGO_BIN_EXE_choreo-mock-broker"), &refs)
        .await
        .expect("hosted mock cluster")
}

async fn real() -> World {
    let broker = real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)");
    World::new(broker).await.expect("world")
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
    let world = real().await;
    assert!(world.broker.supports_transactions());
    saga_scenarios::order_saga_paths(&env_for(&world, Guarantee::ExactlyOnce))
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_saga_paths_on_the_hosted_mock_cluster() {
    let world = World::new(hosted().await).await.expect("world");
    saga_scenarios::order_saga_paths(&env_for(&world, Guarantee::ExactlyOnce))
        .await
        .expect("scenario");
}

/// A broker that refuses transactions (Apache Kafka with an ACL that denies this principal
/// every transactional id: TRANSACTIONAL_ID_AUTHORIZATION_FAILED), with exactly-once
/// configured: `choreo run` stops at start-up with one clear line, never a silent downgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_transactions_stop_an_exactly_once_start_up_with_one_line() {
    let world = World::own_apache_kafka().await;
    let settings = world
        .broker
        .without_transactions()
        .await
        .expect("a principal without transactions");
    let mut cfg = world.replica_config("exactly_once", 30);
    cfg.use_client_settings(&settings);
    let mut replica = Replica::start(&cfg, "refused-0").await.expect("starts");
    let status = replica
        .wait_exit(Duration::from_secs(90))
        .await
        .expect("exits by itself");
    assert!(!status.success(), "exit status {status}");
    let log = replica.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with("choreo: "))
        .unwrap_or_else(|| panic!("one `choreo:` line in the log:\n{log}"));
    assert!(
        line.contains("refused transactions")
            && line.contains("TRANSACTIONAL_ID_AUTHORIZATION_FAILED")
            && line.contains("effectively_once"),
        "{line}"
    );
    assert!(
        !log.contains(
            settings
                .iter()
                .find(|(k, _)| k == "sasl.password")
                .map_or("?", |(_, v)| v.as_str())
        ),
        "the password is not in the log"
    );
    // The same principal with effectively-once starts and gets ready.
    cfg.guarantee = "effectively_once";
    let mut replica = Replica::start(&cfg, "refused-1").await.expect("starts");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("effectively-once needs no transactions");
    replica.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn effectively_once_under_sigkill_every_effect_at_least_once() {
    let world = real().await;
    let cfg = world.replica_config("effectively_once", 120);
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let mut replica = Replica::start(&cfg, "crash-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    let orders = plan(2000);
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    let driver = tokio::spawn(drive(bus.clone(), orders.clone(), 200));
    for k in 0..5 {
        replica
            .wait_ready(Duration::from_secs(120))
            .await
            .expect("ready");
        tokio::time::sleep(Duration::from_millis(200 + rand_ms(1500))).await;
        let done = collector.terminal_count(&ids);
        replica.kill().await.expect("SIGKILL");
        eprintln!("kill {}/5: {done} of {} sagas finished", k + 1, ids.len());
        replica = Replica::start(&cfg, "crash-0").await.expect("restart");
    }
    driver.await.expect("driver").expect("published");
    collector
        .wait_terminal(&ids, Duration::from_secs(300))
        .await
        .expect("every saga terminal");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dups = check_after_dedup(&collector, &orders)
        .expect("every effect at least once, exactly once after dedup by event id");
    eprintln!(
        "effectively-once: {} sagas, {} emitted records, {dups} duplicates dropped by event id",
        orders.len(),
        collector.all().len()
    );
    replica.stop().await.expect("clean stop");
    services.shutdown().await.expect("services stop");
}

/// Two replicas in one group split the partitions; one leaves and comes back mid-run. Both
/// must have decided sagas (each replica's own input counter), the effects are exact, and
/// either replica answers for every saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_both_decide_and_both_answer_for_every_saga() {
    let world = real().await;
    let cfg = world.replica_config("exactly_once", 120);
    let bus = world.bus().expect("bus");
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
    let driver = tokio::spawn(drive(bus.clone(), orders.clone(), 250));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b_inputs_before_leaving = b.counter("choreo_inputs_total").await;
    b.stop().await.expect("b stops cleanly mid-run");
    tokio::time::sleep(Duration::from_secs(2)).await;
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    check_exact(&collector, &orders).expect("exactly once across replicas");
    let a_inputs = a.counter("choreo_inputs_total").await;
    let b_inputs = b_inputs_before_leaving + b.counter("choreo_inputs_total").await;
    eprintln!("inputs decided: replica a {a_inputs}, replica b {b_inputs}");
    assert!(a_inputs > 0.0, "replica a decided inputs");
    assert!(b_inputs > 0.0, "replica b decided inputs");
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

/// An aborted commit loses nothing and repeats nothing, although the next batch was staged on
/// the aborted batch's states (a batch commits while the next is staged): the replica restores
/// its partitions from the changelog and reads their inputs again from the committed offsets.
/// Three transactions are aborted where they would commit, as a broker refusing the commit
/// makes them, while 60 orders run; a read_committed consumer then finds every saga's effects
/// exactly once. Kept in memory instead, the aborted batch's states take its replayed inputs
/// for seen ones: their commands are never sent, and the sagas run into their deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aborted_commit_is_restored_from_the_changelog_and_loses_no_input() {
    use std::sync::atomic::Ordering;
    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let catalog = Catalog::reference();
    let def = choreo_saga::Definition::from_toml(
        "order-aborted-commits.toml",
        &saga_scenarios::fast_order_saga_toml(10),
        &catalog,
    )
    .expect("definition");
    let opts = env.options(def, "aborted-commits-0").expect("options");
    let aborts = std::sync::Arc::clone(&opts.faults.abort_commits);
    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    saga_scenarios::wait_ready(&coordinator, Duration::from_secs(90))
        .await
        .expect("coordinator ready");
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    aborts.store(3, Ordering::Release);
    let orders = plan(60);
    drive(bus.clone(), orders.clone(), 100)
        .await
        .expect("published");
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    collector
        .wait_terminal(&ids, Duration::from_secs(120))
        .await
        .expect("every saga terminal");
    assert_eq!(
        aborts.load(Ordering::Acquire),
        0,
        "three transactions were aborted"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    check_exact(&collector, &orders).expect("every effect exactly once across the aborts");
    services.shutdown().await.expect("services stop");
    coordinator.shutdown().await.expect("stops");
}

/// A deadline that comes due while the only replica is down fires after the restart, once.
/// Apache Kafka stores the offsets committed in the transaction, so the restarted replica does
/// not read the saga's inputs again: the deadline can only come from the changelog it restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_due_while_down_fires_after_the_restart_from_the_changelog() {
    let world = real().await;
    // Payment must answer within 6 s; it never does, and the coordinator is down meanwhile.
    let cfg = world.replica_config("exactly_once", 6);
    let bus = world.bus().expect("bus");
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
    let inputs = replica.counter("choreo_inputs_total").await;
    let restored = replica.counter("choreo_restored_sagas_total").await;
    eprintln!("after the restart: {restored} sagas restored, {inputs} inputs decided");
    assert!(restored >= 1.0, "the saga came back from the changelog");
    replica.stop().await.expect("stop");
    services.shutdown().await.expect("services stop");
}

/// Topics of one saga with different partition counts stop the start-up with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_that_are_not_co_partitioned_are_refused_at_start_up() {
    let world = real().await;
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

/// A broker whose transaction coordinator cannot start (its transaction log asks for more
/// replicas than the one broker): `init_transactions` times out, and the start-up says so —
/// not that the broker refused transactions, and without advice to give up exactly-once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_init_transactions_timeout_is_reported_as_one() {
    let broker = apache_kafka_with(&[("transaction.state.log.replication.factor", "2")])
        .await
        .expect("Apache Kafka");
    let world = World::new(broker).await.expect("world");
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let mut opts = env
        .options(
            saga_scenarios::fast_order_saga(&Catalog::reference()).expect("def"),
            "init-timeout-0",
        )
        .expect("options");
    opts.kafka_timeout = Duration::from_secs(5);
    let err = choreo_coordinator::start(opts)
        .await
        .expect_err("exactly-once cannot start")
        .to_string();
    assert!(err.contains("could not initialise transactions"), "{err}");
    assert!(err.contains("within 5s"), "{err}");
    assert!(
        !err.contains("refused") && !err.contains("effectively_once"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
}

/// An operator command far over every limit (a 600 KB abort reason), sent straight to the
/// commands topic: the coordinator bounds what it keeps, stays ready, and goes on deciding
/// other sagas. (It used to leave a transaction open and fail every batch after it, forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_operator_command_does_not_stop_the_coordinator() {
    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let opts = env
        .options(
            saga_scenarios::slow_order_saga(&Catalog::reference()).expect("def"),
            "oversize-0",
        )
        .expect("options");
    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    let ready = coordinator.readiness();
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let victim = "declined-oversize-1";
    Path::PaymentDeadline
        .drive(&bus, victim)
        .await
        .expect("inputs");
    let view = coordinator.view();
    let saga = format!("order/{victim}");
    let started = std::time::Instant::now();
    while view.get(&saga).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the saga started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_abort(&coordinator, victim, &"x".repeat(600 * 1024))
        .await
        .expect("the command reaches the commands topic");
    // Later sagas are decided as usual.
    let after = vec![("happy-oversize-2".to_owned(), Path::Happy)];
    drive(bus.clone(), after.clone(), 0).await.expect("inputs");
    collector
        .wait_terminal(&["happy-oversize-2".to_owned()], Duration::from_secs(60))
        .await
        .expect("a later saga completes");
    assert!(ready(), "still ready");
    let s = view.get(&saga).expect("the aborted saga");
    let kept = s.abort_reason.as_deref().map_or(0, str::len);
    eprintln!(
        "the 600 KB reason: {kept} bytes kept, status {:?}",
        s.status
    );
    // The operator's text is cut to MAX_REASON_BYTES; the saga adds a short prefix of its own.
    assert!(
        kept <= choreo_saga::MAX_REASON_BYTES + 64,
        "reason bounded ({kept} bytes)"
    );
    assert!(s.to_json().expect("json").len() < choreo_coordinator::MAX_STATE_BYTES);
    services.shutdown().await.expect("services stop");
    coordinator.shutdown().await.expect("stops");
}

/// Starts an in-process coordinator of `group` (slow deadlines: its sagas wait) and waits until
/// it has `saga` in its view, or `patience` is over.
async fn coordinator_of(
    env: &SagaEnv,
    group: &str,
    changelog: Option<&str>,
) -> anyhow::Result<choreo_coordinator::CoordinatorHandle> {
    let (_, mut o) = slow_order_group(env, group)?;
    o.changelog_topic = changelog.map(str::to_owned);
    o.commands_topic = changelog.map(|c| format!("{c}.commands"));
    Ok(choreo_coordinator::start(o).await?)
}

/// The slow order saga (its sagas wait), and the options of a coordinator of `group` running
/// it (instance `<group>-0`).
fn slow_order_group(
    env: &SagaEnv,
    group: &str,
) -> anyhow::Result<(
    choreo_saga::Definition,
    choreo_coordinator::CoordinatorOptions,
)> {
    let def = saga_scenarios::slow_order_saga(&Catalog::reference())?;
    let mut o = env.options(def.clone(), &format!("{group}-0"))?;
    o.group_id = group.to_owned();
    Ok((def, o))
}

/// Creates the topics a coordinator with `opts` needs, so that a test can write to its
/// changelog before it starts; returns a client for the cluster.
async fn with_topics(
    env: &SagaEnv,
    opts: &choreo_coordinator::CoordinatorOptions,
) -> rdkafka::ClientConfig {
    let client = choreo_bus::BusConfig::new(&env.bootstrap).client_config();
    choreo_coordinator::topics::ensure_topics(
        &client,
        &opts.required_topics().expect("topics"),
        None,
        Duration::from_secs(30),
    )
    .await
    .expect("topics");
    client
}

/// The state an order saga's coordinator commits once the order is placed and, with `paid`,
/// its payment authorized (the inventory step then running), all at the present time.
fn order_state(def: &choreo_saga::Definition, id: &str, paid: bool) -> choreo_saga::SagaState {
    use choreo_schemas::Event as _;
    use choreo_schemas::event::{OrderPlaced, PaymentAuthorized};

    let now = choreo_saga::Millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms"),
    );
    let order = saga_scenarios::order(id);
    let payment = PaymentAuthorized {
        order_id: id.into(),
        payment_id: format!("pay-{id}"),
        amount: order.total.clone(),
    };
    let mut inputs = vec![(
        OrderPlaced::TYPE,
        serde_json::to_value(&order).expect("json"),
    )];
    if paid {
        inputs.push((
            PaymentAuthorized::TYPE,
            serde_json::to_value(&payment).expect("json"),
        ));
    }
    let mut state = choreo_saga::SagaState::new(def, id, now);
    for (n, (ty, data)) in inputs.into_iter().enumerate() {
        let input = choreo_saga::Input::Event(choreo_saga::Event {
            id: format!("{id}-{n}"),
            event_type: ty.into(),
            correlation_id: id.into(),
            time: now,
            data,
        });
        choreo_saga::apply(def, &mut state, &input, now);
    }
    assert_eq!(state.status(), choreo_saga::Status::Running);
    state
}

async fn wait_for_saga(c: &choreo_coordinator::CoordinatorHandle, saga: &str) {
    let view = c.view();
    choreo_integration_tests::scenarios::eventually(&format!("{saga} in the view"), || {
        view.get(saga).is_some()
    })
    .await
    .expect("the saga is in the view");
}

/// Kafka Streams names a changelog after its application; choreo names it after the
/// coordinator group. Two groups with the default names keep apart: each restores only its own
/// sagas. Two groups pointed at one changelog on purpose: the second stops at restore with a
/// line naming both groups, instead of owning, deciding and emitting for the first one's sagas
/// (without the owner header on changelog records this test fails: group b restores
/// order/shared-1 and runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinator_groups_never_share_one_changelog() {
    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let bus = env.bus("/tests/driver").expect("bus");

    // Default names: <group>.saga-state each.
    let a = coordinator_of(&env, "group-a", None)
        .await
        .expect("a starts");
    bus.publish(&saga_scenarios::order("apart-1"))
        .await
        .expect("order");
    wait_for_saga(&a, "order/apart-1").await;
    let b = coordinator_of(&env, "group-b", None)
        .await
        .expect("b starts");
    wait_for_saga(&b, "order/apart-1").await; // b consumes orders too, in its own group
    a.shutdown().await.expect("a stops");
    b.shutdown().await.expect("b stops");
    let counts = choreo_coordinator::topics::partition_counts(
        &choreo_bus::BusConfig::new(&env.bootstrap).client_config(),
        &[
            "group-a.saga-state",
            "group-b.saga-state",
            "choreo.saga-state",
        ],
        Duration::from_secs(10),
    )
    .expect("metadata");
    assert!(
        counts.contains_key("group-a.saga-state") && counts.contains_key("group-b.saga-state"),
        "each group has a changelog of its own: {counts:?}"
    );
    assert!(!counts.contains_key("choreo.saga-state"), "{counts:?}");

    // One changelog named for both: the second group refuses at restore.
    let c = coordinator_of(&env, "group-c", Some("shared.saga-state"))
        .await
        .expect("c starts");
    bus.publish(&saga_scenarios::order("shared-1"))
        .await
        .expect("order");
    wait_for_saga(&c, "order/shared-1").await;
    c.shutdown().await.expect("c stops");
    let mut d = coordinator_of(&env, "group-d", Some("shared.saga-state"))
        .await
        .expect("d starts (it learns the owner at restore)");
    let err = tokio::time::timeout(Duration::from_secs(60), d.wait())
        .await
        .expect("group d stops by itself")
        .expect_err("group d refuses the shared changelog");
    let line = err.to_string();
    assert!(
        line.contains("group-c") && line.contains("group-d") && line.contains("shared.saga-state"),
        "{line}"
    );
    assert!(d.view().get("order/shared-1").is_none() || d.is_finished());
}

/// Upgrading from the changelog every group shared (`choreo.saga-state`): a group that has run
/// on it (committed offsets) and has no changelog of its own yet refuses to start on a new,
/// empty one — it would forget its running sagas — and says which setting keeps them. With
/// that setting it starts and still has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgraded_group_keeps_its_sagas_in_the_old_shared_changelog() {
    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let bus = env.bus("/tests/driver").expect("bus");
    let catalog = Catalog::reference();
    let old = |changelog: Option<&str>, commands: Option<&str>| {
        let mut o = env
            .options(
                saga_scenarios::slow_order_saga(&catalog).expect("def"),
                "upgraded-0",
            )
            .expect("options");
        o.group_id = "upgraded".into();
        o.changelog_topic = changelog.map(str::to_owned);
        o.commands_topic = commands.map(str::to_owned);
        o
    };
    // An earlier version: every group on choreo.saga-state / choreo.saga-commands.
    let first =
        choreo_coordinator::start(old(Some("choreo.saga-state"), Some("choreo.saga-commands")))
            .await
            .expect("the earlier layout starts");
    bus.publish(&saga_scenarios::order("kept-1"))
        .await
        .expect("order");
    wait_for_saga(&first, "order/kept-1").await;
    first.shutdown().await.expect("stops");

    let Err(refused) = choreo_coordinator::start(old(None, None)).await else {
        panic!("the upgraded group refuses its new, empty changelog");
    };
    let line = refused.to_string();
    assert!(
        line.contains("upgraded.saga-state")
            && line.contains("coordinator.changelog_topic = \"choreo.saga-state\""),
        "{line}"
    );
    let kept =
        choreo_coordinator::start(old(Some("choreo.saga-state"), Some("choreo.saga-commands")))
            .await
            .expect("starts with the setting the line names");
    wait_for_saga(&kept, "order/kept-1").await;
    kept.shutdown().await.expect("stops");
}

/// The changelog is created compacted with compaction that keeps up and tombstones kept a day;
/// an existing changelog with `cleanup.policy=delete` (the broker would drop old sagas) is
/// refused at start-up with the command that fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_changelog_is_compacted_and_a_deleting_one_is_refused() {
    use rdkafka::admin::{
        AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication,
    };
    use rdkafka::client::DefaultClientContext;

    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let c = coordinator_of(&env, "compacted", None)
        .await
        .expect("starts");
    c.shutdown().await.expect("stops");
    let admin: AdminClient<DefaultClientContext> = choreo_bus::BusConfig::new(&env.bootstrap)
        .client_config()
        .create()
        .expect("admin");
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic("compacted.saga-state")], &opts)
        .await
        .expect("describe");
    let resource = described[0].as_ref().expect("the changelog's configs");
    for (k, v) in choreo_coordinator::topics::CHANGELOG_SETTINGS {
        assert_eq!(
            resource.get(k).and_then(|e| e.value.as_deref()),
            Some(*v),
            "{k} of the changelog"
        );
    }
    // What keeps compaction up, written out here so that dropping one from the settings fails:
    // a segment that rolls hourly (the broker's default is a week) left a restore reading an
    // hour of superseded states, and tombstones must outlive any restore.
    let setting = |k: &str| -> f64 {
        resource
            .get(k)
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} of the changelog is not a number"))
    };
    assert!(setting("segment.ms") <= 600_000.0, "segment.ms");
    assert!(
        setting("min.cleanable.dirty.ratio") <= 0.1,
        "min.cleanable.dirty.ratio"
    );
    assert!(
        setting("max.compaction.lag.ms") <= 6.0 * 3_600_000.0,
        "max.compaction.lag.ms"
    );
    assert!(
        setting("delete.retention.ms") >= 86_400_000.0,
        "delete.retention.ms"
    );

    let topic = NewTopic::new(
        "deleting.saga-state",
        PARTITIONS,
        TopicReplication::Fixed(1),
    )
    .set("cleanup.policy", "delete");
    admin
        .create_topics([&topic], &opts)
        .await
        .expect("create")
        .into_iter()
        .for_each(|r| {
            r.expect("created");
        });
    let Err(refused) = coordinator_of(&env, "deleting", None).await else {
        panic!("a deleting changelog is refused");
    };
    let line = refused.to_string();
    assert!(
        line.contains("deleting.saga-state") && line.contains("cleanup.policy=delete"),
        "{line}"
    );
}

/// An input near the record limit that is poison (no Confluent framing): its dead letter with
/// the dead-letter headers would be over the limit, so the coordinator dead-letters it without
/// its value (a header says how large it was and where it is) and goes on deciding; it used to
/// fail the batch on the dead letter and retry it forever, every partition of the replica with
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_too_large_to_dead_letter_whole_does_not_stop_the_coordinator() {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let opts = env
        .options(
            saga_scenarios::fast_order_saga(&Catalog::reference()).expect("def"),
            "huge-0",
        )
        .expect("options");
    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &world.broker.bootstrap)
        .set("message.max.bytes", "1048576")
        .create()
        .expect("producer");
    raw.send(
        FutureRecord::<str, [u8]>::to("orders")
            .key("huge-input-1")
            .payload(&vec![7u8; 999_950]),
        Duration::from_secs(20),
    )
    .await
    .expect("the large record is in the topic");
    let after = vec![("happy-after-huge".to_owned(), Path::Happy)];
    drive(bus.clone(), after, 0).await.expect("inputs");
    collector
        .wait_terminal(&["happy-after-huge".to_owned()], Duration::from_secs(60))
        .await
        .expect("a later saga completes");
    let reader = choreo_integration_tests::scenarios::Env {
        bootstrap: world.broker.bootstrap.clone(),
        registry: world.registry.clone(),
        embedded: None,
    };
    let letter = reader
        .read("orders.dlq", 1)
        .await
        .expect("a dead letter")
        .remove(0);
    assert_eq!(letter.key(), Some(&b"huge-input-1"[..]));
    assert!(letter.payload().unwrap_or_default().is_empty());
    let omitted = letter
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == "choreo_dlq_payload_omitted")
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .expect("the payload-omitted header");
    assert!(omitted.starts_with("999950 bytes"), "{omitted}");
    services.shutdown().await.expect("services stop");
    coordinator.shutdown().await.expect("stops");
}

/// The release before the binary changelog format stored each saga state as JSON. A coordinator
/// restores such a record, goes on with the saga from it, and writes the saga back in the binary
/// format (`SagaState::encode`). Without the JSON reader the saga is not restored: the view never
/// shows it, and the inputs after the restart find no saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_stored_as_json_by_the_previous_release_is_restored_and_completes() {
    use choreo_schemas::event::InventoryReserved;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let bus = env.bus("/tests/driver").expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&world.broker.bootstrap).expect("collector");
    let (def, opts) = slow_order_group(&env, "json-upgrade").expect("options");
    let changelog = opts.changelog_topic();
    let client = with_topics(&env, &opts).await;

    // The state the previous release committed: placed, payment authorized, inventory running.
    let id = "json-1";
    let state = order_state(&def, id, true);
    let json = state.to_json().expect("json");
    assert_eq!(json.first(), Some(&b'{'));
    let partition = choreo_bus::wire::partition::partition_of(id.as_bytes(), env.partitions);
    let producer: FutureProducer = client.create().expect("producer");
    producer
        .send(
            FutureRecord::to(&changelog)
                .key(&state.saga_id)
                .payload(&json)
                .partition(partition),
            Duration::from_secs(10),
        )
        .await
        .expect("the old record is written");

    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    wait_for_saga(&coordinator, "order/json-1").await;
    let restored = coordinator.view().get("order/json-1").expect("in the view");
    assert_eq!(
        restored.step("payment").map(|s| s.status),
        Some(choreo_saga::StepStatus::Completed),
        "restored from the JSON record, payment and all"
    );
    // Only the inventory is left; shipping follows, and the services answer it.
    bus.publish(&InventoryReserved {
        order_id: id.into(),
        reservation_id: format!("res-{id}"),
        items: vec![],
    })
    .await
    .expect("inventory");
    collector
        .wait_terminal(&[id.to_owned()], Duration::from_secs(60))
        .await
        .expect("the saga completes");
    let emitted = collector.by_order();
    assert_eq!(
        emitted.get(id).map(Vec::as_slice),
        Some(
            ["ShipmentRequested", "OrderConfirmed"]
                .map(str::to_owned)
                .as_slice()
        ),
        "after the restore it emitted what was left, once: {emitted:?}"
    );
    coordinator.shutdown().await.expect("stops");

    // The saga's later records are in the binary format.
    let reader: BaseConsumer = client
        .clone()
        .set("group.id", "json-upgrade-check")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&changelog, partition, Offset::Beginning)
        .expect("tpl");
    reader.assign(&tpl).expect("assign");
    let mut values: Vec<Option<Vec<u8>>> = Vec::new();
    loop {
        match reader.poll(Duration::from_secs(10)) {
            Some(Ok(m)) if m.key() == Some(state.saga_id.as_bytes()) => {
                values.push(m.payload().map(<[u8]>::to_vec));
            }
            Some(Ok(_)) => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => break,
            Some(Err(e)) => panic!("reading the changelog: {e}"),
        }
    }
    assert!(values.len() >= 2, "{} records of the saga", values.len());
    assert_eq!(values[0].as_deref().and_then(|v| v.first()), Some(&b'{'));
    for v in values[1..].iter().flatten() {
        assert!(
            choreo_saga::SagaState::is_current_format(v),
            "a later record is binary: {:?}",
            &v[..v.len().min(8)]
        );
        choreo_saga::SagaState::decode(v).expect("decodes");
    }
    services.shutdown().await.expect("services stop");
}

/// The changelog is read committed only, by the restore and by the operator view alike: a
/// transaction that wrote saga states and then aborted (a replica killed mid-batch) leaves
/// records in the log that a read_uncommitted reader sees. Here one such transaction holds a
/// saga that was never committed (`ghost-1`) and a newer state of a committed one (`kept-1`,
/// its payment authorized). The restarted coordinator shows `kept-1` as committed (payment
/// still running), never shows `ghost-1`, and does not own it: an operator's abort reaches
/// `kept-1` and changes it, while the same command for `ghost-1` finds no saga. (With
/// `isolation.level=read_uncommitted` in `choreo_bus::read_back`, the view showed `ghost-1`
/// and this test failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aborted_transaction_in_the_changelog_is_neither_restored_nor_shown() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let world = real().await;
    let env = env_for(&world, Guarantee::ExactlyOnce);
    let (def, opts) = slow_order_group(&env, "aborted-changelog").expect("options");
    let changelog = opts.changelog_topic();
    let client = with_topics(&env, &opts).await;
    let kept = order_state(&def, "kept-1", false);
    let kept_paid = order_state(&def, "kept-1", true);
    assert_eq!(
        kept_paid.step("payment").map(|s| s.status),
        Some(choreo_saga::StepStatus::Completed)
    );
    let ghost = order_state(&def, "ghost-1", false);
    let record = |state: &choreo_saga::SagaState| {
        let partition = choreo_bus::wire::partition::partition_of(
            state.correlation_id.as_bytes(),
            env.partitions,
        );
        (state.saga_id.clone(), state.encode(), partition)
    };

    // Committed: kept-1, placed.
    let (key, value, partition) = record(&kept);
    let plain: FutureProducer = client.create().expect("producer");
    plain
        .send(
            FutureRecord::to(&changelog)
                .key(&key)
                .payload(&value)
                .partition(partition),
            Duration::from_secs(10),
        )
        .await
        .expect("the committed state is written");
    // Aborted: ghost-1, and kept-1 paid.
    let transactional: FutureProducer = client
        .clone()
        .set("transactional.id", "aborted-changelog-writer")
        .create()
        .expect("transactional producer");
    transactional
        .init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    transactional.begin_transaction().expect("begin");
    for state in [&ghost, &kept_paid] {
        let (key, value, partition) = record(state);
        transactional
            .send(
                FutureRecord::to(&changelog)
                    .key(&key)
                    .payload(&value)
                    .partition(partition),
                Duration::from_secs(10),
            )
            .await
            .expect("written inside the transaction");
    }
    transactional
        .abort_transaction(Duration::from_secs(30))
        .expect("abort");

    // The aborted records are in the log: a read_uncommitted reader sees them.
    let reader: BaseConsumer = client
        .clone()
        .set("group.id", "aborted-changelog-check")
        .set("isolation.level", "read_uncommitted")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..env.partitions {
        tpl.add_partition_offset(&changelog, p, Offset::Beginning)
            .expect("tpl");
    }
    reader.assign(&tpl).expect("assign");
    let (mut keys, mut at_end) = (Vec::new(), 0);
    while at_end < env.partitions {
        match reader.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => keys.extend(m.key().map(|k| String::from_utf8_lossy(k).into_owned())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => at_end += 1,
            None => break,
            Some(Err(e)) => panic!("reading the changelog: {e}"),
        }
    }
    keys.sort();
    assert_eq!(
        keys,
        ["order/ghost-1", "order/kept-1", "order/kept-1"],
        "read_uncommitted, the aborted records are there to be skipped"
    );

    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    let view = coordinator.view();
    choreo_integration_tests::scenarios::eventually("the view caught up", || view.is_caught_up())
        .await
        .expect("the view catches up with the changelog");
    let shown = view
        .get("order/kept-1")
        .expect("the committed saga is shown");
    assert_eq!(
        shown.step("payment").map(|s| s.status),
        Some(choreo_saga::StepStatus::Running),
        "the view shows the committed state, not the aborted one"
    );
    assert!(
        view.get("order/ghost-1").is_none(),
        "the view shows a saga only an aborted transaction wrote"
    );

    // Ownership: the restore took kept-1 (an abort reaches it) and not ghost-1.
    send_abort(&coordinator, "ghost-1", "owned?")
        .await
        .expect("command");
    send_abort(&coordinator, "kept-1", "owned?")
        .await
        .expect("command");
    choreo_integration_tests::scenarios::eventually("kept-1 aborted by the operator", || {
        view.get("order/kept-1")
            .is_some_and(|s| s.status() != choreo_saga::Status::Running)
    })
    .await
    .expect("the restored saga takes the operator's abort");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        view.get("order/ghost-1").is_none(),
        "the coordinator owned and decided a saga only an aborted transaction wrote"
    );
    coordinator.shutdown().await.expect("stops");
}

/// A restore reads the whole changelog, superseded states and tombstones included, and keeps
/// only the live sagas. Its consumer and the operator view's must not prefetch the changelog
/// whole: with librdkafka's defaults they prefetched up to 64 MiB of values and up to 100 000
/// records per partition (a tombstone counts no bytes, but librdkafka keeps about 200 bytes of
/// its own per record), so a coordinator's start-up peak grew with its changelog's length and
/// with every tombstone it keeps. Here the changelog holds 200 000 finished sagas (a 40-byte
/// state and a tombstone each) and nothing live: the restarted replica's peak memory may exceed
/// that of its first, empty start by at most 60 bytes per changelog record, 24 MB. (With
/// librdkafka's defaults for the record count and fetch size put back, it was 55–57 MB over
/// and this test failed; with `choreo_bus::read_back`'s bounds, 7–9 MB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_of_a_long_changelog_does_not_hold_it_in_memory() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

    let world = real().await;
    let mut cfg = world.replica_config("exactly_once", 120);
    // The filler states below are not saga states: the view's line for each is not the point.
    cfg.env.push(("CHOREO__LOG__LEVEL".into(), "error".into()));
    let mut first = Replica::start(&cfg, "long-0").await.expect("replica");
    first
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready on an empty changelog");
    let empty_peak = first.peak_rss_kib().expect("peak memory");
    first.stop().await.expect("stops");

    let (sagas, value) = (200_000u32, vec![0x44u8; 40]);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &world.broker.bootstrap)
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let changelog = format!("{}.saga-state", cfg.group);
    for i in 0..sagas {
        let key = format!("order/finished-{i:07}");
        for payload in [Some(value.as_slice()), None] {
            let mut record = BaseRecord::<String, [u8]>::to(&changelog).key(&key);
            if let Some(v) = payload {
                record = record.payload(v);
            }
            while let Err((e, back)) = producer.send(record) {
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "{e}"
                );
                producer.poll(Duration::from_millis(10));
                record = back;
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("the changelog is written");

    let mut second = Replica::start(&cfg, "long-0").await.expect("restart");
    second
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready after restoring the long changelog");
    let long_peak = second.peak_rss_kib().expect("peak memory");
    let bound = u64::from(sagas) * 2 * 60 / 1024;
    eprintln!(
        "peak memory: {empty_peak} KiB on an empty changelog, {long_peak} KiB after restoring {} records ({} KiB over; bound {bound} KiB)",
        2 * sagas,
        long_peak.saturating_sub(empty_peak)
    );
    assert!(
        long_peak <= empty_peak + bound,
        "the restore held the changelog in memory: peak {long_peak} KiB against {empty_peak} KiB on an empty one"
    );
    // The restore at start-up is in the metrics: the recorder is installed before the
    // coordinator starts (a restore that finished first went unrecorded).
    let restores = second.counter("choreo_restore_seconds_count").await;
    assert!(
        restores >= f64::from(PARTITIONS),
        "{restores} partition restores in the metrics, {PARTITIONS} partitions"
    );
    second.stop().await.expect("stops");
}
