//! `choreo`: the saga coordinator, its one-command embedded mode, and the operator CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use choreo_bus::{Bus, BusConfig, EmbeddedBroker};
use choreo_cli::client;
use choreo_cli::demo::{Demo, DemoArgs};
use choreo_cli::healthcheck::HealthcheckArgs;
use choreo_cli::registry::{open_schema_topic, registry_of, serve_registry};
use choreo_cli::saga_cmd::load_definitions;
use choreo_cli::telemetry::init_logs;
use choreo_coordinator::api_auth::ApiAuth;
use choreo_coordinator::config::{Config, LogFormat, RegistryStoreKind};
use choreo_coordinator::dlq::{DeadLetterDesk, DeskOptions};
use choreo_coordinator::history::KafkaHistory;
use choreo_coordinator::http::{self, ApiState};
use choreo_coordinator::ingest::{self, EventSink, IngestOptions, auth::Auth};
use choreo_coordinator::{CoordinatorHandle, CoordinatorOptions, Guarantee, start, telemetry};
use choreo_saga::Definition;
use choreo_schemas::{Catalog, MemoryRegistry, RegistryStore, SchemaRegistry};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

// mimalloc: glibc's malloc spends a quarter of the HTTP ingest's CPU in its arena locks and
// free-list upkeep under many connections (perf, `choreo bench-ingest`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "choreo",
    version,
    about = "A choreography event bus on Kafka with a saga coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything in one process: an embedded Kafka-protocol broker (or --bootstrap-servers), the
    /// schema registry, the coordinator with the order saga, and demo services placing orders.
    Dev(DevArgs),
    /// Run a coordinator replica against a Kafka cluster (production).
    Run {
        /// The configuration file (see deploy/choreo.example.toml); `CHOREO__…` variables
        /// override it.
        #[arg(long, short, env = "CHOREO_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Only the HTTP ingest (CloudEvents over HTTP into Kafka), without a coordinator: the
    /// `[kafka]`, `[registry]`, `coordinator.catalog` and `[ingest]` parts of the configuration.
    Ingest {
        /// The configuration file (see deploy/choreo.example.toml); `CHOREO__…` variables
        /// override it. `ingest.listen` must be set.
        #[arg(long, short, env = "CHOREO_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Only the demo order, payment, inventory and shipping services (as in `choreo dev`),
    /// against the `[kafka]` and `[registry]` of the configuration, next to `choreo run`.
    Demo {
        /// The configuration file (see deploy/choreo.example.toml); `CHOREO__…` variables
        /// override it.
        #[arg(long, short, env = "CHOREO_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        demo: DemoArgs,
    },
    /// Ask a replica's `/healthz` (or --url): exit 0 when it answers 2xx (the image's health
    /// check; its runtime has no curl).
    Healthcheck(HealthcheckArgs),
    /// Only the schema registry (the Confluent REST API), its schemas kept in a compacted Kafka
    /// topic: the `[kafka]` and `[registry]` parts of the configuration.
    Registry {
        /// The configuration file (see deploy/choreo.example.toml); `CHOREO__…` variables
        /// override it.
        #[arg(long, short, env = "CHOREO_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write the AsyncAPI 3.0 document of the event catalog and the saga definitions (topics,
    /// event types with their Avro schemas and CloudEvents headers, what each saga receives and
    /// sends).
    Asyncapi(AsyncapiArgs),
    /// Check a folder of schemas and its catalog against a registry's compatibility rules, and
    /// register them (exit 0: fine, 1: incompatible, 2: error).
    Schemas(choreo_cli::schemas_cmd::SchemasArgs),
    /// Work with saga definitions: `choreo saga diagram`, `choreo saga replay`.
    Saga {
        #[command(subcommand)]
        command: choreo_cli::saga_cmd::SagaCmd,
    },
    /// Watch and act on sagas through a coordinator's operator API.
    Sagas(client::SagasArgs),
    /// Dead letters through a coordinator's operator API: list, show and redrive them (exit 0:
    /// done, 1: a redrive left records out or matched none, 2: error).
    Dlq(client::dlq::DlqArgs),
    /// Drive sagas through a broker and print throughput and latency against a baseline.
    Loadgen(choreo_cli::loadgen::LoadgenArgs),
    /// Post events to the HTTP ingest and print throughput and latency against rdkafka.
    BenchIngest(choreo_cli::ingest_bench::IngestBenchArgs),
    /// Time a replica's restore of a changelog of in-flight sagas against a plain read of it.
    BenchRestore(choreo_cli::restore_bench::RestoreBenchArgs),
    /// The order saga for a long while on a Kafka of its own, under a stream of garbage, with
    /// the registry and the coordinator killed and restarted; prints sagas finished, dead
    /// letters and memory every minute, and checks at the end that nothing was lost.
    Soak(choreo_cli::soak::SoakArgs),
}

#[derive(clap::Args)]
struct DevArgs {
    /// Use this Kafka cluster instead of the embedded broker.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// The processing guarantee (a broker without transactions needs effectively_once).
    #[arg(long, value_enum, default_value_t = GuaranteeArg::ExactlyOnce)]
    guarantee: GuaranteeArg,
    /// The operator API and web page.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The schema registry (Confluent REST API), for other languages' serializers.
    #[arg(long, default_value = "127.0.0.1:8081")]
    registry: SocketAddr,
    /// The HTTP ingest (`POST /events`, CloudEvents over HTTP; no authentication in dev).
    #[arg(long, default_value = "127.0.0.1:8090")]
    ingest: SocketAddr,
    #[command(flatten)]
    demo: DemoArgs,
    /// Partitions of the saga topics.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Saga definition files instead of the compiled-in order saga.
    #[arg(long = "definition")]
    definitions: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct AsyncapiArgs {
    /// The catalog folder (holding catalog.toml and its schema files); default: the reference
    /// catalog compiled into choreo.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Saga definition files or folders; default: the reference order saga.
    #[arg(long = "definition")]
    definitions: Vec<PathBuf>,
    /// Write the document here instead of to standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Write nothing; exit with 1 when the --output file differs from the document (for CI).
    #[arg(long, requires = "output")]
    check: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GuaranteeArg {
    ExactlyOnce,
    EffectivelyOnce,
}

struct Services {
    coordinator: CoordinatorHandle,
    api_addr: SocketAddr,
    api_stop: CancellationToken,
    api_task: tokio::task::JoinHandle<()>,
}

/// Starts the coordinator `opts` configures, then its dead-letter desk (so that a coordinator's
/// start-up error is the first and only line), and serves the operator API on `addr`.
async fn start_with_api(
    opts: CoordinatorOptions,
    desk: DeskOptions,
    addr: SocketAddr,
    auth: ApiAuth,
    shutdown: &CancellationToken,
) -> anyhow::Result<Services> {
    // Before the coordinator starts: what it records on the way up (its first restore, fenced
    // producers) would go to no recorder and never show.
    let metrics = telemetry::install_prometheus().ok();
    let definitions = Arc::clone(&opts.definitions);
    let history = Arc::new(KafkaHistory::new(&opts));
    let coordinator = start(opts).await?;
    let dead_letters = DeadLetterDesk::start(desk, shutdown.clone()).await?;
    let state = ApiState {
        view: coordinator.view(),
        sink: Arc::new(coordinator.commands()),
        ready: coordinator.readiness(),
        metrics,
        auth: Arc::new(auth),
        definitions,
        history,
        dead_letters: Some(dead_letters),
    };
    let api_stop = shutdown.child_token();
    let (api_addr, api_task) = http::serve(state, addr, api_stop.clone()).await?;
    Ok(Services {
        coordinator,
        api_addr,
        api_stop,
        api_task,
    })
}

/// The dead-letter desk of a coordinator: its brokers, group, registry and timeouts.
fn desk_options(opts: &CoordinatorOptions, create_topic: bool) -> DeskOptions {
    DeskOptions {
        kafka: opts.kafka.clone(),
        group_id: opts.group_id.clone(),
        registry: Arc::clone(&opts.registry),
        timeout: opts.kafka_timeout,
        replication_factor: opts.replication_factor,
        create_topic,
    }
}

/// The root of the process's one cancellation tree: cancelled on SIGINT or SIGTERM. Every
/// part (coordinator, operator API, demo services) listens on a child of it.
fn shutdown_on_signal() -> CancellationToken {
    let root = CancellationToken::new();
    let on_signal = root.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    root
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    // The summary line every 5 s is the newcomer's view; RUST_LOG=info shows every decision.
    // OTEL_EXPORTER_OTLP_ENDPOINT exports the spans.
    let _telemetry = choreo_cli::telemetry::init("warn", LogFormat::Text, &Default::default())?;
    let catalog = Arc::new(Catalog::reference());
    let definitions = Arc::new(load_definitions(&args.definitions, &catalog)?);
    let embedded = match &args.bootstrap_servers {
        Some(_) => None,
        None => Some(EmbeddedBroker::start(1)?),
    };
    let bootstrap = args
        .bootstrap_servers
        .clone()
        .or_else(|| embedded.as_ref().map(|b| b.bootstrap_servers().to_owned()))
        .context("no broker")?;
    let kafka = match &embedded {
        Some(_) => BusConfig::new(&bootstrap).tuned_for_embedded_broker(),
        None => BusConfig::new(&bootstrap),
    };
    let memory = Arc::new(MemoryRegistry::new());
    catalog.register_all(memory.as_ref()).await?;
    let (registry_addr, _registry_task) =
        choreo_schemas::server::serve(Arc::clone(&memory) as Arc<dyn RegistryStore>, args.registry)
            .await
            .with_context(|| format!("cannot serve the schema registry on {}", args.registry))?;
    let registry: Arc<dyn SchemaRegistry> = memory;

    let shutdown = shutdown_on_signal();
    let mut opts = CoordinatorOptions::new(
        kafka.clone(),
        definitions,
        Arc::clone(&catalog),
        Arc::clone(&registry),
    );
    opts.partitions = args.partitions;
    opts.instance_id = "dev-0".into();
    opts.shutdown = shutdown.clone();
    opts.group_id = "choreo-dev-coordinator".into();
    opts.guarantee = match args.guarantee {
        GuaranteeArg::ExactlyOnce => Guarantee::ExactlyOnce,
        GuaranteeArg::EffectivelyOnce => Guarantee::EffectivelyOnce,
    };
    if let Some(b) = &embedded {
        opts.create_topics_on(b)?;
        b.create_topic(&DeadLetterDesk::log_topic(&opts.group_id), 1)?;
    }
    let desk_opts = desk_options(&opts, embedded.is_none());
    println!("choreo dev");
    println!(
        "  kafka bootstrap servers  {bootstrap}{}",
        if embedded.is_some() {
            "  (embedded; other programs can connect)"
        } else {
            ""
        }
    );
    println!("  schema registry          http://{registry_addr}");
    // choreo dev: everything on loopback, for one person; no tokens.
    let services = start_with_api(opts, desk_opts, args.http, ApiAuth::Open, &shutdown).await?;
    println!("  operator console         http://{}/", services.api_addr);
    println!(
        "  saga API                 http://{}/api/sagas",
        services.api_addr
    );
    println!(
        "  metrics                  http://{}/metrics",
        services.api_addr
    );
    let ingest_bus = Bus::new(
        kafka.clone().with_source("/choreo/ingest"),
        Arc::clone(&registry),
    )?;
    let (ingest_addr, ingest_task) = ingest::serve(
        ingest_options(
            Arc::clone(&catalog),
            &ingest_bus,
            &Default::default(),
            Auth::Off,
        ),
        args.ingest,
        services.api_stop.clone(),
    )
    .await?;
    println!("  event ingest (HTTP)      http://{ingest_addr}/events");
    println!(
        "  try: choreo sagas list --api http://{}",
        services.api_addr
    );
    println!();

    let bus = Bus::new(
        kafka.clone().with_source("/choreo/dev/demo"),
        Arc::clone(&registry),
    )?;
    let demo = Demo::start(
        &bus,
        args.demo
            .options(shutdown.clone())
            .map_err(anyhow::Error::msg)?,
    )
    .await?;

    let view = services.coordinator.view();
    let stop = async {
        match args.duration_secs {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let report = async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            println!(
                "orders placed: {:>5}   sagas: {}",
                demo.orders_placed(),
                counts_line(&view)
            );
        }
    };
    let mut coordinator_failed = None;
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = stop => {}
        () = report => {}
        r = wait_coordinator(&services) => coordinator_failed = Some(r),
    }
    println!("stopping…");
    shutdown.cancel();
    demo.shutdown().await;
    let summary = counts_line(&view);
    services.api_stop.cancel();
    let _ = services.api_task.await;
    let _ = ingest_task.await;
    let result = services.coordinator.shutdown().await;
    println!("final saga counts: {summary}");
    if let Some(Err(stopped)) = coordinator_failed {
        result?;
        return Err(stopped);
    }
    result.map_err(Into::into)
}

/// `running=3  completed=6  compensated=1`, in the API's status names.
fn counts_line(view: &choreo_coordinator::view::SagaView) -> String {
    let counts: Vec<String> = view
        .counts()
        .iter()
        .map(|(s, n)| {
            let name = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{name}={n}")
        })
        .collect();
    if counts.is_empty() {
        "none yet".into()
    } else {
        counts.join("  ")
    }
}

async fn wait_coordinator(services: &Services) -> anyhow::Result<()> {
    while !services.coordinator.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the coordinator stopped without saying why (see the log above)")
}

async fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let _telemetry = choreo_cli::telemetry::init(&cfg.log.level, cfg.log.format, &cfg.tracing)?;
    let api_auth = cfg.http.auth().map_err(|(field, reason)| {
        let file = config.as_deref().map_or_else(
            || "the configuration".to_owned(),
            |p| p.display().to_string(),
        );
        anyhow::anyhow!("{file}: {field}: {reason}")
    })?;
    if matches!(api_auth, ApiAuth::Open) {
        tracing::warn!(listen = %cfg.http.listen, "operator API without tokens (http.trusted_network = true): anyone who reaches it may read and act on every saga");
    }
    let catalog = Arc::new(match &cfg.coordinator.catalog {
        Some(dir) => Catalog::load(dir)?,
        None => Catalog::reference(),
    });
    let definitions = Arc::new(load_definitions(&cfg.coordinator.definitions, &catalog)?);
    // Before the schema store opens: its writes at start-up are counted too.
    telemetry::install_prometheus().ok();
    let registry = registry_of(&cfg, &catalog).await?;
    let shutdown = shutdown_on_signal();
    let mut opts = CoordinatorOptions::new(
        cfg.kafka.bus_config("/choreo/coordinator"),
        definitions,
        catalog,
        registry,
    );
    opts.group_id.clone_from(&cfg.kafka.group_id);
    opts.instance_id.clone_from(&cfg.coordinator.instance_id);
    opts.guarantee = cfg.coordinator.guarantee;
    opts.partitions = cfg.coordinator.partitions;
    opts.replication_factor = cfg.coordinator.replication_factor;
    opts.changelog_topic
        .clone_from(&cfg.coordinator.changelog_topic);
    opts.commands_topic
        .clone_from(&cfg.coordinator.commands_topic);
    opts.batch_max_records = cfg.coordinator.batch_max_records;
    opts.batch_linger = cfg.coordinator.batch_linger;
    opts.completed_retention = cfg.coordinator.completed_retention;
    opts.max_pending_sagas = cfg.coordinator.max_pending_sagas;
    opts.needs_operator_retention = cfg.coordinator.needs_operator_retention;
    opts.drain_timeout = cfg.coordinator.drain_timeout;
    opts.transaction_timeout = cfg.coordinator.transaction_timeout;
    opts.kafka_timeout = cfg.coordinator.kafka_timeout;
    opts.shutdown = shutdown.clone();
    let ingest_catalog = Arc::clone(&opts.catalog);
    let ingest_registry = Arc::clone(&opts.registry);
    let desk_opts = desk_options(&opts, opts.create_topics);
    let services = start_with_api(opts, desk_opts, cfg.http.listen, api_auth, &shutdown).await?;
    tracing::info!(api = %services.api_addr, "coordinator running");
    let ingest_task = match cfg.ingest.listen {
        Some(addr) => {
            let (_, task) = serve_ingest(
                &cfg,
                ingest_catalog,
                ingest_registry,
                addr,
                &services.api_stop,
            )
            .await?;
            Some(task)
        }
        None => None,
    };
    let mut failed = None;
    tokio::select! {
        () = shutdown.cancelled() => {}
        r = wait_coordinator(&services) => failed = Some(r),
    }
    shutdown.cancel();
    services.api_stop.cancel();
    let _ = services.api_task.await;
    if let Some(task) = ingest_task {
        let _ = task.await;
    }
    let result = services.coordinator.shutdown().await;
    if let Some(Err(stopped)) = failed {
        // The coordinator's own error says why it stopped; the generic line only when it
        // ended without one.
        result?;
        return Err(stopped);
    }
    result.map_err(Into::into)
}

/// `choreo registry`: the schema registry alone, its schemas in Kafka.
async fn registry_only(config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cfg = Config::load(config.as_deref())?;
    let _telemetry = choreo_cli::telemetry::init(&cfg.log.level, cfg.log.format, &cfg.tracing)?;
    if cfg.registry.url.is_some() {
        anyhow::bail!("registry.url is set: `choreo registry` is the registry itself; unset it");
    }
    cfg.registry.store = RegistryStoreKind::Kafka;
    let addr = cfg
        .registry
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
    let store = open_schema_topic(&cfg).await?;
    let shutdown = shutdown_on_signal();
    let (a, _task) = serve_registry(&cfg, store, addr).await?;
    println!(
        "schema registry on http://{a} (schemas in Kafka topic {})",
        cfg.registry.topic
    );
    shutdown.cancelled().await;
    Ok(())
}

fn ingest_options(
    catalog: Arc<Catalog>,
    bus: &Bus,
    limits: &choreo_coordinator::config::IngestConfig,
    auth: Auth,
) -> IngestOptions {
    IngestOptions {
        catalog,
        codec: bus.codec().clone(),
        sink: Arc::new(bus.clone()) as Arc<dyn EventSink>,
        auth,
        max_body_bytes: limits.max_body_bytes,
        max_in_flight: limits.max_in_flight,
        dedup_window: limits.dedup_window,
    }
}

/// Serves the configured ingest on `addr` until `stop`.
async fn serve_ingest(
    cfg: &Config,
    catalog: Arc<Catalog>,
    registry: Arc<dyn SchemaRegistry>,
    addr: SocketAddr,
    stop: &CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let auth = cfg
        .ingest
        .auth(&|var| std::env::var(var).ok())
        .map_err(|e| anyhow::anyhow!("ingest.tokens: {e}"))?;
    let mut kafka = cfg.kafka.bus_config("/choreo/ingest");
    kafka.delivery_timeout_ms =
        u64::try_from(cfg.ingest.delivery_timeout.as_millis()).unwrap_or(u64::MAX);
    let bus = Bus::new(ingest::producer_config(kafka), registry)?;
    let (local, task) = ingest::serve(
        ingest_options(catalog, &bus, &cfg.ingest, auth),
        addr,
        stop.clone(),
    )
    .await?;
    tracing::info!(addr = %local, "event ingest listening on POST /events");
    Ok((local, task))
}

/// `choreo ingest`: the HTTP ingest alone.
async fn ingest_only(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let _telemetry = choreo_cli::telemetry::init(&cfg.log.level, cfg.log.format, &cfg.tracing)?;
    let addr = cfg
        .ingest
        .listen
        .context("ingest.listen is not set: `choreo ingest` serves only the ingest")?;
    let catalog = Arc::new(match &cfg.coordinator.catalog {
        Some(dir) => Catalog::load(dir)?,
        None => Catalog::reference(),
    });
    let registry = registry_of(&cfg, &catalog).await?;
    let shutdown = shutdown_on_signal();
    let (_, task) = serve_ingest(&cfg, catalog, registry, addr, &shutdown).await?;
    shutdown.cancelled().await;
    let _ = task.await;
    Ok(())
}

/// `choreo demo`: the demo services alone, against a real cluster.
async fn demo_only(config: Option<PathBuf>, args: DemoArgs) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let _telemetry = choreo_cli::telemetry::init(&cfg.log.level, cfg.log.format, &cfg.tracing)?;
    let shutdown = shutdown_on_signal();
    let opts = args.options(shutdown.clone()).map_err(anyhow::Error::msg)?;
    let catalog = match &cfg.coordinator.catalog {
        Some(dir) => Catalog::load(dir)?,
        None => Catalog::reference(),
    };
    let registry = registry_of(&cfg, &catalog).await?;
    // A stop signal while the brokers cannot be reached ends the wait (and the demo) at once.
    let bus = tokio::select! {
        bus = Bus::connect(
            cfg.kafka.bus_config("/choreo/demo"),
            registry,
            cfg.coordinator.kafka_timeout,
        ) => bus?,
        () = shutdown.cancelled() => return Ok(()),
    };
    println!(
        "choreo demo: order, payment, inventory and shipping services on {} ({} orders/s)",
        cfg.kafka.bootstrap_servers, opts.orders_per_second
    );
    let placed = choreo_cli::demo::run(&bus, opts, Duration::from_secs(5)).await?;
    println!("stopped after {placed} orders");
    Ok(())
}

/// `choreo asyncapi`.
fn asyncapi(args: AsyncapiArgs) -> anyhow::Result<()> {
    let catalog = match &args.catalog {
        Some(dir) => Catalog::load(dir)?,
        None => Catalog::reference(),
    };
    let defs = load_definitions(&args.definitions, &catalog)?;
    let list: Vec<&Definition> = defs.iter().map(AsRef::as_ref).collect();
    let text = choreo_cli::asyncapi::render(&choreo_cli::asyncapi::document(&catalog, &list));
    match (&args.output, args.check) {
        (Some(path), true) => {
            let current = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if current != text {
                anyhow::bail!(
                    "{} is not current: run `choreo asyncapi --output {}` (with the same \
                     --catalog and --definition arguments)",
                    path.display(),
                    path.display()
                );
            }
            println!("{} is current", path.display());
        }
        (Some(path), false) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        (None, _) => print!("{text}"),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    choreo_cli::memory::no_transparent_huge_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(why) => {
            eprintln!("choreo: starting the async runtime: {why}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(Box::pin(choreo(Cli::parse())))
}

async fn choreo(cli: Cli) -> std::process::ExitCode {
    choreo_cli::memory::give_back_periodically();
    let result = match cli.command {
        Cmd::Schemas(args) => {
            init_logs("warn", LogFormat::Text);
            return std::process::ExitCode::from(choreo_cli::schemas_cmd::run(args).await);
        }
        Cmd::Dev(args) => dev(args).await,
        Cmd::Demo { config, demo } => demo_only(config, demo).await,
        Cmd::Healthcheck(args) => {
            return match choreo_cli::healthcheck::check(&args).await {
                Ok(line) => {
                    println!("{line}");
                    std::process::ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("choreo healthcheck: {why}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Cmd::Run { config } => run(config).await,
        Cmd::Ingest { config } => ingest_only(config).await,
        Cmd::Registry { config } => registry_only(config).await,
        Cmd::Asyncapi(args) => asyncapi(args),
        Cmd::Saga { command } => {
            init_logs("warn", LogFormat::Text);
            return choreo_cli::saga_cmd::run(command).await;
        }
        Cmd::Sagas(args) => client::run(args).await,
        Cmd::Dlq(args) => {
            init_logs("warn", LogFormat::Text);
            return std::process::ExitCode::from(client::dlq::run(args).await);
        }
        Cmd::Loadgen(args) => {
            init_logs("warn", LogFormat::Text);
            choreo_cli::loadgen::run(args).await
        }
        Cmd::BenchIngest(args) => {
            init_logs("warn", LogFormat::Text);
            choreo_cli::ingest_bench::run(args).await
        }
        Cmd::Soak(args) => {
            // Its demo services dead-letter the soak's own garbage too, a warning each: only
            // errors here, so that the minute rows stay readable (the children log to files).
            init_logs("error", LogFormat::Text);
            return match choreo_cli::soak::run(args).await {
                Ok(code) => std::process::ExitCode::from(code),
                Err(e) => {
                    eprintln!("choreo soak: {e:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        Cmd::BenchRestore(args) => {
            init_logs("warn", LogFormat::Text);
            choreo_cli::restore_bench::run(args).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("choreo: {}", choreo_cli::telemetry::error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
