//! The configuration that `deploy/compose.yaml` and `deploy/kubernetes/` hand choreo is the one
//! these tests start `choreo` with, on Apache Kafka: the image's `ENV` and command, overlaid
//! with each file's environment (the Compose project as the Compose loader normalises it; the
//! Kubernetes env, envFrom ConfigMaps and Secrets and the pod-name field as the kubelet
//! resolves them) — every variable as written, except those each test names and replaces:
//!
//! - addresses that only exist inside the stack: the Kafka bootstrap (the test's broker), the
//!   listen addresses (free loopback ports: several processes share this machine's network)
//!   and the registry URL that points at the registry service (the test's registry process);
//! - Kubernetes only: the values of the Secrets, which are the operator's to fill (the shipped
//!   ones authenticate nowhere on purpose): the test broker's SASL principal and a token of the
//!   test's own; and, since the test broker has a SASL_PLAINTEXT listener with PLAIN, the
//!   manifests' `security.protocol` (SASL_SSL) and `sasl.mechanism` (SCRAM-SHA-512).
//!
//! Each replica comes up ready, the image's health check passes against it, and order sagas
//! placed by the demo services reach a terminal status, seen through either replica. A misspelt
//! key in a file makes `choreo` refuse to start, and the test fail with its message.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_integration_tests::broker::{apache_kafka, free_port};
use choreo_integration_tests::deploy::{
    Image, Process, compose_process, compose_project, host_port, image, kubernetes_manifests,
    kubernetes_process, repo,
};
use tokio::process::Child;

/// One broker and a handful of processes per test: the two tests take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn log_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("choreo-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("log dir");
    eprintln!("{name}: logs in {}", dir.display());
    dir
}

