//! # choreo-bus
//!
//! Typed, versioned events over Kafka. A service publishes an [`Event`] with one call and
//! subscribes typed handlers to topics; the bus handles the wire format, retries, dead letters,
//! deduplication, ordering, offsets, shutdown and rebalances.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use choreo_bus::{Bus, BusConfig, HandlerError};
//! use choreo_schemas::{MemoryRegistry, event::{Money, PaymentAuthorized}};
//!
//! let bus = Bus::new(BusConfig::new("localhost:9092").with_source("/payments"),
//!     Arc::new(MemoryRegistry::new()))?;
//! bus.publish(&PaymentAuthorized { order_id: "o-1".into(), payment_id: "p-1".into(),
//!     amount: Money { amount_minor: 1999, currency: "EUR".into() } }).await?;
//! let sub = bus.subscriber("shipping")
//!     .handle("record-payment", |e: PaymentAuthorized, ctx| async move {
//!         println!("{} paid ({})", e.order_id, ctx.envelope.id);
//!         Ok::<_, HandlerError>(())
//!     })
//!     .start()?;
//! sub.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - [`wire`]: the wire contract — [`wire::framing`] (no I/O), [`wire::codec`] (typed and JSON
//!   entry points over one registry cache), [`wire::envelope`] (CloudEvents headers),
//!   [`wire::trace`] (W3C `traceparent`, choreo's spans joining it), [`wire::partition`] (the
//!   partition of a key).
//! - [`bus`]: the [`Bus`] handle and publishing.
//! - [`subscriber`]: subscribers — handlers, the per-record processor, per-partition workers
//!   with the offset discipline, the rebalance drain, the dispatcher.
//! - `producer`: the one idempotent producer that publishing and dead letters send through.
//! - [`dead_letter`]: dead-letter topics, their headers, the rate limit.
//! - [`dedup`]: the [`DedupStore`] trait and the bounded in-memory default.
//! - [`dedup_kafka`]: [`KafkaDedup`], a dedup store kept in a Kafka topic (survives restarts
//!   and rebalances).
//! - [`retry`]: exponential backoff with jitter.
//! - [`schema_store`]: a schema registry whose storage is a compacted Kafka topic.
//! - [`telemetry`]: metric names.
//! - [`embedded`]: an in-process Kafka-protocol broker (librdkafka's mock cluster).
//! - [`connect`]: the first contact with a cluster, a refused login, failed TLS handshake or
//!   denied resource reported as such ([`error::Refused`]).
//! - [`config`] and [`error`].

pub mod bus;
pub mod config;
pub mod connect;
pub mod dead_letter;
pub mod dedup;
pub mod dedup_kafka;
pub mod embedded;
pub mod error;
mod producer;
pub mod retry;
pub mod schema_store;
pub mod subscriber;
pub mod telemetry;
pub mod wire;

pub use bus::{Bus, Delivery, PublishOptions};
pub use choreo_schemas::{Event, SchemaRegistry};
pub use config::{BusConfig, ReadBack, read_back};
pub use dead_letter::DeadLetterPolicy;
pub use dedup::{DedupStore, MemoryDedup};
pub use dedup_kafka::{KafkaDedup, KafkaDedupOptions};
pub use embedded::EmbeddedBroker;
pub use error::{BusError, DecodeError, HandlerError};
pub use retry::RetryPolicy;
pub use subscriber::{BreakerState, CircuitBreakerPolicy, Context, Subscription, Unhandled};
pub use wire::envelope::Envelope;
pub use wire::trace::TraceParent;
