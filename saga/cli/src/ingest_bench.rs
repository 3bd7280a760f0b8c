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
    let kafka = ingest::producer_config(kafka.with_source("/bench/ingest"));
    let bus = Bus::new(kafka.clone(), registry)?;
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
    Ok(())
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
