//! A saga state as a replica keeps it between inputs: its changelog value (the compact binary
//! format of [`SagaState::encode`]), and the little that is read without decoding it. A saga's
//! state is decoded when an input, a deadline or a command reaches it, and the value written to
//! the changelog is the one kept, so keeping it costs no second encoding.

use choreo_saga::{SagaState, StateDecodeError, Status};

/// One owned saga's state.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The definition's name (the in-flight gauge, per definition).
    pub(crate) definition: Box<str>,
    pub(crate) status: Status,
    /// The changelog value.
    value: Box<[u8]>,
}

impl Stored {
    /// `state` with `value`, its changelog value (`state.encode()`).
    pub(crate) fn new(state: &SagaState, value: Vec<u8>) -> Self {
        Self {
            definition: state.definition.as_str().into(),
            status: state.status,
            value: value.into_boxed_slice(),
        }
    }

    /// `state`, encoded.
    pub(crate) fn of(state: &SagaState) -> Self {
        Self::new(state, state.encode())
    }

    /// The state, decoded.
    pub(crate) fn state(&self) -> Result<SagaState, StateDecodeError> {
        SagaState::decode(&self.value)
    }
}
