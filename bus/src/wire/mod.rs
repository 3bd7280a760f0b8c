//! The wire contract every language speaks, in one folder:
//!
//! - [`framing`]: the Confluent framing of a value (magic byte, schema id, Avro body), without
//!   I/O.
//! - [`codec`]: Avro bodies against the schema registry, typed and JSON entry points, one cache.
//! - [`envelope`]: the CloudEvents Kafka binary headers, correlation and causation ids.
//! - [`trace`]: W3C `traceparent`.
//! - [`partition`]: where a key lands (the Java client's murmur2 partitioner).

pub mod codec;
pub mod envelope;
pub mod framing;
pub mod partition;
pub mod trace;
