//! The real-broker tier's harness: a Kafka-protocol broker in another process.
//!
//! [`real_broker`] picks, in order:
//! 1. `KAFKA_BOOTSTRAP_SERVERS`, when set (Apache Kafka, Redpanda, a cloud cluster…);
//! 2. Apache Kafka through testcontainers, when a Docker engine answers;
//! 3. nisshi, installed once under the cache directory by `brokers/install-nisshi.sh` and
//!    started here on a free loopback port.
//!
//! It never skips: if none of these can be had, the test fails and says why.
//! [`hosted_mock`] starts librdkafka's mock cluster in a process of its own
//! (`choreo-mock-broker`), for tests that need transactions or kill a broker.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use choreo_coordinator::topics::{TopicSpec, ensure_topics};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `KAFKA_BOOTSTRAP_SERVERS`.
    External,
    /// Apache Kafka in a container.
    Testcontainers,
    /// nisshi in a child process.
    Nisshi,
    /// librdkafka's mock cluster in a child process.
    HostedMock,
}

/// A broker for one test binary; the process or container stops when this is dropped.
#[derive(Debug)]
pub struct TestBroker {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// What it is.
    pub kind: BrokerKind,
    child: Option<Child>,
    _container: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl TestBroker {
    /// Whether the broker supports Kafka transactions (nisshi refuses them by design).
    pub fn supports_transactions(&self) -> bool {
        self.kind != BrokerKind::Nisshi
    }

    /// Creates topics (ignores "already exists"). The hosted mock cluster creates topics from
    /// its command line instead, because its admin API does not answer.
    pub async fn create_topics(&self, topics: &[(&str, i32)]) -> anyhow::Result<()> {
        if self.kind == BrokerKind::HostedMock {
            bail!("create the hosted mock cluster's topics with its --topic flag");
        }
        create_topics(&self.bootstrap, topics).await
    }

    /// Kills the broker process (SIGKILL) — for crash tests.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut() {
            c.kill().await?;
        }
        Ok(())
    }
}

/// Creates the topics that do not exist yet (the coordinator's own start-up routine).
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|(t, p)| TopicSpec {
            name: (*t).to_owned(),
            partitions: *p,
            compacted: false,
        })
        .collect();
    let client = choreo_bus::BusConfig::new(bootstrap).client_config();
    ensure_topics(&client, &specs, 1, Duration::from_secs(20)).await?;
    Ok(())
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The broker of the real tier (see the module doc). Fails, never skips.
pub async fn real_broker() -> anyhow::Result<TestBroker> {
    if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        && !bootstrap.trim().is_empty()
    {
        eprintln!("real tier: external broker at {bootstrap}");
        return Ok(TestBroker {
            bootstrap,
            kind: BrokerKind::External,
            child: None,
            _container: None,
        });
    }
    if docker_engine_answers().await {
        return testcontainers_kafka().await;
    }
    nisshi().await
}

async fn docker_engine_answers() -> bool {
    let status = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(tokio::time::timeout(Duration::from_secs(10), status).await, Ok(Ok(s)) if s.success())
}

async fn testcontainers_kafka() -> anyhow::Result<TestBroker> {
    use testcontainers::runners::AsyncRunner;
    use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
    let container = Kafka::default()
        .start()
        .await
        .context("starting Apache Kafka in Docker")?;
    let port = container.get_host_port_ipv4(KAFKA_PORT).await?;
    let bootstrap = format!("127.0.0.1:{port}");
    eprintln!("real tier: Apache Kafka (testcontainers) at {bootstrap}");
    Ok(TestBroker {
        bootstrap,
        kind: BrokerKind::Testcontainers,
        child: None,
        _container: Some(Box::new(container)),
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The nisshi binary: `CHOREO_NISSHI_BIN`, or the cached install (installing it if missing).
pub async fn nisshi_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("CHOREO_NISSHI_BIN") {
        return Ok(PathBuf::from(p));
    }
    let script = repo_root().join("integration-tests/brokers/install-nisshi.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: no real broker for the real tier",
            script.display()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

async fn nisshi() -> anyhow::Result<TestBroker> {
    let bin = nisshi_binary().await?;
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://nisshi/",
            "--group-initial-rebalance-delay",
            "0s",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let bootstrap = format!("127.0.0.1:{port}");
    wait_for_port(&bootstrap).await?;
    eprintln!("real tier: nisshi at {bootstrap}");
    Ok(TestBroker {
        bootstrap,
        kind: BrokerKind::Nisshi,
        child: Some(child),
        _container: None,
    })
}

async fn wait_for_port(addr: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nothing listens on {addr} after 30 s")
}

/// Starts librdkafka's mock cluster in its own process with these topics.
pub async fn hosted_mock(mock_bin: &str, topics: &[(&str, i32)]) -> anyhow::Result<TestBroker> {
    let mut cmd = Command::new(mock_bin);
    for (t, p) in topics {
        cmd.arg("--topic").arg(format!("{t}:{p}"));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {mock_bin}"))?;
    let stdout = child.stdout.take().context("mock broker stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let bootstrap = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(b) = line.strip_prefix("bootstrap.servers=") {
                return Ok::<_, anyhow::Error>(b.trim().to_owned());
            }
        }
        bail!("the mock broker exited before printing its address")
    })
    .await
    .context("the mock broker did not start within 30 s")??;
    Ok(TestBroker {
        bootstrap,
        kind: BrokerKind::HostedMock,
        child: Some(child),
        _container: None,
    })
}
