//! Replay: the recorded inputs of sagas run again through a definition, with the pure state
//! machine and a virtual clock driven by the records' timestamps — and two definitions'
//! outcomes compared, so that a saga author sees what a change would do before deploying it.
//!
//! ```text
//!   records (events and operator commands, with their timestamps)
//!     │ grouped by saga (the definition's correlation id), in time order
//!     ▼
//!   for each input at time t: fire every deadline due by t (at its due time), then apply it
//!   at the end: fire every deadline due by `until` (what the coordinator would have fired)
//!     ▼
//!   Outcome per saga: final status, the reason of its last status change, emitted events
//!     ▼
//!   compare(baseline, candidate): sagas whose status or emitted events differ
//! ```
//!
//! The inputs are what was recorded: what services answered to what the running definition
//! emitted. An event a changed definition would emit and the old one did not was never
//! answered, so in a replay it stays unanswered (its step runs into its deadline) — which is
//! what the change would do until the services learn about it.
//!
//! A saga is created the way the coordinator creates one: by an event of the definition that
//! is not an acknowledgement; a command for a saga that does not exist is ignored. Each
//! definition sees only the events it consumes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::apply;
use crate::definition::{Definition, Role};
use crate::input::{Action, Command, EmitKind, Event, Input};
use crate::state::{SagaState, Status};
use crate::time::Millis;

/// One recorded input, as read from the saga topics or the commands topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Recorded {
    /// An event from a saga topic.
    Event {
        /// The record's timestamp (the virtual clock's time when it is applied).
        at: Millis,
        /// The record key (the correlation id, unless the definition reads it from a field).
        key: Option<String>,
        /// The event's id (`ce_id`; the coordinator uses `<topic>/<partition>/<offset>` when
        /// there is none).
        id: String,
        /// The event type (Avro full name).
        event_type: String,
        /// The event's data, decoded.
        data: Value,
    },
    /// An operator command from the commands topic.
    Command {
        /// The record's timestamp.
        at: Millis,
        /// The definition it is for (by name).
        definition: String,
        /// The saga's correlation id.
        correlation_id: String,
        /// The command.
        command: Command,
    },
}

impl Recorded {
    /// When it happened.
    pub fn at(&self) -> Millis {
        match self {
            Recorded::Event { at, .. } | Recorded::Command { at, .. } => *at,
        }
    }
}

/// One emitted event, as a replay compares them: its type and the step it concerns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Emitted {
    /// The event type.
    pub event_type: String,
    /// The step it concerns (`None` for the saga's completion or cancellation).
    pub step: Option<String>,
    /// Why it was emitted.
    pub kind: EmitKind,
}

impl std::fmt::Display for Emitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or(&self.event_type);
        match &self.step {
            Some(step) => write!(f, "{short} (step {step}, {})", self.kind.as_str()),
            None => write!(f, "{short} ({})", self.kind.as_str()),
        }
    }
}

/// How one saga ends under one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Its status at the end (`None`: no saga was created — none of its inputs starts one).
    pub status: Option<Status>,
    /// Whether its start event was applied.
    pub started: bool,
    /// Why its status last changed.
    pub reason: Option<String>,
    /// Every event it emitted, in order (re-emissions included).
    pub emitted: Vec<Emitted>,
    /// When its first input was recorded.
    pub first_at: Millis,
}

