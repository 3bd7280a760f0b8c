//! A virtual-clock test harness for saga authors.
//!
//! Feed events, advance the clock (firing every deadline that falls due, in order), send
//! operator commands, and assert on what was emitted and on the status:
//!
//! ```
//! use std::time::Duration;
//! use choreo_saga::testing::SagaTest;
//! use choreo_saga::{Definition, Status};
//! use serde_json::json;
//!
//! let catalog = choreo_schemas::Catalog::reference();
//! let order = Definition::reference_order_saga(&catalog).expect("reference saga loads");
//! SagaTest::new(order)
//!     .event("io.choreo.orders.OrderPlaced", json!({"order_id": "o-1", "shipping_address": "1 Main St"}))
//!     .event("io.choreo.orders.PaymentAuthorized", json!({
//!         "order_id": "o-1", "payment_id": "p-1",
//!         "amount": {"amount_minor": 4200, "currency": "EUR"}}))
//!     // Inventory never answers: at its deadline its outcome is unknown. Releasing it is safe
//!     // for that (`on_unknown_outcome = "compensate"`), so it is released, and the payment
//!     // refunded.
//!     .advance(Duration::from_secs(30))
//!     .expect_emitted("io.choreo.orders.RefundPayment")
//!     .expect_emitted("io.choreo.orders.ReleaseInventory")
//!     .event("io.choreo.orders.PaymentRefunded", json!({"order_id": "o-1", "payment_id": "p-1"}))
//!     .event("io.choreo.orders.InventoryReleased", json!({"order_id": "o-1", "reservation_id": ""}))
//!     .expect_emitted("io.choreo.orders.OrderCancelled")
//!     .expect_status(Status::Compensated);
//! ```
//!
//! Expectations check the events emitted since the last expectation: `expect_emitted` finds
//! one of that type among them (and consumes it), `expect_emitted_exactly` requires exactly
//! this list (in order) and consumes them all, `expect_nothing_emitted` requires none.
//! Failures panic with the saga's timeline, so a test failure explains itself.

use std::time::Duration;

use serde_json::Value;

use crate::apply::apply;
use crate::definition::Definition;
use crate::input::Command;
use crate::input::{Action, Emit, Event, Input};
use crate::state::{SagaState, Status};
use crate::time::Millis;

/// The virtual clock's starting point: 2026-01-01T00:00:00Z.
pub const EPOCH: Millis = Millis(1_767_225_600_000);

/// One saga instance under test, with a virtual clock.
#[derive(Debug)]
pub struct SagaTest {
    def: Definition,
    state: SagaState,
    now: Millis,
    next_event: u64,
    actions: Vec<Action>,
    emitted: Vec<Emit>,
    unchecked: Vec<usize>,
}

impl SagaTest {
    /// A saga of `def` with correlation id `o-1`, at [`EPOCH`].
    pub fn new(def: Definition) -> Self {
        Self::with_correlation_id(def, "o-1")
    }

    /// A saga of `def` with this correlation id, at [`EPOCH`].
    pub fn with_correlation_id(def: Definition, correlation_id: &str) -> Self {
        let state = SagaState::new(&def, correlation_id, EPOCH);
        SagaTest {
            def,
            state,
            now: EPOCH,
            next_event: 0,
            actions: Vec::new(),
            emitted: Vec::new(),
            unchecked: Vec::new(),
        }
    }

    /// Delivers an event with a fresh id (`evt-1`, `evt-2`, …) at the current time.
    pub fn event(mut self, event_type: &str, data: Value) -> Self {
        self.next_event += 1;
        let id = format!("evt-{}", self.next_event);
        self.deliver(&id, event_type, data)
    }

    /// Delivers an event with the given id (deliver the same id twice to test duplicates).
    pub fn event_with_id(self, id: &str, event_type: &str, data: Value) -> Self {
        self.deliver(id, event_type, data)
    }

