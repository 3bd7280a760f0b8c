//! The changelog value of a saga state (`SagaState::encode` / `SagaState::decode`): the binary
//! format round-trips every field, stays small, still reads the JSON states were stored as
//! before it, and turns a broken record into an error, never a panic.

mod common;

use std::collections::VecDeque;

use choreo_saga::{
    CompensationState, Deadline, DeadlineKind, Event, Input, Millis, STATE_FORMAT, SagaState,
    StateDecodeError, Status, StepStatus, TimelineKind, apply,
};
use common::*;
use serde_json::json;
use uuid::Uuid;

/// Ids as they come from real producers (random UUIDs), not ones that share a prefix.
const EVENT_IDS: [&str; 4] = [
    "3f2b8c1d-9e4a-4b7f-8c2d-5a6e1f0b9c3d",
    "a71c04e9-2d58-4f13-b6e0-c9d8f7a2e541",
    "5d9e3a7b-c1f2-4e86-9b04-17a3c5e8d2f6",
    "e04b6f2c-8a93-41d7-a5c8-3f1e9b7d6a20",
];
const ORDER_ID: &str = "ord-7f3a9c21";

/// An order saga as most in-flight ones stand: started, payment authorized, inventory and
/// shipping pending — with its deadlines, seen ids and timeline.
fn in_flight(now: u64) -> SagaState {
    let def = order();
    let mut state = SagaState::new(&def, ORDER_ID, Millis(now));
    for (i, ty) in [PLACED, AUTHORIZED].iter().enumerate() {
        let input = Input::Event(Event {
            id: EVENT_IDS[i].to_owned(),
            event_type: (*ty).to_owned(),
            correlation_id: ORDER_ID.into(),
            time: Millis(now),
            data: data(ty),
        });
        apply(&def, &mut state, &input, Millis(now + 3 * i as u64));
    }
    assert_eq!(state.status(), Status::Running);
    state
}

#[test]
fn an_in_flight_order_saga_takes_a_fifth_of_its_json_in_the_changelog() {
    for (what, state, bound) in [
        (
            "as first measured (order o-1, ids sharing a prefix)",
            in_flight_o1(),
            300,
        ),
        (
            "random event ids, a longer order id, a 2026 clock",
            in_flight(1_796_570_000_000),
            300,
        ),
    ] {
        let binary = state.encode();
        let json = state.to_json().expect("json");
        println!(
            "in-flight order saga, {what}: {} bytes binary (format {STATE_FORMAT}), {} bytes JSON",
            binary.len(),
            json.len()
        );
        assert!(
            binary.len() <= bound && binary.len() * 5 <= json.len(),
            "{what}: {} bytes (JSON: {})",
            binary.len(),
            json.len()
        );
        assert_eq!(SagaState::decode(&binary).expect("decodes"), state);
    }
}

#[test]
fn a_finished_saga_round_trips_too() {
    let def = order();
    let mut state = in_flight(1_000);
    for (i, ty) in [RESERVED, SCHEDULED].iter().enumerate() {
        let input = Input::Event(Event {
            id: EVENT_IDS[2 + i].to_owned(),
            event_type: (*ty).to_owned(),
            correlation_id: ORDER_ID.into(),
            time: Millis(2_000),
            data: data(ty),
        });
        apply(&def, &mut state, &input, Millis(2_000 + i as u64));
    }
    assert_eq!(state.status(), Status::Completed);
    assert_eq!(SagaState::decode(&state.encode()).expect("decodes"), state);
}

