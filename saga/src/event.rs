//! A consumed event, as the runtime decoded it: what the state machine reads and what a saga
//! keeps of the events that arrived before its start.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Millis;

/// A consumed event, decoded by the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's id (CloudEvents `ce_id`); two inputs with the same id are one event.
    pub id: String,
    /// The event type (Avro full name, `ce_type`).
    pub event_type: String,
    /// The saga's correlation id (see [`crate::Definition::correlation_id`]).
    pub correlation_id: String,
    /// The event's own time (`ce_time`), for the timeline; decisions use `now`.
    pub time: Millis,
    /// The event's data (Avro decoded into JSON).
    pub data: Value,
}
