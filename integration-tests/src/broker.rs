//! The real-broker tier's harness: a Kafka-protocol broker in another process.
//!
//! [`real_broker`] picks, in order:
//! 1. `KAFKA_BOOTSTRAP_SERVERS`, when set (Apache Kafka, Redpanda, a cloud cluster…);
//! 2. Apache Kafka through testcontainers, when a Docker engine answers;
//! 3. Apache Kafka 4.4 from Maven Central jars ([`apache_kafka`]), when Java and Maven are
//!    there: resolved once into the cache directory by `brokers/install-kafka.sh`, formatted and
//!    started here as a single KRaft node on free loopback ports, with real transactions and
//!    read_committed isolation.
//!
//! It never skips: if none of these can be had, the test fails with one line that says what to
//! install. [`shared_real_broker`] is one broker per test binary, for tests that use topics of
//! their own; [`apache_kafka`] is a broker of one test's own, which it may kill and restart.
//! [`hosted_mock`] starts librdkafka's mock cluster in a process of its own
//! (`choreo-mock-broker`). [`apache_kafka_secure`] adds a SASL_SSL listener (SCRAM-SHA-512,
//! certificates made at start-up; see [`secure`]) to the project's own Apache Kafka.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_coordinator::topics::{TopicSpec, ensure_topics};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

pub mod secure;

pub use secure::{
    SCRAM_RESTRICTED_USER, SCRAM_USER, TlsFiles, apache_kafka_secure, shared_secure_broker,
};

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `KAFKA_BOOTSTRAP_SERVERS`.
    External,
    /// Apache Kafka in a container.
    Testcontainers,
    /// Apache Kafka 4.4 from Maven Central jars, in a child JVM of this test process.
    ApacheKafka,
    /// librdkafka's mock cluster in a child process.
    HostedMock,
}

/// The SASL/PLAIN principal of the test brokers that may not use transactional ids (an ACL
/// denies it), so that its transactional producer gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
pub const NO_TRANSACTIONS_USER: (&str, &str) = ("notxn", "notxn-secret");
/// The SASL principal [`TestBroker::deny_writes`] restricts.
pub const WRITE_DENIED_USER: (&str, &str) = ("choreo", "choreo-secret");

/// A broker for one test (or one test binary); the process stops when this is dropped.
#[derive(Debug)]
pub struct TestBroker {
    /// Bootstrap servers (PLAINTEXT).
    pub bootstrap: String,
    /// What it is.
    pub kind: BrokerKind,
    kafka: Option<KafkaProcess>,
    mock: Option<Child>,
    _container: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl TestBroker {
    /// Whether the broker implements Kafka transactions with read_committed isolation. Every
    /// broker of the real tier does (Apache Kafka); librdkafka's mock cluster accepts them
    /// without isolating them.
    pub fn supports_transactions(&self) -> bool {
        self.kind != BrokerKind::HostedMock
    }

    /// Creates topics (ignores "already exists"). The hosted mock cluster creates topics from
    /// its command line instead, because its admin API does not answer.
    pub async fn create_topics(&self, topics: &[(&str, i32)]) -> anyhow::Result<()> {
        if self.kind == BrokerKind::HostedMock {
            bail!("create the hosted mock cluster's topics with its --topic flag");
        }
        create_topics(&self.bootstrap, topics).await
    }

    /// The broker's own log file, when this process started the broker.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.kafka.as_ref().map(|k| k.dir.join("kafka.log"))
    }

