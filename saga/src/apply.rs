//! The pure state machine: `apply(definition, state, input, now) -> actions`.
//!
//! No I/O and no clock: everything the saga decides follows from its state, the input and
//! `now`. The runtime makes the new state durable, then performs the actions in order.
//! Compensation ([`crate::compensation`]), deadlines ([`crate::deadlines`]) and operator
//! commands ([`crate::commands`]) extend the same [`Cx`].

use serde_json::Value;

use crate::deadlines::{Deadline, DeadlineKind, Millis};
use crate::definition::{DeadlineFrom, Definition, Emission, Role, project};
use crate::input::{Action, Emit, EmitKind, Event, Input};
use crate::mapping::{event_id, render};
use crate::state::{PENDING_CAPACITY, SEEN_CAPACITY, SagaState, Status, StepStatus, TimelineKind};

/// Applies one input to one saga and returns what the runtime must do.
///
/// `def` must be the definition the state is pinned to (same name and version; resolve it
/// with [`crate::Definitions::for_state`]); otherwise the input is rejected. Duplicate events
/// (an id already seen) change nothing and return no action.
pub fn apply(def: &Definition, state: &mut SagaState, input: &Input, now: Millis) -> Vec<Action> {
    if state.definition != def.name() || state.version != def.version() {
        return vec![Action::Rejected {
            reason: format!(
                "saga {} is pinned to {} v{}, not {} v{}",
                state.saga_id,
                state.definition,
                state.version,
                def.name(),
                def.version()
            ),
        }];
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
        }));
        id
    }

    fn remember(&mut self, id: &str) {
        if self.state.seen.len() >= SEEN_CAPACITY {
            self.state.seen.pop_front();
        }
        self.state.seen.push_back(id.to_owned());
    }

    fn on_event(&mut self, event: &Event) {
        if self.state.seen.iter().any(|s| s == &event.id) {
            return; // a duplicate changes nothing
        }
        let Some(role) = self.def.role_of(&event.event_type) else {
            self.actions.push(Action::Rejected {
                reason: format!(
                    "saga {} does not consume {}",
                    self.def.name(),
                    event.event_type
                ),
            });
            return;
        };
        if event.correlation_id != self.state.correlation_id {
            self.actions.push(Action::Rejected {
                reason: format!(
                    "event {} belongs to {}, not {}",
                    event.id, event.correlation_id, self.state.correlation_id
                ),
            });
            return;
        }
        self.remember(&event.id);
        if self.state.status == Status::Pending && role != Role::Start {
            if self.state.pending.len() >= PENDING_CAPACITY {
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
            if self.state.pending.is_empty()
                && let Some(d) = self.def.deadline()
            {
                // A start event that never comes must not leave the saga waiting forever: the
                // saga's deadline counts from its first event until the start moves it.
                self.set_deadline(DeadlineKind::Saga, self.now.plus(d));
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
        if let Some(d) = def.deadline() {
            self.set_deadline(DeadlineKind::Saga, self.now.plus(d));
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
        for e in &buffered {
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
        self.mark_completed(i, event, late);
        if late {
            self.note(
                TimelineKind::Status,
                format!("step \"{name}\" completed after the saga was aborted; compensating it"),
            );
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

    /// After an operator skipped a running step.
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
        self.cancel_deadline(&DeadlineKind::Step(name.clone()));
        let detail = event
            .data
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let reason = format!("step \"{name}\" failed: {}{detail}", event.event_type);
        if self.state.status == Status::Running {
            self.abort(reason);
        } else {
            self.note(
                TimelineKind::Ignored,
                format!("{reason}, but the saga is {}", self.state.status),
            );
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
