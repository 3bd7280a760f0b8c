//! The state of one saga instance, holding everything [`crate::apply`] needs — collected data,
//! step progress, pending deadlines, the ids of inputs already seen, and a bounded timeline for
//! operators. The coordinator's changelog stores it in a compact binary format
//! ([`SagaState::encode`], `state_format.rs`); it is also serde-serializable (the operator API's
//! JSON, and the changelog's format before the binary one).
//!
//! # Size
//!
//! No input can make a state grow without bound: free text is truncated
//! ([`MAX_REASON_BYTES`], [`MAX_TIMELINE_TEXT_BYTES`]), long event ids are kept as a digest
//! ([`MAX_EVENT_ID_BYTES`]), an event's data is kept only for the fields mappings read and an
//! event whose kept fields exceed [`MAX_COLLECTED_BYTES`] is rejected, and the lists are capped
//! ([`TIMELINE_CAPACITY`], [`SEEN_CAPACITY`], [`PENDING_CAPACITY`] and [`MAX_PENDING_BYTES`]).
//! Free text also has its control characters replaced, so JSON escaping at most doubles it
//! (quotes, backslashes). So whatever its inputs, a state's JSON stays below about 512 KiB
//! plus 8 KiB per step (plus what the definition's names and the correlation id — which the
//! runtime should keep to [`MAX_CORRELATION_ID_BYTES`] — contribute): under Kafka's default
//! 1 MiB record size for any definition of a reasonable size.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::definition::Definition;
use crate::event::Event;
use crate::time::{Deadline, DeadlineKind, Millis};

/// How many timeline entries a saga keeps (older ones are dropped and counted).
pub const TIMELINE_CAPACITY: usize = 64;
/// How many input event ids a saga remembers for deduplication.
pub const SEEN_CAPACITY: usize = 256;
/// How many events a saga buffers before its start event arrives (a saga has one success or
/// failure per step to wait for; events without a start are strays, and bounded).
pub const PENDING_CAPACITY: usize = 16;
/// At most this many bytes of JSON of buffered events' kept data (see [`MAX_COLLECTED_BYTES`]);
/// an event that would go beyond is rejected like one that finds the buffer full.
pub const MAX_PENDING_BYTES: usize = 32 * 1024;
/// How long a saga without a saga deadline waits for its start event after its first event
/// (one with a deadline waits that long): then it gives up, compensating what its buffered
/// events did, and is tombstoned after the retention of finished sagas — so events whose start
/// never comes cannot pile up without bound.
pub const DEFAULT_START_WITHIN: std::time::Duration = std::time::Duration::from_secs(3600);
/// Free text from an input — an operator's abort reason, a failure event's `reason` — is kept
/// up to this many bytes (truncated on a character boundary, ending with `…`). The HTTP layer
/// rejects longer operator input with a 4xx rather than see it truncated.
pub const MAX_REASON_BYTES: usize = 1024;
/// Step names (in definitions, so in commands) are at most this long; a command naming a
/// longer step cannot name one of the saga's.
pub const MAX_STEP_NAME_BYTES: usize = 128;
/// Event ids up to this length (and without control characters) are remembered as they are;
/// others as a digest (`~` and a UUIDv5 of the id), so deduplication still works and the state
/// stays small.
pub const MAX_EVENT_ID_BYTES: usize = 128;
/// At most this many bytes (as JSON) of an event's data are kept: only the top-level fields
/// that mappings read are kept, and an event whose kept fields are larger is rejected (the
/// runtime dead-letters it) rather than kept truncated, which would emit wrong data.
pub const MAX_COLLECTED_BYTES: usize = 8 * 1024;
/// A timeline entry's text is at most this many bytes (truncated, ending with `…`).
pub const MAX_TIMELINE_TEXT_BYTES: usize = 2 * 1024;
/// Correlation ids longer than this should be refused by the runtime before a state is made
/// (the state keeps its correlation id in several places).
pub const MAX_CORRELATION_ID_BYTES: usize = 256;

