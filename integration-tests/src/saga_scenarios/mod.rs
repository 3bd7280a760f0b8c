//! Order saga scenarios against Kafka, written once and run against the in-process mock cluster
//! and Apache Kafka (the real broker). A driver plays the payment, inventory and shipping services; a read_committed
//! collector records every event the coordinator emitted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use choreo_bus::{Bus, BusConfig, Context, EmbeddedBroker, HandlerError, Subscription, Unhandled};
use choreo_coordinator::{CoordinatorHandle, CoordinatorOptions, Guarantee};
use choreo_saga::{Definition, Definitions};
use choreo_schemas::event::*;
use choreo_schemas::{Catalog, SchemaRegistry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};

/// The order saga topics.
mod checks;
mod collector;
mod paths;

pub use checks::{
    Counts, check_after_dedup, check_committed_past, check_exact, check_order, count_effects,
};
pub use collector::{Collector, Emitted};
pub use paths::{Path, SAGA_TOPICS, inventory_reserved, order, payment_authorized};

/// Waits until an in-process coordinator is ready (its group joined, its partitions restored,
/// its view caught up), or `patience` is over.
pub async fn wait_ready(coordinator: &CoordinatorHandle, patience: Duration) -> anyhow::Result<()> {
    let ready = coordinator.readiness();
    let deadline = Instant::now() + patience;
    while !ready() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the coordinator was not ready within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The reference order saga with short deadlines: steps 2 s, shipping 4 s, saga 8 s,
/// acknowledgements 3 s with one re-emission.
pub fn fast_order_saga(catalog: &Catalog) -> anyhow::Result<Definition> {
    Ok(Definition::from_toml(
        "order-fast.toml",
        &fast_order_saga_toml(2),
        catalog,
    )?)
}

/// The reference order saga with every deadline ten minutes away: a saga that waits for a
/// silent service while the test does something else.
pub fn slow_order_saga(catalog: &Catalog) -> anyhow::Result<Definition> {
    Ok(Definition::from_toml(
        "order-slow-payment.toml",
        &fast_order_saga_toml_with_acks(600, 600),
        catalog,
    )?)
}

/// The text of the reference order saga with step deadlines of `step_secs` seconds, shipping
/// twice that, the saga four times that, acknowledgements 3 s with one re-emission.
pub fn fast_order_saga_toml(step_secs: u64) -> String {
    fast_order_saga_toml_with_acks(step_secs, 3)
}

/// Like [`fast_order_saga_toml`], with acknowledgement deadlines of `ack_secs` seconds.
pub fn fast_order_saga_toml_with_acks(step_secs: u64, ack_secs: u64) -> String {
    Definition::reference_order_saga_toml()
        .replace(
            "deadline = \"2m\"",
            &format!("deadline = \"{}s\"", step_secs * 4),
        )
        .replace(
            "deadline = \"100s\"",
            &format!("deadline = \"{}s\"", step_secs * 2),
        )
        .replace(
            "ack_deadline = \"30s\"",
            &format!("ack_deadline = \"{ack_secs}s\""),
        )
        .replace(
            "deadline = \"30s\"",
            &format!("deadline = \"{step_secs}s\""),
        )
        .replace("max_retries = 3", "max_retries = 1")
}

/// Where the saga scenarios run.
#[derive(Debug, Clone)]
pub struct SagaEnv {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// The shared registry.
    pub registry: Arc<dyn SchemaRegistry>,
    /// The in-process broker, if any (topics are created through it).
    pub embedded: Option<Arc<EmbeddedBroker>>,
    /// The guarantee to run the coordinator with.
    pub guarantee: Guarantee,
    /// Partitions of the saga topics.
    pub partitions: i32,
    /// Whether the broker is librdkafka's mock cluster (in this process or hosted).
    pub mock: bool,
}

impl SagaEnv {
    /// Coordinator options for this environment and definition.
    pub fn options(&self, def: Definition, instance: &str) -> anyhow::Result<CoordinatorOptions> {
        let catalog = Arc::new(Catalog::reference());
        let mut defs = Definitions::new();
        defs.insert(def)?;
        let mut o = CoordinatorOptions::new(
            self.kafka(),
            Arc::new(defs),
            catalog,
            Arc::clone(&self.registry),
        );
        o.guarantee = self.guarantee;
        o.partitions = self.partitions;
        o.instance_id = instance.to_owned();
        o.group_id = "choreo-test-coordinator".into();
        o.kafka_timeout = Duration::from_secs(20);
        if let Some(b) = &self.embedded {
            o.create_topics_on(b)?;
        }
        Ok(o)
    }

    /// Client settings for this broker (consumers tuned for the mock cluster's fetch wait).
    pub fn kafka(&self) -> BusConfig {
        let c = BusConfig::new(&self.bootstrap);
        if self.mock {
            c.tuned_for_embedded_broker()
        } else {
            c
        }
    }

    /// A bus for the driver.
    pub fn bus(&self, source: &str) -> anyhow::Result<Bus> {
        Ok(Bus::new(
            self.kafka().with_source(source),
            Arc::clone(&self.registry),
        )?)
    }
}

/// The services' side: answers ShipmentRequested by the order id's prefix (`shipfail-` →
/// ShipmentFailed, `shipsilent-` → nothing, else ShipmentScheduled) and acknowledges every
/// compensation. Runs as bus subscribers.
pub fn start_services(bus: &Bus) -> anyhow::Result<Subscription> {
    Ok(bus
        .subscriber(&format!("test-services-{}", uuid::Uuid::new_v4().simple()))
        .unhandled(Unhandled::Skip)
        .client_setting("session.timeout.ms", "6000")
        .handle("ship", |e: ShipmentRequested, ctx: Context| async move {
            if e.order_id.starts_with("shipsilent-") {
                return Ok(());
            }
            if e.order_id.starts_with("shipfail-") {
                ctx.publish(&ShipmentFailed {
                    order_id: e.order_id,
                    reason: "no carrier".into(),
                })
                .await
                .map_err(HandlerError::retryable)?;
            } else {
                ctx.publish(&ShipmentScheduled {
                    shipment_id: format!("shp-{}", e.order_id),
                    order_id: e.order_id,
                    carrier: "c".into(),
                    estimated_delivery_ms: 0,
                })
                .await
                .map_err(HandlerError::retryable)?;
            }
            Ok(())
        })
        .handle("refund", |e: RefundPayment, ctx: Context| async move {
            ctx.publish(&PaymentRefunded {
                order_id: e.order_id,
                payment_id: e.payment_id,
            })
            .await
            .map_err(HandlerError::retryable)?;
            Ok(())
        })
        .handle("release", |e: ReleaseInventory, ctx: Context| async move {
            ctx.publish(&InventoryReleased {
                order_id: e.order_id,
                reservation_id: e.reservation_id,
            })
            .await
            .map_err(HandlerError::retryable)?;
            Ok(())
        })
        .handle("cancel", |e: CancelShipment, ctx: Context| async move {
            ctx.publish(&ShipmentCancelled {
                order_id: e.order_id,
                shipment_id: e.shipment_id,
            })
            .await
            .map_err(HandlerError::retryable)?;
            Ok(())
        })
        .start()?)
}

/// Every path of the order saga through one in-process coordinator: the happy path, each
/// failure, each step deadline — with compensations checked by a read_committed consumer.
pub async fn order_saga_paths(env: &SagaEnv) -> anyhow::Result<()> {
    let catalog = Catalog::reference();
    let opts = env.options(fast_order_saga(&catalog)?, "paths-0")?;
    let coordinator = choreo_coordinator::start(opts)
        .await
        .context("coordinator starts")?;
    let bus = env.bus("/tests/driver")?;
    let services = start_services(&bus)?;
    let collector = Collector::start(&env.bootstrap)?;
    let mut orders = Vec::new();
    for (i, path) in Path::ALL.iter().enumerate() {
        for n in 0..3 {
            let id = format!("{}{i}-{n}", path.prefix());
            path.drive(&bus, &id).await?;
            orders.push((id, *path));
        }
    }
    let ids: Vec<String> = orders.iter().map(|(o, _)| o.clone()).collect();
    collector
        .wait_terminal(&ids, Duration::from_secs(90))
        .await?;
    // Let any wrongly repeated emission show up before judging.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let result = if env.guarantee == Guarantee::ExactlyOnce {
        check_exact(&collector, &orders)
    } else {
        check_after_dedup(&collector, &orders).map(|_| ())
    }
    .and_then(|()| check_order(&collector, &orders));
    // The operator view agrees.
    let view = coordinator.view();
    for (id, path) in &orders {
        let s = view
            .get(&format!("order/{id}"))
            .with_context(|| format!("order/{id} in the view"))?;
        let got = serde_json::to_value(s.status)?;
        anyhow::ensure!(
            got.as_str() == Some(path.status()),
            "order/{id}: {got}, expected {}",
            path.status()
        );
    }
    services.shutdown().await?;
    stop(coordinator).await?;
    result
}

