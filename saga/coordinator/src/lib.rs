//! # choreo-coordinator
//!
//! The saga coordinator on Kafka, the operator API, and the `choreo` command.
//!
//! ## Layout
//!
//! - [`coordinator`]: the service — consume → apply → emit in one transaction, restore from the
//!   changelog on assignment, fire deadlines, tombstone finished sagas.
//! - [`index`]: the deadline index of the owned partitions.
//! - [`topics`]: topic creation and the co-partitioning check at start-up.
//! - [`view`]: every saga's latest state, read from the changelog by every replica.
//! - [`command`]: operator commands as records on the commands topic.
//! - [`http`]: the operator JSON API, health, readiness, metrics and the web page.
//! - [`client`]: the `choreo sagas …` command-line client of that API.
//! - [`config`]: the typed configuration (defaults → file → `CHOREO__…` environment).
//! - [`telemetry`]: metric names and the Prometheus exporter.
//! - [`demo`]: the demo order, payment, inventory and shipping services of `choreo dev`.
//! - [`loadgen`]: the saga load generator and its baseline.
//! - [`restore_bench`]: the restore benchmark (`choreo bench-restore`) and its baseline.
//! - [`error`]: the coordinator's errors.

pub mod client;
pub mod command;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod error;
pub mod http;
pub mod index;
pub mod loadgen;
pub mod restore_bench;
pub mod telemetry;
pub mod topics;
pub mod view;

pub use coordinator::{
    CommandPublisher, CoordinatorHandle, CoordinatorOptions, Guarantee, MAX_STATE_BYTES, start,
};
pub use error::CoordinatorError;
