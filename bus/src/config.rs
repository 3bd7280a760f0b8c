//! Bus configuration: where the brokers are, who we are, and librdkafka settings passed through.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::error::BusError;

/// Settings of a [`crate::Bus`]. Its `Debug` output hides secret settings
/// ([`is_secret_setting`]), so a logged configuration never shows a password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// The `ce_source` of events this process publishes, e.g. `/services/payments`.
    #[serde(default = "default_source")]
    pub source: String,
    /// How long a publish may wait for the broker's acknowledgement, in milliseconds.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// Extra librdkafka settings for every client, e.g. `security.protocol = "SASL_SSL"`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// librdkafka settings for consumers only (after `client`), e.g. `fetch.wait.max.ms` or
    /// `session.timeout.ms` — producers would warn about them.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
}

/// Whether a librdkafka setting holds a secret (a password, a private key, a JAAS or OAuth
/// configuration): shown as `<redacted>` wherever choreo prints settings.
pub fn is_secret_setting(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "private",
        "ssl.key",
        "token",
        "oauthbearer.config",
        "credentials",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `settings` with the secret ones' values replaced by `<redacted>`, for `Debug` output.
pub fn redacted(settings: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    settings
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_setting(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("source", &self.source)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("client", &redacted(&self.client))
            .field("consumer", &redacted(&self.consumer))
            .finish()
    }
}

fn default_source() -> String {
    "/choreo".into()
}

fn default_delivery_timeout_ms() -> u64 {
    30_000
}

impl BusConfig {
    /// A configuration for these bootstrap servers with every default.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            source: default_source(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }

    /// Sets `ce_source`.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Adds a librdkafka setting.
    pub fn with_client_setting(mut self, key: &str, value: &str) -> Self {
        self.client.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a librdkafka setting for consumers only.
    pub fn with_consumer_setting(mut self, key: &str, value: &str) -> Self {
        self.consumer.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Settings that make consumers answer quickly on the embedded broker (librdkafka's mock
    /// cluster holds an empty fetch for the whole `fetch.wait.max.ms`, 500 ms by default, even
    /// when records arrive meanwhile).
    pub fn tuned_for_embedded_broker(self) -> Self {
        self.with_consumer_setting("fetch.wait.max.ms", "10")
    }

    /// The delivery timeout.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    /// Checks what can be checked without a broker.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(BusError::Config("bootstrap_servers is empty".into()));
        }
        if self.source.trim().is_empty() {
            return Err(BusError::Config("source (ce_source) is empty".into()));
        }
        if self.delivery_timeout_ms == 0 {
            return Err(BusError::Config(
                "delivery_timeout_ms must be positive".into(),
            ));
        }
        Ok(())
    }

    /// A librdkafka configuration with the bootstrap servers and pass-through settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    /// [`Self::client_config`] plus the consumer-only settings.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        for (k, v) in &self.consumer {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret_setting() {
        let config = BusConfig::new("k:9092")
            .with_client_setting("sasl.username", "choreo")
            .with_client_setting("sasl.password", "hunter2-secret")
            .with_client_setting("ssl.key.password", "key-secret")
            .with_client_setting("sasl.oauthbearer.client.secret", "oauth-secret");
        let shown = format!("{config:?}");
        for secret in ["hunter2-secret", "key-secret", "oauth-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("choreo"),
            "the user name is not a secret: {shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
}
