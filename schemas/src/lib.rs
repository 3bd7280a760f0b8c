//! # choreo-schemas
//!
//! choreo's event contract: the Avro schemas of the reference order domain, the Rust types for
//! them, and the schema registry that gives every schema a global id for the wire format.
//!
//! ## Layout
//!
//! - [`binary`]: Avro binary's checked reads and writes, and the specific records that
//!   [`specific_record!`] makes (code per type, planned once per writer and reader schema).
//! - [`catalog`]: which event types exist, on which topic, with which schema versions
//!   (`schemas/catalog.toml` and `schemas/avro/*.avsc`).
//! - [`compat`]: the Confluent compatibility levels and the checks behind them.
//! - [`event`]: the [`Event`] trait a typed event implements, and the reference types.
//! - [`registry`]: the [`SchemaRegistry`] trait; [`MemoryRegistry`] (in-process),
//!   [`ConfluentRegistry`] (REST client) and [`CachedRegistry`] (the hot-path cache).
//! - `server` (feature `server`): the in-process registry served over the Confluent REST API.
//! - [`error`]: the crate's errors.

pub mod binary;
pub mod catalog;
pub mod compat;
pub mod error;
pub mod event;
pub mod registry;
#[cfg(feature = "server")]
pub mod server;

pub use apache_avro;
pub use catalog::{Catalog, EventInfo, SchemaVersion};
pub use compat::Compatibility;
pub use error::{RegistryError, SchemaError};
pub use event::Event;
pub use registry::{
    CachedRegistry, ConfluentRegistry, MemoryRegistry, RegistryStore, SchemaRegistry,
    SubjectVersion, schema_id_of,
};
