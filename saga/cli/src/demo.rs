//! The demo services of `choreo dev`: an order generator and small payment, inventory and
//! shipping services that answer the order saga's events through the bus — with a configurable
//! share of declines, stock-outs, shipping failures and silent timeouts, so a newcomer sees sagas
//! complete and compensate within a minute.
//!
//! Each service is a bus subscriber in its own consumer group; outcomes are drawn from the order
//! id (a stable hash), so a redelivered event gets the same answer. [`DemoArgs`] are the knobs
//! `choreo dev` and `choreo demo` share; `choreo demo` runs the services alone, as a process of
//! their own against a real cluster ([`run`]), next to coordinator replicas of `choreo run`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use choreo_bus::{Bus, Context, Event, HandlerError, Subscription, Unhandled};
use choreo_schemas::event::{
    CancelShipment, InventoryReleased, InventoryReserved, InventoryUnavailable, LineItem, Money,
    OrderPlaced, PaymentAuthorized, PaymentDeclined, PaymentRefunded, RefundPayment,
    ReleaseInventory, ReservedItem, ShipmentCancelled, ShipmentFailed, ShipmentRequested,
    ShipmentScheduled,
};
use tokio_util::sync::CancellationToken;

/// The demo's knobs on the command line (`choreo dev`, `choreo demo`).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Orders placed per second (0: none; the services still answer).
    #[arg(long, default_value_t = 2.0)]
    pub orders_per_second: f64,
    /// Share of payments declined.
    #[arg(long, default_value_t = 0.1)]
    pub decline_rate: f64,
    /// Share of orders out of stock.
    #[arg(long, default_value_t = 0.1)]
    pub stockout_rate: f64,
    /// Share of shipments that fail.
    #[arg(long, default_value_t = 0.05)]
    pub shipping_failure_rate: f64,
    /// Share of requests a demo service never answers (deadlines fire, then compensation).
    #[arg(long, default_value_t = 0.05)]
    pub silent_rate: f64,
    /// Stop placing orders after this many.
    #[arg(long)]
    pub max_orders: Option<u64>,
}

impl DemoArgs {
    /// The options these arguments ask for, stopping on `shutdown`; a share outside 0..=1 or a
    /// negative or non-finite rate is refused, naming the flag.
    pub fn options(&self, shutdown: CancellationToken) -> Result<DemoOptions, String> {
        if !(self.orders_per_second.is_finite() && self.orders_per_second >= 0.0) {
            return Err(format!(
                "--orders-per-second must be 0 or more (got {})",
                self.orders_per_second
            ));
        }
        for (flag, share) in [
            ("--decline-rate", self.decline_rate),
            ("--stockout-rate", self.stockout_rate),
            ("--shipping-failure-rate", self.shipping_failure_rate),
            ("--silent-rate", self.silent_rate),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{flag} must be between 0 and 1 (got {share})"));
            }
        }
        Ok(DemoOptions {
            orders_per_second: self.orders_per_second,
            max_orders: self.max_orders,
            decline_rate: self.decline_rate,
            stockout_rate: self.stockout_rate,
            shipping_failure_rate: self.shipping_failure_rate,
            silent_rate: self.silent_rate,
            shutdown,
        })
    }
}

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
    /// The process's shutdown signal: the generator stops on it (a fresh token by default).
    pub shutdown: CancellationToken,
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
            shutdown: CancellationToken::new(),
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

/// Publishes a service's answer: `yes`, `no`, or nothing at all (a silent service).
async fn reply<Y: Event, N: Event>(
    ctx: &Context,
    answer: Answer,
    yes: Y,
    no: N,
) -> Result<(), HandlerError> {
    match answer {
        Answer::Silent => {}
        Answer::No => {
            ctx.publish(&no).await.map_err(publish_err)?;
        }
        Answer::Yes => {
            ctx.publish(&yes).await.map_err(publish_err)?;
        }
    }
    Ok(())
}

