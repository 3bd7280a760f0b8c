//! The restore benchmark (`choreo bench-restore`): how long a replica takes to get ready on a
//! changelog that holds N in-flight sagas, beside the baseline of reading the same records
//! with a plain read_committed consumer on the same broker, in the same run.
//!
//! It writes N order sagas (started, payment authorized, inventory pending: their deadlines an
//! hour away, so none fires while it measures) to a changelog topic of its own, reads them back
//! with a plain consumer (baseline), then starts a coordinator on that changelog and times it
//! from start to ready: topic checks, transactions initialised, group joined, every partition
//! restored and its deadline index rebuilt. The process's resident memory before and after the
//! restore gives the memory the restored sagas hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::{Bus, BusConfig};
use choreo_saga::{DeadlineKind, Definition, Definitions, Event, Input, Millis, SagaState, apply};
use choreo_schemas::{Catalog, MemoryRegistry, SchemaRegistry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

use choreo_coordinator::QuietEof;
use choreo_coordinator::topics::partition_counts;
use choreo_coordinator::{CoordinatorHandle, CoordinatorOptions, Guarantee, start};

/// `choreo bench-restore` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreBenchArgs {
    /// Kafka to measure on; unset: the embedded broker.
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// In-flight sagas in the changelog.
    #[arg(long, default_value_t = 100_000)]
    pub sagas: usize,
    /// Partitions (taken from the `orders` topic when it exists, so the saga topics stay
    /// co-partitioned).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// After the restore, this many of the sagas have their inventory deadline come due, spread
    /// evenly over `--fire-window-secs`, while every other deadline stays pending: the lateness
    /// of each (deadline → its compensation seen by a read_committed consumer) is measured.
    #[arg(long, default_value_t = 0)]
    pub fire: usize,
    /// The window the `--fire` deadlines come due in.
    #[arg(long, default_value_t = 20)]
    pub fire_window_secs: u64,
    /// From the start of the run to the first `--fire` deadline (the changelog must be written
    /// and restored by then).
    #[arg(long, default_value_t = 90)]
    pub fire_after_secs: u64,
    /// While the `--fire` deadlines come due, new order sagas start at this rate (sagas per
    /// second, four input events each) through the bus: the load the deadlines fire under.
    #[arg(long, default_value_t = 0.0)]
    pub load_rate: f64,
}

fn rss_bytes() -> u64 {
    crate::memory::status_figure(std::process::id(), "VmRSS:").map_or(0, |kib| kib * 1024)
}

/// The order id of saga `i`.
fn order_id(i: usize) -> String {
    format!("bench-{i:07}")
}

