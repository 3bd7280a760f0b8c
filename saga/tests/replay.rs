//! Replay: recorded inputs through two definitions with a virtual clock, and the sagas that
//! would end differently.

mod common;

use std::time::Duration;

use choreo_saga::replay::{self, Emitted, Recorded};
use choreo_saga::testing::{EPOCH, SagaTest};
use choreo_saga::{Command, Definition, EmitKind, Millis, Status};
use common::*;
use serde_json::{Value, json};

/// `data(event_type)` for order `id`.
fn data_for(event_type: &str, id: &str) -> Value {
    let mut v = data(event_type);
    v["order_id"] = json!(id);
    v
}

fn at(secs: f64) -> Millis {
    EPOCH.plus(Duration::from_secs_f64(secs))
}

/// An event of order `id` recorded `secs` after the epoch.
fn ev(secs: f64, id: &str, event_type: &str) -> Recorded {
    Recorded::Event {
        at: at(secs),
        key: Some(id.to_owned()),
        id: format!("{id}-{event_type}-{secs}"),
        event_type: event_type.to_owned(),
        data: data_for(event_type, id),
    }
}

/// The records of a happy order whose payment answers `pay_secs` after it was placed at `t`.
fn happy(id: &str, t: f64, pay_secs: f64) -> Vec<Recorded> {
    vec![
        ev(t, id, PLACED),
        ev(t + 0.5, id, RESERVED),
        ev(t + pay_secs, id, AUTHORIZED),
        ev(t + pay_secs + 1.0, id, SCHEDULED),
    ]
}

/// The reference order saga with another payment deadline (and version 2).
fn order_with_payment_deadline(secs: u64) -> Definition {
    let text = Definition::reference_order_saga_toml()
        .replacen("deadline = \"30s\"", &format!("deadline = \"{secs}s\""), 1)
        .replace("version = 1", "version = 2");
    Definition::from_toml("order-v2.toml", &text, &catalog()).expect("the variant loads")
}

fn emitted(event_type: &str, step: Option<&str>, kind: EmitKind) -> Emitted {
    Emitted {
        event_type: event_type.to_owned(),
        step: step.map(str::to_owned),
        kind,
    }
}

#[test]
fn a_replayed_saga_ends_where_the_virtual_clock_harness_ends() {
    // The harness: placed, inventory reserved at +1 s, payment silent; its deadline (30 s)
    // fires, the payment's outcome is unknown, both steps are compensated and acknowledged.
    let t = SagaTest::new(order())
        .event(PLACED, data(PLACED))
        .advance(Duration::from_secs(1))
        .event(RESERVED, data(RESERVED))
        .advance(Duration::from_secs(40))
        .event(REFUNDED, data(REFUNDED))
        .event(RELEASED, data(RELEASED))
        .expect_status(Status::Compensated);
    let harness: Vec<String> = t.emitted().iter().map(|e| e.event_type.clone()).collect();

    let records = vec![
        ev(0.0, "o-1", PLACED),
        ev(1.0, "o-1", RESERVED),
        ev(41.0, "o-1", REFUNDED),
        ev(41.0, "o-1", RELEASED),
    ];
    let out = replay::outcomes(&order(), &records, at(41.0));
    let o = &out["o-1"];
    assert_eq!(o.status, Some(Status::Compensated));
    assert!(o.started);
    let replayed: Vec<String> = o.emitted.iter().map(|e| e.event_type.clone()).collect();
    assert_eq!(replayed, harness, "same emissions, same order");
    assert_eq!(o.first_at, at(0.0));
}

