//! The wire contract every language speaks, in one folder:
//!
//! - [`framing`]: the Confluent framing of a value (magic byte, schema id, Avro body), without
//!   I/O.
//! - [`codec`]: Avro bodies against the schema registry, typed and JSON entry points, one cache.
//!   A type with a specific coder (`choreo_schemas::binary::specific`, code made for the type)
//!   is written and read by it; every other pair by the compiled codec.
//! - [`compiled`]: the compiled Avro codec, straight between Avro binary and serde (encoders per
//!   schema, decoders per writer and reader schema).
//! - `plan`: the codec's cache: typed decoders (specific plans or compiled) per writer schema
//!   id and type, compiled encoders, JSON readers.
//! - [`envelope`]: the CloudEvents Kafka binary headers, correlation and causation ids.
//! - [`headers`]: a consumed record's headers, read without panicking on a name that is not
//!   UTF-8.
//! - [`trace`]: W3C `traceparent`, and choreo's spans joining the caller's trace.
//! - [`partition`]: the partition a key goes to (the Java client's murmur2 partitioner).

pub mod codec;
pub mod compiled;
#[cfg(test)]
mod compiled_tests;
pub mod envelope;
pub mod framing;
pub mod headers;
pub mod partition;
mod plan;
pub mod trace;
