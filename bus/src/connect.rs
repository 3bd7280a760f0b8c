//! The first contact with a cluster, reported as what went wrong.
//!
//! librdkafka reports a refused SASL login or a failed TLS handshake as an error *event* on the
//! client's queue, which nobody reads for a client that only fetches metadata; the fetch itself
//! just times out with "broker transport failure". [`MetadataClient`] fetches the cluster
//! metadata through a client whose error events it reads, and turns those into [`Refused`]: one
//! line that names the SASL mechanism and user, or the CA file, never a secret. [`denied`] words
//! an authorization error the same way, naming the principal and the resource; [`check_group`]
//! finds a consumer group an ACL denies (librdkafka retries that until its timeout, reporting
//! the denial only as an error event).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{BusError, Refused};

/// The principal `client` authenticates as, for error messages: `User:<sasl.username>` with a
/// SASL user name, else a description.
pub fn principal(client: &ClientConfig) -> String {
    match client.get("sasl.username") {
        Some(user) if !user.is_empty() => format!("User:{user}"),
        _ => match protocol(client).as_str() {
            "ssl" => "the principal of this client's TLS certificate".to_owned(),
            _ => "this client's principal".to_owned(),
        },
    }
}

/// [`Refused::Denied`] for `resource` (`topic <name>`, `consumer group <name>`) refused with
/// `code`, worded with `client`'s brokers and principal.
pub fn denied(
    client: &ClientConfig,
    resource: String,
    code: RDKafkaErrorCode,
    needs: &str,
) -> Refused {
    Refused::Denied {
        brokers: client.get("bootstrap.servers").unwrap_or("?").to_owned(),
        principal: principal(client),
        resource,
        code: authorization_code_name(code),
        needs: needs.to_owned(),
    }
}

/// Whether `code` says an ACL denied the request.
pub fn is_authorization_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
    )
}

fn authorization_code_name(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
        RDKafkaErrorCode::GroupAuthorizationFailed => "GROUP_AUTHORIZATION_FAILED",
        RDKafkaErrorCode::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => {
            "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
        }
        _ => "AUTHORIZATION_FAILED",
    }
}

fn protocol(client: &ClientConfig) -> String {
    client
        .get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase()
}

/// A client context that keeps the error events librdkafka reports (and logs them at debug:
/// they are reported as an error of their own).
#[derive(Debug, Default)]
struct Watched {
    errors: Mutex<Vec<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for Watched {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(error = %error, reason, "kafka client error");
        if let Some(code) = error.rdkafka_error_code() {
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            if errors.len() < 16 {
                errors.push((code, reason.to_owned()));
            }
        }
    }
}

impl ConsumerContext for Watched {}

impl Watched {
    /// What the error events so far say about `client`'s way in, if they say it was refused.
    fn refusal(&self, client: &ClientConfig) -> Option<Refused> {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let brokers = client.get("bootstrap.servers").unwrap_or("?").to_owned();
        errors.iter().find_map(|(code, reason)| match code {
            RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
                Some(Refused::Authentication {
                    brokers: brokers.clone(),
                    mechanism: client
                        .get("sasl.mechanism")
                        .or_else(|| client.get("sasl.mechanisms"))
                        .unwrap_or("GSSAPI")
                        .to_owned(),
                    user: client.get("sasl.username").unwrap_or_default().to_owned(),
                    reason: reason.clone(),
                })
            }
            RDKafkaErrorCode::SSL => Some(Refused::Tls {
                brokers: brokers.clone(),
                ca: client.get("ssl.ca.location").map_or_else(
                    || "the system's CA certificates".to_owned(),
                    ToOwned::to_owned,
                ),
                reason: reason.clone(),
            }),
            _ => None,
        })
    }

    /// The first authorization error among the error events so far.
    fn denial(&self) -> Option<RDKafkaErrorCode> {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors
            .iter()
            .map(|(code, _)| *code)
            .find(|c| is_authorization_error(*c))
    }

    fn last(&self) -> Option<String> {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.last().map(|(_, reason)| reason.clone())
    }
}

