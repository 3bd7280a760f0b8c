//! What goes into [`crate::apply`] ([`Input`]) and what comes out ([`Action`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use crate::event::Event;
use crate::state::{MAX_REASON_BYTES, MAX_STEP_NAME_BYTES, Status, bounded};
use crate::time::{Deadline, DeadlineKind};

/// One input to the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// An event the saga consumes.
    Event(Event),
    /// A deadline of [`crate::SagaState::deadlines`] is due. Deadlines that are no longer
    /// pending, or not yet due at `now`, are ignored.
    Deadline {
        /// Which deadline.
        kind: DeadlineKind,
    },
    /// An operator command.
    Command(Command),
}

/// What an operator can ask of one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Give up now: compensate what completed, await the steps in flight (Pending or Running
    /// sagas).
    Abort {
        /// Why; recorded and available to mappings as `saga.reason`. At most
        /// [`crate::MAX_REASON_BYTES`] of it are kept (truncated, ending with `…`).
        reason: String,
    },
    /// Emit a step's unacknowledged (or stuck) compensation again — same event id — with a
    /// fresh retry budget; for a step whose outcome is unknown and that needs an operator,
    /// emit its compensation anyway.
    Retry {
        /// The step.
        step: String,
    },
    /// While running: the step counts as done without its success event (it will not be
    /// compensated) and the steps after it start. While compensating or needing an operator:
    /// the step's compensation counts as done (handled by hand) — or, for a step in flight or
    /// whose outcome is unknown, it is not waited for any more (it did nothing, or was undone
    /// by hand).
    Skip {
        /// The step.
        step: String,
    },
    /// Leave NeedsOperator: every stuck compensation waits for its acknowledgement again, with
    /// a fresh retry budget, without being re-emitted now (e.g. the service that acknowledges
    /// it was down and is back).
    Resume,
    /// A step that waits for a person (an approval step): complete it as if its success event
    /// had arrived (its success data is empty, so mappings of it take their defaults). Only a
    /// started step of a running saga; its deadline is cancelled as a success's would be.
    Approve {
        /// The step.
        step: String,
        /// Why; recorded in the timeline. At most [`crate::MAX_REASON_BYTES`] are kept.
        reason: String,
    },
    /// Fail a started step of a running saga as if its failure event had arrived: the saga
    /// aborts, with this reason, and compensates what completed.
    Reject {
        /// The step.
        step: String,
        /// Why; recorded, and available to mappings as `saga.reason`.
        reason: String,
    },
}

impl Command {
    /// The command's name as the API writes it (`abort`, `retry`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Abort { .. } => "abort",
            Command::Retry { .. } => "retry",
            Command::Skip { .. } => "skip",
            Command::Resume => "resume",
            Command::Approve { .. } => "approve",
            Command::Reject { .. } => "reject",
        }
    }

    /// The free-text reason it carries, if it is a kind that needs one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Command::Abort { reason }
            | Command::Approve { reason, .. }
            | Command::Reject { reason, .. } => Some(reason),
            Command::Retry { .. } | Command::Skip { .. } | Command::Resume => None,
        }
    }

    /// The step it names, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Command::Retry { step }
            | Command::Skip { step }
            | Command::Approve { step, .. }
            | Command::Reject { step, .. } => Some(step),
            Command::Abort { .. } | Command::Resume => None,
        }
    }

    /// The command with its free text cut to what a state keeps ([`MAX_REASON_BYTES`],
    /// [`MAX_STEP_NAME_BYTES`]).
    pub(crate) fn bounded(&self) -> Command {
        match self {
            Command::Abort { reason } => Command::Abort {
                reason: bounded(reason, MAX_REASON_BYTES),
            },
            Command::Retry { step } => Command::Retry {
                step: bounded(step, MAX_STEP_NAME_BYTES),
            },
            Command::Skip { step } => Command::Skip {
                step: bounded(step, MAX_STEP_NAME_BYTES),
            },
            Command::Resume => Command::Resume,
            Command::Approve { step, reason } => Command::Approve {
                step: bounded(step, MAX_STEP_NAME_BYTES),
                reason: bounded(reason, MAX_REASON_BYTES),
            },
            Command::Reject { step, reason } => Command::Reject {
                step: bounded(step, MAX_STEP_NAME_BYTES),
                reason: bounded(reason, MAX_REASON_BYTES),
            },
        }
    }
}

/// Why the saga emits an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitKind {
    /// A step started (`on_start`).
    StepStart,
    /// A step's compensation.
    Compensation,
    /// Every step completed (`on_complete`).
    Completed,
    /// The aborted saga is compensated (`on_abort`).
    Aborted,
}

impl EmitKind {
    /// The kind's name inside deterministic event ids.
    pub fn as_str(self) -> &'static str {
        match self {
            EmitKind::StepStart => "start",
            EmitKind::Compensation => "compensate",
            EmitKind::Completed => "completed",
            EmitKind::Aborted => "aborted",
        }
    }
}

/// An event to produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emit {
    /// Deterministic id: UUIDv5 of (saga id, step, kind) — see [`crate::event_id`]. A
    /// re-emission carries the same id.
    pub event_id: Uuid,
    /// Event type (Avro full name).
    pub event_type: String,
    /// Topic, from the catalog.
    pub topic: String,
    /// Record key: the correlation id.
    pub key: String,
    /// The step it concerns (`None` for saga-level events).
    pub step: Option<String>,
    /// Why it is emitted.
    pub kind: EmitKind,
    /// 1 for the first emission, then 2, 3… for re-emissions.
    pub attempt: u32,
    /// A JSON object with every field of the event's latest schema.
    pub data: Value,
    /// Set on the first emission of a **late compensation**: the compensation of a success that
    /// arrived after the saga had become terminal ([`crate::Status::Compensated`]); the saga's
    /// status stays terminal. Re-emissions and operator retries carry `false`, so the runtime
    /// counts late compensations by counting emissions with this flag (e.g. a
    /// `late_compensations_total{definition}` counter).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late_compensation: bool,
}

/// What the runtime must do after an `apply`, in order, once the new state is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Produce an event.
    Emit(Emit),
    /// Add (or move) a deadline in the index.
    SetDeadline(Deadline),
    /// Remove a deadline from the index.
    CancelDeadline {
        /// Which one.
        kind: DeadlineKind,
    },
    /// The saga changed status (for metrics, logs and the operator view).
    Status {
        /// Before.
        from: Status,
        /// After.
        to: Status,
        /// Why.
        reason: String,
    },
    /// The input was not usable (wrong saga, unknown event type, a command that does not
    /// apply now). The state is unchanged unless said otherwise in the timeline.
    Rejected {
        /// Why.
        reason: String,
    },
}

impl Action {
    /// The emitted event, if this is an emission.
    pub fn as_emit(&self) -> Option<&Emit> {
        match self {
            Action::Emit(e) => Some(e),
            _ => None,
        }
    }
}
