//! The pure state machine: `apply(definition, state, input, now) -> actions`.
//!
//! No I/O and no clock: everything the saga decides follows from its state, the input and
//! `now`. The runtime makes the new state durable, then performs the actions in order.
//! Compensation ([`crate::compensation`]), deadlines ([`crate::deadlines`]) and operator
//! commands ([`crate::commands`]) extend the same [`Cx`].

use serde_json::Value;

use crate::definition::{DeadlineFrom, Definition, Emission, Role, project};
use crate::input::{Action, Command, Emit, EmitKind, Event, Input};
use crate::mapping::{event_id, render};
use crate::state::{
    CompensationState, DEFAULT_START_WITHIN, MAX_COLLECTED_BYTES, MAX_EVENT_ID_BYTES,
    MAX_PENDING_BYTES, MAX_REASON_BYTES, PENDING_CAPACITY, SEEN_CAPACITY, SagaState, Status,
    StepStatus, TimelineKind, bounded,
};
use crate::time::{Deadline, DeadlineKind, Millis};

/// Applies one input to one saga and returns what the runtime must do.
///
/// `def` must be the definition the state is pinned to (same name and version; resolve it
/// with [`crate::Definitions::for_state`]) and the state must fit it
/// ([`SagaState::check_against`]: a definition edited without a new version may not);
/// otherwise the input is rejected and the state left unchanged — never a panic. Duplicate
/// events (an id already seen) change nothing and return no action.
pub fn apply(def: &Definition, state: &mut SagaState, input: &Input, now: Millis) -> Vec<Action> {
    if let Err(reason) = state.check_against(def) {
        return vec![Action::Rejected { reason }];
    }
    let mut cx = Cx {
        def,
        state,
        now,
        actions: Vec::new(),
        touched: false,
    };
    match input {
        Input::Event(event) => cx.on_event(event),
        Input::Deadline { kind } => cx.on_deadline(kind),
        Input::Command(command) => cx.on_command(command),
    }
    if cx.touched {
        cx.state.updated_at = now;
    }
    cx.actions
}

/// Applies an operator command that carries an `id` (a command record's id): a command whose id
/// the saga has already applied is refused and changes nothing — the same command delivered
/// twice, or sent again by a client retrying with the same idempotency key, acts once. The id
/// is remembered with the saga's seen event ids (the last [`SEEN_CAPACITY`] of either).
pub fn apply_command(
    def: &Definition,
    state: &mut SagaState,
    id: &str,
    command: &Command,
    now: Millis,
) -> Vec<Action> {
    let key = command_key(id);
    if state.seen.contains(&key) {
        return vec![Action::Rejected {
            reason: format!("command {id} was applied already"),
        }];
    }
    let actions = apply(def, state, &Input::Command(command.clone()), now);
    if !matches!(actions.as_slice(), [Action::Rejected { .. }]) {
        if state.seen.len() >= SEEN_CAPACITY {
            state.seen.pop_front();
        }
        state.seen.push_back(key);
    }
    actions
}

/// Whether the saga applied the command with this id (among its last [`SEEN_CAPACITY`] inputs).
pub fn command_applied(state: &SagaState, id: &str) -> bool {
    state.seen.contains(&command_key(id))
}

fn command_key(id: &str) -> String {
    seen_key(&format!("command:{id}"))
}

impl SagaState {
    /// Same as [`apply`], as a method.
    pub fn apply(&mut self, def: &Definition, input: &Input, now: Millis) -> Vec<Action> {
        apply(def, self, input, now)
    }
}

/// One `apply` call in progress.
pub(crate) struct Cx<'a> {
    pub(crate) def: &'a Definition,
    pub(crate) state: &'a mut SagaState,
    pub(crate) now: Millis,
    pub(crate) actions: Vec<Action>,
    /// Whether the state changed (every change writes a timeline entry).
    pub(crate) touched: bool,
}

