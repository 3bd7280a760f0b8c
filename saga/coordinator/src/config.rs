//! The coordinator's configuration: one typed tree, layered.
//!
//! 1. embedded defaults (every field has one; [`Config::default`]);
//! 2. a TOML file (`choreo.toml`, see `deploy/choreo.example.toml`): every section and every
//!    field is optional, unknown ones are rejected;
//! 3. environment overrides `CHOREO__<SECTION>__<KEY>`, e.g. `CHOREO__KAFKA__BOOTSTRAP_SERVERS`
//!    or `CHOREO__COORDINATOR__GUARANTEE=effectively_once`. A value is read as a TOML scalar
//!    or array when it parses as one (`6`, `true`, `["a", "b"]`), else as a string; a list may
//!    also be written comma-separated. librdkafka settings go through
//!    `CHOREO__KAFKA__CLIENT__<NAME>` (every client) or `CHOREO__KAFKA__CONSUMER__<NAME>`
//!    (consumers only), where `_` in the name stands for `.`
//!    (`CHOREO__KAFKA__CLIENT__SASL_PASSWORD` sets `sasl.password`).
//!
//! The result is validated ([`Config::validate`]). Every error says where the offending value
//! came from — `choreo.toml:7: ...`, `environment variable CHOREO__COORDINATOR__PARTITIONS:
//! ...` — and why.
//!
//! Relative paths (`coordinator.definitions`, `coordinator.catalog`) are relative to the working
//! directory of the process.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use choreo_saga::format_duration;
use serde::{Deserialize, Serialize};

use crate::coordinator::{Guarantee, defaults};

mod ingest;
mod source;
mod tracing_export;

use source::{
    de_client_settings, de_duration, describe_toml_error, env_candidates, env_path, file_error,
    file_origins, insert_path, ser_duration,
};

pub use ingest::{IngestConfig, TokenConfig};
pub use tracing_export::TracingConfig;

/// The prefix of environment overrides; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "CHOREO__";

/// The label used in errors when no configuration file was given.
pub const NO_FILE: &str = "<defaults>";

/// librdkafka settings the coordinator sets itself; `kafka.client` may not override them.
const MANAGED_CLIENT_SETTINGS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use kafka.bootstrap_servers"),
    ("group.id", "use kafka.group_id"),
    (
        "transactional.id",
        "it is derived from coordinator.instance_id",
    ),
    ("enable.idempotence", "it follows coordinator.guarantee"),
    (
        "isolation.level",
        "the coordinator always reads committed records",
    ),
    (
        "enable.auto.commit",
        "the coordinator commits offsets itself",
    ),
    (
        "enable.auto.offset.store",
        "the coordinator stores offsets itself",
    ),
];

/// The whole configuration of a coordinator process.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach Kafka.
    pub kafka: KafkaConfig,
    /// Where event schemas are registered.
    pub registry: RegistryConfig,
    /// The saga coordinator itself.
    pub coordinator: CoordinatorConfig,
    /// The operator API and web page.
    pub http: HttpConfig,
    /// The HTTP ingest of events.
    pub ingest: IngestConfig,
    /// Logging.
    pub log: LogConfig,
    /// OpenTelemetry export of choreo's spans.
    pub tracing: TracingConfig,
}

/// `[kafka]`: how to reach Kafka. Its `Debug` output hides secret client settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// The consumer group every replica joins; partitions are shared out among its members.
    pub group_id: String,
    /// Extra librdkafka settings for every client the coordinator creates (TLS, SASL…), e.g.
    /// `"security.protocol" = "SASL_SSL"`. Numbers and booleans are accepted and passed as text.
    #[serde(deserialize_with = "de_client_settings")]
    pub client: BTreeMap<String, String>,
    /// librdkafka settings for the coordinator's consumers only, after `client`, e.g.
    /// `"session.timeout.ms" = "10000"` or `"fetch.wait.max.ms" = "100"`.
    #[serde(deserialize_with = "de_client_settings")]
    pub consumer: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("client", &choreo_bus::config::redacted(&self.client))
            .field("consumer", &choreo_bus::config::redacted(&self.consumer))
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "localhost:9092".into(),
            group_id: defaults::GROUP_ID.into(),
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The bus configuration of the coordinator's clients: these brokers and `client`
    /// settings, with `source` as the `ce_source` of the events it emits.
    pub fn bus_config(&self, source: &str) -> choreo_bus::BusConfig {
        let mut bus =
            choreo_bus::BusConfig::new(self.bootstrap_servers.clone()).with_source(source);
        bus.client.clone_from(&self.client);
        bus.consumer.clone_from(&self.consumer);
        bus
    }
}

