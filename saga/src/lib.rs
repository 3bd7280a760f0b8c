//! choreo's saga core: declarative saga definitions and the pure state machine that runs them.
//!
//! A saga author describes a business transaction once — in a TOML file under
//! `saga/definitions/` or with the Rust API ([`SagaSpec`]) — and it is checked against the
//! event catalog at load. The coordinator runtime (elsewhere; this crate does no I/O) feeds each
//! saga instance its inputs through [`apply`] and performs the returned [`Action`]s.
//!
//! ```text
//!   (SagaState, Input, now) --apply--> (SagaState', Vec<Action>)
//!   Input  = Event | Deadline fired | operator Command
//!   Action = Emit event | SetDeadline | CancelDeadline | Status change | Rejected
//! ```
//!
//! Invariants (checked by `saga/tests/properties.rs`): the completion event is emitted only
//! once every step has succeeded (or was skipped by an operator); the cancellation event only
//! once every started step is resolved (it answered, or its deadline passed) and every
//! compensation is settled; when a saga aborts, every success is compensated exactly once —
//! also one that arrives after the saga became terminal (a late compensation); and a terminal
//! status (completed, compensated) never changes again except to needs_operator (and back).
//!
//! # Layout
//!
//! - `time`: the vocabulary of time — [`Millis`], [`Deadline`], durations.
//! - `definition`: a folder — `spec` (the Rust API to describe a saga: [`SagaSpec`],
//!   [`StepSpec`], [`EmitSpec`], [`CompensationSpec`]), the compiled form ([`Definition`]),
//!   `plans` (mapping plans), `compile` (spec → definition, one function per concern) and
//!   `loader` (TOML, errors with file and line; the compiled-in reference order saga,
//!   [`Definition::reference_order_saga`]).
//! - `registry`: [`Definitions`], keyed by name and version (instances stay pinned).
//! - `event`: [`Event`], a consumed event as the runtime decoded it.
//! - `state`: [`SagaState`] — serde-serializable, with its deadlines and timeline; its size
//!   is bounded whatever the inputs (`MAX_*` constants); [`SagaState::check_against`] says
//!   whether a restored state fits a definition.
//! - `input`: [`Input`] (what goes in: an event, a fired deadline, an operator [`Command`])
//!   and [`Action`] (what comes out).
//! - `apply`: the state machine's entry point and the running saga's rules.
//! - `compensation`: aborting, compensating in reverse order, acknowledgements, escalation.
//! - `deadlines`: what a fired deadline does.
//! - `commands`: what operator [`Command`]s do (abort, retry, skip, resume).
//!
//! Files import downwards only: `time` ← `event` ← `state` ← `input` ← `mapping` ← `apply`
//! (with `compensation`, `deadlines` and `commands` extending its context).
//! - `mapping`: deterministic event ids ([`event_id`]) and filling emitted data.
//! - `testing`: [`testing::SagaTest`], a virtual-clock harness for saga authors.
//! - [`diagram`]: a definition as a graph ([`diagram::graph`], what the operator console draws)
//!   and as a Mermaid state diagram ([`diagram::mermaid`], `choreo saga diagram`); pure data
//!   from a [`Definition`].
//! - `replay`: [`replay::compare`] — recorded inputs of sagas run through two definitions with
//!   a virtual clock driven by the records' timestamps, and the sagas that would end
//!   differently (`choreo saga replay` reads the records from Kafka).
//! - `error`: [`SagaError`].

mod apply;
mod commands;
mod compensation;
mod deadlines;
mod definition;
pub mod diagram;
mod error;
mod event;
mod input;

mod mapping;
mod registry;
pub mod replay;
mod state;
mod state_format;
pub mod testing;
mod time;

/// `saga/HARNESS.md`'s example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../HARNESS.md")]
mod harness_md {}

pub use apply::{apply, apply_command, command_applied};
pub use definition::{
    Compensation, CompensationSpec, Correlation, DeadlineFrom, Definition, Emission, EmitSpec,
    FieldPlan, MapFrom, Role, SagaField, SagaSpec, Source, Step, StepDeadline, StepSpec,
    UnknownOutcome,
};
pub use error::SagaError;
pub use input::{Action, Command, Emit, EmitKind, Event, Input};
pub use mapping::event_id;
pub use registry::Definitions;
pub use state::{
    CompensationState, DEFAULT_START_WITHIN, MAX_COLLECTED_BYTES, MAX_CORRELATION_ID_BYTES,
    MAX_EVENT_ID_BYTES, MAX_PENDING_BYTES, MAX_REASON_BYTES, MAX_STEP_NAME_BYTES,
    MAX_TIMELINE_TEXT_BYTES, PENDING_CAPACITY, SEEN_CAPACITY, SagaState, Status, StepState,
    StepStatus, TIMELINE_CAPACITY, Timeline, TimelineEntry, TimelineKind,
};
pub use state_format::{STATE_FORMAT, StateDecodeError};
pub use time::{Deadline, DeadlineKind, Millis, format_duration, parse_duration};
