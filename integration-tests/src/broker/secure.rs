//! The test broker's SASL_SSL listener, started only for the tests that ask for it
//! ([`super::apache_kafka_secure`]): TLS with a certificate made at start-up by
//! `brokers/make-test-certs.sh` (a CA of the test's own; a second CA that signed nothing the
//! broker shows), and SASL/SCRAM-SHA-512 with the users of [`SCRAM_USERS`], whose credentials
//! are written into the cluster metadata when the storage is formatted.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use super::TestBroker;

/// A SCRAM-SHA-512 principal of the secure listener that no ACL restricts.
pub const SCRAM_USER: (&str, &str) = ("choreo-scram", "scram-secret-Vq7dK2pX");
/// A SCRAM-SHA-512 principal that tests restrict with ACLs ([`super::TestBroker::deny`]).
pub const SCRAM_RESTRICTED_USER: (&str, &str) = ("restricted", "restricted-secret-Zr4mW9tB");
/// Every SCRAM user the secure listener knows.
pub const SCRAM_USERS: [(&str, &str); 2] = [SCRAM_USER, SCRAM_RESTRICTED_USER];

/// The broker keystore's password (the broker's own secret; no client ever sees it).
const KEYSTORE_PASSWORD: &str = "keystore-secret-Hn3sY8cQ";

/// [`super::apache_kafka`] with a SASL_SSL listener too: SCRAM-SHA-512 over TLS, with a certificate
/// for 127.0.0.1 made now by a CA of its own ([`TestBroker::scram_settings`],
/// [`TestBroker::tls_files`]). The SCRAM users are [`SCRAM_USER`] and
/// [`SCRAM_RESTRICTED_USER`].
pub async fn apache_kafka_secure() -> anyhow::Result<TestBroker> {
    super::start_apache_kafka(&[], true).await
}

/// One [`apache_kafka_secure`] broker for the whole test binary (started by the first test that
/// asks), for tests that keep to topics, groups and ACLs of their own. It stops when the test
/// process exits, however it exits.
pub async fn shared_secure_broker() -> anyhow::Result<&'static TestBroker> {
    static SHARED: tokio::sync::OnceCell<Result<TestBroker, String>> =
        tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            // Started on a runtime of its own thread, so that nothing of it belongs to the
            // runtime of the test that happened to ask first.
            std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let broker = rt
                    .block_on(apache_kafka_secure())
                    .map_err(|e| format!("{e:#}"))?;
                // A static is never dropped: its folder is removed once this process exits
                // (and the watchdog has stopped the JVM), like the broker's own drop would.
                if let Some(k) = &broker.kafka {
                    let sweeper = std::process::Command::new("sh")
                        .arg("-c")
                        .arg(r#"cat >/dev/null; sleep 2; rm -rf "$0""#)
                        .arg(&k.dir)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|e| format!("starting the folder sweeper: {e}"))?;
                    // Its stdin closes when this process exits.
                    std::mem::forget(sweeper);
                }
                Ok(broker)
            })
            .join()
            .unwrap_or_else(|_| Err("the broker start-up thread panicked".into()))
        })
        .await
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The TLS files of a secure listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the broker's certificate (PEM), for `ssl.ca.location`.
    pub ca: PathBuf,
    /// A CA that signed nothing the broker shows (PEM): a client trusting only it refuses the
    /// broker.
    pub other_ca: PathBuf,
    /// The broker's key and certificate (PKCS12).
    keystore: PathBuf,
}

/// The SASL_SSL listener of one broker.
#[derive(Debug)]
pub(super) struct SecureListener {
    pub(super) port: u16,
    pub(super) files: TlsFiles,
}

impl SecureListener {
    /// Makes the certificates into `dir/tls` for a listener on `port`.
    pub(super) async fn make(dir: &Path, port: u16) -> anyhow::Result<SecureListener> {
        let tls = dir.join("tls");
        let script = super::repo_root().join("integration-tests/brokers/make-test-certs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&tls)
            .arg(KEYSTORE_PASSWORD)
            .output()
            .await
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "making the test certificates failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        Ok(SecureListener {
            port,
            files: TlsFiles {
                ca: tls.join("ca.pem"),
                other_ca: tls.join("other-ca.pem"),
                keystore: tls.join("broker.p12"),
            },
        })
    }

    /// The rendered `server.properties` with this listener added.
    pub(super) fn add_to(&self, props: &str) -> String {
        let listener = format!("SASL_SSL://127.0.0.1:{}", self.port);
        let mut out: String = props
            .lines()
            .map(|line| {
                let extended = match line.split_once('=') {
                    Some(("listeners" | "advertised.listeners", v)) => Some((v, listener.as_str())),
                    Some(("listener.security.protocol.map", v)) => Some((v, "SASL_SSL:SASL_SSL")),
                    _ => None,
                };
                match extended {
                    Some((value, item)) => {
                        let key = line.split('=').next().unwrap_or_default();
                        format!("{key}={value},{item}\n")
                    }
                    None => format!("{line}\n"),
                }
            })
            .collect();
        out.push_str(&format!(
            "# The SASL_SSL listener (SCRAM-SHA-512 over TLS) of the tests that ask for it.\n\
             listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_ssl.ssl.keystore.type=PKCS12\n\
             listener.name.sasl_ssl.ssl.keystore.location={}\n\
             listener.name.sasl_ssl.ssl.keystore.password={KEYSTORE_PASSWORD}\n",
            self.files.keystore.display()
        ));
        out
    }

    /// Client settings (`bootstrap.servers` included) that reach this listener as `user`
    /// (name, password) over SASL_SSL with SCRAM-SHA-512, trusting the test CA.
    pub(super) fn client_settings(&self, user: (&str, &str)) -> Vec<(String, String)> {
        vec![
            (
                "bootstrap.servers".into(),
                format!("127.0.0.1:{}", self.port),
            ),
            ("security.protocol".into(), "SASL_SSL".into()),
            ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
            ("sasl.username".into(), user.0.into()),
            ("sasl.password".into(), user.1.into()),
            (
                "ssl.ca.location".into(),
                self.files.ca.display().to_string(),
            ),
        ]
    }
}

/// `kafka-storage format` arguments that write the SCRAM users' credentials.
pub(super) fn scram_format_args() -> Vec<String> {
    SCRAM_USERS
        .iter()
        .flat_map(|(name, password)| {
            [
                "--add-scram".to_owned(),
                format!("SCRAM-SHA-512=[name={name},password={password}]"),
            ]
        })
        .collect()
}
