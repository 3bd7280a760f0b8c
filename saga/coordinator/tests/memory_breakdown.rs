//! Where a replica's memory per in-flight saga goes, part by part: the deadline index, the
//! owned store's map, and the operator view. Prints its figures; run with
//! `cargo test --release -p choreo-coordinator --test memory_breakdown -- --nocapture`.
//!
//! Each part is measured as the growth of the process's resident set (Linux `VmRSS`) while
//! 200 000 sagas are held, divided by 200 000: it includes the allocator's overhead and is an
//! estimate. The bounds are regression guards, far above today's figures (BENCHMARKS.md).
//! One test in this file, so that no other test's allocations run beside it.

use std::collections::HashMap;

use choreo_coordinator::index::{DeadlineIndex, Due};
use choreo_coordinator::view::SagaView;
use choreo_saga::{DeadlineKind, Millis, SagaState};

const N: usize = 200_000;
/// A changelog value of an in-flight order saga is about this long (BENCHMARKS.md).
const VALUE_BYTES: usize = 296;

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes per saga that `hold` adds to the resident set.
fn per_saga<T>(hold: impl FnOnce() -> T) -> (u64, T) {
    let before = rss_bytes().expect("VmRSS");
    let held = hold();
    let after = rss_bytes().expect("VmRSS");
    (after.saturating_sub(before) / N as u64, held)
}

fn saga_id(i: usize) -> String {
    format!("order/o-{i:07}")
}

#[test]
fn memory_per_saga_by_part() {
    if rss_bytes().is_none() {
        panic!("this test reads /proc/self/status (Linux)");
    }
    // An in-flight order saga has two deadlines: the saga's and its running step's.
    let (index, _index) = per_saga(|| {
        let mut index = DeadlineIndex::default();
        for i in 0..N {
            let (p, id) = ((i % 6) as i32, saga_id(i));
            index.set(
                p,
                &id,
                Due::Deadline(DeadlineKind::Saga),
                Millis(1_000_000 + i as u64),
            );
            let step = DeadlineKind::Step("inventory".into());
            index.set(p, &id, Due::Deadline(step), Millis(2_000_000 + i as u64));
        }
        index
    });
    // The owned store's shape: saga id → the changelog value (plus, in the replica, the
    // status and the definition name).
    let (owned, _owned) = per_saga(|| {
        (0..N)
            .map(|i| (saga_id(i), vec![7u8; VALUE_BYTES].into_boxed_slice()))
            .collect::<HashMap<_, _>>()
    });
    let template = r#"{"saga_id":"order/o-1","definition":"order","version":1,"correlation_id":"o-1","status":"running","created_at":1,"started_at":1,"updated_at":1,"start_data":null,"abort_reason":null,"abort_emitted":false,"steps":[],"pending":[],"deadlines":[],"seen":[],"completions":0,"timeline":{"entries":[],"dropped":0}}"#;
    let mut state = SagaState::from_json(template.as_bytes()).expect("state");
    let (view, _view) = per_saga(|| {
        let view = SagaView::new();
        for i in 0..N {
            state.saga_id = saga_id(i);
            state.correlation_id = format!("o-{i:07}");
            view.upsert_encoded(&state, vec![7u8; VALUE_BYTES]);
        }
        view
    });

    // A replica's owned sagas: the store's map and the view, the value shared between them
    // (`SagaView::share`), as the runtime keeps them.
    let (both, _both) = per_saga(|| {
        let view = SagaView::new();
        let mut owned = HashMap::with_capacity(N);
        for i in 0..N {
            state.saga_id = saga_id(i);
            state.correlation_id = format!("o-{i:07}");
            let mut value = vec![7u8; VALUE_BYTES];
            value[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let (id, shared) = view.share(&state.saga_id, value.clone());
            owned.insert(id, shared);
            view.upsert_encoded(&state, value);
        }
        assert_eq!(view.handed_off(), 0, "every value taken by the view");
        (view, owned)
    });
    println!(
        "per in-flight saga ({VALUE_BYTES} B changelog value): deadline index {index} B (two deadlines), owned map {owned} B, view {view} B; owned map and view sharing the value {both} B"
    );
    for (part, bytes) in [("index", index), ("owned map", owned), ("view", view)] {
        assert!(bytes < 2048, "{part}: {bytes} B per saga");
    }
    // Apart, the two hold the value twice; shared, once.
    assert!(
        both + (VALUE_BYTES as u64) / 2 < owned + view,
        "sharing saves the value: {both} B against {owned} + {view} B"
    );
}