/// Sends an operator's abort of order saga `id` to the commands topic, as `choreo sagas abort`
/// does.
pub async fn send_abort(
    coordinator: &CoordinatorHandle,
    id: &str,
    reason: &str,
) -> anyhow::Result<()> {
    coordinator
        .commands()
        .send(&choreo_coordinator::command::CommandRecord {
            id: uuid::Uuid::new_v4().to_string(),
            definition: "order".into(),
            correlation_id: id.into(),
            command: choreo_saga::Command::Abort {
                reason: reason.into(),
            },
            operator: Some("test".into()),
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

async fn stop(c: CoordinatorHandle) -> anyhow::Result<()> {
    c.shutdown().await?;
    Ok(())
}

/// An operator command travels through the commands topic to the replica that owns the saga:
/// a saga waiting on a silent payment service is aborted and compensated at once.
pub async fn operator_abort_through_the_commands_topic(env: &SagaEnv) -> anyhow::Result<()> {
    let catalog = Catalog::reference();
    // Deadlines far away: only the operator ends this saga.
    let def = Definition::from_toml(
        "order-slow.toml",
        &fast_order_saga_toml_with_acks(600, 600),
        &catalog,
    )?;
    let coordinator = choreo_coordinator::start(env.options(def, "commands-0")?).await?;
    let bus = env.bus("/tests/driver")?;
    let services = start_services(&bus)?;
    let collector = Collector::start(&env.bootstrap)?;
    // Placed, inventory reserved, payment still in flight when the operator aborts.
    let id = "declined-operator-1";
    Path::PaymentDeadline.drive(&bus, id).await?;
    let view = coordinator.view();
    let saga = format!("order/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !view.get(&saga).is_some_and(|s| {
        s.status == choreo_saga::Status::Running
            && s.step("inventory")
                .is_some_and(|st| st.status == choreo_saga::StepStatus::Completed)
    }) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the saga runs with inventory reserved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_abort(&coordinator, id, "customer called").await?;
    // The reservation is released and acknowledged, but the payment is still in flight: the
    // saga waits for it, compensating, and says so; no cancellation yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let released = collector
            .by_order()
            .get(id)
            .is_some_and(|v| v.iter().any(|t| t == "ReleaseInventory"));
        let waiting = view.get(&saga).is_some_and(|s| {
            s.status == choreo_saga::Status::Compensating && s.awaiting_steps() == ["payment"]
        });
        if released && waiting {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "after the abort: released {released}, compensating and waiting on payment {waiting}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    anyhow::ensure!(
        !collector
            .by_order()
            .get(id)
            .is_some_and(|v| v.iter().any(|t| t == "OrderCancelled")),
        "no cancellation while the payment is in flight"
    );
    // The payment answers (declined): nothing more to undo, and the saga is compensated.
    bus.publish(&PaymentDeclined {
        order_id: id.into(),
        reason: "card declined".into(),
    })
    .await?;
    collector
        .wait_terminal(&[id.to_owned()], Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_exact(&collector, &[(id.to_owned(), Path::PaymentDeclined)])?;
    check_order(&collector, &[(id.to_owned(), Path::PaymentDeclined)])?;
    let s = view.get(&saga).context("in the view")?;
    anyhow::ensure!(
        s.status == choreo_saga::Status::Compensated,
        "{:?}",
        s.status
    );
    anyhow::ensure!(
        s.abort_reason
            .as_deref()
            .is_some_and(|r| r.contains("customer called")),
        "{:?}",
        s.abort_reason
    );
    services.shutdown().await?;
    stop(coordinator).await
}

/// A finished saga is tombstoned after the retention: it leaves the view, and its last
/// changelog record is a tombstone (so compaction drops it and a restore skips it).
pub async fn finished_sagas_are_tombstoned(env: &SagaEnv) -> anyhow::Result<()> {
    let catalog = Catalog::reference();
    let mut opts = env.options(fast_order_saga(&catalog)?, "retention-0")?;
    opts.completed_retention = Duration::from_secs(1);
    let changelog = opts.changelog_topic();
    let coordinator = choreo_coordinator::start(opts).await?;
    let bus = env.bus("/tests/driver")?;
    let services = start_services(&bus)?;
    let collector = Collector::start(&env.bootstrap)?;
    let id = "happy-retention-1";
    Path::Happy.drive(&bus, id).await?;
    collector
        .wait_terminal(&[id.to_owned()], Duration::from_secs(60))
        .await?;
    let view = coordinator.view();
    let saga = format!("order/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_completed = false;
    loop {
        match view.get(&saga) {
            Some(s) if s.status == choreo_saga::Status::Completed => seen_completed = true,
            None if seen_completed => break,
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the completed saga leaves the view after its retention"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The changelog: the saga's records end with a tombstone.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.bootstrap)
        .set(
            "group.id",
            format!("changelog-reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[changelog.as_str()])?;
    let mut last: Option<Option<Vec<u8>>> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(last, Some(None)) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "a tombstone for {saga} in {changelog}; last record: {last:?}"
        );
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
            && m.key() == Some(saga.as_bytes())
        {
            last = Some(m.payload().map(<[u8]>::to_vec));
        }
    }
    services.shutdown().await?;
    stop(coordinator).await
}
