//! The HTTP ingest benchmark (`choreo bench-ingest`): OrderPlaced events posted to the ingest
//! over keep-alive connections, in binary mode (one event per request) and in batch mode,
//! each beside the baseline of the same events — already Avro-encoded — produced directly
//! with rdkafka (idempotent, acks=all, the bus's settings) on the same broker, in the same run.
//!
//! The load generator runs in the same process as the ingest, so on a small machine it takes
//! its share of the cores: the figures are a floor for the ingest alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::{Bus, BusConfig};
use choreo_coordinator::ingest::{self, EventSink, IngestOptions, auth::Auth};
use choreo_coordinator::topics::{TopicSpec, ensure_topics};
use choreo_schemas::{Catalog, MemoryRegistry, SchemaRegistry};
use futures::StreamExt as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// `choreo bench-ingest` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestBenchArgs {
    /// Kafka to measure on; unset: the embedded broker.
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Events per mode.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Keep-alive HTTP connections (concurrent requests).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Events per request in batch mode.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Partitions of the `orders` topic when it is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Also drive this many order sagas end to end at each `--saga-concurrency`: a coordinator
    /// runs in this process, each saga's four events are posted one after another (binary
    /// mode), and each saga counts once its OrderConfirmed is read (read_committed). 0: skip.
    #[arg(long, default_value_t = 0)]
    pub sagas: usize,
    /// Sagas driven at once in the end-to-end runs (one run per value).
    #[arg(long, value_delimiter = ',', default_values_t = [32, 128])]
    pub saga_concurrency: Vec<usize>,
}

const PLACED: &str = "io.choreo.orders.OrderPlaced";

fn data(order_id: &str) -> Value {
    json!({
        "order_id": order_id, "customer_id": "c-1", "shipping_address": "1 Bench Street",
        "items": [{"sku": "sku-1", "quantity": 1, "unit_price": {"amount_minor": 1999, "currency": "EUR"}}],
        "total": {"amount_minor": 1999, "currency": "EUR"}
    })
}

/// One mode's figures.
#[derive(Debug)]
struct Figures {
    mode: &'static str,
    events: usize,
    elapsed: Duration,
    /// Per request (binary, batch) or per record (baseline), sorted.
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.connections == 0 || args.batch_size == 0 {
        bail!("--events, --connections and --batch-size must be positive");
    }
    let (embedded, bootstrap) =
        crate::loadgen::broker_or_embedded(args.bootstrap_servers.as_deref())?;
    let kafka = match &embedded {
        Some(_) => BusConfig::new(&bootstrap).tuned_for_embedded_broker(),
        None => BusConfig::new(&bootstrap),
    };
    match &embedded {
        Some(b) => b.create_topic("orders", args.partitions)?,
        None => ensure_topics(
            &kafka.client_config(),
            &[TopicSpec {
                name: "orders".into(),
                partitions: args.partitions,
                compacted: false,
            }],
            None,
            Duration::from_secs(30),
        )
        .await
        .context("creating the orders topic")?,
    }
    let catalog = Arc::new(Catalog::reference());
    let memory = Arc::new(MemoryRegistry::new());
    catalog.register_all(memory.as_ref()).await?;
    let registry: Arc<dyn SchemaRegistry> = memory;
    let coordinator_kafka = kafka.clone();
    let watch_client = kafka.client_config();
    let kafka = ingest::producer_config(kafka.with_source("/bench/ingest"));
    let bus = Bus::new(kafka.clone(), Arc::clone(&registry))?;
    let stop = CancellationToken::new();
    let (addr, server) = ingest::serve(
        IngestOptions {
            catalog: Arc::clone(&catalog),
            codec: bus.codec().clone(),
            sink: Arc::new(bus.clone()) as Arc<dyn EventSink>,
            auth: Auth::Off,
            max_body_bytes: 16 * 1024 * 1024,
            max_in_flight: 1_000_000,
            dedup_window: 100_000,
        },
        "127.0.0.1:0".parse()?,
        stop.clone(),
    )
    .await?;
    let url = format!("http://{addr}/events");
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    println!(
        "choreo bench-ingest: {} OrderPlaced events per mode, {} connections, batches of {}, on {}",
        args.events,
        args.connections,
        args.batch_size,
        if embedded.is_some() {
            "the embedded broker"
        } else {
            bootstrap.as_str()
        }
    );