/// `[registry]`: where event schemas are registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// A schema registry speaking the Confluent REST API (Confluent Schema Registry, Karapace,
    /// Apicurio), e.g. `http://registry:8081`. Unset: the in-process registry, filled from the
    /// catalog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Serve the registry over the Confluent REST API on this address, so that other
    /// services' serializers can use it. Unset: not served (`choreo registry`: 127.0.0.1:8081).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Where the registry keeps schemas when `url` is unset: `memory` (this process only,
    /// filled from the catalog at start-up) or `kafka` (the compacted `topic`: survives
    /// restarts, shared by every instance). `choreo registry` always uses `kafka`.
    pub store: RegistryStoreKind,
    /// The compacted topic of the `kafka` store.
    pub topic: String,
    /// The environment variable holding the token that writes (registering, config changes)
    /// need, as `Authorization: Bearer <token>`. Unset: writes are open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_token_env: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: None,
            listen: None,
            store: RegistryStoreKind::Memory,
            topic: choreo_bus::schema_store::DEFAULT_TOPIC.into(),
            write_token_env: None,
        }
    }
}

/// Where the registry keeps its schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryStoreKind {
    /// In this process.
    #[default]
    Memory,
    /// In a compacted Kafka topic.
    Kafka,
}

/// `[coordinator]`: the saga coordinator itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// Saga definition files, or folders of them (`*.toml`). Empty: the compiled-in reference
    /// order saga.
    pub definitions: Vec<PathBuf>,
    /// A schemas folder holding `catalog.toml`. Unset: the compiled-in reference catalog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<PathBuf>,
    /// `exactly_once` (Kafka transactions) or `effectively_once` (at-least-once with
    /// deduplicated effects, for brokers without transactions).
    pub guarantee: Guarantee,
    /// This replica's name, stable across restarts (it seeds the transactional id, so that a
    /// restarted replica fences its previous incarnation). Default: `$HOSTNAME`, else
    /// `choreo-0`.
    pub instance_id: String,
    /// Partitions of the topics the coordinator creates at start-up (changelog, commands).
    pub partitions: i32,
    /// Replication factor of the topics the coordinator creates at start-up. Unset: the
    /// cluster's `default.replication.factor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// The compacted topic that holds this group's saga states. Unset: `<group_id>.saga-state`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changelog_topic: Option<String>,
    /// The topic this group's operator commands travel on. Unset: `<group_id>.saga-commands`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands_topic: Option<String>,
    /// At most this many inputs are applied in one transaction.
    pub batch_max_records: usize,
    /// How long a batch waits for more inputs before it commits, e.g. `"10ms"`.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub batch_linger: Duration,
    /// How long a finished saga (completed or compensated) is kept before it is deleted
    /// (a changelog tombstone), e.g. `"1h"`.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub completed_retention: Duration,
    /// How long a saga that needs an operator is kept after its last change when nobody acts,
    /// e.g. `"30d"`; then it is deleted with an error line.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub needs_operator_retention: Duration,
    /// At most this many sagas of one replica wait for their start event (created by a success
    /// or failure that arrived first); beyond it such events are dead-lettered (`no_saga`).
    pub max_pending_sagas: usize,
    /// On shutdown, how long the batch in hand may take to commit, e.g. `"30s"`.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// How long the broker lets one batch's transaction stay open before it aborts it
    /// (`transaction.timeout.ms`), e.g. `"10s"`. A replica that freezes mid-batch holds up its
    /// partitions' next owner at most this long; a batch must commit well within it.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub transaction_timeout: Duration,
    /// Upper bound for one broker call (a transaction step, metadata, a restore that stops
    /// making progress), e.g. `"30s"`.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub kafka_timeout: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            definitions: Vec::new(),
            catalog: None,
            guarantee: Guarantee::ExactlyOnce,
            instance_id: default_instance_id(std::env::var("HOSTNAME").ok()),
            partitions: defaults::PARTITIONS,
            replication_factor: None,
            changelog_topic: None,
            commands_topic: None,
            batch_max_records: defaults::BATCH_MAX_RECORDS,
            batch_linger: defaults::BATCH_LINGER,
            completed_retention: defaults::COMPLETED_RETENTION,
            max_pending_sagas: defaults::MAX_PENDING_SAGAS,
            needs_operator_retention: defaults::NEEDS_OPERATOR_RETENTION,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            transaction_timeout: defaults::TRANSACTION_TIMEOUT,
            kafka_timeout: defaults::KAFKA_TIMEOUT,
        }
    }
}