/// Acknowledges a compensation after some work, except for the `forget` share (drawn from the
/// order id), which the service never acknowledges.
async fn acknowledge<A: Event>(
    ctx: &Context,
    what: &str,
    forget: f64,
    ack: A,
) -> Result<(), HandlerError> {
    let order_id = ctx.correlation_id().to_owned();
    work(&order_id).await;
    if draw(&order_id, &format!("{what}-silent")) >= forget {
        ctx.publish(&ack).await.map_err(publish_err)?;
    }
    Ok(())
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

        let o1 = Arc::clone(&o);
        let forget = o.silent_rate / 4.0;
        subscriptions.push(
            sub("demo-payment-service")
                .handle("authorize-payment", move |e: OrderPlaced, ctx: Context| {
                    let answer = decide(&e.order_id, "payment", o1.decline_rate, o1.silent_rate);
                    async move {
                        work(&e.order_id).await;
                        let declined = PaymentDeclined {
                            order_id: e.order_id.clone(),
                            reason: "card declined".into(),
                        };
                        let authorized = PaymentAuthorized {
                            payment_id: format!("pay-{}", e.order_id),
                            order_id: e.order_id,
                            amount: e.total,
                        };
                        reply(&ctx, answer, authorized, declined).await
                    }
                })
                .handle(
                    "refund-payment",
                    move |e: RefundPayment, ctx: Context| async move {
                        let ack = PaymentRefunded {
                            order_id: e.order_id,
                            payment_id: e.payment_id,
                        };
                        acknowledge(&ctx, "refund", forget, ack).await
                    },
                )
                .start()?,
        );

        let o1 = Arc::clone(&o);
        subscriptions.push(
            sub("demo-inventory-service")
                .handle("reserve-stock", move |e: OrderPlaced, ctx: Context| {
                    let answer = decide(&e.order_id, "inventory", o1.stockout_rate, o1.silent_rate);
                    async move {
                        work(&e.order_id).await;
                        let unavailable = InventoryUnavailable {
                            order_id: e.order_id.clone(),
                            reason: "out of stock".into(),
                            missing_skus: e.items.iter().map(|i| i.sku.clone()).take(1).collect(),
                        };
                        let items = e
                            .items
                            .iter()
                            .map(|i| ReservedItem {
                                sku: i.sku.clone(),
                                quantity: i.quantity,
                            })
                            .collect();
                        let reserved = InventoryReserved {
                            reservation_id: format!("res-{}", e.order_id),
                            order_id: e.order_id,
                            items,
                        };
                        reply(&ctx, answer, reserved, unavailable).await
                    }
                })
                .handle(
                    "release-stock",
                    move |e: ReleaseInventory, ctx: Context| async move {
                        let ack = InventoryReleased {
                            order_id: e.order_id,
                            reservation_id: e.reservation_id,
                        };
                        acknowledge(&ctx, "release", forget, ack).await
                    },
                )
                .start()?,
        );

        let o1 = Arc::clone(&o);
        subscriptions.push(
            sub("demo-shipping-service")
                .handle(
                    "schedule-shipment",
                    move |e: ShipmentRequested, ctx: Context| {
                        let answer = decide(
                            &e.order_id,
                            "shipping",
                            o1.shipping_failure_rate,
                            o1.silent_rate,
                        );
                        async move {
                            work(&e.order_id).await;
                            let failed = ShipmentFailed {
                                order_id: e.order_id.clone(),
                                reason: "no carrier available".into(),
                            };
                            let eta = i64::try_from(
                                std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .unwrap_or_default()
                                    .as_millis(),
                            )
                            .unwrap_or(0)
                                + 3 * 86_400_000;
                            let scheduled = ShipmentScheduled {
                                shipment_id: format!("shp-{}", e.order_id),
                                order_id: e.order_id,
                                carrier: "parcelco".into(),
                                estimated_delivery_ms: eta,
                            };
                            reply(&ctx, answer, scheduled, failed).await
                        }
                    },
                )
                // Cancelling a shipment is always acknowledged.
                .handle(
                    "cancel-shipment",
                    |e: CancelShipment, ctx: Context| async move {
                        let ack = ShipmentCancelled {
                            order_id: e.order_id,
                            shipment_id: e.shipment_id,
                        };
                        acknowledge(&ctx, "cancel", 0.0, ack).await
                    },
                )
                .start()?,
        );

        let cancel = o.shutdown.child_token();
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

/// `choreo demo`: the services and the order generator on `bus` until `opts.shutdown` is
/// cancelled, a line every `report_every` saying how many orders were placed; then drains.
pub async fn run(
    bus: &Bus,
    opts: DemoOptions,
    report_every: Duration,
) -> Result<u64, choreo_bus::BusError> {
    let shutdown = opts.shutdown.clone();
    let demo = Demo::start(bus, opts).await?;
    let mut tick = tokio::time::interval(report_every);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => println!("orders placed: {:>5}", demo.orders_placed()),
        }
    }
    let placed = demo.orders_placed();
    demo.shutdown().await;
    Ok(placed)
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
        // A publish waits for the broker's acknowledgement; on shutdown the order in flight is
        // let go rather than waited for (an unreachable broker would hold it for minutes).
        let published = tokio::select! {
            () = cancel.cancelled() => return,
            r = bus.publish(&order) => r,
        };
        match published {
            Ok(_) => {
                placed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "demo order not placed"),
        }
    }
}
