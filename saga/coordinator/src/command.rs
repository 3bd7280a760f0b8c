//! Operator commands travel through Kafka: the API publishes a [`CommandRecord`] to the commands
//! topic (keyed by correlation id, co-partitioned with the saga's topics), and the replica that
//! owns the partition applies it through the same transactional path as events.

use choreo_saga::Command;
use serde::{Deserialize, Serialize};

/// The value of a record on the commands topic (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// A unique id (deduplicates a command delivered twice).
    pub id: String,
    /// The saga's definition name.
    pub definition: String,
    /// The saga's correlation id (also the record key).
    pub correlation_id: String,
    /// What to do.
    pub command: Command,
    /// Who asked (free text, for the timeline).
    #[serde(default)]
    pub operator: Option<String>,
}

/// The content type of command records.
pub const COMMAND_CONTENT_TYPE: &str = "application/json";