/// One in-flight order saga: placed, payment authorized, inventory and shipping pending.
fn in_flight(def: &Definition, i: usize, now: Millis) -> SagaState {
    let id = order_id(i);
    let mut state = SagaState::new(def, id.clone(), now);
    let event = |n: &str, t: &str, data: serde_json::Value| {
        Input::Event(Event {
            id: format!("{id}-{n}"),
            event_type: t.to_owned(),
            correlation_id: id.clone(),
            time: now,
            data,
        })
    };
    let placed = event(
        "placed",
        "io.choreo.orders.OrderPlaced",
        json!({"order_id": id, "customer_id": "c-1", "shipping_address": "1 Bench Street",
               "channel": "web",
               "items": [{"sku": "sku-1", "quantity": 1, "unit_price": {"amount_minor": 1999, "currency": "EUR"}}],
               "total": {"amount_minor": 1999, "currency": "EUR"}}),
    );
    let paid = event(
        "paid",
        "io.choreo.orders.PaymentAuthorized",
        json!({"order_id": id, "payment_id": format!("pay-{i}"),
               "amount": {"amount_minor": 1999, "currency": "EUR"}}),
    );
    apply(def, &mut state, &placed, now);
    apply(def, &mut state, &paid, now);
    state
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: RestoreBenchArgs) -> anyhow::Result<()> {
    if args.sagas == 0 {
        bail!("--sagas must be at least 1");
    }
    let (embedded, bootstrap) =
        crate::loadgen::broker_or_embedded(args.bootstrap_servers.as_deref())?;
    let kafka = match &embedded {
        Some(_) => BusConfig::new(&bootstrap).tuned_for_embedded_broker(),
        None => BusConfig::new(&bootstrap),
    };
    let catalog = Arc::new(Catalog::reference());
    let def = Definition::reference_order_saga(&catalog)?;
    let memory = Arc::new(MemoryRegistry::new());
    catalog.register_all(memory.as_ref()).await?;
    let registry: Arc<dyn SchemaRegistry> = memory;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let partitions = match &embedded {
        Some(_) => args.partitions,
        None => {
            let client = kafka.client_config();
            tokio::task::spawn_blocking(move || {
                partition_counts(&client, &["orders"], Duration::from_secs(20))
            })
            .await??
            .get("orders")
            .copied()
            .unwrap_or(args.partitions)
        }
    };
    let mut defs = Definitions::new();
    defs.insert(def.clone())?;
    let mut opts = CoordinatorOptions::new(
        kafka.clone(),
        Arc::new(defs),
        catalog,
        Arc::clone(&registry),
    );
    opts.group_id = format!("restore-bench-{run}");
    opts.instance_id = "bench-0".into();
    opts.guarantee = Guarantee::ExactlyOnce;
    opts.partitions = partitions;
    // Topics of its own: named after the run's group (`restore-bench-<run>.saga-state`).
    let changelog = opts.changelog_topic();
    if let Some(b) = &embedded {
        opts.create_topics_on(b)?;
    } else {
        let client = kafka.client_config();
        choreo_coordinator::topics::ensure_topics(
            &client,
            &opts.required_topics()?,
            opts.replication_factor,
            opts.kafka_timeout,
        )
        .await?;
        opts.create_topics = false;
    }

    // Fill the changelog.
    let now = Millis(u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?)
    .plus(Duration::from_secs(3600));
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .create()?;
    let started = Instant::now();
    let fire = args.fire.min(args.sagas);
    let first_due = Millis(wall_ms()?).plus(Duration::from_secs(args.fire_after_secs));
    let due_of = |i: usize| -> Option<Millis> {
        (i < fire).then(|| {
            first_due.plus(Duration::from_millis(
                args.fire_window_secs * 1000 * i as u64 / fire as u64,
            ))
        })
    };
    let mut bytes = 0usize;
    let p = usize::try_from(partitions)?;
    for chunk in (0..args.sagas).collect::<Vec<_>>().chunks(20_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let mut state = in_flight(&def, i, now);
            if let Some(due) = due_of(i) {
                for d in &mut state.deadlines {
                    if d.kind == DeadlineKind::Step("inventory".into()) {
                        d.at = due;
                    }
                }
            }
            let value = state.encode();
            bytes += value.len();
            let partition = i32::try_from(i % p)?;
            let record = FutureRecord::to(&changelog)
                .key(&state.saga_id)
                .payload(&value)
                .partition(partition);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .context("writing the changelog")?,
            );
        }
        for d in futures::future::join_all(deliveries).await {
            d.context("delivery cancelled")?
                .map_err(|(e, _)| e)
                .context("writing the changelog")?;
        }
    }
    let fill = started.elapsed();
    println!(
        "choreo bench-restore: {} in-flight sagas, {} partitions, {} on {}",
        args.sagas,
        partitions,
        changelog,
        if embedded.is_some() {
            "the embedded broker"
        } else {
            bootstrap.as_str()
        }
    );
    println!(
        "  changelog written     {:>8.2} s   ({} B per saga, {:.1} MB)",
        fill.as_secs_f64(),
        bytes / args.sagas,
        bytes as f64 / 1e6
    );

    // Baseline: a plain read_committed consumer reads the same records.
    let (client, topic) = (kafka.consumer_config(), opts.changelog_topic());
    let baseline =
        tokio::task::spawn_blocking(move || read_all(&client, &topic, partitions)).await??;
    println!(
        "  baseline: plain read  {:>8.2} s   ({} records)",
        baseline.0.as_secs_f64(),
        baseline.1
    );

    // The coordinator's start-up alone (joining the group, fencing, sweeping): the same
    // coordinator on an empty changelog of its own.
    let mut empty = opts.clone();
    empty.group_id = format!("restore-bench-{run}-empty");
    empty.changelog_topic = None;
    empty.commands_topic = None;
    if let Some(b) = &embedded {
        // The saga topics exist already; the group's own ones do not.
        for t in empty.required_topics()? {
            if t.name.starts_with(&empty.group_id) {
                b.create_topic(&t.name, t.partitions)?;
            }
        }
    } else {
        let client = kafka.client_config();
        choreo_coordinator::topics::ensure_topics(
            &client,
            &empty.required_topics()?,
            empty.replication_factor,
            empty.kafka_timeout,
        )
        .await?;
    }
    if embedded.is_none() {
        // Fresh groups start after whatever earlier runs left in the shared saga topics.
        for o in [&empty, &opts] {
            let inputs: Vec<String> = o.input_topics()?.into_iter().collect();
            let (c, g) = (kafka.client_config(), o.group_id.clone());
            tokio::task::spawn_blocking(move || {
                crate::loadgen::plan::commit_current_end(&c, &g, &inputs, Duration::from_secs(30))
            })
            .await??;
        }
    }
    let (start_up, handle) = time_to_ready(empty).await?;
    handle.shutdown().await?;
    println!(
        "  coordinator: ready on an empty changelog {:>5.2} s   (start-up without a restore)",
        start_up.as_secs_f64()
    );

    // The coordinator: start → ready (every partition restored, index rebuilt).
    // Resident memory is read with the allocator's freed memory given back, before and after,
    // as `choreo run` gives it back every minute (`memory::give_back_periodically`): what the
    // restored sagas hold, not what the restore freed and the allocator still keeps.
    tokio::task::spawn_blocking(crate::memory::give_back_freed_memory).await?;
    let rss_before = rss_bytes();
    let (restore, handle) = time_to_ready(opts).await?;
    let rss_ready = rss_bytes();
    tokio::task::spawn_blocking(crate::memory::give_back_freed_memory).await?;
    let rss_after = rss_bytes();
    let sagas = handle.view().len();
    println!(
        "  coordinator: ready    {:>8.2} s   ({:.0} sagas/s; ratio to the baseline read {:.2}x)",
        restore.as_secs_f64(),
        args.sagas as f64 / restore.as_secs_f64(),
        restore.as_secs_f64() / baseline.0.as_secs_f64().max(1e-9)
    );
    let restore_alone = restore.saturating_sub(start_up);
    println!(
        "  restore alone         {:>8.2} s   (ready minus the empty start-up: {:.0} sagas/s; ratio to the baseline read {:.2}x)",
        restore_alone.as_secs_f64(),
        args.sagas as f64 / restore_alone.as_secs_f64().max(1e-9),
        restore_alone.as_secs_f64() / baseline.0.as_secs_f64().max(1e-9)
    );
    println!(
        "  resident memory       {:>8.1} MB more ({} B per saga, owned states and the operator view of {sagas} sagas together; {} B at ready, before freed memory was given back)",
        rss_after.saturating_sub(rss_before) as f64 / 1e6,
        rss_after.saturating_sub(rss_before) / u64::try_from(args.sagas)?,
        rss_ready.saturating_sub(rss_before) / u64::try_from(args.sagas)?
    );
    if fire > 0 {
        let pending: usize = 2 * args.sagas;
        let client = kafka.client_config();
        let load = (args.load_rate > 0.0).then(|| {
            let bus = Bus::new(
                kafka.clone().with_source("/choreo/bench/load"),
                Arc::clone(&registry),
            );
            let until_done =
                Duration::from_millis(first_due.0.saturating_sub(wall_ms().unwrap_or(0)))
                    + Duration::from_secs(args.fire_window_secs + 5);
            let n = (args.load_rate * until_done.as_secs_f64()).ceil() as usize;
            let rate = args.load_rate;
            tokio::spawn(async move {
                let bus = bus?;
                let run = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
                let started = Instant::now();
                crate::loadgen::plan::drive(n, 100_000, Some(rate), |i| {
                    let (bus, s) = (&bus, crate::loadgen::plan::saga_inputs(&run, i));
                    async move { crate::loadgen::plan::publish_saga(bus, &s).await }
                })
                .await?;
                anyhow::Ok((n, started.elapsed()))
            })
        });
        let deadline = Instant::now()
            + Duration::from_secs(args.fire_after_secs + args.fire_window_secs + 300);
        let due: std::collections::HashMap<String, u64> = (0..fire)
            .filter_map(|i| due_of(i).map(|at| (order_id(i), at.0)))
            .collect();
        let late =
            tokio::task::spawn_blocking(move || watch_compensations(&client, fire, &due, deadline))
                .await??;
        print_lateness(fire, pending, args.fire_window_secs, &late);
        if let Some(load) = load {
            let (n, took) = load.await??;
            println!(
                "  load meanwhile          {n} new order sagas through the bus, {:.0} input events/s",
                4.0 * n as f64 / took.as_secs_f64().max(1e-9)
            );
        }
    }
    handle.shutdown().await?;
    Ok(())
}

