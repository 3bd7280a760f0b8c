//! Compensation: undoing completed steps once a saga is aborted.
//!
//! Rules (decision 7):
//! - on abort, steps in flight (started, no answer) are awaited up to their deadline (a step
//!   without one, up to the saga's deadline): a success that arrives is compensated, a failure
//!   needs nothing. A step with no compensation is not awaited — its outcome changes nothing;
//! - a started step that has not answered by its deadline has an unknown outcome: its
//!   compensation is emitted anyway when the definition says it is safe for that
//!   (`on_unknown_outcome = "compensate"`), otherwise the saga needs an operator for it;
//! - a step's compensation is emitted once every completed step that (transitively) comes
//!   after it has settled its own compensation — so steps are compensated in reverse order of
//!   completion, and steps that ran in parallel are compensated in parallel. Successes that
//!   arrive after the abort are compensated at once;
//! - each compensation is emitted with one deterministic event id; without an acknowledgement
//!   by its `ack_deadline` it is re-emitted (same id) up to `max_retries` times, then the saga
//!   needs an operator ([`crate::Status::NeedsOperator`]) — never silence;
//! - only when no step is awaited any more and every compensation is settled is the saga
//!   [`crate::Status::Compensated`] and `on_abort` emitted, once;
//! - the saga then stays terminal: a success that arrives even later is compensated (a late
//!   compensation, flagged on its first [`crate::Emit`]) and the status stays compensated; if
//!   that compensation is never acknowledged the saga needs an operator, and goes back to
//!   compensated once it is settled — never to compensating.

use crate::apply::Cx;
use crate::definition::{Role, UnknownOutcome};
use crate::input::{Action, EmitKind, Event};
use crate::state::{CompensationState, Status, StepStatus, TimelineKind};
use crate::time::DeadlineKind;
use crate::time::describe;