#[test]
fn deadlines_fire_at_their_due_time_between_inputs_and_up_to_the_end() {
    // The payment answers at +31 s: its 30 s deadline fired first, so the late success is
    // compensated rather than completing the step.
    let records = vec![
        ev(0.0, "o-1", PLACED),
        ev(1.0, "o-1", RESERVED),
        ev(31.0, "o-1", AUTHORIZED),
    ];
    let out = replay::outcomes(&order(), &records, at(31.0));
    let o = &out["o-1"];
    assert_eq!(o.status, Some(Status::Compensating), "{o:?}");
    assert!(
        o.emitted
            .contains(&emitted(REFUND, Some("payment"), EmitKind::Compensation)),
        "{o:?}"
    );
    // Ended before the deadline: the saga still runs.
    let early = replay::outcomes(&order(), &records[..2], at(29.0));
    assert_eq!(early["o-1"].status, Some(Status::Running));
    assert!(early["o-1"].emitted.is_empty());
    // Ended later: the deadline fires at the end too.
    let late = replay::outcomes(&order(), &records[..2], at(31.0));
    assert_eq!(late["o-1"].status, Some(Status::Compensating));
    assert!(
        late["o-1"]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("payment")),
        "{:?}",
        late["o-1"].reason
    );
}

#[test]
fn the_same_definition_reports_no_difference() {
    let mut records = happy("o-1", 0.0, 2.0);
    records.extend(happy("o-2", 5.0, 20.0));
    records.push(ev(9.0, "o-3", PLACED));
    records.push(ev(9.5, "o-3", DECLINED));
    let r = replay::compare(&order(), &order(), &records, at(300.0), None);
    assert_eq!(r.replayed, 3);
    assert_eq!(r.unchanged, 3);
    assert!(r.differences.is_empty(), "{r:?}");
    assert_eq!(r.without_start, 0);
}

#[test]
fn a_shorter_payment_deadline_is_reported_for_the_slow_payments_only() {
    // o-fast pays after 2 s, o-slow after 20 s; the new version gives payment 10 s.
    let mut records = happy("o-fast", 0.0, 2.0);
    records.extend(happy("o-slow", 1.0, 20.0));
    let new = order_with_payment_deadline(10);
    let r = replay::compare(&order(), &new, &records, at(25.0), None);
    assert_eq!(r.replayed, 2);
    assert_eq!(r.unchanged, 1);
    assert_eq!(r.differences.len(), 1, "{r:?}");
    let d = &r.differences[0];
    assert_eq!(d.correlation_id, "o-slow");
    assert_eq!(d.old.status, Some(Status::Completed));
    assert_eq!(d.new.status, Some(Status::Compensating));
    assert!(d.status_changed());
    assert_eq!(r.status_changes(), 1);
    let added: Vec<&Emitted> = d.added.iter().map(|c| &c.event).collect();
    let removed: Vec<&Emitted> = d.removed.iter().map(|c| &c.event).collect();
    assert!(
        added.contains(&&emitted(REFUND, Some("payment"), EmitKind::Compensation))
            && added.contains(&&emitted(
                RELEASE,
                Some("inventory"),
                EmitKind::Compensation
            )),
        "{added:?}"
    );
    assert!(
        removed.contains(&&emitted(REQUESTED, Some("shipping"), EmitKind::StepStart))
            && removed.contains(&&emitted(CONFIRMED, None, EmitKind::Completed)),
        "{removed:?}"
    );
    assert!(
        d.new
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("payment")),
        "{:?}",
        d.new.reason
    );
}

#[test]
fn a_new_final_step_that_nobody_answers_changes_every_completed_saga() {
    // A step after shipping, answered by an event the recorded services never sent: every
    // saga that completed now waits for it and then fails at its deadline.
    let text = Definition::reference_order_saga_toml()
        .replace("version = 1", "version = 2")
        .replace(
            "[on_complete]",
            "[[steps]]\nname = \"confirmation\"\nafter = [\"shipping\"]\nsuccess = [\"io.choreo.orders.OrderConfirmed\"]\ndeadline = \"10s\"\n\n[on_complete]",
        );
    let new = Definition::from_toml("order-v2.toml", &text, &catalog()).expect("loads");
    let mut records = happy("o-1", 0.0, 2.0);
    records.push(ev(5.0, "o-2", PLACED));
    records.push(ev(5.5, "o-2", DECLINED));
    let r = replay::compare(&order(), &new, &records, at(60.0), None);
    assert_eq!(r.replayed, 2);
    assert_eq!(r.differences.len(), 1, "{r:?}");
    let d = &r.differences[0];
    assert_eq!(d.correlation_id, "o-1");
    assert_eq!(d.old.status, Some(Status::Completed));
    assert_ne!(d.new.status, Some(Status::Completed));
    assert!(
        d.removed
            .iter()
            .any(|c| c.event == emitted(CONFIRMED, None, EmitKind::Completed)),
        "{d:?}"
    );
}