/// `text` as a state keeps free text: control characters (newlines included) become spaces
/// (so JSON escaping cannot multiply its size), and it is cut to at most `max` bytes on a
/// character boundary, ending with `…` when cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    const MARK: &str = "…";
    let text: std::borrow::Cow<'_, str> = if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    };
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Events arrived before the start event; they are buffered.
    Pending,
    /// Started; steps are in progress.
    Running,
    /// Aborted: completed steps are being compensated, and steps still in flight are awaited
    /// (up to their deadline; see [`SagaState::awaiting_steps`]).
    Compensating,
    /// Every step completed (terminal); the completion event was emitted.
    Completed,
    /// Aborted, every started step resolved and every compensation settled; the cancellation
    /// event was emitted (terminal). A success that arrives even later is compensated too (a
    /// late compensation, see [`crate::Emit::late_compensation`]) while the status stays
    /// compensated — unless that compensation is never acknowledged, which needs an operator.
    Compensated,
    /// An operator must act: a compensation was never acknowledged, or a step's outcome is
    /// unknown and its compensation is not safe for that; see [`SagaState::needs_operator`].
    /// The only status a terminal saga may move to.
    NeedsOperator,
}

impl Status {
    /// Whether nothing more is expected (Completed or Compensated). A terminal status never
    /// changes again, except to [`Status::NeedsOperator`] (a late compensation that is never
    /// acknowledged), and from there back to the same terminal status.
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
    /// It was running when the saga was aborted and nothing waits for it: it has no
    /// compensation, so its outcome changes nothing. (States written before in-flight steps
    /// were awaited also hold steps abandoned at the abort.) A success that still arrives is
    /// compensated like any late success.
    Abandoned,
    /// It started and did not answer by its deadline: whether it happened is unknown. Its
    /// compensation was emitted anyway (`on_unknown_outcome = "compensate"`), or the saga needs
    /// an operator for it ([`StepState::needs_operator`]).
    Unknown,
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
    /// Whether it completed after the saga had been aborted, or its outcome became unknown
    /// while the saga was aborting: its compensation goes at once, without waiting for the
    /// steps after it.
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
    /// Why an operator must decide about this step, besides a stuck compensation: its
    /// outcome is unknown and its compensation is not safe for that. An operator retries the
    /// step (its compensation is emitted) or skips it (handled by hand); a late success or
    /// failure settles it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_operator: Option<String>,
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
        let what = if what.len() > MAX_TIMELINE_TEXT_BYTES {
            bounded(&what, MAX_TIMELINE_TEXT_BYTES)
        } else {
            what
        };
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
    /// Why it was aborted (at most [`MAX_REASON_BYTES`] of free text from the input).
    pub abort_reason: Option<String>,
    /// Whether the saga reached [`Status::Compensated`] (and emitted its `on_abort` event, if
    /// it has one). From then on it stays terminal: later compensations are late ones.
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
                    needs_operator: None,
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