    /// Kills the broker process with SIGKILL — for crash tests. Its data directory stays.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(k) = self.kafka.as_mut() {
            k.kill();
            return Ok(());
        }
        if let Some(c) = self.mock.as_mut() {
            c.kill().await?;
            return Ok(());
        }
        bail!(
            "this test did not start the broker ({:?}); it cannot kill it",
            self.kind
        )
    }

    /// Starts a killed Apache Kafka again on the same ports and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        match self.kafka.as_mut() {
            Some(k) => k.start().await,
            None => bail!("only a broker this test started can be restarted"),
        }
    }

    /// Client settings (`bootstrap.servers` included) of the SASL/PLAIN principal `choreo`
    /// (password `choreo-secret`), which no ACL restricts until a test adds one. Only for an
    /// Apache Kafka this process started (it has the SASL listener).
    pub fn sasl_principal(&self) -> anyhow::Result<Vec<(String, String)>> {
        match &self.kafka {
            Some(k) => Ok(k.sasl_settings(WRITE_DENIED_USER)),
            None => bail!(
                "a SASL principal needs the project's own Apache Kafka ({:?} has no such listener)",
                self.kind
            ),
        }
    }

    /// Client settings (`bootstrap.servers` included) of a principal that an ACL denies every
    /// transactional id, so that a transactional producer gets
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED — a broker that refuses transactions. Only for an
    /// Apache Kafka this process started (it has the SASL listener); the ACL is added on first
    /// use.
    pub async fn without_transactions(&self) -> anyhow::Result<Vec<(String, String)>> {
        let Some(k) = &self.kafka else {
            bail!(
                "a principal without transactions needs the project's own Apache Kafka ({:?} has no such listener)",
                self.kind
            );
        };
        k.acl(&[
            "--add",
            "--deny-principal",
            &format!("User:{}", NO_TRANSACTIONS_USER.0),
            "--operation",
            "All",
            "--transactional-id",
            "*",
        ])
        .await?;
        Ok(k.sasl_settings(NO_TRANSACTIONS_USER))
    }

    /// Client settings (`bootstrap.servers` included) of a principal that an ACL denies
    /// writes to `topic`: its records there fail with TOPIC_AUTHORIZATION_FAILED, while every
    /// other topic takes them — a fault on one output alone. [`TestBroker::allow_writes`] lifts
    /// it. Only for an Apache Kafka this process started (it has the SASL listener).
    pub async fn deny_writes(&self, topic: &str) -> anyhow::Result<Vec<(String, String)>> {
        let Some(k) = &self.kafka else {
            bail!(
                "a principal denied one topic needs the project's own Apache Kafka ({:?} has no such listener)",
                self.kind
            );
        };
        // An ACL on the topic ends the everyone-if-no-ACL default there: reading stays allowed.
        let user = format!("User:{}", WRITE_DENIED_USER.0);
        k.acl(&[
            "--add",
            "--allow-principal",
            &user,
            "--operation",
            "Read",
            "--operation",
            "Describe",
            "--topic",
            topic,
        ])
        .await?;
        let deny = write_acl("--add", topic);
        k.acl(&deny.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
        Ok(k.sasl_settings(WRITE_DENIED_USER))
    }

    /// Client settings (`bootstrap.servers` included) that reach the SASL_SSL listener as
    /// `user` (name, password) with SCRAM-SHA-512, trusting the test CA. Only for a broker of
    /// [`apache_kafka_secure`].
    pub fn scram_settings(&self, user: (&str, &str)) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self.secure()?.client_settings(user))
    }

    /// The CA files of the SASL_SSL listener. Only for a broker of [`apache_kafka_secure`].
    pub fn tls_files(&self) -> anyhow::Result<&TlsFiles> {
        Ok(&self.secure()?.files)
    }

    fn secure(&self) -> anyhow::Result<&secure::SecureListener> {
        match self.kafka.as_ref().and_then(|k| k.secure.as_ref()) {
            Some(s) => Ok(s),
            None => bail!(
                "a SASL_SSL listener needs the project's own Apache Kafka started by apache_kafka_secure ({:?})",
                self.kind
            ),
        }
    }

    /// Adds an ACL that denies `user` every operation on a resource: `resource` is
    /// AclCommand's selector, e.g. `["--group", "g"]` or `["--topic", "t"]`. Only for an Apache
    /// Kafka this process started.
    pub async fn deny(&self, user: &str, resource: &[&str]) -> anyhow::Result<()> {
        let Some(k) = &self.kafka else {
            bail!("no ACLs on {:?}", self.kind);
        };
        let principal = format!("User:{user}");
        let mut args = vec![
            "--add",
            "--deny-principal",
            &principal,
            "--operation",
            "All",
        ];
        args.extend_from_slice(resource);
        k.acl(&args).await
    }

    /// Lifts the denial [`TestBroker::deny_writes`] added for `topic`.
    pub async fn allow_writes(&self, topic: &str) -> anyhow::Result<()> {
        let Some(k) = &self.kafka else {
            bail!("no ACLs on {:?}", self.kind);
        };
        let mut args = write_acl("--remove", topic);
        args.push("--force".into());
        k.acl(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
        // The topic still has ACLs (reading), so writing needs one of its own.
        k.acl(&[
            "--add",
            "--allow-principal",
            &format!("User:{}", WRITE_DENIED_USER.0),
            "--operation",
            "Write",
            "--topic",
            topic,
        ])
        .await
    }
}

