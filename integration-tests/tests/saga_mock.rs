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
