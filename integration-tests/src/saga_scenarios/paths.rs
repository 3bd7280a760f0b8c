//! The order saga's topics, the orders the driver places, and the paths an order takes
//! (happy, declined, late payment, …) with what each must emit.

use std::time::Duration;

use choreo_bus::Bus;
use choreo_schemas::event::*;

/// The order saga topics.
/// What the driver publishes for one order, by its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Every step succeeds.
    Happy,
    /// Payment declined (inventory reserved).
    PaymentDeclined,
    /// Inventory unavailable (payment authorized).
    InventoryUnavailable,
    /// Shipping fails.
    ShippingFailed,
    /// Payment never answers.
    PaymentDeadline,
    /// Inventory never answers.
    InventoryDeadline,
    /// Shipping never answers.
    ShippingDeadline,
    /// Inventory fails while the payment is in flight; the payment succeeds after the abort.
    LatePayment,
}

impl Path {
    /// Every path.
    pub const ALL: [Path; 8] = [
        Path::Happy,
        Path::PaymentDeclined,
        Path::InventoryUnavailable,
        Path::ShippingFailed,
        Path::PaymentDeadline,
        Path::InventoryDeadline,
        Path::ShippingDeadline,
        Path::LatePayment,
    ];

    /// The order id prefix that also tells the shipping service what to do.
    pub fn prefix(self) -> &'static str {
        match self {
            Path::Happy => "happy-",
            Path::PaymentDeclined => "declined-",
            Path::InventoryUnavailable => "stockout-",
            Path::ShippingFailed => "shipfail-",
            Path::PaymentDeadline => "paysilent-",
            Path::InventoryDeadline => "invsilent-",
            Path::ShippingDeadline => "shipsilent-",
            Path::LatePayment => "latepay-",
        }
    }

    /// The path an order id's prefix names.
    pub fn of(order_id: &str) -> Option<Path> {
        Path::ALL
            .into_iter()
            .find(|p| order_id.starts_with(p.prefix()))
    }

    /// The events the coordinator must emit for this path, sorted. A step that never answers
    /// has an unknown outcome at its deadline: payment and inventory are compensated anyway
    /// (the reference saga says their compensation is safe then), shipping is not, so that
    /// saga compensates the rest and then needs an operator, without a cancellation.
    pub fn expected(self) -> Vec<&'static str> {
        let mut v = match self {
            Path::Happy => vec!["ShipmentRequested", "OrderConfirmed"],
            Path::PaymentDeclined => vec!["ReleaseInventory", "OrderCancelled"],
            Path::InventoryUnavailable | Path::LatePayment => {
                vec!["RefundPayment", "OrderCancelled"]
            }
            Path::PaymentDeadline | Path::InventoryDeadline => {
                vec!["RefundPayment", "ReleaseInventory", "OrderCancelled"]
            }
            Path::ShippingFailed => vec![
                "ShipmentRequested",
                "RefundPayment",
                "ReleaseInventory",
                "OrderCancelled",
            ],
            Path::ShippingDeadline => {
                vec!["ShipmentRequested", "RefundPayment", "ReleaseInventory"]
            }
        };
        v.sort_unstable();
        v
    }

    /// The saga status this path ends in.
    pub fn status(self) -> &'static str {
        match self {
            Path::Happy => "completed",
            Path::ShippingDeadline => "needs_operator",
            _ => "compensated",
        }
    }

    /// Publishes this path's inputs for `order_id`.
    pub async fn drive(self, bus: &Bus, order_id: &str) -> anyhow::Result<()> {
        let id = order_id.to_owned();
        bus.publish(&order(&id)).await?;
        let (pay, reserve) = (payment_authorized(&id), inventory_reserved(&id));
        match self {
            Path::Happy | Path::ShippingFailed | Path::ShippingDeadline => {
                bus.publish(&pay).await?;
                bus.publish(&reserve).await?;
            }
            Path::PaymentDeclined => {
                bus.publish(&reserve).await?;
                bus.publish(&PaymentDeclined {
                    order_id: id,
                    reason: "card declined".into(),
                })
                .await?;
            }
            Path::InventoryUnavailable => {
                bus.publish(&pay).await?;
                bus.publish(&InventoryUnavailable {
                    order_id: id,
                    reason: "out of stock".into(),
                    missing_skus: vec![],
                })
                .await?;
            }
            Path::PaymentDeadline => {
                bus.publish(&reserve).await?;
            }
            Path::InventoryDeadline => {
                bus.publish(&pay).await?;
            }
            Path::LatePayment => {
                bus.publish(&InventoryUnavailable {
                    order_id: id,
                    reason: "out of stock".into(),
                    missing_skus: vec![],
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                bus.publish(&pay).await?;
            }
        }
        Ok(())
    }
}

pub const SAGA_TOPICS: [&str; 4] = ["orders", "payments", "inventory", "shipping"];

fn eur(c: i64) -> Money {
    Money {
        amount_minor: c,
        currency: "EUR".into(),
    }
}

/// The payment the driver authorizes for `id` (10.00 EUR).
pub fn payment_authorized(id: &str) -> PaymentAuthorized {
    PaymentAuthorized {
        order_id: id.to_owned(),
        payment_id: format!("pay-{id}"),
        amount: eur(1000),
    }
}

/// The inventory the driver reserves for `id`.
pub fn inventory_reserved(id: &str) -> InventoryReserved {
    InventoryReserved {
        order_id: id.to_owned(),
        reservation_id: format!("res-{id}"),
        items: vec![],
    }
}

/// An order placed by the driver.
pub fn order(id: &str) -> OrderPlaced {
    OrderPlaced {
        order_id: id.into(),
        customer_id: "c-1".into(),
        items: vec![LineItem {
            sku: "sku-1".into(),
            quantity: 1,
            unit_price: eur(1000),
        }],
        total: eur(1000),
        shipping_address: "1 Test Street".into(),
        channel: "web".into(),
    }
}