fn write_acl(action: &str, topic: &str) -> Vec<String> {
    [
        action,
        "--deny-principal",
        &format!("User:{}", WRITE_DENIED_USER.0),
        "--operation",
        "Write",
        "--topic",
        topic,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
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
    ensure_topics(&client, &specs, None, Duration::from_secs(20)).await?;
    Ok(())
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The broker of the real tier (see the module doc), of this test's own. Fails, never skips.
pub async fn real_broker() -> anyhow::Result<TestBroker> {
    if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        && !bootstrap.trim().is_empty()
    {
        eprintln!("real tier: external broker at {bootstrap}");
        return Ok(TestBroker {
            bootstrap,
            kind: BrokerKind::External,
            kafka: None,
            mock: None,
            _container: None,
        });
    }
    if docker_engine_answers().await {
        return testcontainers_kafka().await;
    }
    apache_kafka().await
}

/// One real-tier broker for the whole test binary (started by the first test that asks), for
/// tests that create topics of their own. It stops when the test process exits, however it
/// exits.
pub async fn shared_real_broker() -> anyhow::Result<String> {
    static SHARED: tokio::sync::OnceCell<Result<String, String>> =
        tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            // Started on a runtime of its own thread, so that it outlives the test (and the
            // runtime) that happened to ask first.
            let started = std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let broker = rt.block_on(real_broker()).map_err(|e| format!("{e:#}"))?;
                let bootstrap = broker.bootstrap.clone();
                // Kept for the life of the process; the watchdog stops the JVM at exit.
                std::mem::forget(broker);
                Ok::<_, String>(bootstrap)
            })
            .join();
            started.unwrap_or_else(|_| Err("the broker start-up thread panicked".into()))
        })
        .await
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
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
        kafka: None,
        mock: None,
        _container: Some(Box::new(container)),
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(crate::manifest_dir()).join("..")
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CHOREO_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("choreo")
}

