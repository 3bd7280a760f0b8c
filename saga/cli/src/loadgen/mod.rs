//! The saga load generator (`choreo loadgen`).
//!
//! Drives N order sagas through a broker and measures them against a baseline taken in the same
//! run, on the same broker:
//!
//! 1. **Coordinator phase.** A coordinator runs in-process with the reference order saga. For each
//!    saga, `OrderPlaced`, then `PaymentAuthorized`, `InventoryReserved` and `ShipmentScheduled`
//!    (concurrently) are published through a [`Bus`], keyed by the order id; up to
//!    `--concurrency` sagas are in flight. A read_committed consumer on `orders` waits for each
//!    saga's `OrderConfirmed` (the coordinator's committed decision).
//! 2. **Baseline phase.** Fresh input topics (one per saga input topic) and an output topic, with
//!    the same partition count, receive the same number of records with the same encoded
//!    values, keys and publishing pattern. A plain consume → produce pipe with no saga logic
//!    copies every input to the output: one Kafka transaction per batch (up to 500 records or
//!    `--batch-linger-ms`, like the coordinator) with `send_offsets_to_transaction`; with
//!    `effectively_once`, an idempotent producer and offsets committed after the deliveries.
//!    A read_committed consumer on the output waits for each key's four outputs.
//!
//! The baseline awaits its records' deliveries before `commit_transaction`. rdkafka's
//! `commit_transaction` first calls its own `flush`, which, while records are in flight, polls
//! the producer's event queue for up to 100 ms — but a `FutureProducer`'s background thread
//! takes the delivery reports from that queue, so the poll sleeps the whole 100 ms: a
//! transaction committed with records in flight costs at least ~100 ms
//! (`--baseline-commit-in-flight` measures the pipe that way).
//!
//! Latency of one saga (key): from the acknowledgement of its last input to the moment its
//! decision (`OrderConfirmed`; for the baseline, its fourth output) is seen by the read_committed
//! consumer. Throughput: input events / (first publish → last decision seen).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::{Bus, BusConfig};
use choreo_saga::{Definition, Definitions};
use choreo_schemas::event::{OrderCancelled, OrderConfirmed, OrderPlaced};
use choreo_schemas::{Catalog, Event, MemoryRegistry, SchemaRegistry};

use choreo_coordinator::topics::partition_counts;
use choreo_coordinator::{CoordinatorOptions, start};

mod baseline;
pub(crate) mod plan;
pub(crate) mod watcher;

use baseline::baseline_phase;
pub(crate) use plan::broker_or_embedded;
use plan::{
    Figures, SagaInputs, Setup, commit_current_end, create_topics, drive, figures, publish_saga,
    saga_inputs,
};
pub use plan::{LoadGuarantee, LoadgenArgs};
use watcher::{Decision, Progress, await_watcher, watch, watch_consumer};

