//! An embedded Kafka-protocol broker: librdkafka's mock cluster, owned by a thread of its own so
//! it can live inside an async program. It listens on loopback TCP, so other processes (and other
//! languages' clients) can connect to its bootstrap address. Used by `choreo dev`, the tests, and
//! the `choreo-mock-broker` program that hosts it in a process of its own.
//!
//! The mock cluster supports produce/fetch, consumer groups, idempotence and transactions, and
//! auto-creates topics; it keeps everything in memory and is not for production.

use std::sync::mpsc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::error::BusError;

enum Command {
    CreateTopic(String, i32, mpsc::Sender<Result<(), String>>),
    BrokerDown(i32, mpsc::Sender<Result<(), String>>),
    BrokerUp(i32, mpsc::Sender<Result<(), String>>),
    Latency(i32, Duration, mpsc::Sender<Result<(), String>>),
    FailRequests(
        RDKafkaApiKey,
        Vec<RDKafkaRespErr>,
        mpsc::Sender<Result<(), String>>,
    ),
    Stop,
}

/// A running embedded broker; stops when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    tx: mpsc::Sender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self, BusError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let thread = std::thread::Builder::new()
            .name("choreo-embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let done = |r: Result<(), rdkafka::error::KafkaError>| r.map_err(|e| e.to_string());
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Command::CreateTopic(t, n, reply) => {
                            let _ = reply.send(done(cluster.create_topic(&t, n, 1)));
                        }
                        Command::BrokerDown(b, reply) => {
                            let _ = reply.send(done(cluster.broker_down(b)));
                        }
                        Command::BrokerUp(b, reply) => {
                            let _ = reply.send(done(cluster.broker_up(b)));
                        }
                        Command::Latency(b, d, reply) => {
                            let _ = reply.send(done(cluster.broker_round_trip_time(b, d)));
                        }
                        Command::FailRequests(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(Ok(()));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .map_err(|e| {
                BusError::Config(format!("cannot start the embedded broker thread: {e}"))
            })?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| BusError::Config("the embedded broker thread died".into()))?
            .map_err(|e| BusError::Config(format!("cannot start the embedded broker: {e}")))?;
        Ok(Self {
            bootstrap,
            tx,
            thread: Some(thread),
        })
    }

    /// The bootstrap address other clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn ask(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), BusError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| BusError::Config("the embedded broker stopped".into()))?;
        rx.recv()
            .map_err(|_| BusError::Config("the embedded broker stopped".into()))?
            .map_err(BusError::Config)
    }

    /// Creates a topic with `partitions` partitions (the mock cluster's admin API does not
    /// answer CreateTopics; this is its own call).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), BusError> {
        self.ask(|r| Command::CreateTopic(topic.to_owned(), partitions, r))
    }

    /// Takes broker `id` down (fault injection).
    pub fn broker_down(&self, id: i32) -> Result<(), BusError> {
        self.ask(|r| Command::BrokerDown(id, r))
    }

    /// Brings broker `id` back up.
    pub fn broker_up(&self, id: i32) -> Result<(), BusError> {
        self.ask(|r| Command::BrokerUp(id, r))
    }

    /// Answers the next requests of kind `api` (from any client) with `errors`, one each, in
    /// order (fault injection: e.g. a fatal InitProducerId answer).
    pub fn fail_requests(
        &self,
        api: RDKafkaApiKey,
        errors: &[RDKafkaRespErr],
    ) -> Result<(), BusError> {
        let errors = errors.to_vec();
        self.ask(|r| Command::FailRequests(api, errors, r))
    }

    /// Adds round-trip latency to broker `id`.
    pub fn add_latency(&self, id: i32, latency: Duration) -> Result<(), BusError> {
        self.ask(|r| Command::Latency(id, latency, r))
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