fn default_instance_id(hostname: Option<String>) -> String {
    hostname
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| defaults::INSTANCE_ID.into())
}

/// `[http]`: the operator API and web page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the operator API, the web page, `/metrics`, `/healthz` and `/readyz` listen.
    pub listen: SocketAddr,
    /// Serve the API without tokens: anyone who reaches `listen` may read every saga and act
    /// on it. Off by default: `choreo run` refuses to start an API without `[[http.tokens]]`
    /// unless this is set.
    pub trusted_network: bool,
    /// Who may use the API.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<ApiTokenConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            trusted_network: false,
            tokens: Vec::new(),
        }
    }
}

/// `[[http.tokens]]`: one bearer token of the operator API, kept as its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Who it is: recorded in the saga's timeline with every command it sends.
    pub name: String,
    /// `viewer` (read) or `operator` (read and send commands).
    pub role: crate::api_auth::Role,
    /// The token's SHA-256 in hex: `printf %s "$TOKEN" | sha256sum`.
    pub sha256: String,
}

impl HttpConfig {
    fn tokens(&self) -> Result<Vec<crate::api_auth::ApiToken>, (String, String)> {
        let mut names = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let field = |k: &str| format!("http.tokens[{i}].{k}");
            if t.name.trim().is_empty() || t.name.len() > 200 {
                return Err((field("name"), "must be 1 to 200 characters".into()));
            }
            if !names.insert(t.name.as_str()) {
                return Err((field("name"), format!("\"{}\" names two tokens", t.name)));
            }
            out.push(
                crate::api_auth::ApiToken::from_sha256_hex(&t.name, t.role, &t.sha256)
                    .map_err(|r| (field("sha256"), r))?,
            );
        }
        Ok(out)
    }

    /// The API's access rule for `choreo run`: the tokens, or open when
    /// `trusted_network = true`; an error (field, reason) when there are neither.
    pub fn auth(&self) -> Result<crate::api_auth::ApiAuth, (String, String)> {
        let tokens = self.tokens()?;
        match (tokens.is_empty(), self.trusted_network) {
            (false, _) => Ok(crate::api_auth::ApiAuth::Tokens(tokens)),
            (true, true) => Ok(crate::api_auth::ApiAuth::Open),
            (true, false) => Err((
                "http.tokens".into(),
                "the operator API has no [[http.tokens]] (name, role = viewer|operator, sha256): add \
                 one, or set http.trusted_network = true to let anyone who reaches http.listen \
                 read and act on every saga"
                    .into(),
            )),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,rdkafka=warn`). `RUST_LOG`,
    /// when set, takes precedence (`choreo run`).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Why a configuration could not be loaded. Each variant says where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value in it has the wrong type or an unknown name.
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    File {
        /// The file.
        file: String,
        /// The 1-based line, when known.
        line: Option<usize>,
        /// What is wrong, prefixed by the field's path when known.
        message: String,
    },
    /// An environment override is malformed or does not fit the configuration.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable, e.g. `CHOREO__COORDINATOR__PARTITIONS`.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// Where the value came from: `file:line`, `environment variable NAME`, or `default`.
        origin: String,
        /// The field's path, e.g. `coordinator.partitions`.
        field: String,
        /// Why it is not acceptable.
        reason: String,
    },
}

impl Config {
    /// Loads the configuration: defaults, then `path` when given, then the process
    /// environment's `CHOREO__…` overrides; validated.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        match path {
            Some(p) => {
                let label = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: label.clone(),
                    source,
                })?;
                Self::from_toml_str(&label, &text, env)
            }
            None => Self::from_toml_str(NO_FILE, "", env),
        }
    }

    /// Loads the configuration from `text` (named `file_label` in errors) and the environment
    /// `env` (`CHOREO__…` variables, `HOSTNAME`, and the variables `ingest.tokens` name in
    /// `token_env`); validated. Does not touch
    /// the process environment.
    pub fn from_toml_str(
        file_label: &str,
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut overrides = BTreeMap::new();
        let mut hostname = None;
        let mut others = BTreeMap::new();
        for (k, v) in env {
            if k == "HOSTNAME" {
                hostname = Some(v);
            } else if k.starts_with(ENV_PREFIX) {
                overrides.insert(k, v);
            } else {
                others.insert(k, v);
            }
        }

        // The file is parsed once, keeping spans: the typed configuration, the origin (file
        // and line) of every key, and the table the overrides are applied to all come from it.
        let doc = toml::de::DeTable::parse(text).map_err(|e| file_error(file_label, text, &e))?;
        let mut origins = file_origins(file_label, text, &doc);
        let mut config = Config::deserialize(toml::de::Deserializer::from(doc.clone()))
            .map_err(|e| file_error(file_label, text, &e))?;
        let mut table = toml::Table::deserialize(toml::de::Deserializer::from(doc))
            .map_err(|e| file_error(file_label, text, &e))?;
        for (var, raw) in &overrides {
            let path = env_path(var)?;
            let mut first_error = None;
            let mut applied = false;
            for candidate in env_candidates(raw) {
                let mut attempt = table.clone();
                insert_path(&mut attempt, &path, candidate).map_err(|message| {
                    ConfigError::Env {
                        var: var.clone(),
                        message,
                    }
                })?;
                match toml::Value::Table(attempt.clone()).try_into::<Config>() {
                    Ok(c) => {
                        config = c;
                        table = attempt;
                        applied = true;
                        break;
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if !applied {
                let message = first_error
                    .map(|e| describe_toml_error(&e))
                    .unwrap_or_default();
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message,
                });
            }
            origins.insert(path.join("."), format!("environment variable {var}"));
        }

        let instance_set = table
            .get("coordinator")
            .and_then(|c| c.get("instance_id"))
            .is_some();
        if !instance_set {
            config.coordinator.instance_id = default_instance_id(hostname);
        }

        config.validate_with(
            // A field's own line; for an entry of an array of tables (`http.tokens[1].sha256`)
            // the entry's key, else its array's line.
            &|field| {
                origins
                    .get(field)
                    .or_else(|| origins.get(field.split('[').next().unwrap_or_default()))
                    .cloned()
                    .unwrap_or_else(|| "default".to_owned())
            },
            &|var| others.get(var).cloned(),
        )?;
        Ok(config)
    }

    /// Checks what types cannot: non-empty names, positive counts, valid topic names, distinct
    /// topics, a usable log filter, a registry URL with a scheme, and no `kafka.client` setting
    /// that the coordinator manages itself.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&|_| "configuration".to_owned(), &|var| {
            std::env::var(var).ok()
        })
    }

    fn validate_with(
        &self,
        origin: &dyn Fn(&str) -> String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            origin: origin(field),
            field: field.to_owned(),
            reason,
        };
        let non_empty = |field: &str, value: &str| {
            if value.trim().is_empty() {
                Err(invalid(field, "must not be empty".into()))
            } else {
                Ok(())
            }
        };
        non_empty("kafka.bootstrap_servers", &self.kafka.bootstrap_servers)?;
        non_empty("kafka.group_id", &self.kafka.group_id)?;
        for (key, why) in MANAGED_CLIENT_SETTINGS {
            let section = if self.kafka.client.contains_key(*key) {
                Some("client")
            } else if self.kafka.consumer.contains_key(*key) {
                Some("consumer")
            } else {
                None
            };
            if let Some(section) = section {
                let field = format!("kafka.{section}.{key}");
                return Err(invalid(
                    &field,
                    format!("is set by the coordinator, not here: {why}"),
                ));
            }
        }
        if let Some(url) = &self.registry.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "registry.url",
                format!("\"{url}\" is not an http:// or https:// URL"),
            ));
        }
        if self.registry.url.is_some() && self.registry.store == RegistryStoreKind::Kafka {
            return Err(invalid(
                "registry.store",
                "\"kafka\" keeps schemas in this process's own registry; it cannot be combined with registry.url".into(),
            ));
        }
        check_topic(&self.registry.topic).map_err(|r| invalid("registry.topic", r))?;
        if let Some(var) = &self.registry.write_token_env {
            match env(var) {
                None => {
                    return Err(invalid(
                        "registry.write_token_env",
                        format!("environment variable {var} is not set"),
                    ));
                }
                Some(t) if t.len() < 16 => {
                    return Err(invalid(
                        "registry.write_token_env",
                        format!(
                            "the token in {var} is {} characters; use at least 16",
                            t.len()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let c = &self.coordinator;
        non_empty("coordinator.instance_id", &c.instance_id)?;
        if c.instance_id
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            return Err(invalid(
                "coordinator.instance_id",
                format!("\"{}\" must not contain whitespace", c.instance_id),
            ));
        }
        if c.transaction_timeout < Duration::from_secs(1)
            || c.transaction_timeout > Duration::from_secs(900)
        {
            return Err(invalid(
                "coordinator.transaction_timeout",
                format!(
                    "must be between 1s and 15m, the broker's default transaction.max.timeout.ms (got {})",
                    format_duration(c.transaction_timeout)
                ),
            ));
        }
        if c.kafka_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "coordinator.kafka_timeout",
                format!(
                    "must be at least 1s (got {})",
                    format_duration(c.kafka_timeout)
                ),
            ));
        }
        if c.partitions < 1 {
            return Err(invalid(
                "coordinator.partitions",
                format!("must be at least 1 (got {})", c.partitions),
            ));
        }
        if let Some(rf) = c.replication_factor
            && !(1..=i32::from(i16::MAX)).contains(&rf)
        {
            return Err(invalid(
                "coordinator.replication_factor",
                format!(
                    "must be between 1 and {} (got {rf}); leave it unset for the cluster's default.replication.factor",
                    i16::MAX,
                ),
            ));
        }
        if let Some(t) = &c.changelog_topic {
            check_topic(t).map_err(|r| invalid("coordinator.changelog_topic", r))?;
        }
        if let Some(t) = &c.commands_topic {
            check_topic(t).map_err(|r| invalid("coordinator.commands_topic", r))?;
        }
        if c.changelog_topic.is_some() && c.changelog_topic == c.commands_topic {
            return Err(invalid(
                "coordinator.commands_topic",
                format!(
                    "must differ from coordinator.changelog_topic (both \"{}\")",
                    c.commands_topic.as_deref().unwrap_or_default()
                ),
            ));
        }
        if c.batch_max_records == 0 {
            return Err(invalid(
                "coordinator.batch_max_records",
                "must be at least 1".into(),
            ));
        }
        self.http
            .tokens()
            .map_err(|(field, reason)| ConfigError::Invalid {
                origin: origin(&field),
                field,
                reason,
            })?;
        self.ingest.check(env).map_err(|(field, reason)| {
            let section = field.split('[').next().unwrap_or_default().to_owned();
            ConfigError::Invalid {
                origin: origin(&section),
                field,
                reason,
            }
        })?;
        self.tracing
            .check()
            .map_err(|(field, reason)| invalid(field, reason))?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!("\"{}\" is not a log filter: {e}", self.log.level),
            ));
        }
        Ok(())
    }

    /// The configuration as TOML, every field written (what `choreo` actually runs with).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

fn check_topic(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("\"{name}\" is not a valid topic name"));
    }
    if name.len() > 249 {
        return Err(format!("\"{name}\" is longer than 249 characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "\"{name}\" contains '{bad}' (topic names use letters, digits, '.', '_' and '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_paths() {
        assert_eq!(
            env_path("CHOREO__KAFKA__BOOTSTRAP_SERVERS").expect("valid"),
            vec!["kafka", "bootstrap_servers"]
        );
        assert_eq!(
            env_path("CHOREO__KAFKA__CLIENT__SASL_PASSWORD").expect("valid"),
            vec!["kafka", "client", "sasl.password"]
        );
        assert!(env_path("CHOREO__KAFKA").is_err());
        assert!(env_path("CHOREO__A__B__C").is_err());
        assert!(env_path("CHOREO____B").is_err());
    }

    #[test]
    fn candidates() {
        let c = env_candidates("6");
        assert_eq!(c[0], toml::Value::Integer(6));
        assert_eq!(c[1], toml::Value::String("6".into()));
        let c = env_candidates("localhost:9092");
        assert_eq!(c[0], toml::Value::String("localhost:9092".into()));
    }
}
