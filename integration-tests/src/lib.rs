//! # choreo-integration-tests
//!
//! The real-broker test tier and what it stands on.
//!
//! ## Layout
//!
//! - [`broker`]: picks the broker of the real tier (`KAFKA_BOOTSTRAP_SERVERS`, testcontainers'
//!   Apache Kafka, or Apache Kafka 4.4 from Maven Central jars, resolved once and cached, started
//!   as a KRaft node in a child process) and hosts the mock cluster in a process.
//! - [`deploy`]: the files of `deploy/` as tests read them (the Dockerfile's runtime stage, the
//!   Compose project as the Compose loader normalises it, the Kubernetes manifests) and the
//!   `choreo` processes they describe, with their whole environment.
//! - [`process`]: the `choreo` binary as coordinator replicas the tests start, kill, freeze and
//!   restart.
//! - [`world`]: a saga test's broker, registry, replicas, order plans and paced driver.
//! - [`dead_letters`]: a topic whose subscriber dead-letters some records, and the operator API
//!   serving those dead letters (with an operator's and a viewer's token).
//! - [`scenarios`]: bus scenarios written once and run against both the in-process mock cluster
//!   (`tests/bus_mock.rs`) and the real broker (`tests/bus_real.rs`); [`resilience`]: more of
//!   them, for a handler's failing downstream (the circuit breaker).
//! - `src/bin/choreo-mock-broker.rs`: librdkafka's mock cluster in a process of its own.
//! - `src/bin/choreo-test-consumer.rs`: a subscriber process for kill-and-restart tests.
//! - `brokers/`: `install-kafka.sh` (resolve Apache Kafka once), `kafka.sh` (run it by hand),
//!   `kafka/` (its pom and server.properties template).

/// The integration-tests package folder as the running test sees it (not as it was when
/// compiled: a build shared between two checkouts must use the one under test).
pub fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}

pub mod broker;
pub mod dead_letters;
pub mod deploy;
pub mod process;
pub mod resilience;
pub mod saga_scenarios;
pub mod scenarios;
pub mod world;
