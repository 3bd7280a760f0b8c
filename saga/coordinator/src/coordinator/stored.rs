//! A saga state as a replica keeps it between inputs: its changelog value (the compact binary
//! format of [`SagaState::encode`]), and the little that is read without decoding it. A saga's
//! state is decoded when an input, a deadline or a command reaches it, and the value written to
//! the changelog is the one kept, so keeping it costs no second encoding.

use std::sync::Arc;

use choreo_saga::{SagaState, StateDecodeError, Status};

use crate::view::SagaView;

/// One owned saga's state: 24 bytes beside its saga id in the owned map (a unit test holds the
/// size), since every owned saga has one.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The definition's number ([`SagaView::definition_named`] has its name), for the in-flight
    /// gauge per definition.
    pub(crate) definition: u32,
    pub(crate) status: Status,
    /// The changelog value (the operator view keeps the same bytes: [`SagaView::share`]).
    value: Arc<[u8]>,
}

impl Stored {
    /// `state` with `value`, its changelog value (`state.encode()`), shared with `view`;
    /// with the saga id to key it by, shared too.
    pub(crate) fn new(state: &SagaState, value: Vec<u8>, view: &SagaView) -> (Arc<str>, Self) {
        let (id, value) = view.share(&state.saga_id, value);
        let stored = Self {
            definition: view.definition_number(&state.definition),
            status: state.status,
            value,
        };
        (id, stored)
    }

    /// `state`, encoded.
    pub(crate) fn of(state: &SagaState, view: &SagaView) -> (Arc<str>, Self) {
        Self::new(state, state.encode(), view)
    }

    /// The state, decoded.
    pub(crate) fn state(&self) -> Result<SagaState, StateDecodeError> {
        SagaState::decode(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_saga_holds_24_bytes_beside_its_id() {
        assert_eq!(size_of::<Stored>(), 24);
    }
}
