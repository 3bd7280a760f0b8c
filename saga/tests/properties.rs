//! Property test: random interleavings, duplicates and delays of the order saga's events.
//!
//! A small discrete-event simulation plays the services: each step's outcome (success,
//! failure, silence) arrives at a random time, possibly duplicated, possibly before the start
//! event; each compensation is acknowledged after a random delay, or never; an operator may
//! abort at a random time. The clock then runs past every deadline, and the invariants below
//! must hold. proptest prints (and persists) the failing case and its seed; every assertion
//! message also includes the generated case.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use choreo_saga::{
    Action, Command, CompensationState, EmitKind, Event, Input, Millis, SagaState, Status,
    StepStatus, apply,
};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    Silent,
}

#[derive(Debug, Clone)]
struct StepPlan {
    outcome: Outcome,
    /// When the outcome arrives, in ms after the simulation starts.
    at: u64,
    /// Extra deliveries of the same event (same id), at these times.
    duplicates: Vec<u64>,
    /// Acknowledge the compensation this long after each emission, or never.
    ack_after: Option<u64>,
}

#[derive(Debug, Clone)]
struct Case {
    start_at: u64,
    start_duplicated: bool,
    steps: [StepPlan; 3],
    abort_at: Option<u64>,
    /// Run the variant of the order saga whose inventory release is not safe for an unknown
    /// outcome (an operator decides), instead of the reference (where it is).
    inventory_needs_operator: bool,
}

const STEPS: [&str; 3] = ["payment", "inventory", "shipping"];
const SUCCESS: [&str; 3] = [AUTHORIZED, RESERVED, SCHEDULED];
const FAILURE: [&str; 3] = [DECLINED, UNAVAILABLE, SHIP_FAILED];
const ACK: [&str; 3] = [REFUNDED, RELEASED, SHIPMENT_CANCELLED];
const COMPENSATION: [&str; 3] = [REFUND, RELEASE, CANCEL_SHIPMENT];

