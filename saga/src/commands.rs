//! Operator commands: abort, retry a stuck compensation, skip a step, resume, and approve or
//! reject a step that waits for a person.

use crate::apply::Cx;
use crate::input::Command;
use crate::state::{CompensationState, Status, StepStatus, TimelineKind};
use crate::time::DeadlineKind;

impl Cx<'_> {
    pub(crate) fn on_command(&mut self, command: &Command) {
        let command = &command.bounded();
        self.note(TimelineKind::Command, format!("{command:?}"));
        match command {
            Command::Abort { reason } => self.cmd_abort(reason),
            Command::Retry { step } => self.cmd_retry(step),
            Command::Skip { step } => self.cmd_skip(step),
            Command::Resume => self.cmd_resume(),
            Command::Approve { step, reason } => self.cmd_decide(step, reason, true),
            Command::Reject { step, reason } => self.cmd_decide(step, reason, false),
        }
    }

    /// Approve (`approved`) or reject a started step of a running saga, as its success or
    /// failure event would.
    fn cmd_decide(&mut self, step: &str, reason: &str, approved: bool) {
        let Some(i) = self.step_or_reject(step) else {
            return;
        };
        let verb = if approved { "approve" } else { "reject" };
        let (saga, status) = (self.state.status, self.state.steps[i].status);
        if saga != Status::Running || status != StepStatus::Running {
            self.reject(
                format!("can {verb} only a started step of a running saga; step \"{step}\" is {status:?} and the saga is {saga}")
                    .to_lowercase(),
            );
            return;
        }
        if approved {
            let decision = crate::Event {
                id: format!("operator-approval:{step}"),
                event_type: "operator approval".into(),
                correlation_id: self.state.correlation_id.clone(),
                time: self.now,
                data: serde_json::Value::Object(serde_json::Map::new()),
            };
            self.state.steps[i].needs_operator = None;
            self.mark_completed(i, &decision, false);
            self.note(
                TimelineKind::Status,
                format!("step \"{step}\" approved by an operator: {reason}"),
            );
            self.after_skip();
        } else {
            self.state.steps[i].status = StepStatus::Failed;
            self.state.steps[i].finished_at = Some(self.now);
            self.state.steps[i].needs_operator = None;
            self.cancel_deadline(&DeadlineKind::Step(step.to_owned()));
            self.abort(format!("step \"{step}\" rejected by an operator: {reason}"));
        }
    }

    fn step_or_reject(&mut self, step: &str) -> Option<usize> {
        let found = self.def.step_index(step);
        if found.is_none() {
            self.reject(format!("saga {} has no step \"{step}\"", self.def.name()));
        }
        found
    }

    fn cmd_abort(&mut self, reason: &str) {
        let status = self.state.status;
        if !matches!(status, Status::Pending | Status::Running) {
            self.reject(format!("cannot abort a saga that is {status}"));
            return;
        }
        self.abort(format!("aborted by an operator: {reason}"));
    }

    fn cmd_retry(&mut self, step: &str) {
        let Some(i) = self.step_or_reject(step) else {
            return;
        };
        let s = &self.state.steps[i];
        match s.compensation {
            CompensationState::Emitted { .. } | CompensationState::Stuck { .. } => {
                self.reemit(i, 1);
                self.recompute();
            }
            CompensationState::NotStarted
                if s.status == StepStatus::Unknown && s.needs_operator.is_some() =>
            {
                // The operator decides: compensate a step whose outcome is unknown.
                self.state.steps[i].needs_operator = None;
                self.start_compensation(i);
                self.recompute();
            }
            ref other => {
                let what = format!("step \"{step}\" has no compensation to retry ({other:?})");
                self.reject(what);
            }
        }
    }

    fn cmd_skip(&mut self, step: &str) {
        let Some(i) = self.step_or_reject(step) else {
            return;
        };
        let s = &self.state.steps[i];
        match self.state.status {
            Status::Running if !matches!(s.status, StepStatus::Completed | StepStatus::Skipped) => {
                self.state.steps[i].status = StepStatus::Skipped;
                self.state.steps[i].finished_at = Some(self.now);
                self.cancel_deadline(&DeadlineKind::Step(step.to_owned()));
                self.after_skip();
            }
            Status::Compensating | Status::NeedsOperator
                if s.status == StepStatus::Completed && !s.compensation.is_settled() =>
            {
                self.state.steps[i].compensation = CompensationState::Skipped;
                self.cancel_deadline(&DeadlineKind::CompensationAck(step.to_owned()));
                self.recompute();
            }
            Status::Compensating | Status::NeedsOperator
                if s.status == StepStatus::Unknown && !s.compensation.is_settled() =>
            {
                // Its outcome is unknown: the operator declares it did nothing, or undid it.
                self.state.steps[i].needs_operator = None;
                self.state.steps[i].compensation = CompensationState::Skipped;
                self.cancel_deadline(&DeadlineKind::CompensationAck(step.to_owned()));
                self.recompute();
            }
            Status::Compensating | Status::NeedsOperator if s.status == StepStatus::Running => {
                // An awaited step: stop waiting for it (a later success is still compensated).
                self.state.steps[i].status = StepStatus::Abandoned;
                self.state.steps[i].finished_at = Some(self.now);
                self.cancel_deadline(&DeadlineKind::Step(step.to_owned()));
                self.recompute();
            }
            status => {
                let what = format!(
                    "cannot skip step \"{step}\" ({:?}) of a saga that is {status}",
                    s.status
                );
                self.reject(what.to_lowercase());
            }
        }
    }

    fn cmd_resume(&mut self) {
        if self.state.status != Status::NeedsOperator {
            let status = self.state.status;
            self.reject(format!(
                "only a saga that needs an operator can resume; this one is {status}"
            ));
            return;
        }
        let def = self.def;
        for (i, step) in def.steps().iter().enumerate() {
            if let CompensationState::Stuck { event_id, .. } = self.state.steps[i].compensation
                && step.compensation.is_some()
            {
                self.await_ack(i, event_id, 1);
            }
        }
        self.recompute();
    }
}
