//! The state of one saga instance: serde-serializable (stored as JSON in the coordinator's
//! changelog), holding everything [`crate::apply`] needs — collected data, step progress,
//! pending deadlines, the ids of inputs already seen, and a bounded timeline for operators.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::deadlines::{Deadline, Millis};
use crate::definition::Definition;
use crate::input::Event;

/// How many timeline entries a saga keeps (older ones are dropped and counted).
pub const TIMELINE_CAPACITY: usize = 64;
/// How many input event ids a saga remembers for deduplication.
pub const SEEN_CAPACITY: usize = 256;
/// How many events a saga buffers before its start event arrives.
pub const PENDING_CAPACITY: usize = 64;

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Events arrived before the start event; they are buffered.
    Pending,
    /// Started; steps are in progress.
    Running,
    /// Aborted; completed steps are being compensated.
    Compensating,
    /// Every step completed (terminal).
    Completed,
    /// Aborted and every completed step compensated (terminal — unless a success arrives even
    /// later, which is compensated in turn).
    Compensated,
    /// A compensation was never acknowledged; see [`SagaState::needs_operator`].
    NeedsOperator,
}

impl Status {
    /// Whether nothing more is expected (Completed or Compensated).
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Compensated)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Compensating => "compensating",
            Status::Completed => "completed",
            Status::Compensated => "compensated",
            Status::NeedsOperator => "needs_operator",
        })
    }
}

/// Where one step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started (waiting for the saga or for the steps it comes after).
    Waiting,
    /// Started, no outcome yet.
    Running,
    /// Its success event arrived.
    Completed,
    /// Its failure event arrived.
    Failed,
    /// An operator skipped it: it counts as done and is never compensated.
    Skipped,
    /// It was running when the saga was aborted.
    Abandoned,
}

/// Where one step's compensation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CompensationState {
    /// Not emitted (the step did not complete, or the saga was not aborted, or it waits for
    /// its dependents' compensations).
    NotStarted,
    /// Emitted; waiting for the acknowledgement.
    Emitted {
        /// The compensating event's id (the same on every re-emission).
        event_id: Uuid,
        /// Emissions so far (1 = the first).
        attempts: u32,
    },
    /// Emitted, and no acknowledgement is expected.
    Done {
        /// The event's id.
        event_id: Uuid,
    },
    /// Acknowledged.
    Acknowledged {
        /// The compensating event's id.
        event_id: Uuid,
        /// When the acknowledgement arrived.
        at: Millis,
    },
    /// Never acknowledged after every re-emission: an operator must act.
    Stuck {
        /// The compensating event's id.
        event_id: Uuid,
        /// Emissions made.
        attempts: u32,
        /// Why the saga needs an operator.
        reason: String,
    },
    /// An operator declared it handled.
    Skipped,
}

impl CompensationState {
    /// Whether the compensation is finished (acknowledged, needing no ack, or skipped).
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            CompensationState::Done { .. }
                | CompensationState::Acknowledged { .. }
                | CompensationState::Skipped
        )
    }

    /// The compensating event's id, once emitted.
    pub fn event_id(&self) -> Option<Uuid> {
        match self {
            CompensationState::Emitted { event_id, .. }
            | CompensationState::Done { event_id }
            | CompensationState::Acknowledged { event_id, .. }
            | CompensationState::Stuck { event_id, .. } => Some(*event_id),
            CompensationState::NotStarted | CompensationState::Skipped => None,
        }
    }
}

/// One step's progress and collected data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// The step's name.
    pub name: String,
    /// Where it stands.
    pub status: StepStatus,
    /// When it started.
    pub started_at: Option<Millis>,
    /// When it completed, failed or was skipped.
    pub finished_at: Option<Millis>,
    /// 1-based rank among the saga's completed steps (compensation runs in reverse).
    pub completion_rank: Option<u32>,
    /// Whether it completed after the saga had been aborted.
    pub late: bool,
    /// The fields of its success event that mappings read (`<step>.<field>`); the others
    /// are not kept.
    pub data: Option<Value>,
    /// Its compensation.
    pub compensation: CompensationState,
    /// When an acknowledgement of its compensation arrived before the compensation was emitted
    /// here — a decision repeated after a crash under at-least-once delivery, whose first
    /// emission a service already acknowledged. The compensation, once emitted, counts as
    /// acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_ack: Option<Millis>,
}

