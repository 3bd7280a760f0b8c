//! The crate's error type.

use std::path::PathBuf;

/// Why a saga definition could not be loaded or built.
///
/// The state machine itself never fails: inputs it cannot use are recorded in the saga's
/// timeline and answered with [`crate::Action::Rejected`], never with an error.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// A definition file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A definition file was rejected; `line` is 1-based (0 when unknown).
    ///
    /// Displays as `saga/definitions/order.toml:42: step "shipping": compensation reads
    /// payment.foo, but no step collects it`.
    #[error("{file}:{line}: {reason}")]
    Definition {
        /// The file, as given to the loader.
        file: String,
        /// 1-based line of the offending key or value.
        line: usize,
        /// Why it was rejected, naming the step where there is one.
        reason: String,
    },
    /// A definition built with the Rust API was rejected.
    #[error("saga \"{saga}\": {reason}")]
    Invalid {
        /// The saga's name.
        saga: String,
        /// Why it was rejected, naming the step where there is one.
        reason: String,
    },
    /// Two definitions with the same name and version were registered.
    #[error("saga \"{name}\" version {version} is already registered")]
    DuplicateVersion {
        /// The saga's name.
        name: String,
        /// The version registered twice.
        version: u32,
    },
}