    /// What an operator must decide: `(step, reason)` for each stuck compensation and each
    /// step whose outcome is unknown and whose compensation is not safe for that.
    pub fn needs_operator(&self) -> Vec<(&str, &str)> {
        self.steps
            .iter()
            .filter_map(|s| match (&s.compensation, &s.needs_operator) {
                (CompensationState::Stuck { reason, .. }, _) => {
                    Some((s.name.as_str(), reason.as_str()))
                }
                (_, Some(reason)) => Some((s.name.as_str(), reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The steps an aborted saga still waits on: started, no answer yet, their deadline not
    /// passed. The saga is compensated (and emits its cancellation) only once there are none.
    /// Empty unless the saga is compensating or needs an operator.
    pub fn awaiting_steps(&self) -> Vec<&str> {
        if !matches!(self.status, Status::Compensating | Status::NeedsOperator) {
            return Vec::new();
        }
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Running)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Whether the saga is terminal and waits for nothing (no pending deadline — e.g. no late
    /// compensation awaiting its acknowledgement): the runtime may start its retention clock
    /// and eventually forget it.
    pub fn is_finished(&self) -> bool {
        self.status.is_terminal() && self.deadlines.is_empty()
    }

    /// Checks that this state fits `def` — the definition [`crate::apply`] would run it with —
    /// and says in one line what does not (a definition edited without a new version, say).
    /// [`crate::apply`] rejects every input of a state that does not fit.
    pub fn check_against(&self, def: &Definition) -> Result<(), String> {
        let who = format!("saga {}", bounded(&self.saga_id, 200));
        if self.definition != def.name() || self.version != def.version() {
            return Err(format!(
                "{who} is pinned to {} v{}, not {} v{}",
                bounded(&self.definition, 200),
                self.version,
                def.name(),
                def.version()
            ));
        }
        let what = format!("{} v{}", def.name(), def.version());
        if self.steps.len() != def.steps().len() {
            return Err(format!(
                "{who} has {} steps, but {what} defines {}: the definition changed without a new version",
                self.steps.len(),
                def.steps().len()
            ));
        }
        for (i, (s, d)) in self.steps.iter().zip(def.steps()).enumerate() {
            if s.name != d.name {
                return Err(format!(
                    "{who}: step {} is \"{}\", but in {what} it is \"{}\": the definition changed without a new version",
                    i + 1,
                    bounded(&s.name, MAX_STEP_NAME_BYTES),
                    d.name
                ));
            }
            let in_progress = matches!(
                s.compensation,
                CompensationState::Emitted { .. } | CompensationState::Stuck { .. }
            );
            if in_progress && d.compensation.is_none() {
                return Err(format!(
                    "{who}: step \"{}\" has a compensation in progress, but {what} defines none for it",
                    d.name
                ));
            }
        }
        for d in &self.deadlines {
            let step = match &d.kind {
                DeadlineKind::Saga => continue,
                DeadlineKind::Step(s) | DeadlineKind::CompensationAck(s) => s,
            };
            if def.step_index(step).is_none() {
                let shown = match &d.kind {
                    DeadlineKind::CompensationAck(_) => {
                        DeadlineKind::CompensationAck(bounded(step, MAX_STEP_NAME_BYTES))
                    }
                    _ => DeadlineKind::Step(bounded(step, MAX_STEP_NAME_BYTES)),
                };
                return Err(format!(
                    "{who} has a pending {shown}, but {what} has no such step"
                ));
            }
        }
        Ok(())
    }

    /// Serializes to JSON (the operator API's form; the changelog's before [`SagaState::encode`]).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads a state back from JSON ([`SagaState::decode`] reads changelog values of either
    /// format).
    pub fn from_json(bytes: &[u8]) -> Result<SagaState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_char_boundary_with_a_marker() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("exactly10!", 10), "exactly10!");
        assert_eq!(bounded("0123456789abc", 10), "0123456…");
        // "é" is 2 bytes: never cut in the middle of one.
        let text = "éééééééééé"; // 20 bytes
        let cut = bounded(text, 10);
        assert!(cut.len() <= 10, "{cut:?}");
        assert_eq!(cut, "ééé…");
        assert_eq!(bounded("abcdef", 2), "…");
        assert_eq!(bounded("two\nlines\t\u{1}", 100), "two lines  ");
        let long = "x".repeat(10 * MAX_REASON_BYTES);
        let cut = bounded(&long, MAX_REASON_BYTES);
        assert_eq!(cut.len(), MAX_REASON_BYTES);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn timeline_entries_are_capped_in_number_and_size() {
        let mut t = Timeline::default();
        for n in 0..(TIMELINE_CAPACITY + 10) {
            t.push(Millis(n as u64), TimelineKind::Ignored, "y".repeat(100_000));
        }
        assert_eq!(t.entries.len(), TIMELINE_CAPACITY);
        assert_eq!(t.dropped, 10);
        assert!(
            t.entries
                .iter()
                .all(|e| e.what.len() <= MAX_TIMELINE_TEXT_BYTES)
        );
    }
}