/// A client that fetches cluster metadata and reads its own error events, so that a refused
/// login or a failed TLS handshake ends the wait at once as [`BusError::Refused`].
pub struct MetadataClient {
    consumer: BaseConsumer<Watched>,
    settings: ClientConfig,
}

impl std::fmt::Debug for MetadataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataClient").finish_non_exhaustive()
    }
}

impl MetadataClient {
    /// A metadata client with `client`'s settings (it never creates topics).
    pub fn new(client: &ClientConfig) -> Result<MetadataClient, BusError> {
        let consumer = client
            .clone()
            .set("allow.auto.create.topics", "false")
            .create_with_context(Watched::default())
            .map_err(|e| BusError::kafka("creating a metadata client", e))?;
        Ok(MetadataClient {
            consumer,
            settings: client.clone(),
        })
    }

    /// The metadata of `topic`, or of every topic the principal may see, within `timeout`.
    /// (Kafka leaves out of "every topic" those an ACL hides; asked for by name, such a topic
    /// answers TOPIC_AUTHORIZATION_FAILED.) Failures other than [`Refused`] are reported with
    /// the brokers' last error.
    pub fn fetch(&self, topic: Option<&str>, timeout: Duration) -> Result<Metadata, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = self
                .consumer
                .fetch_metadata(topic, left.min(Duration::from_millis(500)));
            serve_queue(&self.consumer);
            match attempt {
                Ok(md) => return Ok(md),
                Err(e) => {
                    let watched = self.consumer.context();
                    if let Some(refused) = watched.refusal(&self.settings) {
                        return Err(BusError::Refused(refused));
                    }
                    if Instant::now() >= deadline {
                        let context = match watched.last() {
                            Some(last) => {
                                format!("fetching cluster metadata (last error: {last})")
                            }
                            None => "fetching cluster metadata".to_owned(),
                        };
                        return Err(BusError::kafka(context, e));
                    }
                }
            }
        }
    }
}

/// Serves `consumer`'s queue, its log lines and error events, until it has been quiet for a
/// moment. (A poll that serves a log line returns as if nothing came, so polling until the
/// first empty answer would serve one line per call, and under librdkafka's `debug` settings
/// an error event would wait behind thousands of them.)
fn serve_queue<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if consumer.poll(Duration::from_millis(50)).is_none() {
            return;
        }
    }
}

/// Refuses `group` when an ACL denies `client`'s principal the consumer group: asks for the
/// group's committed offsets of `partitions` (which needs Describe on the group) and reads the
/// client's error events meanwhile, as librdkafka reports a denied group there and keeps
/// retrying the request until `timeout`. `needs` says what the client needs on the group.
/// Another failure (a timeout, a broker away) is returned as [`BusError::Kafka`] for the caller
/// to weigh.
pub fn check_group(
    client: &ClientConfig,
    group: &str,
    partitions: &TopicPartitionList,
    timeout: Duration,
    needs: &str,
) -> Result<(), BusError> {
    let consumer: BaseConsumer<Watched> = client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(Watched::default())
        .map_err(|e| BusError::kafka("creating an offsets client", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt =
            consumer.committed_offsets(partitions.clone(), left.min(Duration::from_millis(500)));
        serve_queue(&consumer);
        let watched = consumer.context();
        if let Some(refused) = watched.refusal(client) {
            return Err(BusError::Refused(refused));
        }
        if let Some(code) = watched.denial() {
            return Err(BusError::Refused(denied(
                client,
                format!("consumer group {group}"),
                code,
                needs,
            )));
        }
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(BusError::kafka(
                    format!("fetching the offsets of group {group}"),
                    e,
                ));
            }
            Err(_) => {}
        }
    }
}

/// The metadata of every topic `client` may see, within `timeout` ([`MetadataClient::fetch`]).
pub fn fetch_metadata(client: &ClientConfig, timeout: Duration) -> Result<Metadata, BusError> {
    MetadataClient::new(client)?.fetch(None, timeout)
}
