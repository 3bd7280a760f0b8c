//! The saga load generator (`choreo loadgen`).

/// `choreo loadgen` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Kafka bootstrap servers (default: an embedded broker).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
}

/// Runs the load generator.
pub async fn run(_args: LoadgenArgs) -> anyhow::Result<()> {
    anyhow::bail!("choreo loadgen is not built yet")
}
