//! `[ingest]`: the HTTP ingest (CloudEvents over HTTP into Kafka) of `choreo run` and
//! `choreo ingest`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ingest::auth::{Auth, Grant, Pattern};

/// `[ingest]`: the HTTP ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Where `POST /events` listens. Unset: no ingest (`choreo ingest` requires it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The largest request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// The most events being produced at once (429 above).
    pub max_in_flight: usize,
    /// How long a request waits for the broker's acknowledgement before it is answered 503
    /// (the producer's `message.timeout.ms`).
    #[serde(
        deserialize_with = "super::de_duration",
        serialize_with = "super::ser_duration"
    )]
    pub delivery_timeout: Duration,
    /// How many recent event identities (`source` + `id`) are remembered, so that one sent
    /// again is produced once. 0: none.
    pub dedup_window: usize,
    /// Accept events without a token. Off by default: an ingest with no `[[ingest.tokens]]`
    /// is refused at load unless this is set.
    pub allow_anonymous: bool,
    /// The bearer tokens, each with the sources and types it may send.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenConfig>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_body_bytes: 1024 * 1024,
            max_in_flight: 10_000,
            delivery_timeout: Duration::from_secs(10),
            dedup_window: 100_000,
            allow_anonymous: false,
            tokens: Vec::new(),
        }
    }
}

/// `[[ingest.tokens]]`: one bearer token.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// A name for logs (never the secret).
    pub name: String,
    /// The secret itself. Prefer `token_env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The environment variable holding the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The `ce-source` values it may send: exact, a prefix ending in `*`, or `*`.
    pub sources: Vec<String>,
    /// The `ce-type` values it may send, the same way.
    pub types: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token_env", &self.token_env)
            .field("sources", &self.sources)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

impl IngestConfig {
    /// Checks the section; the error is `(field, reason)`. `env` reads a variable.
    pub(crate) fn check(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), (String, String)> {
        if self.max_body_bytes < 1024 {
            return Err((
                "ingest.max_body_bytes".into(),
                format!("must be at least 1024 (got {})", self.max_body_bytes),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(("ingest.max_in_flight".into(), "must be at least 1".into()));
        }
        if self.delivery_timeout < Duration::from_secs(1) {
            return Err((
                "ingest.delivery_timeout".into(),
                "must be at least 1s".into(),
            ));
        }
        if self.listen.is_some() && self.tokens.is_empty() && !self.allow_anonymous {
            return Err((
                "ingest.listen".into(),
                "the ingest has no [[ingest.tokens]]: add one, or set ingest.allow_anonymous = true to accept events from anyone".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let field = |k: &str| format!("ingest.tokens[{i}].{k}");
            if t.name.trim().is_empty() {
                return Err((field("name"), "must not be empty".into()));
            }
            if !names.insert(t.name.as_str()) {
                return Err((field("name"), format!("\"{}\" names two tokens", t.name)));
            }
            t.secret(env).map_err(|r| {
                (
                    field(if t.token_env.is_some() {
                        "token_env"
                    } else {
                        "token"
                    }),
                    r,
                )
            })?;
            if t.sources.is_empty() {
                return Err((
                    field("sources"),
                    "must list at least one source pattern (\"*\" for any)".into(),
                ));
            }
            if t.types.is_empty() {
                return Err((
                    field("types"),
                    "must list at least one type pattern (\"*\" for any)".into(),
                ));
            }
        }
        Ok(())
    }

    /// How the ingest authenticates, with secrets read through `env`.
    pub fn auth(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Auth, String> {
        if self.tokens.is_empty() {
            return Ok(Auth::Off);
        }
        self.tokens
            .iter()
            .map(|t| {
                Ok(Grant {
                    name: t.name.clone(),
                    secret: t
                        .secret(env)
                        .map_err(|r| format!("token \"{}\": {r}", t.name))?,
                    sources: t.sources.iter().map(Pattern::new).collect(),
                    types: t.types.iter().map(Pattern::new).collect(),
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Auth::Tokens)
    }
}

impl TokenConfig {
    fn secret(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        let secret = match (&self.token, &self.token_env) {
            (Some(_), Some(_)) => return Err("set token or token_env, not both".into()),
            (Some(t), None) => t.clone(),
            (None, Some(var)) => {
                env(var).ok_or_else(|| format!("environment variable {var} is not set"))?
            }
            (None, None) => return Err("set token_env (or token)".into()),
        };
        if secret.len() < 16 {
            return Err(format!(
                "the token is {} characters; use at least 16",
                secret.len()
            ));
        }
        Ok(secret)
    }
}
