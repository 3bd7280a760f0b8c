//! Compensation: undoing completed steps once a saga is aborted.
//!
//! Rules (decision 7):
//! - a step's compensation is emitted once every completed step that (transitively) comes
//!   after it has settled its own compensation — so steps are compensated in reverse order of
//!   completion, and steps that ran in parallel are compensated in parallel;
//! - a step that never completed is not compensated; a success that arrives after the saga
//!   gave up is compensated at once;
//! - each compensation is emitted with one deterministic event id; without an acknowledgement
//!   by its `ack_deadline` it is re-emitted (same id) up to `max_retries` times, then the saga
//!   needs an operator ([`crate::Status::NeedsOperator`]) — never silence;
//! - when every completed step is compensated, `on_abort` is emitted once and the saga is
//!   [`crate::Status::Compensated`].

use crate::apply::Cx;
use crate::deadlines::DeadlineKind;
use crate::definition::Role;
use crate::input::{EmitKind, Event};
use crate::state::{CompensationState, Status, StepStatus, TimelineKind};

impl Cx<'_> {
    /// Gives up: stops the steps and starts compensating. Only from Pending or Running.
    pub(crate) fn abort(&mut self, reason: String) {
        if !matches!(self.state.status, Status::Running | Status::Pending) {
            return;
        }
        let was_pending = self.state.status == Status::Pending;
        self.state.abort_reason = Some(reason.clone());
        self.cancel_all_deadlines();
        for s in &mut self.state.steps {
            if s.status == StepStatus::Running {
                s.status = StepStatus::Abandoned;
            }
        }
        self.set_status(Status::Compensating, reason);
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
                if s.status != StepStatus::Completed
                    || s.compensation != CompensationState::NotStarted
                {
                    continue;
                }
                // Late successes are compensated at once; others wait for their dependents.
                let blocked = !s.late
                    && step.dependents.iter().any(|&d| {
                        let dep = &self.state.steps[d];
                        dep.status == StepStatus::Completed && !dep.compensation.is_settled()
                    });
                if blocked {
                    continue;
                }
                progressed = true;
                match &step.compensation {
                    None => {
                        self.state.steps[i].compensation = CompensationState::Skipped;
                        self.note(
                            TimelineKind::Status,
                            format!("step \"{}\" has no compensation", step.name),
                        );
                    }
                    Some(c) => {
                        let event_id =
                            self.emit(&c.emit, Some(&step.name), EmitKind::Compensation, 1);
                        if let (Some(_), Some(at)) = (&c.ack, self.state.steps[i].early_ack) {
                            self.state.steps[i].compensation =
                                CompensationState::Acknowledged { event_id, at };
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
                }
            }
            if !progressed {
                break;
            }
        }
        self.settle_status();
    }

    /// Compensating, NeedsOperator or Compensated, from the compensations' states.
    fn settle_status(&mut self) {
        let completed = || {
            self.state
                .steps
                .iter()
                .filter(|s| s.status == StepStatus::Completed)
        };
        let stuck: Vec<String> = completed()
            .filter_map(|s| match &s.compensation {
                CompensationState::Stuck { reason, .. } => {
                    Some(format!("step \"{}\": {reason}", s.name))
                }
                _ => None,
            })
            .collect();
        let all_settled = completed().all(|s| s.compensation.is_settled());
        if !stuck.is_empty() {
            self.set_status(Status::NeedsOperator, stuck.join("; "));
        } else if all_settled {
            self.set_status(
                Status::Compensated,
                "every completed step is compensated".into(),
            );
            if !self.state.abort_emitted {
                self.state.abort_emitted = true;
                if let Some(e) = self.def.on_abort() {
                    self.emit(e, None, EmitKind::Aborted, 1);
                }
            }
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
                    describe(other)
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

fn describe(c: &CompensationState) -> &'static str {
    match c {
        CompensationState::NotStarted => "not started",
        CompensationState::Emitted { .. } => "emitted",
        CompensationState::Done { .. } => "done",
        CompensationState::Acknowledged { .. } => "already acknowledged",
        CompensationState::Stuck { .. } => "stuck",
        CompensationState::Skipped => "skipped",
    }
}
