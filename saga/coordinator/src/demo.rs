//! The demo services of `choreo dev`: an order generator and small payment, inventory and
//! shipping services that answer the order saga's events through the bus — with a configurable
//! share of declines, stock-outs, shipping failures and silent timeouts, so a newcomer sees sagas
//! complete and compensate within a minute.
//!
//! Each service is a bus subscriber in its own consumer group; outcomes are drawn from the order
//! id (a stable hash), so a redelivered event gets the same answer.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use choreo_bus::{Bus, Context, HandlerError, Subscription, Unhandled};
use choreo_schemas::event::{
    CancelShipment, InventoryReleased, InventoryReserved, InventoryUnavailable, LineItem, Money,
    OrderPlaced, PaymentAuthorized, PaymentDeclined, PaymentRefunded, RefundPayment,
    ReleaseInventory, ReservedItem, ShipmentCancelled, ShipmentFailed, ShipmentRequested,
    ShipmentScheduled,
};
use tokio_util::sync::CancellationToken;

/// How the demo behaves.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Orders placed per second.
    pub orders_per_second: f64,
    /// Stop after this many orders (None: until stopped).
    pub max_orders: Option<u64>,
    /// Share of payments declined.
    pub decline_rate: f64,
    /// Share of orders out of stock.
    pub stockout_rate: f64,
    /// Share of shipments that fail.
    pub shipping_failure_rate: f64,
    /// Share of requests a service silently never answers (the saga's deadlines fire).
    pub silent_rate: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            orders_per_second: 2.0,
            max_orders: None,
            decline_rate: 0.1,
            stockout_rate: 0.1,
            shipping_failure_rate: 0.05,
            silent_rate: 0.05,
        }
    }
}

/// The running demo services.
#[derive(Debug)]
pub struct Demo {
    subscriptions: Vec<Subscription>,
    generator: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
    placed: Arc<AtomicU64>,
}

enum Answer {
    Yes,
    No,
    Silent,
}

/// A stable draw in [0, 1) for (order id, service).
fn draw(order_id: &str, service: &str) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (order_id, service).hash(&mut h);
    (h.finish() % 1_000_000) as f64 / 1_000_000.0
}

fn decide(order_id: &str, service: &str, fail_rate: f64, silent_rate: f64) -> Answer {
    let x = draw(order_id, service);
    if x < silent_rate {
        Answer::Silent
    } else if x < silent_rate + fail_rate {
        Answer::No
    } else {
        Answer::Yes
    }
}

