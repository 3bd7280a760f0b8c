//! A subscriber in a process of its own, for crash tests: handles `PaymentAuthorized` events on a
//! topic and appends each handled event id to a file (flushed before the handler returns, so the
//! file holds exactly the effects that happened). Killed with SIGKILL and restarted by the test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreo_bus::{Bus, BusConfig, HandlerError};
use choreo_schemas::ConfluentRegistry;
use choreo_schemas::event::PaymentAuthorized;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    registry: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    group: String,
    #[arg(long)]
    out: std::path::PathBuf,
    /// Milliseconds each handler takes, so a kill lands mid-batch.
    #[arg(long, default_value_t = 5)]
    work_ms: u64,
    /// Records of one partition handled at once (different keys).
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let out = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.out)?,
    ));
    let bus = Bus::new(
        BusConfig::new(&args.bootstrap),
        Arc::new(ConfluentRegistry::new(&args.registry)),
    )?;
    let work = Duration::from_millis(args.work_ms);
    let sub = bus
        .subscriber(&args.group)
        .client_setting("session.timeout.ms", "6000")
        .max_in_flight(args.max_in_flight)
        .handle_on(&args.topic, "record", move |e: PaymentAuthorized, ctx| {
            let out = Arc::clone(&out);
            async move {
                tokio::time::sleep(work).await;
                let mut f = out
                    .lock()
                    .map_err(|_| HandlerError::permanent("poisoned"))?;
                writeln!(
                    f,
                    "{} {} {} {}",
                    ctx.envelope.id, e.order_id, ctx.partition, ctx.offset
                )
                .map_err(HandlerError::retryable)?;
                f.flush().map_err(HandlerError::retryable)?;
                Ok(())
            }
        })
        .start()?;
    println!("started");
    tokio::signal::ctrl_c().await?;
    sub.shutdown().await?;
    Ok(())
}
