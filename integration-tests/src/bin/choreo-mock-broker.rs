//! Hosts librdkafka's mock cluster in a process of its own, so that tests (and other languages'
//! clients) can use it as a broker in another process — and kill it, or the clients, at will.
//!
//! Prints `bootstrap.servers=<address>` on stdout once it listens; stops on SIGTERM, Ctrl-C, or
//! when its standard input closes.

use clap::Parser;
use tokio::io::AsyncReadExt;

#[derive(Parser)]
#[command(about = "librdkafka's mock Kafka cluster in a process of its own")]
struct Args {
    /// Number of brokers.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// A topic to create, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic")]
    topics: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = choreo_bus::EmbeddedBroker::start(args.brokers)?;
    for spec in &args.topics {
        let (name, parts) = spec
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--topic {spec}: expected NAME:PARTITIONS"))?;
        broker.create_topic(name, parts.parse()?)?;
    }
    println!("bootstrap.servers={}", broker.bootstrap_servers());
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = async { while let Ok(n) = stdin.read(&mut buf).await { if n == 0 { break; } } } => {}
    }
    drop(broker);
    Ok(())
}