#[test]
fn recorded_commands_apply_to_their_definition_only() {
    let mut records = vec![ev(0.0, "o-1", PLACED)];
    records.push(Recorded::Command {
        at: at(1.0),
        definition: "refund".into(),
        correlation_id: "o-1".into(),
        command: Command::Abort {
            reason: "not for this saga".into(),
        },
    });
    let out = replay::outcomes(&order(), &records, at(2.0));
    assert_eq!(out["o-1"].status, Some(Status::Running));
    records.push(Recorded::Command {
        at: at(1.5),
        definition: "order".into(),
        correlation_id: "o-1".into(),
        command: Command::Abort {
            reason: "customer called".into(),
        },
    });
    // A command for a saga nobody started changes nothing.
    records.push(Recorded::Command {
        at: at(1.5),
        definition: "order".into(),
        correlation_id: "o-nobody".into(),
        command: Command::Resume,
    });
    let out = replay::outcomes(&order(), &records, at(2.0));
    assert_eq!(out["o-1"].status, Some(Status::Compensating));
    assert_eq!(out["o-nobody"].status, None);
    assert!(
        out["o-1"]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("customer called")),
        "{:?}",
        out["o-1"].reason
    );
}

#[test]
fn records_out_of_order_are_applied_in_time_order() {
    let mut records = happy("o-1", 0.0, 2.0);
    records.reverse();
    let out = replay::outcomes(&order(), &records, at(10.0));
    assert_eq!(out["o-1"].status, Some(Status::Completed));
}

#[test]
fn sagas_without_their_start_are_counted_not_replayed_and_limit_keeps_the_newest() {
    let mut records = vec![ev(0.0, "o-old", AUTHORIZED), ev(0.5, "o-old", RESERVED)];
    // An acknowledgement alone creates no saga at all; it is counted with them.
    records.push(ev(0.7, "o-ack", REFUNDED));
    for (i, t) in [1.0, 2.0, 3.0].iter().enumerate() {
        records.extend(happy(&format!("o-{i}"), *t, 20.0));
    }
    let new = order_with_payment_deadline(10);
    let all = replay::compare(&order(), &new, &records, at(60.0), None);
    assert_eq!(all.without_start, 2, "{all:?}");
    assert_eq!(all.replayed, 3);
    assert_eq!(all.differences.len(), 3);
    let newest = replay::compare(&order(), &new, &records, at(60.0), Some(2));
    assert_eq!(newest.replayed, 2);
    let ids: Vec<&str> = newest
        .differences
        .iter()
        .map(|d| d.correlation_id.as_str())
        .collect();
    assert_eq!(ids, ["o-1", "o-2"], "the two most recent, oldest first");
}

#[test]
fn each_definition_correlates_by_its_own_rule() {
    // A variant that reads the correlation id from the order_id field: records keyed
    // otherwise still find their saga.
    let text = Definition::reference_order_saga_toml().replace(
        "correlation = \"key\"",
        "correlation = { field = \"order_id\" }",
    );
    let by_field = Definition::from_toml("order-field.toml", &text, &catalog()).expect("loads");
    let records: Vec<Recorded> = happy("o-9", 0.0, 1.0)
        .into_iter()
        .map(|r| match r {
            Recorded::Event {
                at,
                id,
                event_type,
                data,
                ..
            } => Recorded::Event {
                at,
                key: Some("not-the-order".into()),
                id,
                event_type,
                data,
            },
            other => other,
        })
        .collect();
    let out = replay::outcomes(&by_field, &records, at(10.0));
    assert_eq!(out["o-9"].status, Some(Status::Completed));
    let by_key = replay::outcomes(&order(), &records, at(10.0));
    assert_eq!(by_key["not-the-order"].status, Some(Status::Completed));
}
