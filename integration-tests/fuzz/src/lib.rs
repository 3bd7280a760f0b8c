//! The harnesses of choreo's fuzz targets: each module takes the bytes libFuzzer hands it to one
//! of choreo's input boundaries, through the entry point production uses, and checks what must
//! hold for any input (beyond "does not panic, allocate without bound or hang", which libFuzzer
//! itself watches with `-rss_limit_mb`, `-malloc_limit_mb` and `-timeout`).
//!
//! # Layout
//!
//! | module | boundary |
//! |---|---|
//! | [`wire_decode`] | a record value: the Confluent framing, the Avro body of every catalog schema resolved to its type's latest, JSON and typed decoding |
//! | [`envelope`] | a record's Kafka headers and key: `Envelope::read`, `Envelope::from_headers` |
//! | [`traceparent`] | a `traceparent` value: `TraceParent::parse` against the W3C grammar |
//! | [`saga_toml`] | a saga definition file: `Definition::from_toml` with the reference catalog |
//! | [`config`] | a coordinator configuration file and its `CHOREO__…` environment: `Config::from_toml_str` |
//! | [`registry`] | the schema registry's REST requests (register, look up, check, config) through its router |
//! | [`ingest`] | the HTTP ingest's requests (binary, structured, batch) through its router, to the records it produces |
//! | [`seeds`] | the seed corpus of every target, from real inputs |
//!
//! Each target's input format is written at the top of its module; the seeds show it.

pub mod config;
pub mod envelope;
pub mod ingest;
pub mod registry;
pub mod saga_toml;
pub mod seeds;
pub mod traceparent;
pub mod wire_decode;

use std::future::Future;

/// Runs a future that never waits on I/O (the in-memory registry, the recording sink) to its
/// end on the calling thread.
fn block_on<F: Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// The 1-based line count of `text` as an error may name it (a last line without a newline
/// counts; an error may point just past the end).
fn lines_in(text: &str) -> usize {
    text.bytes().filter(|b| *b == b'\n').count() + 1
}
