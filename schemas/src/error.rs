//! Errors of the schema crate.

use std::path::PathBuf;

/// A catalog or schema file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The catalog file is malformed or inconsistent.
    #[error("{file}:{line}: {reason}")]
    Catalog {
        /// The catalog file.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// Why it was rejected.
        reason: String,
    },
    /// A schema file is not valid Avro.
    #[error("{file}: not a valid Avro schema: {reason}")]
    Parse {
        /// The schema file.
        file: String,
        /// The parser's message.
        reason: String,
    },
}

/// A schema registry call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// No schema has this id.
    #[error("schema id {0} is not known to the registry")]
    UnknownId(u32),
    /// No such subject (or version of it).
    #[error("subject {0} is not known to the registry")]
    UnknownSubject(String),
    /// The schema text does not parse as Avro.
    #[error("invalid Avro schema: {0}")]
    InvalidSchema(String),
    /// The registry refused the schema under the subject's compatibility rule.
    #[error("schema for subject {subject} is incompatible under {rule}: {reason}")]
    Incompatible {
        /// The subject.
        subject: String,
        /// The rule in force, e.g. BACKWARD.
        rule: String,
        /// What breaks it, naming the field where known.
        reason: String,
    },
    /// The registry holds as much as it accepts (see [`crate::registry::MAX_SCHEMAS`] and the
    /// limits beside it): nothing new is registered.
    #[error("schema registry full: {0}")]
    LimitReached(String),
    /// The registry could not be reached or answered an error; `retryable` tells whether
    /// trying again may help.
    #[error("schema registry: {message}")]
    Transport {
        /// What went wrong.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
}

impl RegistryError {
    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Transport {
                retryable: true,
                ..
            }
        )
    }
}
