//! Scripts of inputs for the order saga's tests, run on the virtual-clock harness.

use std::time::Duration;

use choreo_saga::testing::SagaTest;
use choreo_saga::{Command, Definition};

use super::*;

/// One scripted input.
#[derive(Debug, Clone)]
pub enum Do {
    /// An event with a fresh id and the sample data of its type.
    Ev(&'static str),
    /// An event with this id (to send duplicates).
    EvId(&'static str, &'static str),
    /// Advance the virtual clock by this many seconds.
    Wait(u64),
    /// An operator command.
    Cmd(Command),
}
pub use Do::*;

pub fn run(def: &Definition, script: &[Do]) -> SagaTest {
    let mut t = SagaTest::new(def.clone());
    for step in script {
        t = match step {
            Ev(ty) => t.event(ty, data(ty)),
            EvId(id, ty) => t.event_with_id(id, ty, data(ty)),
            Wait(s) => t.advance(Duration::from_secs(*s)),
            Cmd(c) => t.command(c.clone()),
        };
    }
    t
}

pub fn abort(reason: &str) -> Do {
    Cmd(Command::Abort {
        reason: reason.into(),
    })
}
pub fn retry(step: &str) -> Do {
    Cmd(Command::Retry { step: step.into() })
}
pub fn skip(step: &str) -> Do {
    Cmd(Command::Skip { step: step.into() })
}

/// Inputs that leave the payment's refund unacknowledged until the saga needs an operator.
pub fn stuck_refund() -> Vec<Do> {
    vec![
        Ev(PLACED),
        Ev(AUTHORIZED),
        Ev(UNAVAILABLE),
        Wait(30),
        Wait(30),
        Wait(30),
        Wait(30),
    ]
}

pub fn with(mut base: Vec<Do>, more: Vec<Do>) -> Vec<Do> {
    base.extend(more);
    base
}
