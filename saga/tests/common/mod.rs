//! Fixtures shared by the order saga's tests: the definition and one sample of each event.
#![allow(dead_code, unreachable_pub, unused_imports)]

mod script;

use choreo_saga::Definition;
use choreo_schemas::Catalog;
pub use script::*;
use serde_json::{Value, json};

pub const PLACED: &str = "io.choreo.orders.OrderPlaced";
pub const CONFIRMED: &str = "io.choreo.orders.OrderConfirmed";
pub const CANCELLED: &str = "io.choreo.orders.OrderCancelled";
pub const AUTHORIZED: &str = "io.choreo.orders.PaymentAuthorized";
pub const DECLINED: &str = "io.choreo.orders.PaymentDeclined";
pub const REFUND: &str = "io.choreo.orders.RefundPayment";
pub const REFUNDED: &str = "io.choreo.orders.PaymentRefunded";
pub const RESERVED: &str = "io.choreo.orders.InventoryReserved";
pub const UNAVAILABLE: &str = "io.choreo.orders.InventoryUnavailable";
pub const RELEASE: &str = "io.choreo.orders.ReleaseInventory";
pub const RELEASED: &str = "io.choreo.orders.InventoryReleased";
pub const REQUESTED: &str = "io.choreo.orders.ShipmentRequested";
pub const SCHEDULED: &str = "io.choreo.orders.ShipmentScheduled";
pub const SHIP_FAILED: &str = "io.choreo.orders.ShipmentFailed";
pub const CANCEL_SHIPMENT: &str = "io.choreo.orders.CancelShipment";
pub const SHIPMENT_CANCELLED: &str = "io.choreo.orders.ShipmentCancelled";

pub fn catalog() -> Catalog {
    Catalog::reference()
}

pub fn order() -> Definition {
    Definition::reference_order_saga(&catalog()).expect("the reference order saga loads")
}

/// The reference order saga, but releasing inventory whose outcome is unknown is not safe
/// (`on_unknown_outcome = "operator"` for the inventory step, as for shipping).
pub fn order_inventory_needs_operator() -> Definition {
    let text = Definition::reference_order_saga_toml();
    let at = text
        .find("event = \"io.choreo.orders.ReleaseInventory\"")
        .expect("inventory's compensation");
    let (head, tail) = text.split_at(at);
    let tail = tail.replacen(
        "on_unknown_outcome = \"compensate\"",
        "on_unknown_outcome = \"operator\"",
        1,
    );
    Definition::from_toml(
        "order-inventory-operator.toml",
        &format!("{head}{tail}"),
        &catalog(),
    )
    .expect("the variant loads")
}

/// Sample data of one event type, for order `o-1`.
pub fn data(event_type: &str) -> Value {
    let money = json!({"amount_minor": 4200, "currency": "EUR"});
    match event_type {
        PLACED => json!({
            "order_id": "o-1", "customer_id": "c-1",
            "items": [{"sku": "sku-1", "quantity": 2,
                       "unit_price": {"amount_minor": 2100, "currency": "EUR"}}],
            "total": money, "shipping_address": "1 Main St", "channel": "web"}),
        AUTHORIZED => json!({"order_id": "o-1", "payment_id": "p-1", "amount": money}),
        DECLINED => json!({"order_id": "o-1", "reason": "insufficient funds"}),
        REFUNDED => json!({"order_id": "o-1", "payment_id": "p-1"}),
        RESERVED => json!({"order_id": "o-1", "reservation_id": "r-1",
                           "items": [{"sku": "sku-1", "quantity": 2}]}),
        UNAVAILABLE => json!({"order_id": "o-1", "reason": "out of stock",
                              "missing_skus": ["sku-1"]}),
        RELEASED => json!({"order_id": "o-1", "reservation_id": "r-1"}),
        SCHEDULED => json!({"order_id": "o-1", "shipment_id": "s-1", "carrier": "dhl",
                            "estimated_delivery_ms": 1_767_400_000_000_u64}),
        SHIP_FAILED => json!({"order_id": "o-1", "reason": "address unreachable"}),
        SHIPMENT_CANCELLED => json!({"order_id": "o-1", "shipment_id": "s-1"}),
        other => panic!("no sample for {other}"),
    }
}

/// Order `o-1` as most in-flight sagas stand (placed, payment authorized, inventory and shipping
/// pending), with event ids that share a prefix: the state the memory and changelog-size
/// figures are measured on.
pub fn in_flight_o1() -> choreo_saga::SagaState {
    use choreo_saga::{Event, Input, Millis, SagaState, apply};
    let def = order();
    let mut state = SagaState::new(&def, "o-1", Millis(1_000));
    for (i, ty) in [PLACED, AUTHORIZED].iter().enumerate() {
        let input = Input::Event(Event {
            id: format!("0f6a3c1e-6a8d-4c7e-9a51-00000000000{i}"),
            event_type: (*ty).to_owned(),
            correlation_id: "o-1".into(),
            time: Millis(1_000),
            data: data(ty),
        });
        apply(&def, &mut state, &input, Millis(1_000 + i as u64));
    }
    state
}