/// Milliseconds since the epoch, now.
fn wall_ms() -> anyhow::Result<u64> {
    Ok(u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?)
}

/// Waits for the first `RefundPayment` of each of the `fire` sagas (what its inventory deadline
/// makes it emit) on `payments`, read_committed, and returns each one's lateness in ms: when it
/// was seen, minus when its deadline was due.
fn watch_compensations(
    client: &ClientConfig,
    fire: usize,
    due: &std::collections::HashMap<String, u64>,
    deadline: Instant,
) -> anyhow::Result<Vec<f64>> {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    let consumer: BaseConsumer<QuietEof> = client
        .clone()
        .set("group.id", "restore-bench-deadlines")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(QuietEof)?;
    let topic = "payments";
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(20))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, i32::try_from(p)?, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    let mut late: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    while late.len() < fire {
        if Instant::now() > deadline {
            bail!(
                "{} of {fire} deadlines fired in time for the benchmark to see them",
                late.len()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let seen = wall_ms()?;
                let is_refund = m.headers().is_some_and(|h| {
                    h.iter().any(|h| {
                        h.key == "ce_type"
                            && h.value == Some(b"io.choreo.orders.RefundPayment".as_slice())
                    })
                });
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                if let (true, Some(key)) = (is_refund, key)
                    && let Some(&due) = due.get(&key)
                {
                    late.entry(key).or_insert(seen.saturating_sub(due) as f64);
                }
            }
            Some(Err(e)) => bail!("watching payments: {e}"),
            None => {}
        }
    }
    Ok(late.into_values().collect())
}