/// A started process and where its log goes.
struct Running {
    process: Process,
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(process: Process, logs: &Path) -> anyhow::Result<Running> {
        let log = logs.join(format!("{}.log", process.name.replace(' ', "-")));
        eprintln!(
            "starting {} as `choreo {}`, replacing {:?}",
            process.name,
            process.args.join(" "),
            process.replaced.keys().collect::<Vec<_>>()
        );
        let child = process.spawn(&log)?;
        Ok(Running {
            process,
            child,
            log,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Waits until `url` answers 2xx, failing at once with its log if the process exits.
    async fn wait_for(&mut self, url: &str, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before {url} answered:\n{}",
                    self.process.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = reqwest::get(url).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {url} did not answer within {patience:?}:\n{}",
                    self.process.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its resident set (Linux `VmRSS`), for the sizing figures the test prints.
    fn resident(&self) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        Some(line.trim_start_matches("VmRSS:").trim().to_owned())
    }

    /// SIGTERM, and a clean exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        anyhow::ensure!(
            status.success(),
            "{} exited with {status} on SIGTERM:\n{}",
            self.process.name,
            self.log_tail()
        );
        Ok(())
    }
}

fn loopback() -> String {
    format!("127.0.0.1:{}", free_port().expect("free port"))
}

/// Runs the image's HEALTHCHECK command (the workspace's binary in place of the image's path)
/// with a process's environment.
async fn image_health_check(image: &Image, process: &Process) -> anyhow::Result<()> {
    healthcheck(&image.healthcheck[1..], process).await
}

async fn healthcheck(args: &[String], process: &Process) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(choreo_integration_tests::process::choreo_binary()?)
        .args(args)
        .env_clear()
        .envs(&process.env)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "health check {args:?} of {} failed: {}",
        process.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until `count` sagas are completed or compensated, as `api` reports them.
async fn terminal_sagas(api: &str, token: Option<&str>, count: u64) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut req = client.get(format!("{api}/api/sagas?definition=order&limit=1000"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let body: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
        let counts = &body["counts"];
        let done =
            counts["completed"].as_u64().unwrap_or(0) + counts["compensated"].as_u64().unwrap_or(0);
        if done >= count {
            return Ok(body["sagas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["status"] == "completed" || s["status"] == "compensated")
                .filter_map(|s| s["correlation_id"].as_str().map(str::to_owned))
                .collect());
        }
        if Instant::now() > deadline {
            bail!("only {done} of {count} sagas finished within 4 minutes: {counts}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_runs_order_sagas_on_apache_kafka() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let project = compose_project(&repo("deploy/compose.yaml"))?;
    let image = image()?;
    let broker = apache_kafka().await?;
    let logs = log_dir("deploy-compose");
    let kafka_env = &project["services"]["kafka"]["environment"];

    // The registry service, at a free port.
    let mut registry = compose_process(&project, "registry", &image)?;
    let in_stack = registry.replace("CHOREO__KAFKA__BOOTSTRAP_SERVERS", &broker.bootstrap);
    assert!(
        kafka_env["KAFKA_ADVERTISED_LISTENERS"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("//{in_stack}")),
        "{in_stack} is not an address the kafka service advertises"
    );
    let registry_addr = loopback();
    let registry_listen = registry.replace("CHOREO__REGISTRY__LISTEN", &registry_addr);
    let mut registry = Running::start(registry, &logs)?;
    registry
        .wait_for(
            &format!("http://{registry_addr}/subjects"),
            Duration::from_secs(90),
        )
        .await?;
    // The registry's compose health check, on the port the test gave it.
    let check: Vec<String> = project["services"]["registry"]["healthcheck"]["test"]
        .as_array()
        .context("registry health check")?
        .iter()
        .skip(2) // "CMD", "choreo"
        .map(|a| {
            a.as_str().unwrap_or_default().replace(
                &format!("127.0.0.1:{}", host_port(&registry_listen).expect("port").1),
                &registry_addr,
            )
        })
        .collect();
    healthcheck(&check, &registry.process).await?;

    // Both coordinator replicas.
    let mut replicas = Vec::new();
    for name in ["coordinator-1", "coordinator-2"] {
        let mut p = compose_process(&project, name, &image)?;
        p.replace("CHOREO__KAFKA__BOOTSTRAP_SERVERS", &broker.bootstrap);
        let url = p.replace("CHOREO__REGISTRY__URL", &format!("http://{registry_addr}"));
        let (host, port) = host_port(&url)?;
        assert_eq!(
            (host.as_str(), port),
            ("registry", host_port(&registry_listen)?.1),
            "{url}"
        );
        let api = loopback();
        p.replace("CHOREO__HTTP__LISTEN", &api);
        p.replace("CHOREO__INGEST__LISTEN", &loopback());
        replicas.push((Running::start(p, &logs)?, format!("http://{api}")));
    }
    for (r, api) in &mut replicas {
        r.wait_for(&format!("{api}/readyz"), Duration::from_secs(120))
            .await?;
        image_health_check(&image, &r.process).await?;
    }

    // The demo services place orders; sagas finish, and either replica answers for them.
    let mut demo = compose_process(&project, "demo", &image)?;
    demo.replace("CHOREO__KAFKA__BOOTSTRAP_SERVERS", &broker.bootstrap);
    demo.replace("CHOREO__REGISTRY__URL", &format!("http://{registry_addr}"));
    let demo = Running::start(demo, &logs)?;
    let finished = terminal_sagas(&replicas[0].1, None, 6).await?;
    let other = &replicas[1].1;
    for id in finished.iter().take(3) {
        let r = reqwest::get(format!("{other}/api/sagas/order/{id}")).await?;
        assert!(r.status().is_success(), "{other} does not know saga {id}");
    }

    for (r, _) in &replicas {
        eprintln!(
            "{}: resident memory {} after {} finished sagas",
            r.process.name,
            r.resident().unwrap_or_else(|| "unknown".into()),
            finished.len()
        );
    }
    demo.stop().await?;
    for (r, _) in replicas {
        r.stop().await?;
    }
    registry.stop().await?;
    Ok(())
}

/// SHA-256 in hex, through the coreutils every machine of the test tier has.
fn sha256_hex(text: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_manifests_run_order_sagas_on_apache_kafka() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let docs = kubernetes_manifests()?;
    let image = image()?;
    let broker = apache_kafka().await?;
    let logs = log_dir("deploy-kubernetes");
    let sasl: std::collections::BTreeMap<String, String> =
        broker.sasl_principal()?.into_iter().collect();
    let token = format!("test-token-{}", uuid::Uuid::new_v4().simple());

    // What the tests replace in every pod's Kafka connection (see the module doc).
    let connect = |p: &mut Process| {
        p.replace(
            "CHOREO__KAFKA__BOOTSTRAP_SERVERS",
            &sasl["bootstrap.servers"],
        );
        assert_eq!(
            p.replace("CHOREO__KAFKA__CLIENT__SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            "SASL_SSL"
        );
        p.replace(
            "CHOREO__KAFKA__CLIENT__SASL_MECHANISM",
            &sasl["sasl.mechanism"],
        );
        p.replace(
            "CHOREO__KAFKA__CLIENT__SASL_USERNAME",
            &sasl["sasl.username"],
        );
        p.replace(
            "CHOREO__KAFKA__CLIENT__SASL_PASSWORD",
            &sasl["sasl.password"],
        );
    };

    // The registry Deployment (its write token a Secret value of the test's own).
    let mut registry = kubernetes_process(
        &docs,
        "Deployment",
        "choreo-registry",
        "registry",
        "choreo-registry-0",
        &image,
    )?;
    connect(&mut registry);
    let var = registry.get("CHOREO__REGISTRY__WRITE_TOKEN_ENV").to_owned();
    registry.replace(&var, &format!("registry-{token}"));
    let registry_addr = loopback();
    registry.replace("CHOREO__REGISTRY__LISTEN", &registry_addr);
    let mut registry = Running::start(registry, &logs)?;
    registry
        .wait_for(
            &format!("http://{registry_addr}/subjects"),
            Duration::from_secs(90),
        )
        .await?;

    // Two replicas of the StatefulSet, named as its pods are.
    let mut replicas = Vec::new();
    for pod in ["choreo-coordinator-0", "choreo-coordinator-1"] {
        let mut p = kubernetes_process(
            &docs,
            "StatefulSet",
            "choreo-coordinator",
            "coordinator",
            pod,
            &image,
        )?;
        connect(&mut p);
        assert_eq!(p.get("CHOREO__COORDINATOR__INSTANCE_ID"), pod);
        let tokens = p.get("CHOREO__HTTP__TOKENS").to_owned();
        p.replace(
            "CHOREO__HTTP__TOKENS",
            &tokens.replace(&"0".repeat(64), &sha256_hex(&token)),
        );
        let api = loopback();
        p.replace("CHOREO__HTTP__LISTEN", &api);
        replicas.push((Running::start(p, &logs)?, format!("http://{api}")));
    }
    for (r, api) in &mut replicas {
        r.wait_for(&format!("{api}/readyz"), Duration::from_secs(120))
            .await?;
        r.wait_for(&format!("{api}/healthz"), Duration::from_secs(5))
            .await?;
        image_health_check(&image, &r.process).await?;
    }
    // The API takes the token whose hash the Secret holds, and nothing else.
    let api = &replicas[0].1;
    let anonymous = reqwest::get(format!("{api}/api/sagas")).await?;
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);

    // Orders from the demo services (the test's own process, not part of the manifests: the
    // replicas' Kafka connection, schemas from the same topic).
    let coordinator = &replicas[0].0.process;
    let mut demo = Process {
        name: "the test's demo services".into(),
        args: ["demo", "--orders-per-second", "3"]
            .map(str::to_owned)
            .to_vec(),
        env: coordinator
            .env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("CHOREO__KAFKA__") || k.starts_with("CHOREO__REGISTRY__")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        replaced: Default::default(),
    };
    demo.env.insert("CHOREO__LOG__LEVEL".into(), "warn".into());
    let demo = Running::start(demo, &logs)?;
    let finished = terminal_sagas(api, Some(&token), 6).await?;
    let other = &replicas[1].1;
    let client = reqwest::Client::new();
    for id in finished.iter().take(3) {
        let r = client
            .get(format!("{other}/api/sagas/order/{id}"))
            .bearer_auth(&token)
            .send()
            .await?;
        assert!(r.status().is_success(), "{other} does not know saga {id}");
    }

    demo.stop().await?;
    for (r, _) in replicas {
        r.stop().await?;
    }
    registry.stop().await?;
    Ok(())
}
