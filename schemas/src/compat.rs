//! Schema compatibility rules (the Confluent Schema Registry levels) and the checks behind them.

use std::fmt;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};

/// A compatibility level, as the Confluent Schema Registry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// A reader of the new schema reads data written with the previous one.
    #[default]
    Backward,
    /// Like `Backward`, against every earlier version.
    BackwardTransitive,
    /// A reader of the previous schema reads data written with the new one.
    Forward,
    /// Like `Forward`, against every earlier version.
    ForwardTransitive,
    /// Both `Backward` and `Forward`.
    Full,
    /// Both, against every earlier version.
    FullTransitive,
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        })
    }
}

impl std::str::FromStr for Compatibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
            .map_err(|_| format!("unknown compatibility level {s:?}"))
    }
}

impl Compatibility {
    fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }

    /// Checks `new` against the `previous` versions (oldest first) under this rule. The error
    /// names the version it breaks and, where the check can tell, the field.
    pub fn check(self, previous: &[&Schema], new: &Schema) -> Result<(), String> {
        if self == Compatibility::None {
            return Ok(());
        }
        let against: Vec<(usize, &Schema)> = if self.transitive() {
            previous.iter().copied().enumerate().collect()
        } else {
            previous
                .iter()
                .copied()
                .enumerate()
                .next_back()
                .into_iter()
                .collect()
        };
        let backward = matches!(
            self,
            Compatibility::Backward
                | Compatibility::BackwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        );
        let forward = matches!(
            self,
            Compatibility::Forward
                | Compatibility::ForwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        );
        for (index, old) in against {
            let version = index + 1;
            if backward {
                SchemaCompatibility::can_read(old, new).map_err(|e| {
                    format!("the new schema cannot read data written with version {version}: {e}")
                })?;
            }
            if forward {
                SchemaCompatibility::can_read(new, old).map_err(|e| {
                    format!("version {version} cannot read data written with the new schema: {e}")
                })?;
            }
        }
        Ok(())
    }
}
