//! Order saga scenarios against Kafka, written once and run against the in-process mock cluster
//! and Apache Kafka (the real broker). A driver plays the payment, inventory and shipping services; a read_committed
//! collector records every event the coordinator emitted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::wire::envelope::header;
use choreo_bus::{Bus, BusConfig, Context, EmbeddedBroker, HandlerError, Subscription, Unhandled};
use choreo_coordinator::{CoordinatorHandle, CoordinatorOptions, Guarantee};
use choreo_saga::{Definition, Definitions};
use choreo_schemas::event::*;
use choreo_schemas::{Catalog, SchemaRegistry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};

/// The order saga topics.
pub const SAGA_TOPICS: [&str; 4] = ["orders", "payments", "inventory", "shipping"];

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

/// One event the coordinator emitted, as a read_committed consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Record key (order id).
    pub key: String,
    /// `ce_type` without the namespace.
    pub event_type: String,
    /// `ce_id`.
    pub id: String,
    /// The record's timestamp (ms since the epoch; the producer's create time).
    pub timestamp: i64,
}

/// Collects the coordinator's emitted events (`ce_source` under `/choreo/sagas/`).
#[derive(Debug)]
pub struct Collector {
    seen: Arc<Mutex<Vec<Emitted>>>,
    /// The highest offset read per (topic, partition), every record counted.
    last: Arc<Mutex<HashMap<(String, i32), i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Starts reading the saga topics from the beginning, read_committed.
    pub fn start(bootstrap: &str) -> anyhow::Result<Self> {
        Self::start_with(bootstrap, "read_committed")
    }

    /// The same, read_uncommitted: records of aborted transactions included.
    pub fn start_uncommitted(bootstrap: &str) -> anyhow::Result<Self> {
        Self::start_with(bootstrap, "read_uncommitted")
    }

    fn start_with(bootstrap: &str, isolation: &str) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set(
                "group.id",
                format!("collector-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .set("session.timeout.ms", "6000")
            .create()?;
        consumer.subscribe(&SAGA_TOPICS)?;
        let seen: Arc<Mutex<Vec<Emitted>>> = Arc::default();
        let sink = Arc::clone(&seen);
        let last: Arc<Mutex<HashMap<(String, i32), i64>>> = Arc::default();
        let last_sink = Arc::clone(&last);
        let task = tokio::spawn(async move {
            // The collector's own group may rebalance (a broker crash) and read records again
            // from the start; a record is counted once per offset, so only duplicates that
            // are records of their own count.
            let mut offsets = std::collections::HashSet::new();
            loop {
                let Ok(m) = consumer.recv().await else {
                    continue;
                };
                if !offsets.insert((m.topic().to_owned(), m.partition(), m.offset())) {
                    continue;
                }
                if let Ok(mut l) = last_sink.lock() {
                    let e = l.entry((m.topic().to_owned(), m.partition())).or_insert(-1);
                    *e = (*e).max(m.offset());
                }
                let get = |k: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|x| x.key == k)
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                if !get(header::SOURCE).is_some_and(|s| s.starts_with("/choreo/sagas/")) {
                    continue;
                }
                let e = Emitted {
                    key: m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    event_type: get(header::TYPE)
                        .unwrap_or_default()
                        .rsplit('.')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    id: get(header::ID).unwrap_or_default(),
                    timestamp: m.timestamp().to_millis().unwrap_or(0),
                };
                if let Ok(mut v) = sink.lock() {
                    v.push(e);
                }
            }
        });
        Ok(Self { seen, last, task })
    }

