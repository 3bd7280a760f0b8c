//! # choreo-cli
//!
//! The `choreo` command: `dev` (everything in one process), `run` (a production replica),
//! `ingest` (the HTTP ingest alone), `registry`, `demo` (the demo services alone), `healthcheck`
//! (the image's health check), `asyncapi`, `schemas`, `saga` (diagram, replay), `sagas` and
//! `dlq` (the operator clients), `soak`, `loadgen`, `bench-ingest` and `bench-restore`. The
//! command-line, HTTP-client and error-reporting dependencies (clap, reqwest, anyhow) live only
//! in this crate.
//!
//! ## Layout
//!
//! - `main.rs`: the commands, and the part `dev` and `run` share (logs, the operator API,
//!   shutdown on one signal).
//! - [`asyncapi`]: the AsyncAPI 3.0 document of the catalog and the sagas (`choreo asyncapi`).
//! - [`client`]: the `choreo sagas …` and `choreo dlq …` command-line clients of the operator
//!   API.
//! - [`demo`]: the demo order, payment, inventory and shipping services of `choreo dev` and
//!   `choreo demo`, and the knobs both take.
//! - [`healthcheck`]: `choreo healthcheck`, the container image's probe of `/healthz`.
//! - [`registry`]: the schema registry `run`, `ingest`, `demo` and `registry` use (a URL, or
//!   choreo's own in memory or in Kafka).
//! - [`loadgen`]: the saga load generator, its baseline pipe and its watcher.
//! - [`memory`]: the process's memory choices: no transparent huge pages, and the allocator's
//!   freed memory given back every minute.
//! - [`ingest_bench`]: the HTTP ingest benchmark (`choreo bench-ingest`) and its rdkafka baseline.
//! - [`schemas_cmd`]: `choreo schemas check|register`, a catalog against a registry, for CI.
//! - [`restore_bench`]: the restore benchmark (`choreo bench-restore`) and its baseline.
//! - [`saga_cmd`]: `choreo saga diagram|replay`, and loading definition files.
//! - [`replay`]: `choreo saga replay` — a new version of a definition over the recorded inputs
//!   of recent sagas, read from Kafka (the pure part is `choreo_saga::replay`).
//! - [`soak`]: `choreo soak`, the order saga under garbage and restarts for a long while.
//! - [`telemetry`]: logs, and the OpenTelemetry span export (OTLP) when configured.

pub mod asyncapi;
pub mod client;
pub mod demo;
pub mod healthcheck;
pub mod ingest_bench;
pub mod loadgen;
pub mod memory;
pub mod registry;
pub mod replay;
pub mod restore_bench;
pub mod saga_cmd;
pub mod schemas_cmd;
pub mod soak;
pub mod telemetry;