/// A state with every variant and edge the format has to carry, reachable or not.
fn everything() -> SagaState {
    let def = order();
    let mut s = SagaState::new(&def, "ünïcode/ id \u{1F600}", Millis(u64::MAX - 5));
    s.saga_id = "not derived from the definition and correlation id".into();
    s.status = Status::NeedsOperator;
    s.started_at = Some(Millis(0));
    s.updated_at = Millis(u64::MAX);
    s.start_data = Some(json!({
        "null": null, "t": true, "f": false, "zero": 0, "max": u64::MAX, "min": i64::MIN,
        "neg": -1, "float": -1.5e300, "tiny": 5e-324, "empty": "", "list": [[], {}, [1, [2, [3]]]],
        "text": "quotes \" and \\ and \u{0}"
    }));
    s.abort_reason = Some("out of stock — \"really\"".into());
    s.abort_emitted = true;
    let id = |n: u128| Uuid::from_u128(n);
    s.steps[0].status = StepStatus::Completed;
    s.steps[0].started_at = Some(Millis(1));
    s.steps[0].finished_at = Some(Millis(u64::MAX));
    s.steps[0].completion_rank = Some(u32::MAX);
    s.steps[0].late = true;
    s.steps[0].data = Some(json!({"amount": {"amount_minor": 4200, "currency": "EUR"}}));
    s.steps[0].compensation = CompensationState::Stuck {
        event_id: id(u128::MAX),
        attempts: 4,
        reason: "never acknowledged".into(),
    };
    s.steps[0].early_ack = Some(Millis(7));
    s.steps[0].needs_operator = Some("outcome unknown".into());
    s.steps[1].status = StepStatus::Unknown;
    s.steps[1].compensation = CompensationState::Acknowledged {
        event_id: id(1),
        at: Millis(3),
    };
    s.steps[2].status = StepStatus::Abandoned;
    s.steps[2].compensation = CompensationState::Emitted {
        event_id: id(2),
        attempts: 1,
    };
    let mut more = s.steps.clone();
    more[0].compensation = CompensationState::Done { event_id: id(3) };
    more[0].status = StepStatus::Failed;
    more[1].compensation = CompensationState::Skipped;
    more[1].status = StepStatus::Skipped;
    more[2].status = StepStatus::Waiting;
    more[2].compensation = CompensationState::NotStarted;
    s.steps.extend(more);
    s.pending = vec![Event {
        id: String::new(),
        event_type: PLACED.into(),
        correlation_id: "other".into(),
        time: Millis(0),
        data: json!([1, "two", null]),
    }];
    s.deadlines = vec![
        Deadline {
            kind: DeadlineKind::Saga,
            at: Millis(0),
        },
        Deadline {
            kind: DeadlineKind::Step("payment".into()),
            at: Millis(u64::MAX),
        },
        Deadline {
            kind: DeadlineKind::CompensationAck("inventory".into()),
            at: Millis(u64::MAX / 2),
        },
    ];
    s.seen = VecDeque::from(vec!["~".to_owned(), EVENT_IDS[0].to_owned()]);
    s.completions = u32::MAX;
    s.timeline.dropped = u64::MAX;
    for (n, kind) in [
        TimelineKind::Received,
        TimelineKind::Buffered,
        TimelineKind::Ignored,
        TimelineKind::Deadline,
        TimelineKind::Command,
        TimelineKind::Emitted,
        TimelineKind::Status,
    ]
    .into_iter()
    .enumerate()
    {
        s.timeline.entries.push_back(choreo_saga::TimelineEntry {
            at: Millis(n as u64),
            kind,
            what: format!("entry {n} ✓"),
        });
    }
    s
}

#[test]
fn every_field_and_variant_round_trips() {
    let s = everything();
    let back = SagaState::decode(&s.encode()).expect("decodes");
    assert_eq!(back, s);
    // Each other status too.
    for status in [
        Status::Pending,
        Status::Running,
        Status::Compensating,
        Status::Completed,
        Status::Compensated,
    ] {
        let mut s = in_flight(5);
        s.status = status;
        assert_eq!(SagaState::decode(&s.encode()).expect("decodes"), s);
    }
}