fn step_plan() -> impl Strategy<Value = StepPlan> {
    (
        prop_oneof![
            6 => Just(Outcome::Success),
            2 => Just(Outcome::Failure),
            1 => Just(Outcome::Silent),
        ],
        0u64..150_000,
        proptest::collection::vec(0u64..200_000, 0..3),
        prop_oneof![4 => (0u64..70_000).prop_map(Some), 1 => Just(None)],
    )
        .prop_map(|(outcome, at, duplicates, ack_after)| StepPlan {
            outcome,
            at,
            duplicates,
            ack_after,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        0u64..40_000,
        any::<bool>(),
        [step_plan(), step_plan(), step_plan()],
        prop_oneof![5 => Just(None), 1 => (0u64..150_000).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(
            |(start_at, start_duplicated, steps, abort_at, inventory_needs_operator)| Case {
                start_at,
                start_duplicated,
                steps,
                abort_at,
                inventory_needs_operator,
            },
        )
}

const T0: u64 = 1_767_225_600_000;

#[derive(Debug)]
struct Run {
    state: SagaState,
    actions: Vec<Action>,
    /// Steps whose success event was delivered to `apply`.
    succeeded: BTreeSet<usize>,
    /// Every status change, in order.
    statuses: Vec<(Status, Status)>,
    /// Why the cancellation event was premature, if it was (invariant 2).
    premature_cancellation: Option<String>,
    /// Step -> when its outcome (success or failure) was first delivered.
    answered: BTreeMap<usize, u64>,
    /// Step -> when its compensation was first emitted.
    compensated_at: BTreeMap<usize, u64>,
    /// Step -> when its deadline passes (from its start), for the steps that started.
    deadline_at: BTreeMap<usize, u64>,
}

fn simulate(case: &Case) -> Run {
    let def = if case.inventory_needs_operator {
        order_inventory_needs_operator()
    } else {
        order()
    };
    let mut state = SagaState::new(&def, "o-1", Millis(T0));
    // (time, sequence) -> input
    let mut queue: BTreeMap<(u64, u64), Input> = BTreeMap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BTreeMap<(u64, u64), Input>, at: u64, input: Input| {
        seq += 1;
        queue.insert((at, seq), input);
    };
    let ev = |id: String, ty: &str| {
        Input::Event(Event {
            id,
            event_type: ty.to_owned(),
            correlation_id: "o-1".into(),
            time: Millis(0),
            data: data(ty),
        })
    };
    push(&mut queue, T0 + case.start_at, ev("start".into(), PLACED));
    if case.start_duplicated {
        push(
            &mut queue,
            T0 + case.start_at + 5,
            ev("start".into(), PLACED),
        );
    }
    for (i, plan) in case.steps.iter().enumerate() {
        let ty = match plan.outcome {
            Outcome::Success => SUCCESS[i],
            Outcome::Failure => FAILURE[i],
            Outcome::Silent => continue,
        };
        let id = format!("outcome-{i}");
        push(&mut queue, T0 + plan.at, ev(id.clone(), ty));
        for &d in &plan.duplicates {
            push(&mut queue, T0 + d, ev(id.clone(), ty));
        }
    }
    if let Some(at) = case.abort_at {
        push(
            &mut queue,
            T0 + at,
            Input::Command(Command::Abort {
                reason: "operator".into(),
            }),
        );
    }

    let mut actions = Vec::new();
    let mut succeeded = BTreeSet::new();
    let mut ack_seq = 0u64;
    let mut statuses = Vec::new();
    let mut premature_cancellation = None;
    // Step -> when its outcome (success or failure) was delivered.
    let mut answered: BTreeMap<usize, u64> = BTreeMap::new();
    // Step -> when its compensation was first emitted / first acknowledged after that.
    let mut compensated_at: BTreeMap<usize, u64> = BTreeMap::new();
    let mut acked: BTreeSet<usize> = BTreeSet::new();
    for _ in 0..10_000 {
        let next_event = queue.keys().next().copied();
        let next_deadline = state.next_deadline().cloned();
        let (now, input) = match (next_event, next_deadline) {
            (Some(k), Some(d)) if d.at.0 < k.0 => (d.at.0, Input::Deadline { kind: d.kind }),
            (Some(k), _) => (k.0, queue.remove(&k).expect("present")),
            (None, Some(d)) => (d.at.0, Input::Deadline { kind: d.kind }),
            (None, None) => break,
        };
        if let Input::Event(e) = &input {
            if let Some(i) = SUCCESS.iter().position(|s| *s == e.event_type) {
                succeeded.insert(i);
                answered.entry(i).or_insert(now);
            }
            if let Some(i) = FAILURE.iter().position(|s| *s == e.event_type) {
                answered.entry(i).or_insert(now);
            }
            if let Some(i) = ACK.iter().position(|s| *s == e.event_type)
                && compensated_at.contains_key(&i)
            {
                acked.insert(i);
            }
        }
        let out = apply(&def, &mut state, &input, Millis(now));
        for a in &out {
            if let Action::Status { from, to, .. } = a {
                statuses.push((*from, *to));
            }
            if let Action::Emit(e) = a
                && e.kind == EmitKind::Compensation
            {
                let i = COMPENSATION
                    .iter()
                    .position(|c| *c == e.event_type)
                    .unwrap_or(99);
                compensated_at.entry(i).or_insert(now);
            }
            // Invariant 2: the cancellation only once every started step is resolved (it
            // answered, or its deadline passed) and every compensation is acknowledged.
            if let Action::Emit(e) = a
                && e.event_type == CANCELLED
                && premature_cancellation.is_none()
            {
                let mut why = Vec::new();
                for (i, step) in def.steps().iter().enumerate() {
                    let Some(started) = state.steps[i].started_at else {
                        continue;
                    };
                    let deadline = step.deadline.map(|d| started.plus(d.within).0);
                    let resolved = answered.get(&i).is_some_and(|&t| t <= now)
                        || deadline.is_some_and(|d| d <= now);
                    if !resolved {
                        why.push(format!("step {} started and is unresolved", STEPS[i]));
                    }
                }
                for &i in &succeeded {
                    if !compensated_at.contains_key(&i) {
                        why.push(format!("step {} succeeded, not compensated", STEPS[i]));
                    }
                }
                for &i in compensated_at.keys() {
                    if !acked.contains(&i) {
                        why.push(format!("step {}'s compensation not acknowledged", STEPS[i]));
                    }
                }
                if !why.is_empty() {
                    premature_cancellation =
                        Some(format!("at +{}ms: {}", now - T0, why.join("; ")));
                }
            }
        }
        for a in &out {
            if let Action::Emit(e) = a
                && e.kind == EmitKind::Compensation
            {
                let i = COMPENSATION
                    .iter()
                    .position(|c| *c == e.event_type)
                    .expect("a compensation of the order saga");
                if let Some(after) = case.steps[i].ack_after {
                    ack_seq += 1;
                    push(
                        &mut queue,
                        now + after,
                        ev(format!("ack-{i}-{ack_seq}"), ACK[i]),
                    );
                }
            }
        }
        actions.extend(out);
    }
    let deadline_at = def
        .steps()
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let started = state.steps[i].started_at?;
            Some((i, started.plus(step.deadline?.within).0))
        })
        .collect();
    Run {
        state,
        actions,
        succeeded,
        statuses,
        premature_cancellation,
        answered,
        compensated_at,
        deadline_at,
    }
}

fn check(case: &Case, run: &Run) -> Result<(), TestCaseError> {
    let st = &run.state;
    let ctx = || format!("case: {case:#?}\nfinal state: {:#?}", st);
    prop_assert!(
        queue_done(st),
        "the clock ran past every deadline, but some remain\n{}",
        ctx()
    );
    prop_assert!(
        matches!(
            st.status,
            Status::Completed | Status::Compensated | Status::NeedsOperator
        ),
        "ends Completed, Compensated or NeedsOperator, not {}\n{}",
        st.status,
        ctx()
    );
    let emits: Vec<_> = run.actions.iter().filter_map(Action::as_emit).collect();
    let mut comp_ids: BTreeMap<usize, BTreeSet<uuid::Uuid>> = BTreeMap::new();
    let mut first_comp: BTreeMap<usize, usize> = BTreeMap::new();
    for (n, e) in emits.iter().enumerate() {
        if e.kind == EmitKind::Compensation {
            let i = COMPENSATION
                .iter()
                .position(|c| *c == e.event_type)
                .unwrap_or(99);
            comp_ids.entry(i).or_default().insert(e.event_id);
            first_comp.entry(i).or_insert(n);
        }
    }
    for (i, ids) in &comp_ids {
        prop_assert_eq!(
            ids.len(),
            1,
            "step {} compensated twice\n{}",
            STEPS[*i],
            ctx()
        );
        // Compensated only when it succeeded — or when it had not answered by its deadline
        // and its compensation is safe for an unknown outcome.
        let at = run.compensated_at.get(i).copied().unwrap_or_default();
        let unknown = run.answered.get(i).is_none_or(|&t| t > at)
            && run.deadline_at.get(i).is_some_and(|&d| d <= at);
        let safe = *i == 0 || (*i == 1 && !case.inventory_needs_operator);
        prop_assert!(
            run.succeeded.contains(i) || (unknown && safe),
            "step {} compensated but never completed (nor unknown and safe to compensate)\n{}",
            STEPS[*i],
            ctx()
        );
    }
    let count = |ty: &str| emits.iter().filter(|e| e.event_type == ty).count();
    match st.status {
        Status::Completed => {
            prop_assert!(
                comp_ids.is_empty(),
                "a completed saga compensates nothing\n{}",
                ctx()
            );
            prop_assert_eq!(count(CONFIRMED), 1, "{}", ctx());
            prop_assert_eq!(count(CANCELLED), 0, "{}", ctx());
            prop_assert_eq!(run.succeeded.len(), 3, "{}", ctx());
        }
        Status::Compensated => {
            for i in &run.succeeded {
                prop_assert!(
                    comp_ids.contains_key(i),
                    "completed step {} of an aborted saga not compensated\n{}",
                    STEPS[*i],
                    ctx()
                );
                prop_assert!(st.steps[*i].compensation.is_settled(), "{}", ctx());
            }
            prop_assert_eq!(count(CANCELLED), 1, "{}", ctx());
            prop_assert_eq!(count(CONFIRMED), 0, "{}", ctx());
        }
        _ => {
            prop_assert!(!st.needs_operator().is_empty(), "{}", ctx());
            for &i in &run.succeeded {
                // Emitted, or held back by a dependent whose compensation is not settled.
                let held = i != 2
                    && st.steps[2].status == StepStatus::Completed
                    && !st.steps[2].compensation.is_settled();
                prop_assert!(
                    comp_ids.contains_key(&i) || held,
                    "completed step {} neither compensated nor held back\n{}",
                    STEPS[i],
                    ctx()
                );
            }
            for (i, s) in st.steps.iter().enumerate() {
                if let CompensationState::Stuck { attempts, .. } = s.compensation {
                    prop_assert_eq!(attempts, 4, "{}", ctx());
                    prop_assert!(
                        case.steps[i].ack_after.is_none(),
                        "stuck although acknowledged\n{}",
                        ctx()
                    );
                }
            }
            prop_assert_eq!(count(CONFIRMED), 0, "{}", ctx());
        }
    }
    // Reverse order: a shipping step that completed in time is compensated before the
    // steps it came after (late completions are compensated whenever they arrive).
    if let Some(&ship) = first_comp.get(&2)
        && !st.steps[2].late
    {
        for i in [0, 1] {
            if let Some(&other) = first_comp.get(&i)
                && !st.steps[i].late
            {
                prop_assert!(
                    ship < other,
                    "shipping compensated after {}\n{}",
                    STEPS[i],
                    ctx()
                );
            }
        }
    }
    // Each compensation is emitted at most 1 + max_retries times (per operator budget).
    for ty in COMPENSATION {
        prop_assert!(count(ty) <= 4, "{}", ctx());
    }
    let back = SagaState::from_json(&st.to_json().expect("json")).expect("parses");
    prop_assert_eq!(&back, st, "JSON round trip\n{}", ctx());
    let back = SagaState::decode(&st.encode()).expect("decodes");
    prop_assert_eq!(&back, st, "changelog (binary) round trip\n{}", ctx());
    Ok(())
}

/// Invariant 1: a status sequence never leaves a terminal status except to needs_operator.
fn check_terminal_stays_terminal(case: &Case, run: &Run) -> Result<(), TestCaseError> {
    let ctx = || explain(case, run);
    // Invariant 1: once terminal, a saga stays in that terminal status — or needs an operator
    // (and comes back to it): it never goes back to running or compensating.
    let mut terminal: Option<Status> = None;
    for &(from, to) in &run.statuses {
        if let Some(t) = terminal {
            prop_assert!(
                to == t || to == Status::NeedsOperator,
                "status went {} -> {} after the saga was {}; statuses: {:?}\n{}",
                from,
                to,
                t,
                run.statuses,
                ctx()
            );
        } else if to.is_terminal() {
            terminal = Some(to);
        }
    }
    Ok(())
}

/// Invariant 2: the cancellation event is emitted only after every started step is resolved
/// (it answered, or its deadline passed) and every compensation is acknowledged.
fn check_cancellation_means_undone(case: &Case, run: &Run) -> Result<(), TestCaseError> {
    let ctx = || explain(case, run);
    // Invariant 2 (checked as the cancellation is emitted, in `simulate`).
    prop_assert!(
        run.premature_cancellation.is_none(),
        "cancellation emitted too early: {}\n{}",
        run.premature_cancellation.as_deref().unwrap_or_default(),
        ctx()
    );
    Ok(())
}

/// Invariant 3: when the saga aborts, every success is compensated exactly once.
fn check_each_success_compensated_once(case: &Case, run: &Run) -> Result<(), TestCaseError> {
    let st = &run.state;
    let ctx = || explain(case, run);
    let emits: Vec<_> = run.actions.iter().filter_map(Action::as_emit).collect();
    // Invariant 3: when the saga aborts, every success is compensated exactly once: one
    // compensation (one event id) whose first emission happens once (the others are
    // re-emissions), unless an operator must act first on a dependent's stuck compensation.
    for i in 0..3 {
        let firsts = emits
            .iter()
            .filter(|e| e.event_type == COMPENSATION[i] && e.attempt == 1)
            .count();
        prop_assert!(
            firsts <= 1,
            "step {} compensated {} times\n{}",
            STEPS[i],
            firsts,
            ctx()
        );
    }
    if st.abort_reason.is_some() {
        for &i in &run.succeeded {
            let firsts = emits
                .iter()
                .filter(|e| {
                    e.kind == EmitKind::Compensation
                        && e.event_type == COMPENSATION[i]
                        && e.attempt == 1
                })
                .count();
            let held = st.status == Status::NeedsOperator
                && i != 2
                && st.steps[2].status == StepStatus::Completed
                && !st.steps[2].compensation.is_settled();
            prop_assert!(
                firsts == 1 || (firsts == 0 && held),
                "step {} succeeded and was compensated {} times\n{}",
                STEPS[i],
                firsts,
                ctx()
            );
        }
    }
    Ok(())
}

/// The case and the saga's timeline, for failure messages.
fn explain(case: &Case, run: &Run) -> String {
    let mut out = format!(
        "case: {case:?}\nfinal status {}; timeline:\n",
        run.state.status
    );
    for e in &run.state.timeline.entries {
        out.push_str(&format!(
            "  +{:>7}ms {:?}: {}\n",
            e.at.0 - T0,
            e.kind,
            e.what
        ));
    }
    out
}

fn queue_done(st: &SagaState) -> bool {
    st.deadlines().is_empty() || st.status == Status::Pending
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]

    #[test]
    fn order_saga_invariants(case in case()) {
        let run = simulate(&case);
        check(&case, &run)?;
    }

    #[test]
    fn a_terminal_status_stays_terminal(case in case()) {
        check_terminal_stays_terminal(&case, &simulate(&case))?;
    }

    #[test]
    fn the_cancellation_means_everything_was_undone(case in case()) {
        check_cancellation_means_undone(&case, &simulate(&case))?;
    }

    #[test]
    fn every_success_is_compensated_exactly_once(case in case()) {
        check_each_success_compensated_once(&case, &simulate(&case))?;
    }
}

#[test]
fn timeline_stays_bounded() {
    // Many re-emissions and ignored inputs: the timeline keeps its cap.
    let case = Case {
        start_at: 0,
        start_duplicated: true,
        steps: [
            StepPlan {
                outcome: Outcome::Success,
                at: 1,
                duplicates: vec![2, 3],
                ack_after: None,
            },
            StepPlan {
                outcome: Outcome::Failure,
                at: 5,
                duplicates: vec![],
                ack_after: None,
            },
            StepPlan {
                outcome: Outcome::Silent,
                at: 0,
                duplicates: vec![],
                ack_after: None,
            },
        ],
        abort_at: None,
        inventory_needs_operator: false,
    };
    let run = simulate(&case);
    assert_eq!(run.state.status, Status::NeedsOperator);
    assert!(run.state.timeline.entries.len() <= choreo_saga::TIMELINE_CAPACITY);
}
