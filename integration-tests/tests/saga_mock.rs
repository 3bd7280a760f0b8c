//! The in-process tier for the coordinator: the order saga's paths, operator commands and
//! retention through librdkafka's mock cluster in this process, exactly-once.

use std::sync::Arc;

use choreo_bus::EmbeddedBroker;
use choreo_coordinator::Guarantee;
use choreo_integration_tests::saga_scenarios::{self, SagaEnv};
use choreo_schemas::MemoryRegistry;

fn env() -> SagaEnv {
    let broker = EmbeddedBroker::start(1).expect("mock cluster");
    SagaEnv {
        bootstrap: broker.bootstrap_servers().to_owned(),
        registry: Arc::new(MemoryRegistry::new()),
        embedded: Some(Arc::new(broker)),
        guarantee: Guarantee::ExactlyOnce,
        partitions: 3,
        mock: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_saga_paths_exactly_once() {
    saga_scenarios::order_saga_paths(&env())
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_abort_through_the_commands_topic() {
    saga_scenarios::operator_abort_through_the_commands_topic(&env())
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_sagas_are_tombstoned() {
    saga_scenarios::finished_sagas_are_tombstoned(&env())
        .await
        .expect("scenario");
}

/// Effectively-once: the coordinator's producers get a fatal error (CLUSTER_AUTHORIZATION_FAILED
/// on their first InitProducerId), after which an idempotent producer refuses every record. The
/// coordinator replaces its producer on the failed batch and goes on: a saga placed afterwards
/// completes. Without the replacement every batch fails the same way forever and this test
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fatal_producer_error_is_replaced_not_retried_forever() {
    use choreo_integration_tests::saga_scenarios::{Collector, Path, start_services};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use std::time::Duration;

    let mut env = env();
    env.guarantee = Guarantee::EffectivelyOnce;
    let broker = env.embedded.clone().expect("embedded");
    let catalog = choreo_schemas::Catalog::reference();
    let opts = env
        .options(
            saga_scenarios::fast_order_saga(&catalog).expect("def"),
            "fatal-0",
        )
        .expect("options");
    // The coordinator's two producers (decisions, operator commands) start first and get the
    // two fatal answers.
    broker
        .fail_requests(
            RDKafkaApiKey::InitProducerId,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED; 2],
        )
        .expect("fault injected");
    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bus = env.bus("/tests/driver").expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&env.bootstrap).expect("collector");
    Path::Happy
        .drive(&bus, "happy-fatal-1")
        .await
        .expect("inputs");
    collector
        .wait_terminal(&["happy-fatal-1".to_owned()], Duration::from_secs(60))
        .await
        .expect("the saga completes on a replaced producer");
    services.shutdown().await.expect("services stop");
    coordinator.shutdown().await.expect("stops");
}

/// A saga that needs an operator is not kept forever: when nobody acts for
/// `needs_operator_retention` it is deleted (tombstoned), like a finished saga after its
/// retention. (Without the retention it would stay in memory and the changelog for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_needing_an_operator_nobody_acts_on_is_deleted_after_its_retention() {
    use choreo_integration_tests::saga_scenarios::{Path, start_services};
    use std::time::{Duration, Instant};

    let env = env();
    let catalog = choreo_schemas::Catalog::reference();
    let mut opts = env
        .options(
            saga_scenarios::fast_order_saga(&catalog).expect("def"),
            "stuck-0",
        )
        .expect("options");
    opts.needs_operator_retention = Duration::from_secs(2);
    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    let bus = env.bus("/tests/driver").expect("bus");
    let services = start_services(&bus).expect("services");
    let id = "shipsilent-retention-1";
    Path::ShippingDeadline
        .drive(&bus, id)
        .await
        .expect("inputs");
    let view = coordinator.view();
    let saga = format!("order/{id}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut needed_operator = false;
    loop {
        match view.get(&saga) {
            Some(s) if s.status == choreo_saga::Status::NeedsOperator => needed_operator = true,
            None if needed_operator => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the saga needing an operator (seen: {needed_operator}) leaves the view after its retention"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    services.shutdown().await.expect("services stop");
    coordinator.shutdown().await.expect("stops");
}

/// A replica whose commits keep failing says so: `/readyz` (the handle's readiness) turns false
/// after three failed batches in a row, and stays so, although each batch is handed to the
/// background commit without an error; once commits succeed again it is ready again and a saga
/// completes. (Had the hand-over counted as a success, the count would restart at every batch
/// and the replica would look ready, but for a blink at each restore, while nothing commits.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_commits_keep_failing_is_not_ready_until_one_commits() {
    use choreo_integration_tests::saga_scenarios::{Collector, Path, start_services};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    let env = env();
    let catalog = choreo_schemas::Catalog::reference();
    let opts = env
        .options(
            saga_scenarios::fast_order_saga(&catalog).expect("def"),
            "failing-commits-0",
        )
        .expect("options");
    let aborts = Arc::clone(&opts.faults.abort_commits);
    let coordinator = choreo_coordinator::start(opts).await.expect("starts");
    saga_scenarios::wait_ready(&coordinator, Duration::from_secs(60))
        .await
        .expect("ready at first");
    let ready = coordinator.readiness();
    aborts.store(u32::MAX, Ordering::Release);
    let bus = env.bus("/tests/driver").expect("bus");
    let services = start_services(&bus).expect("services");
    let collector = Collector::start(&env.bootstrap).expect("collector");
    Path::Happy
        .drive(&bus, "happy-failing-commits-1")
        .await
        .expect("inputs");
    // Not ready for two seconds straight (a restore alone, after each abort, is a blink).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut down_since: Option<Instant> = None;
    loop {
        if ready() {
            down_since = None;
        } else if down_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready, for two seconds straight, while every commit fails"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    aborts.store(0, Ordering::Release);
    collector
        .wait_terminal(
            &["happy-failing-commits-1".to_owned()],
            Duration::from_secs(60),
        )
        .await
        .expect("the saga completes once commits succeed");
    saga_scenarios::wait_ready(&coordinator, Duration::from_secs(30))
        .await
        .expect("ready again");
    services.shutdown().await.expect("services stop");
    coordinator.shutdown().await.expect("stops");
}