/// Runs every saga of `def` found in `records` up to `until`: the outcome per correlation id.
/// `records` may come in any order; inputs of one saga are applied in time order (records with
/// the same timestamp in the order given).
pub fn outcomes(
    def: &Definition,
    records: &[Recorded],
    until: Millis,
) -> BTreeMap<String, Outcome> {
    let mut by_saga: BTreeMap<String, Vec<(Millis, Input)>> = BTreeMap::new();
    for r in records {
        match r {
            Recorded::Event {
                at,
                key,
                id,
                event_type,
                data,
            } => {
                if def.role_of(event_type).is_none() {
                    continue;
                }
                let Some(correlation_id) = def.correlation_id(key.as_deref(), data) else {
                    continue;
                };
                let input = Input::Event(Event {
                    id: id.clone(),
                    event_type: event_type.clone(),
                    correlation_id: correlation_id.clone(),
                    time: *at,
                    data: data.clone(),
                });
                by_saga
                    .entry(correlation_id)
                    .or_default()
                    .push((*at, input));
            }
            Recorded::Command {
                at,
                definition,
                correlation_id,
                command,
            } => {
                if definition != def.name() {
                    continue;
                }
                by_saga
                    .entry(correlation_id.clone())
                    .or_default()
                    .push((*at, Input::Command(command.clone())));
            }
        }
    }
    by_saga
        .into_iter()
        .map(|(correlation_id, mut inputs)| {
            inputs.sort_by_key(|(at, _)| *at);
            let outcome = run_one(def, &correlation_id, &inputs, until);
            (correlation_id, outcome)
        })
        .collect()
}

/// One saga through `def`: deadlines fire at their due time between inputs and up to `until`.
pub fn run_one(
    def: &Definition,
    correlation_id: &str,
    inputs: &[(Millis, Input)],
    until: Millis,
) -> Outcome {
    let mut run = Run {
        def,
        state: None,
        reason: None,
        emitted: Vec::new(),
    };
    for (at, input) in inputs {
        run.fire_due(*at);
        if run.state.is_none() {
            let creates = match input {
                Input::Event(e) => !matches!(def.role_of(&e.event_type), Some(Role::Ack(_)) | None),
                Input::Deadline { .. } | Input::Command(_) => false,
            };
            if !creates {
                continue;
            }
            run.state = Some(SagaState::new(def, correlation_id, *at));
        }
        run.apply(input, *at);
    }
    run.fire_due(until);
    Outcome {
        status: run.state.as_ref().map(|s| s.status),
        started: run.state.as_ref().is_some_and(|s| s.started_at.is_some()),
        reason: run.reason,
        emitted: run.emitted,
        first_at: inputs.first().map_or(until, |(at, _)| *at),
    }
}

struct Run<'a> {
    def: &'a Definition,
    state: Option<SagaState>,
    reason: Option<String>,
    emitted: Vec<Emitted>,
}

impl Run<'_> {
    fn apply(&mut self, input: &Input, now: Millis) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        for action in apply(self.def, state, input, now) {
            match action {
                Action::Emit(e) => self.emitted.push(Emitted {
                    event_type: e.event_type,
                    step: e.step,
                    kind: e.kind,
                }),
                Action::Status { reason, .. } => self.reason = Some(reason),
                Action::SetDeadline(_)
                | Action::CancelDeadline { .. }
                | Action::Rejected { .. } => {}
            }
        }
    }

    /// Fires, in order, every deadline due by `until` (also those set by the ones fired).
    fn fire_due(&mut self, until: Millis) {
        while let Some(d) = self.state.as_ref().and_then(|s| {
            s.deadlines()
                .iter()
                .filter(|d| d.at <= until)
                .min_by_key(|d| d.at)
                .cloned()
        }) {
            self.apply(&Input::Deadline { kind: d.kind }, d.at);
        }
    }
}

/// How many of one emitted event more (or fewer) a saga emits under the new definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedChange {
    /// The event.
    #[serde(flatten)]
    pub event: Emitted,
    /// How many times more (added) or fewer (removed).
    pub count: usize,
}

/// One saga that would end differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The correlation id.
    pub correlation_id: String,
    /// Under the baseline definition.
    pub old: Outcome,
    /// Under the new one.
    pub new: Outcome,
    /// Emitted under the new definition and not (as often) under the baseline.
    pub added: Vec<EmittedChange>,
    /// Emitted under the baseline and not (as often) under the new definition.
    pub removed: Vec<EmittedChange>,
}

