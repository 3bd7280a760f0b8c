//! # choreo-coordinator
//!
//! The saga coordinator on Kafka and its operator API (the `choreo` command is `choreo-cli`, in
//! `saga/cli/`).
//!
//! ## Layout
//!
//! - [`coordinator`]: the service — consume → apply → emit in one transaction, restore from the
//!   changelog on assignment, fire deadlines, tombstone finished sagas.
//! - [`index`]: the deadline index of the owned partitions.
//! - [`topics`]: topic creation and the co-partitioning check at start-up.
//! - [`view`]: every saga's latest state, read from the changelog by every replica.
//! - [`command`]: operator commands as records on the commands topic.
//! - [`http`]: the operator JSON API (with live updates), health, readiness, metrics and the
//!   operator console (`web/`).
//! - [`history`]: one saga's records read back from Kafka, payloads decoded (the console's
//!   timeline).
//! - [`api_auth`]: who may use the operator API (bearer tokens kept as SHA-256, with roles).
//! - [`dlq`]: dead letters for operators — every `*.dlq` topic, its records decoded, and
//!   redrive to the origin topic with a durable redrive log (`/api/dlq…`).
//! - [`ingest`]: domain events over the CloudEvents HTTP binding, into Kafka as Avro.
//! - [`config`]: the typed configuration (defaults → file → `CHOREO__…` environment).
//! - [`telemetry`]: metric names and the Prometheus exporter.
//! - [`error`]: the coordinator's errors.

pub mod api_auth;
pub mod command;
pub mod config;
pub mod coordinator;
pub mod dlq;
pub mod error;
pub mod history;
pub mod http;
pub mod index;
pub mod ingest;
pub mod telemetry;
pub mod topics;
pub mod view;

pub use coordinator::{
    CommandPublisher, CoordinatorHandle, CoordinatorOptions, Faults, Guarantee, MAX_STATE_BYTES,
    QuietEof, start,
};
pub use error::CoordinatorError;

/// The hasher of the maps keyed by saga ids: seeded per process (ids come from events), and
/// several times faster than the standard library's SipHash on such short keys.
pub(crate) type Ids = foldhash::fast::RandomState;