    let baseline = baseline(&bus, &kafka, &catalog, &args, &run_id).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let binary = binary_mode(&client, &url, &args, &run_id).await?;
    let batch = batch_mode(&client, &url, &args, &run_id).await?;
    let mut end_to_end = Vec::new();
    if args.sagas > 0 {
        // Started now, after the modes above: it starts after their events, and does not take
        // its share of the cores while they run.
        let mut coordinator = start_coordinator(
            embedded.as_ref(),
            &coordinator_kafka,
            &catalog,
            &registry,
            args.partitions,
        )
        .await?;
        for &c in &args.saga_concurrency {
            let run = format!("{}c{c}", &run_id[..8]);
            // A coordinator that stops says why, instead of the run waiting out its timeout.
            let f = tokio::select! {
                f = sagas_end_to_end(
                    &client,
                    &url,
                    &watch_client,
                    &run,
                    args.sagas,
                    c,
                    args.partitions,
                ) => f.with_context(|| format!("{} order sagas end to end, {c} at once", args.sagas))?,
                r = coordinator.wait() => bail!(
                    "the coordinator stopped during the order sagas, {c} at once: {}",
                    r.err().map_or_else(|| "without an error".to_owned(), |e| e.to_string())
                ),
            };
            end_to_end.push((c, f));
        }
        coordinator
            .shutdown()
            .await
            .context("stopping the coordinator")?;
    }
    stop.cancel();
    let _ = server.await;

    println!();
    println!(
        "{:<34} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "mode", "events", "events/s", "vs rdkafka", "p50 ms", "p99 ms"
    );
    for f in [&baseline, &binary, &batch] {
        println!(
            "{:<34} {:>9} {:>10.0} {:>9.2}x {:>9.2} {:>9.2}",
            f.mode,
            f.events,
            f.rate(),
            f.rate() / baseline.rate(),
            ms(f.quantile(0.5)),
            ms(f.quantile(0.99)),
        );
    }
    println!(
        "(latency: per record for rdkafka, per request for the ingest — a batch request carries {} events)",
        args.batch_size
    );
    if !end_to_end.is_empty() {
        println!();
        println!(
            "{:<34} {:>9} {:>10} {:>10} {:>9} {:>9}",
            "order sagas end to end", "sagas", "sagas/s", "events/s", "p50 ms", "p99 ms"
        );
        for (c, f) in &end_to_end {
            println!(
                "{:<34} {:>9} {:>10.0} {:>10.0} {:>9.1} {:>9.1}",
                format!("{c} sagas at once"),
                f.events,
                f.rate(),
                4.0 * f.rate(),
                ms(f.quantile(0.5)),
                ms(f.quantile(0.99)),
            );
        }
        println!(
            "(each saga: OrderPlaced, PaymentAuthorized, InventoryReserved, ShipmentScheduled posted one after another; latency: first post → OrderConfirmed read, read_committed; every saga checked confirmed)"
        );
    }
    Ok(())
}

