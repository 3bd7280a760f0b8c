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

/// How a consumer that reads a topic back to rebuild state fetches ([`read_back`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBack {
    /// Reads from the start to an end it knows, then stops (a restore, a catch-up, a scan).
    ToEnd,
    /// Reads from the start and goes on following the topic (a view kept up to date).
    Follow,
}

/// The prefetch a read-back consumer may hold, in KiB (librdkafka's default is 64 MiB).
pub const READ_BACK_PREFETCH_KIB: u32 = 2048;

/// The records a read-back consumer prefetches per partition, at least and at most about
/// (`queued.min.messages`; librdkafka's default is 100 000).
pub const READ_BACK_PREFETCH_RECORDS: u32 = 1000;

/// The bytes a read-back consumer fetches from one partition in one request
/// (`max.partition.fetch.bytes`; librdkafka's default is 1 MiB).
pub const READ_BACK_FETCH_BYTES: u32 = 256 * 1024;

/// `config` with the settings of a consumer that reads a topic back from its start: a changelog
/// restore, the operator view, a dedup store's restore, a history or dead-letter scan.
///
/// - `group.id` is `group`, and nothing is committed (`enable.auto.commit` false): a read-back
///   consumer assigns its partitions and offsets itself and keeps no group offsets.
/// - It reads committed records only (`isolation.level` read_committed; set it again after for
///   a reader that must see what is not committed yet), is told when it reaches a partition's
///   end (`enable.partition.eof`), and starts from the earliest record when the offset it asks
///   for is gone (`auto.offset.reset` earliest: compaction or retention removed it).
/// - Its prefetch is bounded to [`READ_BACK_PREFETCH_KIB`] (`queued.max.messages.kbytes`).
///   librdkafka's default of 64 MiB let a restore hold as much of the topic as it could fetch
///   ahead of the reader, and the process kept that memory after the restore: a coordinator's
///   resident memory then grew with the length of its changelog, restart after restart.
/// - It is bounded in records too, to [`READ_BACK_PREFETCH_RECORDS`] per partition
///   (`queued.min.messages`), and fetches at most [`READ_BACK_FETCH_BYTES`] of a partition at
///   a time (`max.partition.fetch.bytes`). The byte bound counts values only, and a tombstone
///   has none, while librdkafka keeps about 200 bytes of its own per prefetched record, for
///   every record of a fetched batch: with its defaults (100 000 records per partition, 1 MiB
///   per fetch), a changelog of finished sagas (a state and a tombstone each) was prefetched
///   nearly whole, and the start-up peak grew with the tombstones the changelog keeps
///   (`delete.retention.ms`, 24 h). Restoring 400 000 such records of 40-byte states, a
///   coordinator peaked 57–59 MB above its empty start with the defaults, 8 MB with these
///   bounds, and restored as fast.
/// - A full prefetch queue is fetched again after 1 ms (`fetch.queue.backoff.ms`, 1 s by
///   default), so that the bounds do not slow the read down (with 10 ms, the record bound
///   doubled a restore of tombstones).
/// - [`ReadBack::ToEnd`]: the broker answers a fetch at once rather than holding it up to
///   `fetch.wait.max.ms` (500 ms by default) for records: past the end there are none, and the
///   fetch held there kept the next partition's first fetch waiting behind it (a restore took
///   about 1 s per partition whatever its length; with this, 0.1 s for 11 MB).
///
/// The prefetch settings the configuration already holds (`kafka.consumer` in choreo's
/// configuration) are kept as they are; `fetch.wait.max.ms`, a latency setting for consumers
/// that follow a topic, is not taken over by one that reads to an end.
pub fn read_back(mut config: ClientConfig, how: ReadBack, group: &str) -> ClientConfig {
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let prefetch = READ_BACK_PREFETCH_KIB.to_string();
    let records = READ_BACK_PREFETCH_RECORDS.to_string();
    let fetch = READ_BACK_FETCH_BYTES.to_string();
    for (key, value) in [
        ("queued.max.messages.kbytes", prefetch.as_str()),
        ("queued.min.messages", records.as_str()),
        ("max.partition.fetch.bytes", fetch.as_str()),
        ("fetch.queue.backoff.ms", "1"),
    ] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    if how == ReadBack::ToEnd {
        config.set("fetch.wait.max.ms", "10");
    }
    config
}

#[cfg(test)]
mod read_back_tests {
    use super::*;

    #[test]
    fn a_read_back_consumer_bounds_its_prefetch_and_does_not_wait_at_the_end() {
        let restore = read_back(
            BusConfig::new("k:9092").consumer_config(),
            ReadBack::ToEnd,
            "g",
        );
        assert_eq!(restore.get("queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(restore.get("queued.min.messages"), Some("1000"));
        assert_eq!(restore.get("max.partition.fetch.bytes"), Some("262144"));
        assert_eq!(restore.get("fetch.queue.backoff.ms"), Some("1"));
        assert_eq!(restore.get("fetch.wait.max.ms"), Some("10"));
        let view = read_back(
            BusConfig::new("k:9092").consumer_config(),
            ReadBack::Follow,
            "g",
        );
        assert_eq!(view.get("queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(view.get("fetch.wait.max.ms"), None, "a follower long-polls");
        for c in [&restore, &view] {
            assert_eq!(c.get("group.id"), Some("g"));
            assert_eq!(c.get("enable.auto.commit"), Some("false"));
            assert_eq!(c.get("isolation.level"), Some("read_committed"));
            assert_eq!(c.get("enable.partition.eof"), Some("true"));
            assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        }
    }

    #[test]
    fn a_read_back_consumer_keeps_the_prefetch_the_user_gave() {
        let config = BusConfig::new("k:9092")
            .with_consumer_setting("queued.max.messages.kbytes", "16384")
            .with_consumer_setting("fetch.wait.max.ms", "100");
        let restore = read_back(config.consumer_config(), ReadBack::ToEnd, "g");
        assert_eq!(restore.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(
            restore.get("fetch.wait.max.ms"),
            Some("10"),
            "never waits at the end"
        );
        let view = read_back(config.consumer_config(), ReadBack::Follow, "g");
        assert_eq!(view.get("fetch.wait.max.ms"), Some("100"));
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
