//! The circuit breaker of one handler: when its downstream keeps failing, the handler's
//! partitions stop taking records — each worker holds the record in hand, and the dispatcher
//! pauses the partition once the worker's queue is full — instead of burning every record's
//! retries and flooding the dead-letter topic; after a cool-down one record probes
//! (half-open), and its success closes the breaker.
//!
//! It opens on `failures` retryable failures within `window` that involve at least two
//! different records: one record failing again and again is that record's problem, and keeps
//! the retry policy's course (retried, then dead-lettered); several records failing means the
//! handler's downstream is. While the breaker is open a failure does not count toward a
//! record's retry budget, so an outage dead-letters nothing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::telemetry;

/// When a handler's breaker opens, and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerPolicy {
    /// Retryable failures within `window` (from at least two records) that open the breaker.
    pub failures: u32,
    /// The window the failures are counted in.
    pub window: Duration,
    /// How long the breaker stays open before one record probes.
    pub cool_down: Duration,
}

impl Default for CircuitBreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The breaker's state (also the value of the `choreo_bus_circuit_state` gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Records are handled (gauge 0).
    Closed,
    /// Records wait until the cool-down ends (gauge 2).
    Open,
    /// One record probes; the others wait (gauge 1).
    HalfOpen,
}

/// What a worker may do with the record in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Call the handler.
    Go,
    /// Wait this long and ask again.
    Wait(Duration),
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    open_until: Instant,
    probing: bool,
    /// (when, which record) of recent retryable failures.
    recent: VecDeque<(Instant, (i32, i64))>,
}

/// One handler's breaker, shared by its partitions' workers.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    handler: String,
    policy: CircuitBreakerPolicy,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub(crate) fn new(handler: &str, policy: CircuitBreakerPolicy) -> Self {
        let b = Self {
            handler: handler.to_owned(),
            policy,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                open_until: Instant::now(),
                probing: false,
                recent: VecDeque::new(),
            }),
        };
        b.gauge(BreakerState::Closed);
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now.
    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Whether the record in hand may be handled now.
    pub(crate) fn admit(&self, now: Instant) -> Admission {
        let mut g = self.lock();
        match g.state {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open if now >= g.open_until => {
                g.state = BreakerState::HalfOpen;
                g.probing = true;
                drop(g);
                self.transition(BreakerState::Open, BreakerState::HalfOpen);
                Admission::Go
            }
            BreakerState::Open => Admission::Wait(g.open_until - now),
            BreakerState::HalfOpen if !g.probing => {
                g.probing = true;
                Admission::Go
            }
            // Another record probes: ask again shortly.
            BreakerState::HalfOpen => {
                Admission::Wait(self.policy.cool_down.min(Duration::from_secs(1)))
            }
        }
    }

    /// The handler succeeded.
    pub(crate) fn success(&self) {
        let mut g = self.lock();
        g.recent.clear();
        g.probing = false;
        let before = g.state;
        g.state = BreakerState::Closed;
        drop(g);
        if before != BreakerState::Closed {
            self.transition(before, BreakerState::Closed);
        }
    }

    /// The handler failed retryably on record (`partition`, `offset`); answers whether the
    /// breaker is open now (the failure then does not count toward the record's retries).
    pub(crate) fn failure(&self, now: Instant, record: (i32, i64)) -> bool {
        let mut g = self.lock();
        g.probing = false;
        match g.state {
            BreakerState::HalfOpen | BreakerState::Open => {
                let before = g.state;
                g.state = BreakerState::Open;
                g.open_until = now + self.policy.cool_down;
                drop(g);
                if before == BreakerState::HalfOpen {
                    self.transition(before, BreakerState::Open);
                }
                true
            }
            BreakerState::Closed => {
                g.recent.push_back((now, record));
                while g
                    .recent
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > self.policy.window)
                {
                    g.recent.pop_front();
                }
                let many = g.recent.len() >= self.policy.failures.max(1) as usize;
                let records = g
                    .recent
                    .iter()
                    .map(|(_, r)| r)
                    .collect::<std::collections::HashSet<_>>();
                if many && records.len() >= 2 {
                    g.state = BreakerState::Open;
                    g.open_until = now + self.policy.cool_down;
                    g.recent.clear();
                    drop(g);
                    self.transition(BreakerState::Closed, BreakerState::Open);
                    true
                } else {
                    false
                }
            }
        }
    }

    fn gauge(&self, state: BreakerState) {
        let v = match state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        metrics::gauge!(telemetry::CIRCUIT_STATE, "handler" => self.handler.clone()).set(v);
    }

    fn transition(&self, from: BreakerState, to: BreakerState) {
        self.gauge(to);
        metrics::counter!(telemetry::CIRCUIT_TRANSITIONS, "handler" => self.handler.clone(), "to" => state_name(to)).increment(1);
        match to {
            BreakerState::Open => {
                tracing::warn!(handler = %self.handler, from = state_name(from), cool_down_ms = self.policy.cool_down.as_millis() as u64, "circuit open: the handler's downstream keeps failing; its partitions wait instead of retrying and dead-lettering")
            }
            BreakerState::HalfOpen => {
                tracing::info!(handler = %self.handler, "circuit half-open: one record probes the handler's downstream")
            }
            BreakerState::Closed => {
                tracing::info!(handler = %self.handler, from = state_name(from), "circuit closed: the handler's downstream answers again")
            }
        }
    }
}

fn state_name(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CircuitBreakerPolicy {
        CircuitBreakerPolicy {
            failures: 3,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(30),
        }
    }

    #[test]
    fn one_record_failing_again_and_again_does_not_open_it() {
        let b = CircuitBreaker::new("h", policy());
        let t = Instant::now();
        for i in 0..10 {
            assert!(!b.failure(t + Duration::from_millis(i), (0, 7)));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t), Admission::Go);
    }

    #[test]
    fn failures_of_several_records_open_it_then_a_probe_closes_or_reopens_it() {
        let b = CircuitBreaker::new("h", policy());
        let t = Instant::now();
        assert!(!b.failure(t, (0, 1)));
        assert!(!b.failure(t, (1, 1)));
        assert!(
            b.failure(t, (0, 1)),
            "the third failure, of two records, opens it"
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.admit(t + Duration::from_secs(10)),
            Admission::Wait(Duration::from_secs(20))
        );
        // The cool-down is over: one probe, the others wait.
        assert_eq!(b.admit(t + Duration::from_secs(30)), Admission::Go);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(matches!(
            b.admit(t + Duration::from_secs(30)),
            Admission::Wait(_)
        ));
        assert!(
            b.failure(t + Duration::from_secs(31), (0, 1)),
            "the probe failed"
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(t + Duration::from_secs(61)), Admission::Go);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t + Duration::from_secs(61)), Admission::Go);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let b = CircuitBreaker::new("h", policy());
        let t = Instant::now();
        assert!(!b.failure(t, (0, 1)));
        assert!(!b.failure(t + Duration::from_secs(11), (1, 1)));
        assert!(!b.failure(t + Duration::from_secs(22), (2, 1)));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
