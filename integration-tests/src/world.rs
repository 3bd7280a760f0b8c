//! What the real-tier saga tests stand on: a broker of the test's own, choreo's registry served
//! over the Confluent REST API, coordinator replicas as `choreo run` processes, the order plans
//! and a paced driver.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use choreo_bus::{Bus, BusConfig};
use choreo_schemas::MemoryRegistry;
use futures::StreamExt;

use crate::broker::{BrokerKind, TestBroker};
use crate::process::ReplicaConfig;
use crate::saga_scenarios::{Path, fast_order_saga_toml_with_acks};

/// Partitions of every saga topic in these tests.
pub const PARTITIONS: i32 = 4;

/// A broker, a registry and a scratch folder for one test.
#[derive(Debug)]
pub struct World {
    /// The broker.
    pub broker: TestBroker,
    /// The registry's URL (Confluent REST).
    pub registry_url: String,
    /// The registry behind it.
    pub registry: Arc<MemoryRegistry>,
    _server: tokio::task::JoinHandle<()>,
    /// Scratch folder (definitions, replica logs); removed unless the test failed.
    pub dir: std::path::PathBuf,
}

/// A consumer configuration for reading a topic back in a test: `bootstrap`, a group of its
/// own, nothing committed. Callers add what they need (isolation level, offset reset).
pub fn reader_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false");
    c
}

impl World {
    /// A world on the project's own Apache Kafka, which has the SASL principals that ACLs
    /// restrict (an external broker has none): the real tier's broker when it is that one,
    /// else one started for the caller.
    pub async fn own_apache_kafka() -> World {
        match crate::broker::real_broker().await.expect("real broker") {
            b if b.kind == BrokerKind::ApacheKafka => World::new(b).await.expect("world"),
            _ => World::new(crate::broker::apache_kafka().await.expect("Apache Kafka"))
                .await
                .expect("world"),
        }
    }

    /// A world on the real tier's broker, with every saga topic created (`PARTITIONS` each).
    pub async fn real_with_saga_topics() -> World {
        let broker = crate::broker::real_broker()
            .await
            .expect("a real broker for the real tier (this tier never skips)");
        let world = World::new(broker).await.expect("world");
        let topics: Vec<(&str, i32)> = crate::saga_scenarios::SAGA_TOPICS
            .iter()
            .map(|t| (*t, PARTITIONS))
            .collect();
        world.broker.create_topics(&topics).await.expect("topics");
        world
    }

    /// A world around `broker`.
    pub async fn new(broker: TestBroker) -> anyhow::Result<World> {
        let registry = Arc::new(MemoryRegistry::new());
        let (addr, server) = choreo_schemas::server::serve(
            Arc::clone(&registry) as Arc<dyn choreo_schemas::RegistryStore>,
            "127.0.0.1:0".parse()?,
        )
        .await?;
        let dir =
            std::env::temp_dir().join(format!("choreo-saga-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(World {
            broker,
            registry_url: format!("http://{addr}"),
            registry,
            _server: server,
            dir,
        })
    }

    /// A bus for the driver and the services.
    pub fn bus(&self) -> anyhow::Result<Bus> {
        self.bus_with_delivery_timeout(None)
    }

    /// A bus whose publishes wait up to `timeout` for the broker (past an outage a test
    /// causes), or the default.
    pub fn bus_with_delivery_timeout(&self, timeout: Option<Duration>) -> anyhow::Result<Bus> {
        let mut kafka = BusConfig::new(&self.broker.bootstrap).with_source("/tests/driver");
        if let Some(t) = timeout {
            kafka.delivery_timeout_ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        }
        if self.broker.kind == BrokerKind::HostedMock {
            kafka = kafka.tuned_for_embedded_broker();
        }
        Ok(Bus::new(kafka, self.registry.clone())?)
    }

    /// A replica running the order saga with `step_secs` step deadlines and acknowledgement
    /// deadlines long enough that no compensation is re-emitted while a replica restarts (a
    /// re-emission repeats the event id by design; these tests count records).
    pub fn replica_config(&self, guarantee: &'static str, step_secs: u64) -> ReplicaConfig {
        let definition = self.dir.join(format!("order-{step_secs}s.toml"));
        std::fs::write(&definition, fast_order_saga_toml_with_acks(step_secs, 300))
            .expect("definition file");
        ReplicaConfig {
            bootstrap: self.broker.bootstrap.clone(),
            registry: self.registry_url.clone(),
            guarantee,
            definition,
            group: format!("coordinator-{}", uuid::Uuid::new_v4().simple()),
            partitions: PARTITIONS,
            mock: self.broker.kind == BrokerKind::HostedMock,
            log_dir: self.dir.clone(),
            env: Vec::new(),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files and replica logs kept in {}", self.dir.display());
        } else {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// `n` sagas, mostly happy, every failure path represented, without deadline paths.
pub fn plan(n: usize) -> Vec<(String, Path)> {
    const FAILURES: [Path; 3] = [
        Path::PaymentDeclined,
        Path::InventoryUnavailable,
        Path::ShippingFailed,
    ];
    (0..n)
        .map(|i| {
            let path = if i % 3 == 0 {
                FAILURES[(i / 3) % FAILURES.len()]
            } else {
                Path::Happy
            };
            (format!("{}{i}", path.prefix()), path)
        })
        .collect()
}

/// `n` sagas with `choreo dev`'s failure mix: per 20 orders, 2 declined payments, 2 stock-outs,
/// 2 failed shipments and 1 silent service (the payment, inventory or shipping deadline fires),
/// the other 13 happy.
pub fn plan_dev_mix(n: usize) -> Vec<(String, Path)> {
    const SILENT: [Path; 3] = [
        Path::PaymentDeadline,
        Path::InventoryDeadline,
        Path::ShippingDeadline,
    ];
    (0..n)
        .map(|i| {
            let path = match i % 20 {
                0 | 1 => Path::PaymentDeclined,
                2 | 3 => Path::InventoryUnavailable,
                4 | 5 => Path::ShippingFailed,
                6 => SILENT[(i / 20) % SILENT.len()],
                _ => Path::Happy,
            };
            (format!("{}{i}", path.prefix()), path)
        })
        .collect()
}

/// Publishes every order's inputs, `per_second` sagas a second at most (0: as fast as the
/// broker takes them), 64 sagas at once.
pub async fn drive(bus: Bus, orders: Vec<(String, Path)>, per_second: u32) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(orders.into_iter().enumerate())
        .map(|(i, (id, path))| {
            let bus = bus.clone();
            async move {
                if per_second > 0 {
                    let at = started + Duration::from_secs_f64(i as f64 / f64::from(per_second));
                    tokio::time::sleep_until(at).await;
                }
                path.drive(&bus, &id)
                    .await
                    .with_context(|| format!("driving {id}"))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A random number of milliseconds below `max`.
pub fn rand_ms(max: u64) -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32) % max.max(1)
}