/// A coordinator with the reference order saga, ready, on this run's own group.
async fn start_coordinator(
    embedded: Option<&choreo_bus::EmbeddedBroker>,
    kafka: &BusConfig,
    catalog: &Arc<Catalog>,
    registry: &Arc<dyn SchemaRegistry>,
    partitions: i32,
) -> anyhow::Result<choreo_coordinator::CoordinatorHandle> {
    use choreo_coordinator::{CoordinatorOptions, Guarantee};
    use choreo_saga::{Definition, Definitions};
    let mut defs = Definitions::new();
    defs.insert(Definition::reference_order_saga(catalog)?)?;
    let mut opts = CoordinatorOptions::new(
        kafka.clone().with_source("/bench/coordinator"),
        Arc::new(defs),
        Arc::clone(catalog),
        Arc::clone(registry),
    );
    opts.partitions = partitions;
    opts.guarantee = Guarantee::ExactlyOnce;
    opts.instance_id = "bench-0".into();
    opts.group_id = format!(
        "bench-ingest-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    match embedded {
        Some(b) => {
            // `orders` is there already.
            for t in opts.required_topics()? {
                if t.name != "orders" {
                    b.create_topic(&t.name, t.partitions)?;
                }
            }
            opts.create_topics = false;
            opts.embedded_broker = true;
        }
        None => {
            let client = kafka.client_config();
            ensure_topics(&client, &opts.required_topics()?, None, opts.kafka_timeout).await?;
            opts.create_topics = false;
            let inputs: Vec<String> = opts.input_topics()?.into_iter().collect();
            let group = opts.group_id.clone();
            tokio::task::spawn_blocking(move || {
                crate::loadgen::plan::commit_current_end(
                    &client,
                    &group,
                    &inputs,
                    Duration::from_secs(30),
                )
            })
            .await??;
        }
    }
    let handle = choreo_coordinator::start(opts).await?;
    let ready = handle.readiness();
    let started = Instant::now();
    while !ready() {
        if handle.is_finished() || started.elapsed() > Duration::from_secs(120) {
            bail!("the coordinator was not ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(handle)
}

/// `n` order sagas through the ingest, `concurrency` at a time, each one's events posted one
/// after another; done when every OrderConfirmed is read.
async fn sagas_end_to_end(
    client: &reqwest::Client,
    url: &str,
    watch_client: &rdkafka::ClientConfig,
    run: &str,
    n: usize,
    concurrency: usize,
    partitions: i32,
) -> anyhow::Result<Figures> {
    use crate::loadgen::watcher::{Decision, Progress, watch, watch_consumer};
    use choreo_schemas::Event as _;
    use choreo_schemas::event::{
        InventoryReserved, OrderCancelled, OrderConfirmed, OrderPlaced, PaymentAuthorized,
        ShipmentScheduled,
    };
    let consumer = watch_consumer(
        watch_client,
        &format!("bench-ingest-watch-{run}"),
        OrderPlaced::TOPIC,
        partitions,
        Duration::from_secs(30),
    )?;
    let progress = Arc::new(Progress::default());
    let mut watcher = tokio::spawn(watch(
        consumer,
        format!("lg-{run}-"),
        n,
        Decision::Type {
            success: OrderConfirmed::TYPE.to_owned(),
            failure: OrderCancelled::TYPE.to_owned(),
        },
        Arc::clone(&progress),
    ));
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let firsts = Arc::new(std::sync::Mutex::new(vec![started; n]));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, run) = (client.clone(), url.to_owned(), run.to_owned());
        let (next, firsts) = (Arc::clone(&next), Arc::clone(&firsts));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let s = crate::loadgen::plan::saga_inputs(&run, i);
                let id = s.placed.order_id.clone();
                let events = [
                    (OrderPlaced::TYPE, serde_json::to_string(&s.placed)?),
                    (PaymentAuthorized::TYPE, serde_json::to_string(&s.payment)?),
                    (
                        InventoryReserved::TYPE,
                        serde_json::to_string(&s.inventory)?,
                    ),
                    (ShipmentScheduled::TYPE, serde_json::to_string(&s.shipment)?),
                ];
                let first = Instant::now();
                for (k, (ty, body)) in events.into_iter().enumerate() {
                    let res = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("ce-specversion", "1.0")
                        .header("ce-id", format!("{id}-{k}"))
                        .header("ce-source", "/bench")
                        .header("ce-type", ty)
                        .header("ce-subject", &id)
                        .body(body)
                        .send()
                        .await?;
                    let status = res.status();
                    let text = res.bytes().await?;
                    if status != reqwest::StatusCode::ACCEPTED {
                        bail!(
                            "{ty} for {id}: {status}: {}",
                            String::from_utf8_lossy(&text)
                        );
                    }
                }
                firsts.lock().unwrap_or_else(|p| p.into_inner())[i] = first;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let seen = crate::loadgen::watcher::await_watcher(
        &mut watcher,
        &progress,
        n,
        Instant::now() + Duration::from_secs(300),
        "end to end",
        || Ok(()),
    )
    .await?;
    let firsts = firsts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies: Vec<Duration> = firsts
        .iter()
        .zip(&seen)
        .map(|(f, s)| s.saturating_duration_since(*f))
        .collect();
    latencies.sort();
    let last = seen.iter().max().copied().unwrap_or(started);
    Ok(Figures {
        mode: "order sagas end to end",
        events: n,
        elapsed: last.saturating_duration_since(started),
        latencies,
    })
}

/// The same events, Avro-encoded beforehand, produced straight with rdkafka with the ingest
/// producer's settings (`kafka`: linger included), up to 10 000 in flight, each awaited for
/// its acknowledgement.
async fn baseline(
    bus: &Bus,
    kafka: &BusConfig,
    catalog: &Catalog,
    args: &IngestBenchArgs,
    run_id: &str,
) -> anyhow::Result<Figures> {
    let mut values = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let id = format!("base-{run_id}-{i}");
        let value = bus
            .codec()
            .encode_json("orders", catalog, PLACED, &data(&id))
            .await?;
        values.push((id, value));
    }
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .create()?;
    let started = Instant::now();
    let latencies: Vec<anyhow::Result<Duration>> = futures::stream::iter(values.iter())
        .map(|(id, value)| {
            let producer = producer.clone();
            async move {
                let t = Instant::now();
                producer
                    .send(
                        FutureRecord::<str, [u8]>::to("orders")
                            .key(id)
                            .payload(value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("rdkafka: {e}"))?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(10_000)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = latencies.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    latencies.sort();
    Ok(Figures {
        mode: "rdkafka direct (baseline)",
        events: args.events,
        elapsed,
        latencies,
    })
}

async fn post_all(
    connections: usize,
    requests: usize,
    send: impl Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (send, next) = (Arc::clone(&send), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                let res = send(i).send().await?;
                let status = res.status();
                let body = res.bytes().await?;
                if status != reqwest::StatusCode::ACCEPTED {
                    bail!("request {i}: {status}: {}", String::from_utf8_lossy(&body));
                }
                lat.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok((elapsed, latencies))
}

async fn binary_mode(
    client: &reqwest::Client,
    url: &str,
    args: &IngestBenchArgs,
    run_id: &str,
) -> anyhow::Result<Figures> {
    let bodies: Arc<Vec<(String, String)>> = Arc::new(
        (0..args.events)
            .map(|i| {
                let id = format!("bin-{run_id}-{i}");
                let body = data(&id).to_string();
                (id, body)
            })
            .collect(),
    );
    let (client, url) = (client.clone(), url.to_owned());
    let (elapsed, latencies) = post_all(args.connections, args.events, move |i| {
        let (id, body) = &bodies[i];
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/bench")
            .header("ce-type", PLACED)
            .header("ce-subject", id)
            .body(body.clone())
    })
    .await?;
    Ok(Figures {
        mode: "ingest, binary mode (1 per request)",
        events: args.events,
        elapsed,
        latencies,
    })
}

async fn batch_mode(
    client: &reqwest::Client,
    url: &str,
    args: &IngestBenchArgs,
    run_id: &str,
) -> anyhow::Result<Figures> {
    let requests = args.events.div_ceil(args.batch_size);
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..requests)
            .map(|r| {
                let events: Vec<Value> = (r * args.batch_size
                    ..((r + 1) * args.batch_size).min(args.events))
                    .map(|i| {
                        let id = format!("batch-{run_id}-{i}");
                        json!({"specversion": "1.0", "id": id, "source": "/bench", "type": PLACED,
                               "subject": id, "data": data(&id)})
                    })
                    .collect();
                Value::Array(events).to_string()
            })
            .collect(),
    );
    let (client, url) = (client.clone(), url.to_owned());
    let (elapsed, latencies) = post_all(args.connections, requests, move |i| {
        client
            .post(&url)
            .header("content-type", "application/cloudevents-batch+json")
            .body(bodies[i].clone())
    })
    .await?;
    Ok(Figures {
        mode: "ingest, batch mode",
        events: args.events,
        elapsed,
        latencies,
    })
}
