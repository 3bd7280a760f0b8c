//! The schema registry the long-running commands use (`choreo run`, `ingest`, `demo`,
//! `registry`): `registry.url` (any Confluent REST registry), or choreo's own, in memory or in a
//! compacted Kafka topic (`registry.store`), served on `registry.listen` when set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use choreo_bus::schema_store::{KafkaSchemaStore, SchemaTopic};
use choreo_coordinator::config::{Config, RegistryStoreKind};
use choreo_schemas::{Catalog, ConfluentRegistry, MemoryRegistry, RegistryStore, SchemaRegistry};

/// The schema registry of `choreo run`, `ingest` and `demo`: `registry.url`, or choreo's own
/// (in memory or in a Kafka topic, see `registry.store`), the catalog registered in it and
/// served on `registry.listen` when set.
pub async fn registry_of(
    cfg: &Config,
    catalog: &Catalog,
) -> anyhow::Result<Arc<dyn SchemaRegistry>> {
    if let Some(url) = &cfg.registry.url {
        return Ok(Arc::new(ConfluentRegistry::new(url)));
    }
    let (store, registry): (Arc<dyn RegistryStore>, Arc<dyn SchemaRegistry>) =
        match cfg.registry.store {
            RegistryStoreKind::Memory => {
                let memory = Arc::new(MemoryRegistry::new());
                (Arc::clone(&memory) as Arc<dyn RegistryStore>, memory)
            }
            RegistryStoreKind::Kafka => {
                let kafka = open_schema_topic(cfg).await?;
                (Arc::clone(&kafka) as Arc<dyn RegistryStore>, kafka)
            }
        };
    register_catalog(catalog, registry.as_ref()).await?;
    if let Some(addr) = cfg.registry.listen {
        serve_registry(cfg, store, addr).await?;
    }
    Ok(registry)
}

/// Registers the catalog, retrying what may pass on another try for up to a minute: with
/// `registry.store = "kafka"` replicas that start together all write through the one
/// transactional id. The store writes the catalog's new schemas in one transaction and tries a
/// fenced write again itself (it then finds the schemas written, or writes them); what it still
/// refuses, and a broker not reachable yet, are tried again here.
async fn register_catalog(catalog: &Catalog, registry: &dyn SchemaRegistry) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delay = Duration::from_millis(100);
    loop {
        match catalog.register_all(registry).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::info!(error = %e, "registering the catalog's schemas: trying again");
                let jitter = Duration::from_millis(
                    u64::try_from(uuid::Uuid::new_v4().as_u128() % 250).unwrap_or(0),
                );
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("registering the catalog's schemas"));
            }
        }
    }
}

/// choreo's registry store in its compacted Kafka topic (`registry.topic`), opened and read.
pub async fn open_schema_topic(cfg: &Config) -> anyhow::Result<Arc<KafkaSchemaStore>> {
    let mut topic = SchemaTopic::new(cfg.kafka.bus_config("/choreo/registry"));
    topic.topic.clone_from(&cfg.registry.topic);
    topic.replication_factor = cfg.coordinator.replication_factor;
    topic.timeout = cfg.coordinator.kafka_timeout;
    KafkaSchemaStore::open(topic)
        .await
        .with_context(|| format!("opening the schema topic {}", cfg.registry.topic))
}

/// Serves `store` over the Confluent REST API on `addr`, writes guarded by the token in
/// `registry.write_token_env` when set.
pub async fn serve_registry(
    cfg: &Config,
    store: Arc<dyn RegistryStore>,
    addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let token = match &cfg.registry.write_token_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("registry.write_token_env: {var} is not set"))?,
        ),
        None => None,
    };
    let app = choreo_schemas::server::router_with_token(store, token);
    let (a, task) = choreo_schemas::server::serve_app(app, addr)
        .await
        .with_context(|| format!("cannot serve the schema registry on {addr} (registry.listen)"))?;
    tracing::info!(addr = %a, "schema registry served");
    Ok((a, task))
}