async fn work(order_id: &str) {
    let ms = 20 + (draw(order_id, "delay") * 200.0) as u64;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn publish_err(e: choreo_bus::BusError) -> HandlerError {
    HandlerError::retryable(e)
}

impl Demo {
    /// Starts the services and the order generator.
    pub async fn start(bus: &Bus, opts: DemoOptions) -> Result<Demo, choreo_bus::BusError> {
        let o = Arc::new(opts);
        let mut subscriptions = Vec::new();
        let sub = |group: &str| {
            bus.subscriber(group)
                .unhandled(Unhandled::Skip)
                .client_setting("session.timeout.ms", "6000")
                .drain_timeout(Duration::from_secs(5))
        };

        let (o1, o2) = (Arc::clone(&o), Arc::clone(&o));
        subscriptions.push(
            sub("demo-payment-service")
                .handle("authorize-payment", move |e: OrderPlaced, ctx: Context| {
                    let o = Arc::clone(&o1);
                    async move {
                        work(&e.order_id).await;
                        match decide(&e.order_id, "payment", o.decline_rate, o.silent_rate) {
                            Answer::Silent => {}
                            Answer::No => {
                                ctx.publish(&PaymentDeclined {
                                    order_id: e.order_id,
                                    reason: "card declined".into(),
                                })
                                .await
                                .map_err(publish_err)?;
                            }
                            Answer::Yes => {
                                ctx.publish(&PaymentAuthorized {
                                    payment_id: format!("pay-{}", e.order_id),
                                    order_id: e.order_id,
                                    amount: e.total,
                                })
                                .await
                                .map_err(publish_err)?;
                            }
                        }
                        Ok(())
                    }
                })
                .handle("refund-payment", move |e: RefundPayment, ctx: Context| {
                    let o = Arc::clone(&o2);
                    async move {
                        work(&e.order_id).await;
                        if draw(&e.order_id, "refund-silent") >= o.silent_rate / 4.0 {
                            ctx.publish(&PaymentRefunded {
                                order_id: e.order_id,
                                payment_id: e.payment_id,
                            })
                            .await
                            .map_err(publish_err)?;
                        }
                        Ok(())
                    }
                })
                .start()?,
        );

        let (o1, o2) = (Arc::clone(&o), Arc::clone(&o));
        subscriptions.push(
            sub("demo-inventory-service")
                .handle("reserve-stock", move |e: OrderPlaced, ctx: Context| {
                    let o = Arc::clone(&o1);
                    async move {
                        work(&e.order_id).await;
                        match decide(&e.order_id, "inventory", o.stockout_rate, o.silent_rate) {
                            Answer::Silent => {}
                            Answer::No => {
                                let missing =
                                    e.items.iter().map(|i| i.sku.clone()).take(1).collect();
                                ctx.publish(&InventoryUnavailable {
                                    order_id: e.order_id,
                                    reason: "out of stock".into(),
                                    missing_skus: missing,
                                })
                                .await
                                .map_err(publish_err)?;
                            }
                            Answer::Yes => {
                                let items = e
                                    .items
                                    .iter()
                                    .map(|i| ReservedItem {
                                        sku: i.sku.clone(),
                                        quantity: i.quantity,
                                    })
                                    .collect();
                                ctx.publish(&InventoryReserved {
                                    reservation_id: format!("res-{}", e.order_id),
                                    order_id: e.order_id,
                                    items,
                                })
                                .await
                                .map_err(publish_err)?;
                            }
                        }
                        Ok(())
                    }
                })
                .handle("release-stock", move |e: ReleaseInventory, ctx: Context| {
                    let o = Arc::clone(&o2);
                    async move {
                        work(&e.order_id).await;
                        if draw(&e.order_id, "release-silent") >= o.silent_rate / 4.0 {
                            ctx.publish(&InventoryReleased {
                                order_id: e.order_id,
                                reservation_id: e.reservation_id,
                            })
                            .await
                            .map_err(publish_err)?;
                        }
                        Ok(())
                    }
                })
                .start()?,
        );

        let (o1, o2) = (Arc::clone(&o), Arc::clone(&o));
        subscriptions.push(
            sub("demo-shipping-service")
                .handle(
                    "schedule-shipment",
                    move |e: ShipmentRequested, ctx: Context| {
                        let o = Arc::clone(&o1);
                        async move {
                            work(&e.order_id).await;
                            match decide(
                                &e.order_id,
                                "shipping",
                                o.shipping_failure_rate,
                                o.silent_rate,
                            ) {
                                Answer::Silent => {}
                                Answer::No => {
                                    ctx.publish(&ShipmentFailed {
                                        order_id: e.order_id,
                                        reason: "no carrier available".into(),
                                    })
                                    .await
                                    .map_err(publish_err)?;
                                }
                                Answer::Yes => {
                                    let eta = i64::try_from(
                                        std::time::SystemTime::now()
                                            .duration_since(std::time::UNIX_EPOCH)
                                            .unwrap_or_default()
                                            .as_millis(),
                                    )
                                    .unwrap_or(0)
                                        + 3 * 86_400_000;
                                    ctx.publish(&ShipmentScheduled {
                                        shipment_id: format!("shp-{}", e.order_id),
                                        order_id: e.order_id,
                                        carrier: "parcelco".into(),
                                        estimated_delivery_ms: eta,
                                    })
                                    .await
                                    .map_err(publish_err)?;
                                }
                            }
                            Ok(())
                        }
                    },
                )
                .handle("cancel-shipment", move |e: CancelShipment, ctx: Context| {
                    let _o = Arc::clone(&o2);
                    async move {
                        work(&e.order_id).await;
                        ctx.publish(&ShipmentCancelled {
                            order_id: e.order_id,
                            shipment_id: e.shipment_id,
                        })
                        .await
                        .map_err(publish_err)?;
                        Ok(())
                    }
                })
                .start()?,
        );

        let cancel = CancellationToken::new();
        let placed = Arc::new(AtomicU64::new(0));
        let generator = tokio::spawn(generate(
            bus.clone(),
            Arc::clone(&o),
            cancel.clone(),
            Arc::clone(&placed),
        ));
        Ok(Demo {
            subscriptions,
            generator,
            cancel,
            placed,
        })
    }

    /// Orders placed so far.
    pub fn orders_placed(&self) -> u64 {
        self.placed.load(Ordering::Relaxed)
    }

    /// Stops the generator and the services (draining their handlers).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.generator.await;
        for s in self.subscriptions {
            if let Err(e) = s.shutdown().await {
                tracing::warn!(error = %e, "demo service shutdown");
            }
        }
    }
}

async fn generate(
    bus: Bus,
    o: Arc<DemoOptions>,
    cancel: CancellationToken,
    placed: Arc<AtomicU64>,
) {
    if o.orders_per_second <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.orders_per_second));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if o.max_orders.is_some_and(|max| n >= max) {
            return;
        }
        n += 1;
        let order_id = format!("order-{}-{n}", &run[..6]);
        let qty = 1 + (draw(&order_id, "qty") * 3.0) as i32;
        let price = 500 + (draw(&order_id, "price") * 9500.0) as i64;
        let order = OrderPlaced {
            customer_id: format!("customer-{}", n % 17),
            items: vec![LineItem {
                sku: format!("sku-{}", n % 5),
                quantity: qty,
                unit_price: Money {
                    amount_minor: price,
                    currency: "EUR".into(),
                },
            }],
            total: Money {
                amount_minor: price * i64::from(qty),
                currency: "EUR".into(),
            },
            shipping_address: format!("{n} Demo Street"),
            channel: "web".into(),
            order_id,
        };
        match bus.publish(&order).await {
            Ok(_) => {
                placed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "demo order not placed"),
        }
    }
}
