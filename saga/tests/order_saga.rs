//! Table-driven tests of the reference order saga: each case is a script of inputs and the
//! exact list of event types it must emit, and the status it must end in.

mod common;

use choreo_saga::{Command, SagaState, Status};
use common::*;

struct Case {
    name: &'static str,
    script: Vec<Do>,
    emitted: Vec<&'static str>,
    status: Status,
    /// Part of the abort reason (or of the stuck reason), when there is one.
    reason: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "happy path",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(RESERVED), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "happy path, inventory first",
            script: vec![Ev(PLACED), Ev(RESERVED), Ev(AUTHORIZED), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            // Changed: inventory is in flight when the payment is declined; it is awaited, and
            // its failure needs nothing (it used to be cancelled at once, inventory unknown).
            name: "payment declined: nothing completed, nothing compensated",
            script: vec![Ev(PLACED), Ev(DECLINED), Ev(UNAVAILABLE)],
            emitted: vec![CANCELLED],
            status: Status::Compensated,
            reason: Some(
                "step \"payment\" failed: io.choreo.orders.PaymentDeclined (insufficient funds)",
            ),
        },
        Case {
            name: "payment declined after inventory reserved",
            script: vec![Ev(PLACED), Ev(RESERVED), Ev(DECLINED), Ev(RELEASED)],
            emitted: vec![RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("PaymentDeclined"),
        },
        Case {
            name: "inventory unavailable after payment",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(UNAVAILABLE), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some(
                "step \"inventory\" failed: io.choreo.orders.InventoryUnavailable (out of stock)",
            ),
        },
        Case {
            name: "the start event never arrives: the buffered payment is refunded",
            script: vec![Ev(AUTHORIZED), Wait(121), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "an acknowledgement before its compensation (a repeated decision) counts",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(REFUNDED), Ev(UNAVAILABLE)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "inventory unavailable, refund not yet acknowledged",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(UNAVAILABLE)],
            emitted: vec![REFUND],
            status: Status::Compensating,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "shipping failed: payment and inventory compensated in parallel",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Ev(SHIP_FAILED),
                Ev(RELEASED),
                Ev(REFUNDED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"shipping\" failed"),
        },
        Case {
            // Changed: the payment's outcome is unknown at its deadline; its refund is safe for
            // that, so it is refunded too (it used to be taken as not having happened).
            name: "payment deadline missed",
            script: vec![
                Ev(PLACED),
                Ev(RESERVED),
                Wait(30),
                Ev(RELEASED),
                Ev(REFUNDED),
            ],
            emitted: vec![REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"payment\" missed its deadline (30s)"),
        },
        Case {
            name: "payment deadline not yet missed",
            script: vec![Ev(PLACED), Ev(RESERVED), Wait(29)],
            emitted: vec![],
            status: Status::Running,
            reason: None,
        },
        Case {
            // Changed: the inventory's outcome is unknown; its release is safe for that.
            name: "inventory deadline missed",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Wait(30),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"inventory\" missed its deadline (30s)"),
        },
        Case {
            // Changed: the shipment's outcome is unknown, and cancelling it blind is not safe:
            // the saga needs an operator for shipping (it used to be cancelled).
            name: "shipping deadline missed",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE],
            status: Status::NeedsOperator,
            reason: Some(
                "step \"shipping\" missed its deadline (100s); no answer by its deadline (100s), so its outcome is unknown",
            ),
        },
        Case {
            name: "shipping deadline missed, the operator skips it (nothing was shipped)",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(REFUNDED),
                Ev(RELEASED),
                skip("shipping"),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"shipping\" missed its deadline (100s)"),
        },
        Case {
            name: "shipping deadline missed, the operator retries it (cancel it anyway)",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(REFUNDED),
                Ev(RELEASED),
                retry("shipping"),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCEL_SHIPMENT, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"shipping\" missed its deadline (100s)"),
        },
        Case {
            // Changed: shipping is in flight at the saga's deadline; it is awaited (up to its
            // own deadline, at 125 s) and its failure ends the wait.
            name: "overall deadline missed (shipping started late)",
            script: vec![
                Ev(PLACED),
                Wait(25),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(95),
                Ev(REFUNDED),
                Ev(RELEASED),
                Ev(SHIP_FAILED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("the saga missed its deadline (2m)"),
        },
        Case {
            // Changed: the cancellation now comes after the release (inventory was in flight
            // at the abort, so it was awaited); it used to come first.
            name: "a success of a step in flight at the abort is compensated before the cancellation",
            script: vec![Ev(PLACED), Ev(DECLINED), Ev(RESERVED), Ev(RELEASED)],
            emitted: vec![RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("PaymentDeclined"),
        },
        Case {
            name: "late success after a deadline, while compensating",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Wait(30),
                Ev(RESERVED),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"inventory\" missed its deadline"),
        },
        Case {
            name: "late shipping success after shipping's deadline",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(SCHEDULED),
                Ev(REFUNDED),
                Ev(RELEASED),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCEL_SHIPMENT, CANCELLED],
            status: Status::Compensated,
            reason: Some("shipping"),
        },
        Case {
            name: "duplicates change nothing",
            script: vec![
                EvId("e1", PLACED),
                EvId("e1", PLACED),
                EvId("e2", AUTHORIZED),
                EvId("e2", AUTHORIZED),
                EvId("e3", RESERVED),
                EvId("e3", RESERVED),
                EvId("e2", AUTHORIZED),
                EvId("e4", SCHEDULED),
                EvId("e4", SCHEDULED),
            ],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "a second success event with a new id is ignored",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Ev(SCHEDULED),
            ],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "duplicate failure and duplicate ack",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                EvId("x", UNAVAILABLE),
                EvId("x", UNAVAILABLE),
                EvId("y", REFUNDED),
                EvId("y", REFUNDED),
            ],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "successes before the start event are buffered",
            script: vec![Ev(AUTHORIZED), Ev(RESERVED)],
            emitted: vec![],
            status: Status::Pending,
            reason: None,
        },
        Case {
            name: "out of order: successes before the start event",
            script: vec![Ev(AUTHORIZED), Ev(RESERVED), Ev(PLACED), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "out of order: shipment scheduled before everything",
            script: vec![Ev(SCHEDULED), Ev(RESERVED), Ev(PLACED), Ev(AUTHORIZED)],
            emitted: vec![CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "out of order: failure before the start event",
            script: vec![Ev(AUTHORIZED), Ev(UNAVAILABLE), Ev(PLACED), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "compensation never acknowledged",
            script: stuck_refund(),
            emitted: vec![REFUND, REFUND, REFUND, REFUND],
            status: Status::NeedsOperator,
            reason: Some(
                "io.choreo.orders.RefundPayment was not acknowledged by io.choreo.orders.PaymentRefunded after 4 emissions",
            ),
        },
        Case {
            name: "compensation acknowledged after one re-emission",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(UNAVAILABLE),
                Wait(30),
                Ev(REFUNDED),
            ],
            emitted: vec![REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "ack arriving after the saga needs an operator settles it",
            script: with(stuck_refund(), vec![Ev(REFUNDED)]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            // Changed: inventory is in flight at the abort; it is awaited until it answers.
            name: "operator abort while running",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(UNAVAILABLE),
            ],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("aborted by an operator: customer called"),
        },
        Case {
            name: "operator abort before the start event compensates buffered successes",
            script: vec![Ev(AUTHORIZED), abort("never started"), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("never started"),
        },
        Case {
            name: "operator abort of a completed saga is rejected",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Ev(SCHEDULED),
                abort("too late"),
            ],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "operator retry of a stuck compensation",
            script: with(stuck_refund(), vec![retry("payment"), Ev(REFUNDED)]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "operator retry, then never acknowledged again",
            script: with(
                stuck_refund(),
                vec![retry("payment"), Wait(30), Wait(30), Wait(30), Wait(30)],
            ),
            emitted: vec![REFUND; 8],
            status: Status::NeedsOperator,
            reason: Some("not acknowledged"),
        },
        Case {
            name: "operator skip of a stuck compensation",
            script: with(stuck_refund(), vec![skip("payment")]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "operator skip of a running step",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), skip("inventory"), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "operator resume waits for the acknowledgement again",
            script: with(stuck_refund(), vec![Cmd(Command::Resume), Ev(REFUNDED)]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "operator resume, then the retry budget runs out again",
            script: with(
                stuck_refund(),
                vec![Cmd(Command::Resume), Wait(30), Wait(30), Wait(30), Wait(30)],
            ),
            emitted: vec![REFUND; 7],
            status: Status::NeedsOperator,
            reason: Some("not acknowledged"),
        },
        Case {
            name: "operator resume of a running saga is rejected",
            script: vec![Ev(PLACED), Cmd(Command::Resume)],
            emitted: vec![],
            status: Status::Running,
            reason: None,
        },
        // Issue 9: a failure while another step is in flight.
        Case {
            name: "failure while payment is in flight: the saga waits for it",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE)],
            emitted: vec![],
            status: Status::Compensating,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "failure while payment is in flight, its success after the abort",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Ev(AUTHORIZED), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "failure while payment is in flight, its success before the abort",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(UNAVAILABLE), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "failure while payment is in flight, its failure after the abort",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Ev(DECLINED)],
            emitted: vec![CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight payment is awaited up to its deadline",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Wait(29)],
            emitted: vec![],
            status: Status::Compensating,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight payment's deadline passes: its refund is safe, so it is refunded",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Wait(30), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight payment succeeds after its deadline: refunded once, not twice",
            script: vec![
                Ev(PLACED),
                Ev(UNAVAILABLE),
                Wait(30),
                Ev(AUTHORIZED),
                Ev(REFUNDED),
            ],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight shipping's deadline passes: cancelling it is not safe, operator",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(99),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE],
            status: Status::Compensating,
            reason: Some("customer called"),
        },
        Case {
            name: "in-flight shipping's deadline passed: needs an operator, naming it",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(100),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE],
            status: Status::NeedsOperator,
            reason: Some(
                "customer called; no answer by its deadline (100s), so its outcome is unknown",
            ),
        },
        Case {
            name: "in-flight shipping needing an operator succeeds late: it is cancelled",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(100),
                Ev(SCHEDULED),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCEL_SHIPMENT, CANCELLED],
            status: Status::Compensated,
            reason: Some("customer called"),
        },
        Case {
            name: "in-flight shipping needing an operator fails late: nothing to undo",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(100),
                Ev(SHIP_FAILED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("customer called"),
        },
        Case {
            name: "operator skip of an awaited step ends the wait",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), skip("payment")],
            emitted: vec![CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        // A success after the saga's own deadline, once it is terminal.
        Case {
            name: "a success after the saga's deadline and its cancellation: a late compensation",
            script: vec![
                Ev(AUTHORIZED),
                Wait(121),
                Ev(REFUNDED),
                Ev(RESERVED),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, CANCELLED, RELEASE],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "a late compensation in flight leaves the saga compensated",
            script: vec![Ev(AUTHORIZED), Wait(121), Ev(REFUNDED), Ev(RESERVED)],
            emitted: vec![REFUND, CANCELLED, RELEASE],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "a late compensation never acknowledged needs an operator",
            script: vec![
                Ev(AUTHORIZED),
                Wait(121),
                Ev(REFUNDED),
                Ev(RESERVED),
                Wait(120),
            ],
            emitted: vec![REFUND, CANCELLED, RELEASE, RELEASE, RELEASE, RELEASE],
            status: Status::NeedsOperator,
            reason: Some("io.choreo.orders.ReleaseInventory was not acknowledged"),
        },
        Case {
            name: "a late compensation acknowledged at last: compensated again, no second cancellation",
            script: vec![
                Ev(AUTHORIZED),
                Wait(121),
                Ev(REFUNDED),
                Ev(RESERVED),
                Wait(120),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, CANCELLED, RELEASE, RELEASE, RELEASE, RELEASE],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "a success of a step that never started, after the cancellation",
            script: vec![
                Ev(PLACED),
                Ev(DECLINED),
                Ev(UNAVAILABLE),
                Ev(SCHEDULED),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![CANCELLED, CANCEL_SHIPMENT],
            status: Status::Compensated,
            reason: Some("PaymentDeclined"),
        },
    ]
}

#[test]
fn order_saga_table() {
    let def = order();
    for case in cases() {
        let t = run(&def, &case.script);
        let got: Vec<&str> = t.emitted().iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(got, case.emitted, "case {:?}: emitted events", case.name);
        assert_eq!(
            t.state().status(),
            case.status,
            "case {:?}: status",
            case.name
        );
        let reason = t
            .state()
            .abort_reason
            .clone()
            .into_iter()
            .chain(
                t.state()
                    .needs_operator()
                    .iter()
                    .map(|(_, r)| r.to_string()),
            )
            .collect::<Vec<_>>()
            .join("; ");
        match case.reason {
            Some(want) => assert!(
                reason.contains(want),
                "case {:?}: reason {reason:?} should contain {want:?}",
                case.name
            ),
            None => assert!(
                reason.is_empty(),
                "case {:?}: unexpected reason {reason:?}",
                case.name
            ),
        }
        // Every emission of one (step, kind) carries one event id; re-emissions repeat it.
        for a in t.emitted() {
            for b in t.emitted() {
                if a.step == b.step && a.kind == b.kind {
                    assert_eq!(a.event_id, b.event_id, "case {:?}", case.name);
                }
            }
        }
        // The state survives a JSON round trip.
        let json = t.state().to_json().expect("serializes");
        let back = SagaState::from_json(&json).expect("deserializes");
        assert_eq!(&back, t.state(), "case {:?}: JSON round trip", case.name);
    }
}
