//! # choreo-integration-tests
//!
//! The real-broker test tier and what it stands on.
//!
//! ## Layout
//!
//! - [`broker`]: picks the broker of the real tier (`KAFKA_BOOTSTRAP_SERVERS`, testcontainers'
//!   Apache Kafka, or nisshi installed once and cached) and hosts the mock cluster in a process.
//! - [`scenarios`]: bus scenarios written once and run against both the in-process mock cluster
//!   (`tests/bus_mock.rs`) and the real broker (`tests/bus_real.rs`).
//! - `src/bin/choreo-mock-broker.rs`: librdkafka's mock cluster in a process of its own.
//! - `src/bin/choreo-test-consumer.rs`: a subscriber process for kill-and-restart tests.

pub mod broker;
pub mod process;
pub mod saga_scenarios;
pub mod scenarios;