/// A state as the changelog held it before the binary format (written by the previous
/// release's `to_json`).
const TODAYS_JSON: &str = r#"{"saga_id":"order/o-1","definition":"order","version":1,"correlation_id":"o-1","status":"running","created_at":1000,"started_at":1000,"updated_at":1001,"start_data":{"shipping_address":"1 Main St"},"abort_reason":null,"abort_emitted":false,"steps":[{"name":"payment","status":"completed","started_at":1000,"finished_at":1001,"completion_rank":1,"late":false,"data":{"amount":{"amount_minor":4200,"currency":"EUR"},"payment_id":"p-1"},"compensation":{"state":"not_started"}},{"name":"inventory","status":"running","started_at":1000,"finished_at":null,"completion_rank":null,"late":false,"data":null,"compensation":{"state":"not_started"}},{"name":"shipping","status":"waiting","started_at":null,"finished_at":null,"completion_rank":null,"late":false,"data":null,"compensation":{"state":"not_started"}}],"pending":[],"deadlines":[{"kind":{"kind":"saga"},"at":121000},{"kind":{"kind":"step","step":"inventory"},"at":31000}],"seen":["0f6a3c1e-6a8d-4c7e-9a51-000000000000","0f6a3c1e-6a8d-4c7e-9a51-000000000001"],"completions":1,"timeline":{"entries":[{"at":1000,"kind":"received","what":"io.choreo.orders.OrderPlaced 0f6a3c1e-6a8d-4c7e-9a51-000000000000"},{"at":1000,"kind":"status","what":"pending -> running: started by io.choreo.orders.OrderPlaced"},{"at":1000,"kind":"status","what":"step \"payment\" started"},{"at":1000,"kind":"status","what":"step \"inventory\" started"},{"at":1001,"kind":"received","what":"io.choreo.orders.PaymentAuthorized 0f6a3c1e-6a8d-4c7e-9a51-000000000001"},{"at":1001,"kind":"status","what":"step \"payment\" completed"}],"dropped":0}}"#;

#[test]
fn a_json_state_from_before_the_binary_format_still_reads_and_goes_on() {
    let old = SagaState::decode(TODAYS_JSON.as_bytes()).expect("today's JSON decodes");
    assert_eq!(old.saga_id, "order/o-1");
    assert_eq!(old.status(), Status::Running);
    assert_eq!(old.deadlines().len(), 2);
    assert_eq!(old.timeline.entries.len(), 6);
    assert_eq!(
        old,
        SagaState::from_json(TODAYS_JSON.as_bytes()).expect("json")
    );
    // Leading whitespace is still JSON.
    let spaced = format!("\n {TODAYS_JSON}");
    assert_eq!(SagaState::decode(spaced.as_bytes()).expect("decodes"), old);
    // It goes on in the binary format and reads back the same.
    let def = order();
    let mut state = old;
    let input = Input::Event(Event {
        id: EVENT_IDS[2].to_owned(),
        event_type: RESERVED.into(),
        correlation_id: "o-1".into(),
        time: Millis(2_000),
        data: data(RESERVED),
    });
    apply(&def, &mut state, &input, Millis(2_000));
    assert_eq!(SagaState::decode(&state.encode()).expect("decodes"), state);
}

#[test]
fn a_broken_record_is_an_error_never_a_panic() {
    let good = everything().encode();
    // Every truncation.
    for n in 0..good.len() {
        assert!(
            SagaState::decode(&good[..n]).is_err(),
            "a record cut to {n} of {} bytes decoded",
            good.len()
        );
    }
    // Every byte changed, three ways: an error or some state, never a panic.
    for i in 0..good.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= x;
            let _ = SagaState::decode(&bad);
        }
    }
    // Bytes after the compressed body.
    let mut longer = good.clone();
    longer.push(0);
    assert!(SagaState::decode(&longer).is_err());
    // A header that claims an absurd body.
    let mut absurd = vec![0xC5, STATE_FORMAT];
    absurd.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    absurd.extend_from_slice(&good[3..]);
    assert!(matches!(
        SagaState::decode(&absurd),
        Err(StateDecodeError::Corrupt { .. })
    ));
    // A newer format is named as such.
    let mut newer = good.clone();
    newer[1] = STATE_FORMAT + 1;
    assert_eq!(
        SagaState::decode(&newer),
        Err(StateDecodeError::UnknownFormat(STATE_FORMAT + 1))
    );
    assert_eq!(SagaState::decode(b""), Err(StateDecodeError::Empty));
    assert!(matches!(
        SagaState::decode(b"\x00garbage"),
        Err(StateDecodeError::NotAState(0))
    ));
    assert!(matches!(
        SagaState::decode(b"{not json"),
        Err(StateDecodeError::Json(_))
    ));
}