    fn deliver(mut self, id: &str, event_type: &str, data: Value) -> Self {
        let event = Event {
            id: id.to_owned(),
            event_type: event_type.to_owned(),
            correlation_id: self.state.correlation_id.clone(),
            time: self.now,
            data,
        };
        self.input(&Input::Event(event));
        self
    }

    /// Sends an operator command.
    pub fn command(mut self, command: Command) -> Self {
        self.input(&Input::Command(command));
        self
    }

    /// Applies any input at the current time.
    pub fn input(&mut self, input: &Input) -> &[Action] {
        let from = self.actions.len();
        let out = apply(&self.def, &mut self.state, input, self.now);
        for a in out {
            if let Action::Emit(e) = &a {
                self.unchecked.push(self.emitted.len());
                self.emitted.push(e.clone());
            }
            self.actions.push(a);
        }
        &self.actions[from..]
    }

    /// Moves the clock forward by `by`, firing each deadline when it falls due, in order
    /// (including deadlines set by the ones fired on the way).
    pub fn advance(mut self, by: Duration) -> Self {
        let until = self.now.plus(by);
        while let Some(d) = self
            .state
            .deadlines()
            .iter()
            .filter(|d| d.at <= until)
            .min_by_key(|d| d.at)
            .cloned()
        {
            self.now = self.now.max(d.at);
            self.input(&Input::Deadline { kind: d.kind });
        }
        self.now = until;
        self
    }

    /// Asserts that an event of this type was emitted since the last expectation.
    #[track_caller]
    pub fn expect_emitted(mut self, event_type: &str) -> Self {
        match self
            .unchecked
            .iter()
            .position(|&i| self.emitted[i].event_type == event_type)
        {
            Some(at) => {
                self.unchecked.remove(at);
            }
            None => panic!(
                "expected {event_type} to be emitted; unchecked emissions: {:?}\n{}",
                self.unchecked_types(),
                self.describe()
            ),
        }
        self
    }

    /// Asserts that exactly these event types (in this order) were emitted since the last
    /// expectation.
    #[track_caller]
    pub fn expect_emitted_exactly(mut self, event_types: &[&str]) -> Self {
        let got = self.unchecked_types();
        assert_eq!(
            got,
            event_types,
            "emitted events differ\n{}",
            self.describe()
        );
        self.unchecked.clear();
        self
    }

    /// Asserts that nothing was emitted since the last expectation.
    #[track_caller]
    pub fn expect_nothing_emitted(self) -> Self {
        self.expect_emitted_exactly(&[])
    }

    /// Asserts the saga's status.
    #[track_caller]
    pub fn expect_status(self, status: Status) -> Self {
        assert_eq!(
            self.state.status,
            status,
            "status differs\n{}",
            self.describe()
        );
        self
    }

    /// Asserts that the last input was rejected (e.g. an operator command that does not apply).
    #[track_caller]
    pub fn expect_rejected(self) -> Self {
        assert!(
            matches!(self.actions.last(), Some(Action::Rejected { .. })),
            "expected the last input to be rejected\n{}",
            self.describe()
        );
        self
    }

    /// The saga's state.
    pub fn state(&self) -> &SagaState {
        &self.state
    }

    /// Every event emitted so far, in order.
    pub fn emitted(&self) -> &[Emit] {
        &self.emitted
    }

    /// Every action so far, in order.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The virtual clock.
    pub fn now(&self) -> Millis {
        self.now
    }

    fn unchecked_types(&self) -> Vec<&str> {
        self.unchecked
            .iter()
            .map(|&i| self.emitted[i].event_type.as_str())
            .collect()
    }

    fn describe(&self) -> String {
        let mut out = format!(
            "saga {} is {} at +{}ms; timeline:\n",
            self.state.saga_id,
            self.state.status,
            self.now.since(EPOCH)
        );
        for e in &self.state.timeline.entries {
            out.push_str(&format!(
                "  +{:>7}ms {:?}: {}\n",
                e.at.since(EPOCH),
                e.kind,
                e.what
            ));
        }
        out
    }
}
