//! The `choreo` binary as a child process: a coordinator replica that tests start, kill with
//! SIGKILL, stop gracefully and restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::broker::free_port;

/// The `choreo` binary of this workspace, built (or found up to date) once per test process, so
/// a test never runs a stale binary.
pub fn choreo_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let dir = exe.parent().and_then(Path::parent).ok_or("no target dir")?;
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "choreo-cli", "--bin", "choreo"])
                .current_dir(format!("{}/..", manifest_dir()))
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("building the choreo binary failed".into());
            }
            Ok(dir.join("choreo"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// How to run a coordinator replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Registry URL (Confluent REST).
    pub registry: String,
    /// `exactly_once` or `effectively_once`.
    pub guarantee: &'static str,
    /// A saga definition file.
    pub definition: PathBuf,
    /// Consumer group.
    pub group: String,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Whether the broker is librdkafka's mock cluster (consumers get a short fetch wait).
    pub mock: bool,
    /// Where each replica's log goes (`<instance>.log`, appended across restarts).
    pub log_dir: PathBuf,
    /// More environment variables (`CHOREO__…` settings).
    pub env: Vec<(String, String)>,
}

/// A running `choreo run` process.
#[derive(Debug)]
pub struct Replica {
    /// Instance id.
    pub instance: String,
    /// Operator API base URL.
    pub api: String,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
}

impl ReplicaConfig {
    /// Connects the replica with these client settings (`bootstrap.servers` and librdkafka
    /// properties, e.g. a SASL principal's), passed as `CHOREO__KAFKA__CLIENT__…` variables.
    pub fn use_client_settings(&mut self, settings: &[(String, String)]) {
        for (k, v) in settings {
            if k == "bootstrap.servers" {
                self.bootstrap.clone_from(v);
            } else {
                self.env.push((
                    format!(
                        "CHOREO__KAFKA__CLIENT__{}",
                        k.replace('.', "_").to_uppercase()
                    ),
                    v.clone(),
                ));
            }
        }
    }
}

impl Replica {
    /// Starts `choreo run` as instance `instance`.
    pub async fn start(cfg: &ReplicaConfig, instance: &str) -> anyhow::Result<Replica> {
        let port = free_port()?;
        let fetch_wait = if cfg.mock { "10" } else { "500" };
        let log = cfg.log_dir.join(format!("{instance}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(choreo_binary()?)
            .arg("run")
            .env("CHOREO__KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", fetch_wait)
            .env_remove("CHOREO_CONFIG")
            .env("CHOREO__KAFKA__BOOTSTRAP_SERVERS", &cfg.bootstrap)
            .env("CHOREO__KAFKA__GROUP_ID", &cfg.group)
            .env("CHOREO__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "6000")
            .env("CHOREO__REGISTRY__URL", &cfg.registry)
            .env("CHOREO__COORDINATOR__GUARANTEE", cfg.guarantee)
            .env("CHOREO__COORDINATOR__INSTANCE_ID", instance)
            .env("CHOREO__COORDINATOR__DEFINITIONS", &cfg.definition)
            .env(
                "CHOREO__COORDINATOR__PARTITIONS",
                cfg.partitions.to_string(),
            )
            .env("CHOREO__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            // Loopback, for the test alone.
            .env("CHOREO__HTTP__TRUSTED_NETWORK", "true")
            .env("CHOREO__LOG__LEVEL", "warn")
            .envs(cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting choreo run")?;
        Ok(Replica {
            instance: instance.to_owned(),
            api: format!("http://127.0.0.1:{port}"),
            log,
            child,
        })
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "replica {} exited with {status} before it was ready: {}",
                    self.instance,
                    self.last_log_line()
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.api)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("replica {} not ready within {patience:?}", self.instance);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the saga is visible in this replica's operator API.
    pub async fn has_saga(&self, saga: &str) -> bool {
        match reqwest::get(format!("{}/api/sagas/{saga}", self.api)).await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// SIGKILL: no drain, no commit, no goodbye.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        anyhow::ensure!(
            status.success(),
            "replica {} exited with {status} on SIGTERM",
            self.instance
        );
        Ok(())
    }

    /// Freezes the process (SIGSTOP): it holds its partitions, connections and open
    /// transaction, and does nothing — a zombie once its session times out.
    pub async fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP").await
    }

    /// Thaws a paused process (SIGCONT).
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT").await
    }

    async fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("the replica has exited")?;
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -{sig} {pid} failed");
        Ok(())
    }

    /// The replica's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last line of its log.
    pub fn last_log_line(&self) -> String {
        self.log_text()
            .lines()
            .last()
            .unwrap_or("(no log)")
            .to_owned()
    }

    /// The sum of a counter over its labels, from `/metrics` (0 when absent).
    pub async fn counter(&self, name: &str) -> f64 {
        let Ok(r) = reqwest::get(format!("{}/metrics", self.api)).await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits for the process to exit by itself, at most `patience`.
    pub async fn wait_exit(
        &mut self,
        patience: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(patience, self.child.wait())
            .await
            .with_context(|| {
                format!("replica {} still running after {patience:?}", self.instance)
            })??)
    }

    /// The process's peak resident memory so far, in KiB (`VmHWM`), while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

pub use crate::manifest_dir;

/// Starts `choreo registry` (schemas in the broker's compacted topic) on `port`, with `env`'s
/// extra `CHOREO__…` settings, its log appended to `log`; returns once it answers.
pub async fn start_registry(
    bootstrap: &str,
    port: u16,
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut child = Command::new(choreo_binary()?)
        .arg("registry")
        .env_remove("CHOREO_CONFIG")
        .env("CHOREO__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
        .env("CHOREO__REGISTRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("CHOREO__LOG__LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .context("starting choreo registry")?;
    let url = format!("http://127.0.0.1:{port}/subjects");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(&url)
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        if let Some(status) = child.try_wait()? {
            bail!(
                "choreo registry exited with {status} before it answered (log: {})",
                log.display()
            );
        }
        if Instant::now() > deadline {
            bail!("choreo registry never answered on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(child)
}