impl Difference {
    /// Whether the final status differs (otherwise only emitted events do).
    pub fn status_changed(&self) -> bool {
        self.old.status != self.new.status
    }
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Sagas replayed (their start event was among the records, under either definition).
    pub replayed: usize,
    /// Sagas that end the same way under both.
    pub unchanged: usize,
    /// Sagas that would end differently, oldest first.
    pub differences: Vec<Difference>,
    /// Correlation ids seen without a start event under either definition (they started
    /// before the records begin, or never): not replayed.
    pub without_start: usize,
}

impl Report {
    /// Of the differences, how many change the final status.
    pub fn status_changes(&self) -> usize {
        self.differences
            .iter()
            .filter(|d| d.status_changed())
            .count()
    }
}

/// Replays `records` through `baseline` and `candidate` up to `until`, and reports the sagas
/// that would end differently. With `limit`, only the `limit` most recent sagas (by their first
/// input) are replayed.
pub fn compare(
    baseline: &Definition,
    candidate: &Definition,
    records: &[Recorded],
    until: Millis,
    limit: Option<usize>,
) -> Report {
    let old = outcomes(baseline, records, until);
    let new = outcomes(candidate, records, until);
    let ids: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let nothing = |at: Millis| Outcome {
        status: None,
        started: false,
        reason: None,
        emitted: Vec::new(),
        first_at: at,
    };
    let mut sagas: Vec<(String, Outcome, Outcome)> = Vec::new();
    let mut without_start = 0;
    for id in ids {
        let (o, n) = (old.get(id), new.get(id));
        if !o.is_some_and(|o| o.started) && !n.is_some_and(|n| n.started) {
            without_start += 1;
            continue;
        }
        let first = o
            .map(|o| o.first_at)
            .into_iter()
            .chain(n.map(|n| n.first_at))
            .min()
            .unwrap_or(until);
        sagas.push((
            id.clone(),
            o.cloned().unwrap_or_else(|| nothing(first)),
            n.cloned().unwrap_or_else(|| nothing(first)),
        ));
    }
    sagas.sort_by(|a, b| {
        let first = |s: &(String, Outcome, Outcome)| s.1.first_at.min(s.2.first_at);
        first(a).cmp(&first(b)).then_with(|| a.0.cmp(&b.0))
    });
    if let Some(n) = limit {
        let skip = sagas.len().saturating_sub(n);
        sagas.drain(..skip);
    }
    let replayed = sagas.len();
    let differences: Vec<Difference> = sagas
        .into_iter()
        .filter_map(|(id, o, n)| difference(id, o, n))
        .collect();
    Report {
        replayed,
        unchanged: replayed - differences.len(),
        differences,
        without_start,
    }
}

/// The difference between two outcomes of one saga, if they differ in status or emissions.
fn difference(correlation_id: String, old: Outcome, new: Outcome) -> Option<Difference> {
    let count = |o: &Outcome| {
        let mut m: BTreeMap<Emitted, usize> = BTreeMap::new();
        for e in &o.emitted {
            *m.entry(e.clone()).or_default() += 1;
        }
        m
    };
    let (a, b) = (count(&old), count(&new));
    let more = |x: &BTreeMap<Emitted, usize>, y: &BTreeMap<Emitted, usize>| {
        x.iter()
            .filter_map(|(e, n)| {
                let extra = n.saturating_sub(y.get(e).copied().unwrap_or(0));
                (extra > 0).then(|| EmittedChange {
                    event: e.clone(),
                    count: extra,
                })
            })
            .collect::<Vec<_>>()
    };
    let added = more(&b, &a);
    let removed = more(&a, &b);
    if old.status == new.status && added.is_empty() && removed.is_empty() {
        return None;
    }
    Some(Difference {
        correlation_id,
        old,
        new,
        added,
        removed,
    })
}