    /// The highest offset read so far per (topic, partition), of any record.
    pub fn last_offsets(&self) -> HashMap<(String, i32), i64> {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Everything seen so far.
    pub fn all(&self) -> Vec<Emitted> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Emitted event types per order, in arrival order.
    pub fn by_order(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in self.all() {
            m.entry(e.key).or_default().push(e.event_type);
        }
        m
    }

    /// How many of `orders` are finished: every event their path calls for was emitted (for
    /// an order id without a path prefix, a terminal event).
    pub fn terminal_count(&self, orders: &[String]) -> usize {
        let m = self.by_order();
        orders.iter().filter(|o| finished(&m, o)).count()
    }

    /// Waits until every order in `orders` is finished (see [`Collector::terminal_count`]).
    pub async fn wait_terminal(&self, orders: &[String], patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let m = self.by_order();
            let missing: Vec<&String> = orders.iter().filter(|o| !finished(&m, o)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} sagas have not emitted all their path calls for after {patience:?}; e.g. {:?} emitted {:?}",
                    missing.len(),
                    orders.len(),
                    missing[0],
                    m.get(missing[0])
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn finished(m: &BTreeMap<String, Vec<String>>, order: &str) -> bool {
    let Some(got) = m.get(order) else {
        return false;
    };
    match Path::of(order) {
        Some(path) => path.expected().iter().all(|t| got.iter().any(|g| g == t)),
        None => got
            .iter()
            .any(|t| t == "OrderConfirmed" || t == "OrderCancelled"),
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn eur(c: i64) -> Money {
    Money {
        amount_minor: c,
        currency: "EUR".into(),
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
        let pay = PaymentAuthorized {
            order_id: id.clone(),
            payment_id: format!("pay-{id}"),
            amount: eur(1000),
        };
        let reserve = InventoryReserved {
            order_id: id.clone(),
            reservation_id: format!("res-{id}"),
            items: vec![],
        };
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

/// Checks that every order emitted exactly its path's events (each once).
pub fn check_exact(collector: &Collector, orders: &[(String, Path)]) -> anyhow::Result<()> {
    let by_order = collector.by_order();
    let mut problems = Vec::new();
    for (id, path) in orders {
        let mut got: Vec<String> = by_order.get(id).cloned().unwrap_or_default();
        got.sort();
        if got != path.expected() {
            problems.push(format!(
                "{id} ({path:?}): emitted {got:?}, expected {:?}",
                path.expected()
            ));
        }
    }
    if !problems.is_empty() {
        // One example per path, so a failure shows every kind of problem.
        let mut examples: BTreeMap<String, String> = BTreeMap::new();
        for p in &problems {
            let kind = p.split(['(', ')']).nth(1).unwrap_or_default().to_owned();
            examples.entry(kind).or_insert_with(|| p.clone());
        }
        bail!(
            "{} of {} sagas emitted the wrong events, e.g.:\n{}",
            problems.len(),
            orders.len(),
            examples.into_values().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// Checks the order of every saga's emitted events: a cancellation comes after every
/// compensation (it is emitted only once they are acknowledged), a confirmation after the
/// shipment request.
pub fn check_order(collector: &Collector, orders: &[(String, Path)]) -> anyhow::Result<()> {
    let mut at: HashMap<(String, String), i64> = HashMap::new();
    for e in collector.all() {
        at.entry((e.key, e.event_type)).or_insert(e.timestamp);
    }
    let ts = |o: &str, t: &str| at.get(&(o.to_owned(), t.to_owned())).copied();
    for (id, _) in orders {
        if let Some(cancel) = ts(id, "OrderCancelled") {
            for c in ["RefundPayment", "ReleaseInventory", "CancelShipment"] {
                if let Some(comp) = ts(id, c) {
                    anyhow::ensure!(
                        comp < cancel,
                        "{id}: OrderCancelled (at {cancel}) not after {c} (at {comp})"
                    );
                }
            }
        }
        if let (Some(confirm), Some(ship)) = (ts(id, "OrderConfirmed"), ts(id, "ShipmentRequested"))
        {
            anyhow::ensure!(
                ship < confirm,
                "{id}: OrderConfirmed not after ShipmentRequested"
            );
        }
    }
    Ok(())
}

/// Checks that `group` committed, for every partition of the saga topics, an offset past the
/// last record the collector read there: every input the coordinator consumed was committed
/// with the transaction that decided it, so a restarted replica does not read it again.
pub fn check_committed_past(
    bootstrap: &str,
    group: &str,
    collector: &Collector,
) -> anyhow::Result<()> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()?;
    let last = collector.last_offsets();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, p) in last.keys() {
        tpl.add_partition(t, *p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
    let mut behind = Vec::new();
    for el in committed.elements() {
        let at = el.offset().to_raw().unwrap_or(-1);
        let read = last[&(el.topic().to_owned(), el.partition())];
        if at <= read {
            behind.push(format!(
                "{}/{}: committed {at}, last record {read}",
                el.topic(),
                el.partition()
            ));
        }
    }
    anyhow::ensure!(
        behind.is_empty(),
        "the coordinator's committed offsets are behind its inputs: {behind:?}"
    );
    Ok(())
}

/// What a collector saw of the expected effects, counted by saga, event type and event id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records seen.
    pub records: usize,
    /// Expected (saga, event type) pairs with no record.
    pub missing: usize,
    /// Records beyond the first of a (saga, event type) pair.
    pub duplicated: usize,
    /// Records of a type the saga's path does not call for.
    pub unexpected: usize,
    /// (saga, event type) pairs whose records carry more than one event id.
    pub conflicting_ids: usize,
}

/// Counts the collector's records against every order's expected events.
pub fn count_effects(collector: &Collector, orders: &[(String, Path)]) -> Counts {
    let all = collector.all();
    let mut seen: HashMap<&str, HashMap<&str, Vec<&str>>> = HashMap::new();
    for e in &all {
        seen.entry(e.key.as_str())
            .or_default()
            .entry(e.event_type.as_str())
            .or_default()
            .push(e.id.as_str());
    }
    let mut c = Counts {
        records: all.len(),
        ..Counts::default()
    };
    for (id, path) in orders {
        let expected = path.expected();
        let got = seen.remove(id.as_str()).unwrap_or_default();
        for t in &expected {
            match got.get(t) {
                None => c.missing += 1,
                Some(ids) => {
                    c.duplicated += ids.len() - 1;
                    let distinct: std::collections::HashSet<&&str> = ids.iter().collect();
                    if distinct.len() > 1 {
                        c.conflicting_ids += 1;
                    }
                }
            }
        }
        for (t, ids) in &got {
            if !expected.contains(t) {
                c.unexpected += ids.len();
            }
        }
    }
    c
}

/// Checks that every order emitted its path's events at least once and, after deduplication by
/// event id, exactly once; returns how many duplicates were dropped.
pub fn check_after_dedup(
    collector: &Collector,
    orders: &[(String, Path)],
) -> anyhow::Result<usize> {
    let mut by_order: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let all = collector.all();
    let mut ids = std::collections::HashSet::new();
    let mut dups = 0;
    for e in &all {
        if !ids.insert(e.id.clone()) {
            dups += 1;
            continue;
        }
        by_order
            .entry(e.key.clone())
            .or_default()
            .insert(e.id.clone(), e.event_type.clone());
    }
    let mut problems = Vec::new();
    for (id, path) in orders {
        let mut got: Vec<String> = by_order
            .get(id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        got.sort();
        if got != path.expected() {
            problems.push(format!(
                "{id} ({path:?}): after dedup emitted {got:?}, expected {:?}",
                path.expected()
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} of {} sagas wrong:\n{}",
            problems.len(),
            orders.len(),
            problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(dups)
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
    coordinator
        .commands()
        .send(&choreo_coordinator::command::CommandRecord {
            id: uuid::Uuid::new_v4().to_string(),
            definition: "order".into(),
            correlation_id: id.into(),
            command: choreo_saga::Command::Abort {
                reason: "customer called".into(),
            },
            operator: Some("test".into()),
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
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
    let changelog = opts.changelog_topic.clone();
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