/// The folder of Apache Kafka's jars: `CHOREO_KAFKA_LIBS`, or the cached resolution (resolving
/// it once, through `brokers/install-kafka.sh`, if missing).
pub async fn kafka_libs() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CHOREO_KAFKA_LIBS") {
        return Ok(PathBuf::from(p));
    }
    let script = repo_root().join("integration-tests/brokers/install-kafka.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "no real broker for the real tier: {} failed (install Java 17+ and Maven, or set KAFKA_BOOTSTRAP_SERVERS)",
            script.display()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Apache Kafka 4.4 (KRaft, one node) in a child JVM, on free loopback ports, with its own
/// data directory and log (printed, and kept when the test fails).
pub async fn apache_kafka() -> anyhow::Result<TestBroker> {
    apache_kafka_with(&[]).await
}

/// [`apache_kafka`] with broker settings of the test's own (appended to
/// `server.properties`), e.g. a misconfiguration to be reported.
pub async fn apache_kafka_with(overrides: &[(&str, &str)]) -> anyhow::Result<TestBroker> {
    start_apache_kafka(overrides, false).await
}

async fn start_apache_kafka(
    overrides: &[(&str, &str)],
    secure: bool,
) -> anyhow::Result<TestBroker> {
    let libs = kafka_libs().await?;
    let dir = std::env::temp_dir().join(format!("choreo-kafka-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let secure = if secure {
        Some(secure::SecureListener::make(&dir, free_port()?).await?)
    } else {
        None
    };
    let mut k = KafkaProcess {
        port: free_port()?,
        controller_port: free_port()?,
        sasl_port: free_port()?,
        secure,
        libs,
        dir,
        pid: None,
        watchdog: None,
    };
    k.write_properties()?;
    if !overrides.is_empty() {
        let path = k.dir.join("server.properties");
        let mut props = std::fs::read_to_string(&path)?;
        for (key, value) in overrides {
            props.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(&path, props)?;
    }
    k.format().await?;
    k.start().await?;
    let bootstrap = format!("127.0.0.1:{}", k.port);
    match &k.secure {
        Some(s) => eprintln!(
            "real tier: Apache Kafka 4.4 at {bootstrap}, SASL_SSL (SCRAM-SHA-512) at 127.0.0.1:{} (log: {})",
            s.port,
            k.dir.join("kafka.log").display()
        ),
        None => eprintln!(
            "real tier: Apache Kafka 4.4 at {bootstrap} (log: {})",
            k.dir.join("kafka.log").display()
        ),
    }
    Ok(TestBroker {
        bootstrap,
        kind: BrokerKind::ApacheKafka,
        kafka: Some(k),
        mock: None,
        _container: None,
    })
}

/// A broker JVM this process started.
#[derive(Debug)]
struct KafkaProcess {
    port: u16,
    controller_port: u16,
    sasl_port: u16,
    /// The SASL_SSL listener, when the test asked for one.
    secure: Option<secure::SecureListener>,
    libs: PathBuf,
    dir: PathBuf,
    pid: Option<u32>,
    /// `sh` that SIGKILLs the JVM when its standard input closes: when this process exits,
    /// however it exits, no broker is left behind.
    watchdog: Option<std::process::Child>,
}

const JAVA_OPTS: [&str; 4] = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
];

impl KafkaProcess {
    fn classpath(&self) -> String {
        format!("{}/*", self.libs.display())
    }

    fn write_properties(&self) -> anyhow::Result<()> {
        let template = std::fs::read_to_string(
            repo_root().join("integration-tests/brokers/kafka/server.properties.in"),
        )
        .context("reading brokers/kafka/server.properties.in")?;
        let props = template
            .replace("@PORT@", &self.port.to_string())
            .replace("@CONTROLLER_PORT@", &self.controller_port.to_string())
            .replace("@SASL_PORT@", &self.sasl_port.to_string())
            .replace("@DATA_DIR@", &self.dir.join("data").display().to_string());
        let props = match &self.secure {
            Some(s) => s.add_to(&props),
            None => props,
        };
        std::fs::write(self.dir.join("server.properties"), props)?;
        Ok(())
    }

    /// Formats the data directory: a copy of a template formatted once into the cache (the
    /// formatted storage does not depend on ports or paths), saving a JVM start per broker. A
    /// broker with the secure listener has its SCRAM users in its metadata, so a template of
    /// their own.
    async fn format(&self) -> anyhow::Result<()> {
        let scram = if self.secure.is_some() {
            secure::scram_format_args()
        } else {
            Vec::new()
        };
        let name = if scram.is_empty() {
            "formatted".to_owned()
        } else {
            let users = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, scram.join(" ").as_bytes());
            format!("formatted-scram-{}", &users.simple().to_string()[..12])
        };
        let template = cache_dir().join("kafka-4.4.0").join(name);
        if !template.join("meta.properties").exists() {
            let tmp = cache_dir()
                .join("kafka-4.4.0")
                .join(format!("formatted.{}", uuid::Uuid::new_v4().simple()));
            let props = self.dir.join("format.properties");
            let own = std::fs::read_to_string(self.dir.join("server.properties"))?;
            let data_line = format!("log.dirs={}", self.dir.join("data").display());
            std::fs::write(
                &props,
                own.replace(&data_line, &format!("log.dirs={}", tmp.display())),
            )?;
            let out = Command::new("java")
                .args(JAVA_OPTS)
                .arg("-cp")
                .arg(self.classpath())
                .args([
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    "choreoTestCluster00000",
                    "-c",
                ])
                .arg(&props)
                .args(&scram)
                .output()
                .await
                .context("running java (the real tier needs Java 17+)")?;
            if !out.status.success() {
                bail!(
                    "formatting Kafka storage failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
            }
            // Another test may have won the race; either copy is as good.
            let _ = std::fs::rename(&tmp, &template);
            let _ = std::fs::remove_dir_all(&tmp);
        }
        copy_dir(&template, &self.dir.join("data"))
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let log_path = self.dir.join("kafka.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let started_from = log.metadata()?.len();
        let child = std::process::Command::new("java")
            .args(JAVA_OPTS)
            .arg("-cp")
            .arg(self.classpath())
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting java kafka.Kafka (the real tier needs Java 17+)")?;
        let pid = child.id();
        self.pid = Some(pid);
        // Reaped by the OS once the watchdog kills it or this process exits.
        drop(child);
        let watchdog = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cat >/dev/null; kill -9 {pid} 2>/dev/null"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the broker watchdog")?;
        self.watchdog = Some(watchdog);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let fresh = String::from_utf8_lossy(
                &text[usize::try_from(started_from).unwrap_or(0).min(text.len())..],
            )
            .into_owned();
            if fresh.contains("Kafka Server started") {
                break;
            }
            if !Path::new(&format!("/proc/{pid}")).exists() || fresh.contains("Exiting Kafka") {
                bail!(
                    "Apache Kafka exited at start-up; see {}",
                    log_path.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "Apache Kafka did not start within 90 s; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_for_port(&format!("127.0.0.1:{}", self.port)).await
    }

    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            // Until /proc says it is gone, its ports and lock may still be held.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z"))
                    .unwrap_or(false)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            drop(w.stdin.take());
            let _ = w.wait();
        }
    }

    /// Client settings that reach this broker as `user` (name, password) over SASL/PLAIN.
    fn sasl_settings(&self, user: (&str, &str)) -> Vec<(String, String)> {
        vec![
            (
                "bootstrap.servers".into(),
                format!("127.0.0.1:{}", self.sasl_port),
            ),
            ("security.protocol".into(), "SASL_PLAINTEXT".into()),
            ("sasl.mechanism".into(), "PLAIN".into()),
            ("sasl.username".into(), user.0.into()),
            ("sasl.password".into(), user.1.into()),
        ]
    }

    async fn acl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("java")
            .args(JAVA_OPTS)
            .arg("-cp")
            .arg(self.classpath())
            .args(["org.apache.kafka.tools.AclCommand", "--bootstrap-server"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(args)
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "AclCommand {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        Ok(())
    }
}

impl Drop for KafkaProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "real tier: Apache Kafka's log and data kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
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
        kafka: None,
        mock: Some(child),
        _container: None,
    })
}