/// Runs the load generator.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.sagas == 0 {
        bail!("--sagas must be at least 1");
    }
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (embedded, bootstrap) = broker_or_embedded(args.bootstrap_servers.as_deref())?;
    let catalog = Arc::new(Catalog::reference());
    let memory = Arc::new(MemoryRegistry::new());
    catalog.register_all(memory.as_ref()).await?;
    let registry: Arc<dyn SchemaRegistry> = memory;
    let bus = Bus::new(
        BusConfig::new(&bootstrap).with_source("/choreo/loadgen"),
        Arc::clone(&registry),
    )?;
    let fetch_wait_max_ms = args.fetch_wait_max_ms.or(embedded.as_ref().map(|_| 10));
    let setup = Setup {
        run,
        bootstrap,
        fetch_wait_max_ms,
        embedded,
        catalog,
        registry,
        bus,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
    };

    let broker = match &setup.embedded {
        Some(_) => format!(
            "embedded (librdkafka mock cluster, 1 broker, {})",
            setup.bootstrap
        ),
        None => setup.bootstrap.clone(),
    };
    println!("choreo loadgen");
    println!(
        "  sagas        {} ({} input events)",
        args.sagas,
        4 * args.sagas
    );
    println!("  partitions   {}", args.partitions);
    println!("  guarantee    {}", args.guarantee.name());
    println!("  broker       {broker}");
    println!("  concurrency  {} sagas in flight", args.concurrency);
    if let Some(rate) = args.rate {
        println!(
            "  rate         {rate} sagas/s ({} input events/s)",
            4.0 * rate
        );
    }
    println!(
        "  consumers    read_committed, fetch.wait.max.ms {}",
        setup.fetch_wait_max_ms.map_or_else(
            || "librdkafka default (500)".to_owned(),
            |ms| ms.to_string()
        )
    );
    println!(
        "  batches      up to {} records or {} ms linger (coordinator and baseline pipe)",
        baseline::BATCH_MAX_RECORDS,
        args.batch_linger_ms
    );
    println!(
        "  baseline     {}",
        match (
            args.guarantee.transactional(),
            args.baseline_commit_in_flight
        ) {
            (true, false) => "one transaction per batch; deliveries awaited, then commit",
            (true, true) => "one transaction per batch; commit with deliveries in flight",
            (false, _) => "idempotent producer; deliveries awaited, then offsets committed",
        }
    );
    println!("  run id       {}", setup.run);
    println!();

    eprintln!("coordinator phase: {} sagas…", args.sagas);
    let saga = saga_phase(&setup, &args).await?;
    eprintln!(
        "coordinator phase: done in {:.2} s",
        saga.elapsed.as_secs_f64()
    );
    eprintln!("baseline phase: {} keys…", args.sagas);
    let base = baseline_phase(&setup, &args).await?;
    eprintln!(
        "baseline phase: done in {:.2} s",
        base.elapsed.as_secs_f64()
    );
    if let Err(e) = setup.bus.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "flushing the load generator's producer");
    }

    let baseline_label = match (
        args.guarantee.transactional(),
        args.baseline_commit_in_flight,
    ) {
        (true, false) => "baseline (transactional pipe)",
        (true, true) => "baseline (transactional pipe, commit in flight)",
        (false, _) => "baseline (idempotent pipe, no transactions)",
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<48} {:>10} {:>10} {:>10}",
        "", "events/s", "p50 ms", "p99 ms"
    );
    for (label, f) in [
        (baseline_label, base),
        ("choreo coordinator (order saga)", saga),
    ] {
        let _ = writeln!(
            out,
            "{label:<48} {:>10.0} {:>10.1} {:>10.1}",
            f.events_per_second,
            ms(f.p50),
            ms(f.p99)
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let _ = writeln!(
        out,
        "ratio coordinator/baseline: throughput {:.2}, p50 {:.1}x, p99 {:.1}x",
        ratio(saga.events_per_second, base.events_per_second),
        ratio(ms(saga.p50), ms(base.p50)),
        ratio(ms(saga.p99), ms(base.p99)),
    );
    let _ = writeln!(
        out,
        "(latency: last input acknowledged → decision seen by a read_committed consumer; \
         throughput: {} input events / first publish → last decision)",
        4 * args.sagas
    );
    print!("{out}");
    Ok(())
}

async fn saga_phase(setup: &Setup, args: &LoadgenArgs) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + setup.timeout;
    let mut defs = Definitions::new();
    defs.insert(Definition::reference_order_saga(&setup.catalog)?)?;
    let mut opts = CoordinatorOptions::new(
        setup.kafka().with_source("/choreo/loadgen/coordinator"),
        Arc::new(defs),
        Arc::clone(&setup.catalog),
        Arc::clone(&setup.registry),
    );
    opts.partitions = args.partitions;
    opts.guarantee = args.guarantee.coordinator();
    opts.instance_id = "loadgen-0".into();
    opts.batch_linger = Duration::from_millis(args.batch_linger_ms);
    opts.group_id = format!("choreo-loadgen-{}", setup.run);
    if setup.embedded.is_none() {
        // The catalog topics are shared with whatever else uses this cluster; the coordinator's
        // own topics are this run's.
        opts.changelog_topic = Some(format!("choreo.loadgen-{}.saga-state", setup.run));
        opts.commands_topic = Some(format!("choreo.loadgen-{}.saga-commands", setup.run));
    }
    let client = setup.client();
    let specs = opts.required_topics()?;
    create_topics(setup.embedded.as_ref(), &client, &specs, setup.timeout).await?;
    opts.create_topics = false;
    opts.embedded_broker = setup.embedded.is_some();
    if setup.embedded.is_none() {
        let inputs: Vec<String> = opts.input_topics()?.into_iter().collect();
        let (c, g, t) = (client.clone(), opts.group_id.clone(), setup.timeout);
        tokio::task::spawn_blocking(move || commit_current_end(&c, &g, &inputs, t))
            .await
            .context("offset task")??;
    }

    let orders = OrderPlaced::TOPIC;
    let orders_partitions = {
        let (c, t) = (client.clone(), setup.timeout);
        tokio::task::spawn_blocking(move || {
            partition_counts(&c, &[orders], t).map_err(anyhow::Error::from)
        })
        .await
        .context("metadata task")??
        .get(orders)
        .copied()
        .with_context(|| format!("topic {orders} does not exist"))?
    };
    let consumer = watch_consumer(
        &client,
        &format!("choreo-loadgen-{}-watch", setup.run),
        orders,
        orders_partitions,
        setup.timeout,
    )?;

    let mut coordinator = start(opts).await.context("starting the coordinator")?;
    let ready = coordinator.readiness();
    while !ready() {
        if coordinator.is_finished() {
            let r = coordinator.wait().await;
            bail!("the coordinator stopped during start-up: {r:?}");
        }
        if Instant::now() > deadline {
            bail!("the coordinator was not ready (group joined, partitions restored) in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let n = args.sagas;
    let progress = Arc::new(Progress::default());
    let mut watcher = tokio::spawn(watch(
        consumer,
        setup.prefix(),
        n,
        Decision::Type {
            success: OrderConfirmed::TYPE.to_owned(),
            failure: OrderCancelled::TYPE.to_owned(),
        },
        Arc::clone(&progress),
    ));

    let inputs: Vec<SagaInputs> = (0..n).map(|i| saga_inputs(&setup.run, i)).collect();
    let bus = &setup.bus;
    let published = drive(n, args.concurrency, args.rate, |i| {
        publish_saga(bus, &inputs[i])
    })
    .await;
    let (started, acks) = match published {
        Ok(x) => x,
        Err(e) => {
            watcher.abort();
            let _ = coordinator.shutdown().await;
            return Err(e);
        }
    };

    let seen = await_watcher(
        &mut watcher,
        &progress,
        n,
        deadline,
        "coordinator phase",
        || {
            if coordinator.is_finished() {
                bail!("the coordinator stopped (see the log above)");
            }
            Ok(())
        },
    )
    .await;
    let seen = match seen {
        Ok(s) => s,
        Err(e) => {
            let reason = first_cancellation(bus, &progress).await;
            let _ = coordinator.shutdown().await;
            return Err(match reason {
                Some(r) => e.context(format!("first OrderCancelled reason: {r}")),
                None => e,
            });
        }
    };
    coordinator
        .shutdown()
        .await
        .context("stopping the coordinator")?;
    Ok(figures(started, &acks, &seen, 4 * n))
}

async fn first_cancellation(bus: &Bus, progress: &Progress) -> Option<String> {
    let payload = progress
        .first_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()?;
    bus.codec()
        .decode::<OrderCancelled>(&payload)
        .await
        .ok()
        .map(|c| format!("{} ({})", c.reason, c.order_id))
}

#[cfg(test)]
mod tests {
    use super::plan::{LoadGuarantee, percentile};
    use std::time::Duration;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn guarantee_names_parse() {
        use clap::ValueEnum as _;
        for (s, g) in [
            ("exactly_once", LoadGuarantee::ExactlyOnce),
            ("effectively_once", LoadGuarantee::EffectivelyOnce),
            ("exactly-once", LoadGuarantee::ExactlyOnce),
        ] {
            assert_eq!(LoadGuarantee::from_str(s, false).ok(), Some(g));
        }
    }
}