#[test]
fn data_nested_past_the_limit_is_refused() {
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let mut s = in_flight(5);
    s.start_data = Some(deep);
    match SagaState::decode(&s.encode()) {
        Err(StateDecodeError::Corrupt { reason, .. }) => {
            assert!(reason.contains("nested"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// Records written in format 1 (by the release before format 2, kept in
/// `fixtures/state-format-1.hex`) still read as the states they were, and are written back in
/// the current format.
#[test]
fn a_record_in_format_1_still_reads() {
    let fixtures = include_str!("fixtures/state-format-1.hex");
    let record = |name: &str| -> Vec<u8> {
        let hex = fixtures
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .expect("fixture");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    };
    for (name, state) in [
        ("in_flight", in_flight(1_796_570_000_000)),
        ("everything", everything()),
    ] {
        let old = record(name);
        assert_eq!(&old[..2], &[0xC5, 1], "{name} is a format 1 record");
        assert!(!SagaState::is_current_format(&old));
        assert_eq!(SagaState::decode(&old).expect("decodes"), state, "{name}");
        let now = state.encode();
        assert_eq!(now[1], STATE_FORMAT);
        assert!(SagaState::is_current_format(&now));
        assert_eq!(SagaState::decode(&now).expect("decodes"), state, "{name}");
    }
}

/// Format 2 names seen ids and steps by index in timeline texts and step deadlines; every text
/// comes back exactly, whether it matches those forms, half matches them, or not at all.
#[test]
fn timeline_texts_and_step_deadlines_named_by_index_round_trip_exactly() {
    let mut s = in_flight(1_796_570_000_000);
    s.steps[2].name = "ship \"fast\"".into();
    s.steps.push(s.steps[0].clone());
    s.steps[3].name = "pay".into();
    s.seen.push_back("~".into());
    s.seen.push_back(String::new());
    let texts = [
        (TimelineKind::Received, format!("{PLACED} {}", EVENT_IDS[0])),
        (
            TimelineKind::Received,
            format!("{PLACED} {} (buffered)", EVENT_IDS[1]),
        ),
        (TimelineKind::Received, format!("{PLACED} {}", EVENT_IDS[3])),
        (TimelineKind::Received, "T ~tilde".into()),
        (TimelineKind::Received, "no-space".into()),
        (TimelineKind::Received, " leading space".into()),
        (TimelineKind::Status, "step \"payment\" completed".into()),
        (TimelineKind::Status, "step \"pay\" started".into()),
        (TimelineKind::Status, "step \"paym".into()),
        (
            TimelineKind::Status,
            "step \"ship \"fast\"\" failed: x".into(),
        ),
        (TimelineKind::Status, "step \"ship \"fast\"".into()),
        (TimelineKind::Status, "step \"unknown\" started".into()),
        (
            TimelineKind::Ignored,
            format!("step \"inventory\" {}", EVENT_IDS[0]),
        ),
    ];
    s.timeline.entries.clear();
    for (n, (kind, what)) in texts.into_iter().enumerate() {
        s.timeline.entries.push_back(choreo_saga::TimelineEntry {
            at: Millis(1_796_570_000_000 + n as u64),
            kind,
            what,
        });
    }
    s.deadlines = vec![
        Deadline {
            kind: DeadlineKind::Step("inventory".into()),
            at: Millis(1),
        },
        Deadline {
            kind: DeadlineKind::CompensationAck("ship \"fast\"".into()),
            at: Millis(2),
        },
        Deadline {
            kind: DeadlineKind::Step("not a step".into()),
            at: Millis(3),
        },
        Deadline {
            kind: DeadlineKind::CompensationAck("gone".into()),
            at: Millis(4),
        },
    ];
    let back = SagaState::decode(&s.encode()).expect("decodes");
    assert_eq!(back, s);
}
