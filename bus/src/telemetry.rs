//! Metric names, described once. Labels are low-cardinality: topic, event type, handler, reason.

/// Events published (labels: topic, type).
pub const PUBLISHED: &str = "choreo_bus_published_total";
/// Publish failures (labels: topic, type).
pub const PUBLISH_FAILED: &str = "choreo_bus_publish_failed_total";
/// Records consumed (labels: topic, type).
pub const CONSUMED: &str = "choreo_bus_consumed_total";
/// Handler latency in seconds (labels: handler, outcome).
pub const HANDLER_SECONDS: &str = "choreo_bus_handler_seconds";
/// Handler retries (labels: handler).
pub const RETRIES: &str = "choreo_bus_retries_total";
/// Records dead-lettered (labels: topic, reason).
pub const DEAD_LETTERED: &str = "choreo_bus_dead_lettered_total";
/// Duplicates dropped by event id (labels: handler).
pub const DUPLICATES: &str = "choreo_bus_duplicates_total";
/// Consumer lag in records (labels: topic, partition).
pub const CONSUMER_LAG: &str = "choreo_bus_consumer_lag";
/// Attempts to read a record's writer schema while the registry was unreachable (label: topic):
/// the partition waits instead of dead-lettering.
pub const REGISTRY_WAITS: &str = "choreo_bus_registry_waits_total";
/// Partitions paused because their worker's queue was full (label: topic): the record in hand
/// is slow, retried, or cannot be dead-lettered; the other partitions go on.
pub const PARTITION_PAUSES: &str = "choreo_bus_partition_pauses_total";
/// A handler's circuit breaker state (label: handler): 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "choreo_bus_circuit_state";
/// Circuit breaker transitions (labels: handler, to).
pub const CIRCUIT_TRANSITIONS: &str = "choreo_bus_circuit_transitions_total";
/// Handled event ids that could not be written to a durable dedup topic.
pub const DEDUP_MARK_FAILURES: &str = "choreo_bus_dedup_mark_failures_total";
/// Producers replaced after a fatal error (an idempotent producer refuses every record after one).
pub const PRODUCER_REPLACED: &str = "choreo_bus_producer_replaced_total";
/// Dead letters the broker did not take (label: topic, reason): retried until it does.
pub const DEAD_LETTER_FAILURES: &str = "choreo_bus_dead_letter_failures_total";
/// Schema-topic writes that found another registry instance had become the writer (each is
/// tried again after a pause).
pub const SCHEMA_WRITES_FENCED: &str = "choreo_bus_schema_writes_fenced_total";

/// Registers descriptions with the installed `metrics` recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        PUBLISHED,
        Unit::Count,
        "Events published and acknowledged by the broker"
    );
    describe_counter!(
        PUBLISH_FAILED,
        Unit::Count,
        "Events the broker did not acknowledge"
    );
    describe_counter!(
        CONSUMED,
        Unit::Count,
        "Records taken from the broker by subscribers"
    );
    describe_histogram!(
        HANDLER_SECONDS,
        Unit::Seconds,
        "Time a handler took per attempt"
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Handler attempts retried after a retryable error"
    );
    describe_counter!(
        DEAD_LETTERED,
        Unit::Count,
        "Records sent to a dead-letter topic"
    );
    describe_counter!(
        DUPLICATES,
        Unit::Count,
        "Records dropped as duplicates by event id"
    );
    describe_counter!(
        REGISTRY_WAITS,
        Unit::Count,
        "Attempts to read a writer schema while the registry was unreachable (the partition waits)"
    );
    describe_counter!(
        PARTITION_PAUSES,
        Unit::Count,
        "Partitions paused because their worker was busy with one record (the others go on)"
    );
    describe_gauge!(
        CIRCUIT_STATE,
        Unit::Count,
        "A handler's circuit breaker: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        CIRCUIT_TRANSITIONS,
        Unit::Count,
        "Circuit breaker transitions, by handler and new state"
    );
    describe_counter!(
        DEDUP_MARK_FAILURES,
        Unit::Count,
        "Handled event ids not written to the durable dedup topic"
    );
    describe_counter!(
        PRODUCER_REPLACED,
        Unit::Count,
        "Producers replaced after a fatal error"
    );
    describe_counter!(
        DEAD_LETTER_FAILURES,
        Unit::Count,
        "Dead letters the broker did not acknowledge (retried until it does)"
    );
    describe_counter!(
        SCHEMA_WRITES_FENCED,
        Unit::Count,
        "Schema-topic writes fenced by another registry instance (tried again after a pause)"
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Records behind the partition's high watermark"
    );
}
