//! `apply` per input for the order saga's happy path.
//!
//! Run: `cargo bench -p choreo-saga --bench apply`. `order_saga/happy_path_4_inputs` applies
//! the whole happy path (OrderPlaced, PaymentAuthorized, InventoryReserved, ShipmentScheduled)
//! to a clone of a fresh saga; its throughput is per input. `apply_one_success_incl_clone`
//! applies one success event to a clone of a running saga; subtract `clone_running_state` for
//! the cost of `apply` alone. `serialize_running_state` is the changelog encoding.

use std::hint::black_box;

use choreo_saga::{Definition, Event, Input, Millis, SagaState, apply};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn happy_path() -> Vec<Input> {
    let ev = |id: &str, t: &str, data: serde_json::Value| {
        Input::Event(Event {
            id: id.into(),
            event_type: format!("io.choreo.orders.{t}"),
            correlation_id: "o-1".into(),
            time: Millis(0),
            data,
        })
    };
    let money = json!({"amount_minor": 4200, "currency": "EUR"});
    vec![
        ev(
            "e1",
            "OrderPlaced",
            json!({
            "order_id": "o-1", "customer_id": "c-1",
            "items": [{"sku": "sku-1", "quantity": 2, "unit_price": {"amount_minor": 2100, "currency": "EUR"}}],
            "total": money, "shipping_address": "1 Main St", "channel": "web"}),
        ),
        ev(
            "e2",
            "PaymentAuthorized",
            json!({"order_id": "o-1", "payment_id": "p-1", "amount": money}),
        ),
        ev(
            "e3",
            "InventoryReserved",
            json!({"order_id": "o-1", "reservation_id": "r-1",
            "items": [{"sku": "sku-1", "quantity": 2}]}),
        ),
        ev(
            "e4",
            "ShipmentScheduled",
            json!({"order_id": "o-1", "shipment_id": "s-1",
            "carrier": "dhl", "estimated_delivery_ms": 1_767_400_000_000_u64}),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let catalog = choreo_schemas::Catalog::reference();
    let def = Definition::reference_order_saga(&catalog).expect("reference saga");
    let inputs = happy_path();
    let fresh = SagaState::new(&def, "o-1", Millis(1_000));

    let mut g = c.benchmark_group("order_saga");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("happy_path_4_inputs", |b| {
        b.iter(|| {
            let mut state = fresh.clone();
            let mut n = 0;
            for (i, input) in inputs.iter().enumerate() {
                n += apply(&def, &mut state, input, Millis(1_000 + i as u64)).len();
            }
            black_box((state, n))
        });
    });
    g.finish();

    // One success event applied to a running saga (payment authorized).
    let mut running = fresh.clone();
    apply(&def, &mut running, &inputs[0], Millis(1_000));
    c.bench_function("clone_running_state", |b| {
        b.iter(|| black_box(running.clone()))
    });
    c.bench_function("apply_one_success_incl_clone", |b| {
        b.iter(|| {
            let mut s = running.clone();
            let out = apply(&def, &mut s, &inputs[1], Millis(1_001));
            black_box((s, out))
        });
    });
    // The changelog value: the binary format against the JSON it replaced.
    let mut g = c.benchmark_group("changelog_value");
    let json = running.to_json().expect("serializes");
    let binary = running.encode();
    eprintln!(
        "changelog value of the running state: {} B binary, {} B JSON",
        binary.len(),
        json.len()
    );
    g.bench_function("encode_binary", |b| b.iter(|| black_box(running.encode())));
    g.bench_function("encode_json", |b| {
        b.iter(|| black_box(running.to_json().expect("serializes")))
    });
    g.bench_function("decode_binary", |b| {
        b.iter(|| black_box(SagaState::decode(&binary).expect("decodes")))
    });
    g.bench_function("decode_json", |b| {
        b.iter(|| black_box(SagaState::from_json(&json).expect("decodes")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
