//! How much memory one in-flight order saga takes. Prints its figures; run with
//! `cargo test -p choreo-saga --release --test memory -- --nocapture`.
//!
//! Two figures:
//! - serialized size: exact, the JSON bytes of the state stored in the changelog;
//! - heap size: measured, as the growth of the process's resident set (Linux `VmRSS`) while
//!   100,000 such states are held, divided by 100,000 — it includes allocator overhead and is
//!   an estimate (RSS is page-granular and shared with the rest of the process).

mod common;

use choreo_saga::SagaState;
use common::*;

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn memory_of_one_in_flight_saga() {
    let state = in_flight_o1();
    let json = state.to_json().expect("serializes");
    println!(
        "one in-flight order saga (started, payment authorized, inventory pending): \
         serialized JSON = {} bytes (exact); timeline entries = {}",
        json.len(),
        state.timeline.entries.len()
    );
    assert!(json.len() < 16 * 1024, "a saga state stays small");

    const N: usize = 100_000;
    let Some(before) = rss_bytes() else {
        println!("heap estimate skipped: no /proc/self/status");
        return;
    };
    // Each state is deserialized from JSON, as after a restore, so none shares allocations.
    let many: Vec<SagaState> = (0..N)
        .map(|_| SagaState::from_json(&json).expect("parses"))
        .collect();
    let after = rss_bytes().unwrap_or(before);
    println!(
        "heap per in-flight saga ≈ {} bytes (estimate: RSS growth holding {N} states / {N}, \
         allocator overhead included; size_of::<SagaState>() = {} bytes of that)",
        after.saturating_sub(before) / N as u64,
        size_of::<SagaState>()
    );
    assert_eq!(many.len(), N);
}