fn print_lateness(fire: usize, pending: usize, window_secs: u64, late: &[f64]) {
    let mut v = late.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "  deadlines               {fire} came due over {window_secs} s ({:.0}/s) among {pending} pending",
        fire as f64 / window_secs.max(1) as f64
    );
    println!(
        "  deadline lateness       p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms   (due → its compensation seen by a read_committed consumer)",
        q(0.50),
        q(0.99),
        q(1.0)
    );
}

/// Reads every partition of `topic` from the start to its end, read_committed.
fn read_all(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<(Duration, u64)> {
    // Fetched as the restore fetches, so that the two differ only in what they do with records.
    let consumer: BaseConsumer<QuietEof> = choreo_bus::read_back(
        client.clone(),
        choreo_bus::ReadBack::ToEnd,
        "restore-bench-baseline",
    )
    .create_with_context(QuietEof)?;
    let started = Instant::now();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut records, mut at_end) = (0u64, 0);
    while at_end < partitions {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => records += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
            Some(Err(e)) => bail!("baseline read: {e}"),
            None => {}
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("baseline read did not finish in 30 minutes");
        }
    }
    Ok((started.elapsed(), records))
}

/// Starts a coordinator and returns how long it took to be ready (group joined, every assigned
/// partition restored, the deadline index rebuilt), with its handle.
async fn time_to_ready(opts: CoordinatorOptions) -> anyhow::Result<(Duration, CoordinatorHandle)> {
    let started = Instant::now();
    let handle = start(opts).await?;
    let ready = handle.readiness();
    while !ready() {
        if handle.is_finished() {
            bail!("the coordinator stopped before it was ready");
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("not ready after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((started.elapsed(), handle))
}