/// What a timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    /// An event arrived and was used.
    Received,
    /// An event arrived before the start event and was buffered.
    Buffered,
    /// An input arrived and changed nothing (why is in the text).
    Ignored,
    /// A deadline fired.
    Deadline,
    /// An operator command.
    Command,
    /// The saga emitted an event.
    Emitted,
    /// The saga changed status.
    Status,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When (the `now` of the `apply` call).
    pub at: Millis,
    /// What kind of entry.
    pub kind: TimelineKind,
    /// Human-readable detail.
    pub what: String,
}

/// The last [`TIMELINE_CAPACITY`] entries of what happened to a saga.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timeline {
    /// Entries, oldest first.
    pub entries: VecDeque<TimelineEntry>,
    /// How many older entries were dropped.
    pub dropped: u64,
}

impl Timeline {
    pub(crate) fn push(&mut self, at: Millis, kind: TimelineKind, what: String) {
        if self.entries.len() >= TIMELINE_CAPACITY {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(TimelineEntry { at, kind, what });
    }
}

/// The state of one saga instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// `<definition name>/<correlation id>`; also seeds emitted event ids.
    pub saga_id: String,
    /// The definition's name.
    pub definition: String,
    /// The definition version this instance is pinned to (decision 8).
    pub version: u32,
    /// The correlation id (e.g. the order id).
    pub correlation_id: String,
    /// Where the saga stands.
    pub status: Status,
    /// When the first input arrived.
    pub created_at: Millis,
    /// When the start event was applied.
    pub started_at: Option<Millis>,
    /// When the last input changed it.
    pub updated_at: Millis,
    /// The fields of the start event that mappings read (`start.<field>`).
    pub start_data: Option<Value>,
    /// Why it was aborted.
    pub abort_reason: Option<String>,
    /// Whether the abort event (`on_abort`) was emitted.
    pub abort_emitted: bool,
    /// One entry per step of the definition, in definition order.
    pub steps: Vec<StepState>,
    /// Events buffered before the start event, in arrival order.
    pub pending: Vec<Event>,
    /// Pending deadlines (decision 5). At most one per [`crate::DeadlineKind`].
    pub deadlines: Vec<Deadline>,
    /// Ids of the last [`SEEN_CAPACITY`] input events, for deduplication.
    pub seen: VecDeque<String>,
    /// Completed steps so far (ranks completions).
    pub completions: u32,
    /// What happened, for operators.
    pub timeline: Timeline,
}

impl SagaState {
    /// A fresh instance of `def` for `correlation_id`, pinned to `def`'s version, in
    /// [`Status::Pending`] until its start event is applied.
    pub fn new(def: &Definition, correlation_id: impl Into<String>, now: Millis) -> SagaState {
        let correlation_id = correlation_id.into();
        SagaState {
            saga_id: format!("{}/{}", def.name(), correlation_id),
            definition: def.name().to_owned(),
            version: def.version(),
            correlation_id,
            status: Status::Pending,
            created_at: now,
            started_at: None,
            updated_at: now,
            start_data: None,
            abort_reason: None,
            abort_emitted: false,
            steps: def
                .steps()
                .iter()
                .map(|s| StepState {
                    name: s.name.clone(),
                    status: StepStatus::Waiting,
                    started_at: None,
                    finished_at: None,
                    completion_rank: None,
                    late: false,
                    data: None,
                    compensation: CompensationState::NotStarted,
                    early_ack: None,
                })
                .collect(),
            pending: Vec::new(),
            deadlines: Vec::new(),
            seen: VecDeque::new(),
            completions: 0,
            timeline: Timeline::default(),
        }
    }

    /// Where the saga stands.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Pending deadlines; the runtime indexes these (and rebuilds its index from them on
    /// restore).
    pub fn deadlines(&self) -> &[Deadline] {
        &self.deadlines
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<&Deadline> {
        self.deadlines.iter().min_by_key(|d| d.at)
    }

    /// One step's state, by name.
    pub fn step(&self, name: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The stuck compensations: `(step, reason)` for each.
    pub fn needs_operator(&self) -> Vec<(&str, &str)> {
        self.steps
            .iter()
            .filter_map(|s| match &s.compensation {
                CompensationState::Stuck { reason, .. } => Some((s.name.as_str(), reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Serializes to the JSON stored in the changelog.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads a state back from its changelog JSON.
    pub fn from_json(bytes: &[u8]) -> Result<SagaState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