impl Cx<'_> {
    /// Gives up: stops the steps and starts compensating. Only from Pending or Running.
    pub(crate) fn abort(&mut self, reason: String) {
        self.abort_with(reason, None);
    }

    /// Gives up; `timed_out` is the step whose deadline just passed without an answer (its
    /// outcome is unknown), if that is why.
    pub(crate) fn abort_with(&mut self, reason: String, timed_out: Option<usize>) {
        if !matches!(self.state.status, Status::Running | Status::Pending) {
            return;
        }
        let was_pending = self.state.status == Status::Pending;
        self.state.abort_reason = Some(reason.clone());
        let saga_deadline = self
            .state
            .deadlines
            .iter()
            .find(|d| d.kind == DeadlineKind::Saga)
            .map(|d| d.at);
        let def = self.def;
        let mut unknown = Vec::new();
        for (i, step) in def.steps().iter().enumerate() {
            let kind = DeadlineKind::Step(step.name.clone());
            if self.state.steps[i].status != StepStatus::Running {
                self.cancel_deadline(&kind);
            } else if step.compensation.is_none() {
                // Whatever it does, there is nothing to undo: not awaited.
                self.state.steps[i].status = StepStatus::Abandoned;
                self.cancel_deadline(&kind);
            } else if timed_out == Some(i) {
                unknown.push(i);
            } else if !self.state.deadlines.iter().any(|d| d.kind == kind) {
                // Awaited up to the saga's deadline when it has none of its own.
                match saga_deadline {
                    Some(at) => self.set_deadline(kind, at),
                    None => unknown.push(i),
                }
            }
        }
        self.cancel_deadline(&DeadlineKind::Saga);
        self.set_status(Status::Compensating, reason);
        let awaited = self.state.awaiting_steps().join(", ");
        if !awaited.is_empty() {
            self.note(
                TimelineKind::Status,
                format!("waiting for the steps in flight (up to their deadlines): {awaited}"),
            );
        }
        for i in unknown {
            self.outcome_unknown(i, false);
        }
        if was_pending {
            // Successes buffered before a start that never came are compensated like any
            // late success.
            let buffered = std::mem::take(&mut self.state.pending);
            for e in &buffered {
                if let Some(Role::Success(i)) = self.def.role_of(&e.event_type)
                    && self.state.steps[i].status != StepStatus::Completed
                {
                    self.note(
                        TimelineKind::Status,
                        format!(
                            "step \"{}\" completed before the saga started; compensating it",
                            self.state.steps[i].name
                        ),
                    );
                    self.mark_completed(i, e, true);
                }
            }
        }
        self.advance_compensation();
    }

    /// Step `i` started and did not answer by its deadline: its outcome is unknown. It is
    /// compensated anyway when its compensation is safe for that, else it needs an operator.
    /// `late`: the saga was already aborting (its compensation goes at once).
    pub(crate) fn outcome_unknown(&mut self, i: usize, late: bool) {
        let step = &self.def.steps()[i];
        let name = step.name.clone();
        let within = step.deadline.map(|d| describe(d.within));
        let s = &mut self.state.steps[i];
        s.finished_at = Some(self.now);
        s.late = late;
        let Some(c) = &step.compensation else {
            s.status = StepStatus::Abandoned;
            self.cancel_deadline(&DeadlineKind::Step(name));
            return;
        };
        s.status = StepStatus::Unknown;
        let by = match within {
            Some(w) => format!("by its deadline ({w})"),
            None => "by the saga's deadline".to_owned(),
        };
        let what = match c.on_unknown_outcome {
            UnknownOutcome::Compensate => format!(
                "step \"{name}\" did not answer {by}: its outcome is unknown; its compensation is safe for that (on_unknown_outcome = \"compensate\") and is emitted"
            ),
            UnknownOutcome::Operator => {
                s.needs_operator = Some(format!(
                    "no answer {by}, so its outcome is unknown, and its compensation is not marked safe for that (on_unknown_outcome = \"operator\"): retry to compensate it anyway, or skip it if it did nothing or was undone by hand"
                ));
                format!(
                    "step \"{name}\" did not answer {by}: its outcome is unknown; it needs an operator"
                )
            }
        };
        self.cancel_deadline(&DeadlineKind::Step(name));
        self.note(TimelineKind::Status, what);
    }

    /// Whether step `i`'s compensation is part of undoing the saga: it completed, or its
    /// outcome is unknown and it is compensated anyway, or its compensation was emitted.
    fn compensates(&self, i: usize) -> bool {
        let s = &self.state.steps[i];
        s.status == StepStatus::Completed
            || (s.status == StepStatus::Unknown && s.needs_operator.is_none())
            || s.compensation.event_id().is_some()
    }

    /// Emits every compensation that may go now, then settles the saga's status.
    pub(crate) fn advance_compensation(&mut self) {
        if matches!(
            self.state.status,
            Status::Pending | Status::Running | Status::Completed
        ) {
            return;
        }
        let def = self.def;
        loop {
            let mut progressed = false;
            for (i, step) in def.steps().iter().enumerate() {
                let s = &self.state.steps[i];
                if !self.compensates(i) || s.compensation != CompensationState::NotStarted {
                    continue;
                }
                // Late successes are compensated at once; others wait for their dependents.
                let blocked = !s.late
                    && step.dependents.iter().any(|&d| {
                        self.compensates(d) && !self.state.steps[d].compensation.is_settled()
                    });
                if blocked {
                    continue;
                }
                progressed = true;
                self.start_compensation(i);
            }
            if !progressed {
                break;
            }
        }
        self.settle_status();
    }

    /// Emits step `i`'s compensation for the first time (or records that it has none).
    pub(crate) fn start_compensation(&mut self, i: usize) {
        let step = &self.def.steps()[i];
        let Some(c) = &step.compensation else {
            self.state.steps[i].compensation = CompensationState::Skipped;
            self.note(
                TimelineKind::Status,
                format!("step \"{}\" has no compensation", step.name),
            );
            return;
        };
        let late = self.state.abort_emitted;
        let event_id = self.emit(&c.emit, Some(&step.name), EmitKind::Compensation, 1);
        if late {
            if let Some(Action::Emit(e)) = self.actions.last_mut() {
                e.late_compensation = true;
            }
            self.note(
                TimelineKind::Status,
                format!(
                    "late compensation of step \"{}\": the saga stays {}",
                    step.name, self.state.status
                ),
            );
        }
        if let (Some(_), Some(at)) = (&c.ack, self.state.steps[i].early_ack) {
            self.state.steps[i].compensation = CompensationState::Acknowledged { event_id, at };
            self.note(
                TimelineKind::Status,
                format!(
                    "step \"{}\"'s compensation was acknowledged before it was emitted here (a repeated decision); counted as acknowledged",
                    step.name
                ),
            );
        } else if c.ack.is_some() {
            self.await_ack(i, event_id, 1);
        } else {
            self.state.steps[i].compensation = CompensationState::Done { event_id };
        }
    }

    /// Compensating, NeedsOperator or Compensated, from the steps' and compensations' states.
    /// A saga that was compensated once only moves between Compensated and NeedsOperator.
    fn settle_status(&mut self) {
        let stuck: Vec<String> = self
            .state
            .needs_operator()
            .into_iter()
            .map(|(step, reason)| format!("step \"{step}\": {reason}"))
            .collect();
        if !stuck.is_empty() {
            self.set_status(Status::NeedsOperator, stuck.join("; "));
            return;
        }
        if self.state.abort_emitted {
            self.set_status(
                Status::Compensated,
                "nothing needs an operator any more".into(),
            );
            return;
        }
        let awaiting = self.state.awaiting_steps().join(", ");
        let all_settled = (0..self.state.steps.len())
            .filter(|&i| self.compensates(i))
            .all(|i| self.state.steps[i].compensation.is_settled());
        if awaiting.is_empty() && all_settled {
            self.set_status(
                Status::Compensated,
                "every started step is resolved and every compensation settled".into(),
            );
            self.state.abort_emitted = true;
            if let Some(e) = self.def.on_abort() {
                self.emit(e, None, EmitKind::Aborted, 1);
            }
        } else if !awaiting.is_empty() {
            self.set_status(
                Status::Compensating,
                format!("waiting for steps in flight: {awaiting}"),
            );
        } else {
            self.set_status(Status::Compensating, "compensations in progress".into());
        }
    }

    /// A compensation's acknowledgement arrived.
    pub(crate) fn on_ack(&mut self, i: usize, event: &Event) {
        let name = self.def.steps()[i].name.clone();
        let event_id = match &self.state.steps[i].compensation {
            CompensationState::Emitted { event_id, .. }
            | CompensationState::Stuck { event_id, .. } => *event_id,
            CompensationState::NotStarted if self.state.steps[i].early_ack.is_none() => {
                // Under at-least-once delivery a compensation can be emitted, acknowledged, and
                // the decision repeated after a crash before the state recorded it: keep the
                // acknowledgement for when the compensation is emitted again.
                self.state.steps[i].early_ack = Some(self.now);
                self.note(
                    TimelineKind::Buffered,
                    format!(
                        "{} for step \"{name}\" arrived before its compensation was emitted; kept",
                        event.event_type
                    ),
                );
                return;
            }
            other => {
                let what = format!(
                    "{} for step \"{name}\", whose compensation is {}",
                    event.event_type,
                    describe_compensation(other)
                );
                self.note(TimelineKind::Ignored, what);
                return;
            }
        };
        self.state.steps[i].compensation = CompensationState::Acknowledged {
            event_id,
            at: self.now,
        };
        self.cancel_deadline(&DeadlineKind::CompensationAck(name.clone()));
        self.note(
            TimelineKind::Status,
            format!("step \"{name}\"'s compensation acknowledged"),
        );
        self.advance_compensation();
    }

    /// A compensation was not acknowledged in time: re-emit it, or escalate.
    pub(crate) fn on_ack_deadline(&mut self, i: usize) {
        let step = &self.def.steps()[i];
        let Some(c) = &step.compensation else {
            return;
        };
        let CompensationState::Emitted { event_id, attempts } = self.state.steps[i].compensation
        else {
            return;
        };
        if attempts <= c.max_retries {
            self.reemit(i, attempts + 1);
        } else {
            let ack = c.ack.as_deref().unwrap_or("an acknowledgement");
            let reason = format!(
                "{} was not acknowledged by {ack} after {attempts} emissions",
                c.emit.event
            );
            self.state.steps[i].compensation = CompensationState::Stuck {
                event_id,
                attempts,
                reason,
            };
            self.settle_status();
        }
    }

    /// Emits a step's compensation again with the same event id, as attempt `attempt`.
    pub(crate) fn reemit(&mut self, i: usize, attempt: u32) {
        let step = &self.def.steps()[i];
        let Some(c) = &step.compensation else {
            return;
        };
        let event_id = self.emit(&c.emit, Some(&step.name), EmitKind::Compensation, attempt);
        self.await_ack(i, event_id, attempt);
    }

    /// Step `i`'s compensation (emission `attempts`) now waits for its acknowledgement.
    pub(crate) fn await_ack(&mut self, i: usize, event_id: uuid::Uuid, attempts: u32) {
        let step = &self.def.steps()[i];
        let Some(c) = &step.compensation else {
            return;
        };
        self.state.steps[i].compensation = CompensationState::Emitted { event_id, attempts };
        self.set_deadline(
            DeadlineKind::CompensationAck(step.name.clone()),
            self.now.plus(c.ack_deadline),
        );
    }

    /// Re-checks which compensations may go and the resulting status (after a command).
    pub(crate) fn recompute(&mut self) {
        self.advance_compensation();
    }
}

fn describe_compensation(c: &CompensationState) -> &'static str {
    match c {
        CompensationState::NotStarted => "not started",
        CompensationState::Emitted { .. } => "emitted",
        CompensationState::Done { .. } => "done",
        CompensationState::Acknowledged { .. } => "already acknowledged",
        CompensationState::Stuck { .. } => "stuck",
        CompensationState::Skipped => "skipped",
    }
}