impl Cx<'_> {
    pub(crate) fn note(&mut self, kind: TimelineKind, what: String) {
        self.touched = true;
        self.state.timeline.push(self.now, kind, what);
    }

    pub(crate) fn reject(&mut self, reason: String) {
        self.note(TimelineKind::Ignored, reason.clone());
        self.actions.push(Action::Rejected { reason });
    }

    pub(crate) fn set_status(&mut self, to: Status, reason: String) {
        let from = self.state.status;
        if from == to {
            return;
        }
        self.state.status = to;
        self.note(TimelineKind::Status, format!("{from} -> {to}: {reason}"));
        self.actions.push(Action::Status { from, to, reason });
    }

    /// Emits an event of `emission`, filled from the state.
    pub(crate) fn emit(
        &mut self,
        emission: &Emission,
        step: Option<&str>,
        kind: EmitKind,
        attempt: u32,
    ) -> uuid::Uuid {
        let id = event_id(&self.state.saga_id, step, kind);
        let data = render(emission, self.def, self.state);
        let again = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        self.note(
            TimelineKind::Emitted,
            format!("emitted {} {id}{again}", emission.event),
        );
        self.actions.push(Action::Emit(Emit {
            event_id: id,
            event_type: emission.event.clone(),
            topic: emission.topic.clone(),
            key: self.state.correlation_id.clone(),
            step: step.map(str::to_owned),
            kind,
            attempt,
            data,
            late_compensation: false,
        }));
        id
    }

    fn remember(&mut self, id: &str) {
        if self.state.seen.len() >= SEEN_CAPACITY {
            self.state.seen.pop_front();
        }
        self.state.seen.push_back(id.to_owned());
    }

    /// The event as the saga keeps it: its id (a digest when long), and only the data the
    /// saga reads for its role — or why it is too large to keep.
    fn kept(&self, role: Role, event: &Event) -> Result<Event, String> {
        let data = match role {
            Role::Start => project(&event.data, self.def.start_collects()),
            Role::Success(i) => project(&event.data, &self.def.steps()[i].collects),
            Role::Failure(_) => {
                let mut kept = serde_json::Map::new();
                if let Some(r) = event.data.get("reason").and_then(Value::as_str) {
                    kept.insert("reason".into(), bounded(r, MAX_REASON_BYTES).into());
                }
                Value::Object(kept)
            }
            Role::Ack(_) => Value::Object(serde_json::Map::new()),
        };
        let id = seen_key(&event.id);
        let size = json_size(&data);
        if size > MAX_COLLECTED_BYTES {
            return Err(format!(
                "{} {id}: the fields the saga keeps are {size} bytes of JSON, more than {MAX_COLLECTED_BYTES}",
                event.event_type
            ));
        }
        Ok(Event {
            id,
            event_type: event.event_type.clone(),
            correlation_id: event.correlation_id.clone(),
            time: event.time,
            data,
        })
    }

    fn on_event(&mut self, event: &Event) {
        let key = seen_key(&event.id);
        if self.state.seen.iter().any(|s| s == &key) {
            return; // a duplicate changes nothing
        }
        let Some(role) = self.def.role_of(&event.event_type) else {
            self.actions.push(Action::Rejected {
                reason: format!(
                    "saga {} does not consume {}",
                    self.def.name(),
                    bounded(&event.event_type, 256)
                ),
            });
            return;
        };
        if event.correlation_id != self.state.correlation_id {
            self.actions.push(Action::Rejected {
                reason: format!(
                    "event {key} belongs to {}, not {}",
                    bounded(&event.correlation_id, 256),
                    self.state.correlation_id
                ),
            });
            return;
        }
        let event = match self.kept(role, event) {
            Ok(e) => e,
            Err(why) => {
                self.reject(why);
                return;
            }
        };
        let event = &event;
        self.remember(&event.id);
        if self.state.status == Status::Pending && role != Role::Start {
            let buffered = self
                .state
                .pending
                .iter()
                .fold(json_size(&event.data), |n, e| {
                    n.saturating_add(json_size(&e.data))
                });
            if self.state.pending.len() >= PENDING_CAPACITY || buffered > MAX_PENDING_BYTES {
                self.reject(format!(
                    "{} {} arrived before the start event and the buffer is full",
                    event.event_type, event.id
                ));
                return;
            }
            self.note(
                TimelineKind::Buffered,
                format!("{} {} (before the start event)", event.event_type, event.id),
            );
            if self.state.pending.is_empty() {
                // A start event that never comes must not leave the saga waiting forever: the
                // saga's deadline (or DEFAULT_START_WITHIN) counts from its first event until
                // the start moves it.
                let within = self.def.deadline().unwrap_or(DEFAULT_START_WITHIN);
                self.set_deadline(DeadlineKind::Saga, self.now.plus(within));
            }
            self.state.pending.push(event.clone());
            return;
        }
        self.note(
            TimelineKind::Received,
            format!("{} {}", event.event_type, event.id),
        );
        self.dispatch(role, event);
    }

    /// Acts on an event whose role is known (also used to replay buffered events).
    pub(crate) fn dispatch(&mut self, role: Role, event: &Event) {
        match role {
            Role::Start => self.on_start(event),
            Role::Success(i) => self.on_success(i, event),
            Role::Failure(i) => self.on_failure(i, event),
            Role::Ack(i) => self.on_ack(i, event),
        }
    }

    fn on_start(&mut self, event: &Event) {
        if self.state.started_at.is_some() || self.state.status != Status::Pending {
            self.note(
                TimelineKind::Ignored,
                format!("start event {} again; the saga has started", event.id),
            );
            return;
        }
        let def = self.def;
        self.state.started_at = Some(self.now);
        self.state.start_data = Some(project(&event.data, def.start_collects()));
        self.set_status(Status::Running, format!("started by {}", event.event_type));
        match def.deadline() {
            Some(d) => self.set_deadline(DeadlineKind::Saga, self.now.plus(d)),
            // The wait for the start (DEFAULT_START_WITHIN) is over.
            None => self.cancel_deadline(&DeadlineKind::Saga),
        }
        for step in def.steps() {
            if let Some(d) = step.deadline
                && d.from == DeadlineFrom::SagaStart
            {
                self.set_deadline(
                    DeadlineKind::Step(step.name.clone()),
                    self.now.plus(d.within),
                );
            }
        }
        self.start_ready_steps();
        let buffered = std::mem::take(&mut self.state.pending);
        // What had already happened before the start is applied before what went wrong:
        // successes (and acknowledgements) first, then failures. So an abort decided during
        // the replay knows every success the saga had been told of, and compensates it before
        // the cancellation rather than after it.
        let (before, after): (Vec<&Event>, Vec<&Event>) = buffered
            .iter()
            .partition(|e| !matches!(def.role_of(&e.event_type), Some(Role::Failure(_))));
        for e in before.into_iter().chain(after) {
            if let Some(role) = def.role_of(&e.event_type) {
                self.note(
                    TimelineKind::Received,
                    format!("{} {} (buffered)", e.event_type, e.id),
                );
                self.dispatch(role, e);
            }
        }
        self.check_completed();
    }

    /// Starts every waiting step whose dependencies are all done (while running).
    fn start_ready_steps(&mut self) {
        if self.state.status != Status::Running {
            return;
        }
        let def = self.def;
        for (i, step) in def.steps().iter().enumerate() {
            if self.state.steps[i].status != StepStatus::Waiting {
                continue;
            }
            let ready = step.after.iter().all(|&d| {
                matches!(
                    self.state.steps[d].status,
                    StepStatus::Completed | StepStatus::Skipped
                )
            });
            if !ready {
                continue;
            }
            self.state.steps[i].status = StepStatus::Running;
            self.state.steps[i].started_at = Some(self.now);
            self.note(
                TimelineKind::Status,
                format!("step \"{}\" started", step.name),
            );
            if let Some(d) = step.deadline
                && d.from == DeadlineFrom::StepStart
            {
                self.set_deadline(
                    DeadlineKind::Step(step.name.clone()),
                    self.now.plus(d.within),
                );
            }
            if let Some(e) = &step.on_start {
                self.emit(e, Some(&step.name), EmitKind::StepStart, 1);
            }
        }
    }

    fn on_success(&mut self, i: usize, event: &Event) {
        let def = self.def;
        let name = def.steps()[i].name.clone();
        let step = &self.state.steps[i];
        if matches!(step.status, StepStatus::Completed | StepStatus::Skipped) {
            let what = format!(
                "{} for step \"{name}\", which is already {:?}",
                event.event_type, step.status
            );
            self.note(TimelineKind::Ignored, what.to_lowercase());
            return;
        }
        let late = !matches!(self.state.status, Status::Running);
        if late && self.state.status == Status::Completed {
            self.note(
                TimelineKind::Ignored,
                format!("{} after the saga completed", event.event_type),
            );
            return;
        }
        let already_compensated = step.status == StepStatus::Unknown
            && step.compensation != CompensationState::NotStarted;
        self.state.steps[i].needs_operator = None;
        self.mark_completed(i, event, late);
        if already_compensated {
            // Compensated at its deadline (its outcome unknown), or declared handled by an
            // operator: not compensated again.
            let how = if self.state.steps[i].compensation == CompensationState::Skipped {
                "an operator declared it handled"
            } else {
                "its compensation was emitted then"
            };
            self.note(
                TimelineKind::Status,
                format!(
                    "step \"{name}\" completed after its deadline; {how}, so it is not compensated again"
                ),
            );
            self.advance_compensation();
        } else if late {
            let what = if self.state.abort_emitted {
                format!(
                    "step \"{name}\" completed after the saga was compensated: a late compensation undoes it; the saga stays {}",
                    self.state.status
                )
            } else {
                format!("step \"{name}\" completed after the saga was aborted; compensating it")
            };
            self.note(TimelineKind::Status, what);
            self.advance_compensation();
        } else {
            self.note(TimelineKind::Status, format!("step \"{name}\" completed"));
            self.start_ready_steps();
            self.check_completed();
        }
    }

    /// Records step `i` as completed by `event` (`late`: after the saga was aborted).
    pub(crate) fn mark_completed(&mut self, i: usize, event: &Event, late: bool) {
        let name = self.def.steps()[i].name.clone();
        self.state.completions += 1;
        let rank = self.state.completions;
        let s = &mut self.state.steps[i];
        s.status = StepStatus::Completed;
        s.finished_at = Some(self.now);
        s.completion_rank = Some(rank);
        s.data = Some(project(&event.data, &self.def.steps()[i].collects));
        s.late = late;
        self.cancel_deadline(&DeadlineKind::Step(name));
    }

    /// After an operator skipped (or approved) a running step.
    pub(crate) fn after_skip(&mut self) {
        self.start_ready_steps();
        self.check_completed();
    }

    fn on_failure(&mut self, i: usize, event: &Event) {
        let name = self.def.steps()[i].name.clone();
        let status = self.state.steps[i].status;
        if matches!(status, StepStatus::Completed | StepStatus::Skipped) {
            self.note(
                TimelineKind::Ignored,
                format!(
                    "{} for step \"{name}\", which already completed",
                    event.event_type
                ),
            );
            return;
        }
        self.state.steps[i].status = StepStatus::Failed;
        self.state.steps[i].finished_at = Some(self.now);
        self.state.steps[i].needs_operator = None;
        self.cancel_deadline(&DeadlineKind::Step(name.clone()));
        let detail = event
            .data
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| format!(" ({})", bounded(r, MAX_REASON_BYTES)))
            .unwrap_or_default();
        let reason = format!("step \"{name}\" failed: {}{detail}", event.event_type);
        match self.state.status {
            Status::Running => self.abort(reason),
            Status::Compensating | Status::NeedsOperator => {
                // An awaited step (or one whose outcome was unknown) answered: nothing to undo.
                let what = if status == StepStatus::Running {
                    "an awaited step answered; nothing to undo"
                } else {
                    "nothing to undo"
                };
                self.note(TimelineKind::Status, format!("{reason}: {what}"));
                self.advance_compensation();
            }
            _ => {
                self.note(
                    TimelineKind::Ignored,
                    format!("{reason}, but the saga is {}", self.state.status),
                );
            }
        }
    }

    /// Completes the saga when every step is done.
    fn check_completed(&mut self) {
        if self.state.status != Status::Running {
            return;
        }
        let all_done = self
            .state
            .steps
            .iter()
            .all(|s| matches!(s.status, StepStatus::Completed | StepStatus::Skipped));
        if !all_done {
            return;
        }
        self.cancel_all_deadlines();
        self.set_status(Status::Completed, "every step completed".into());
        if let Some(e) = self.def.on_complete() {
            self.emit(e, None, EmitKind::Completed, 1);
        }
    }

    pub(crate) fn set_deadline(&mut self, kind: DeadlineKind, at: Millis) {
        self.state.deadlines.retain(|d| d.kind != kind);
        let d = Deadline { kind, at };
        self.state.deadlines.push(d.clone());
        self.actions.push(Action::SetDeadline(d));
    }

    pub(crate) fn cancel_deadline(&mut self, kind: &DeadlineKind) {
        let before = self.state.deadlines.len();
        self.state.deadlines.retain(|d| &d.kind != kind);
        if self.state.deadlines.len() != before {
            self.actions
                .push(Action::CancelDeadline { kind: kind.clone() });
        }
    }

    /// Cancels the saga's and the steps' deadlines (not the compensations').
    pub(crate) fn cancel_all_deadlines(&mut self) {
        let kinds: Vec<DeadlineKind> = self
            .state
            .deadlines
            .iter()
            .filter(|d| !matches!(d.kind, DeadlineKind::CompensationAck(_)))
            .map(|d| d.kind.clone())
            .collect();
        for k in kinds {
            self.cancel_deadline(&k);
        }
    }
}

/// How an event id is remembered: as it is, or as a digest when longer than
/// [`MAX_EVENT_ID_BYTES`] or holding control characters.
pub(crate) fn seen_key(id: &str) -> String {
    if id.len() <= MAX_EVENT_ID_BYTES && !id.chars().any(char::is_control) {
        id.to_owned()
    } else {
        format!(
            "~{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes())
        )
    }
}

/// Bytes of `v` as JSON (counted, not allocated).
pub(crate) fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    match serde_json::to_writer(&mut n, v) {
        Ok(()) => n.0,
        Err(_) => usize::MAX,
    }
}
