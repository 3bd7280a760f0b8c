//! The coordinator's metrics: names as constants, described once ([`describe`]).
//!
//! Labels are low-cardinality only: `definition` (a saga definition's name), `kind` (an
//! input's kind) and `topic` (a dead-letter topic). Never a correlation id — that goes on log
//! lines.
//!
//! [`install_prometheus`] installs the process-wide recorder; `GET /metrics`
//! ([`crate::http`]) renders it.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Sagas started: their start event was applied (label: definition).
pub const SAGAS_STARTED: &str = "choreo_sagas_started_total";
/// Sagas whose every step completed (label: definition).
pub const SAGAS_COMPLETED: &str = "choreo_sagas_completed_total";
/// Sagas aborted and fully compensated (label: definition).
pub const SAGAS_COMPENSATED: &str = "choreo_sagas_compensated_total";
/// Sagas that entered `needs_operator` (label: definition).
pub const SAGAS_NEEDS_OPERATOR: &str = "choreo_sagas_needs_operator_total";
/// Compensations of steps that succeeded after their saga was compensated (counter; label:
/// definition). The saga's status stays terminal.
pub const LATE_COMPENSATIONS: &str = "choreo_sagas_late_compensations_total";
/// Restored saga states that do not fit the definition version they are pinned to (an edited
/// definition that kept its version); their inputs are rejected (counter).
pub const MISMATCHED_STATES: &str = "choreo_restored_states_mismatched_total";
/// Sagas neither completed nor compensated, on the partitions this replica owns (gauge; label:
/// definition).
pub const SAGAS_IN_FLIGHT: &str = "choreo_sagas_in_flight";
/// Sagas deleted after needing an operator longer than `coordinator.needs_operator_retention`
/// (label: definition).
pub const SAGAS_EXPIRED: &str = "choreo_sagas_expired_total";
/// Sagas of this replica waiting for their start event (bounded by
/// `coordinator.max_pending_sagas`).
pub const SAGAS_PENDING: &str = "choreo_sagas_pending";
/// How late deadlines fire after they were due, in seconds (histogram).
pub const DEADLINE_LATENESS_SECONDS: &str = "choreo_deadline_lateness_seconds";
/// Time to commit one Kafka transaction (or, effectively-once, one batch), in seconds
/// (histogram).
pub const TRANSACTION_COMMIT_SECONDS: &str = "choreo_transaction_commit_seconds";
/// Batches aborted (a Kafka transaction aborted, or a delivery failed) and retried.
pub const TRANSACTION_ABORTS: &str = "choreo_transaction_aborts_total";
/// Producers replaced after a fatal error (effectively-once; exactly-once recovers through its
/// transaction calls).
pub const PRODUCERS_REPLACED: &str = "choreo_producers_replaced_total";
/// Time to restore one partition's saga states from the changelog, in seconds (histogram).
pub const RESTORE_SECONDS: &str = "choreo_restore_seconds";
/// Saga states read back from the changelog on restore.
pub const RESTORED_SAGAS: &str = "choreo_restored_sagas_total";
/// Inputs applied per transaction (histogram).
pub const BATCH_RECORDS: &str = "choreo_batch_records";
/// Inputs applied (label: kind = event | deadline | command).
pub const INPUTS: &str = "choreo_inputs_total";
/// Inputs the coordinator could not use, sent to a dead-letter topic.
pub const DEAD_LETTERED: &str = "choreo_dead_lettered_total";

/// Dead letters republished to their origin topic by an operator (label: topic, the
/// dead-letter topic).
pub const DLQ_REDRIVEN: &str = "choreo_dlq_redriven_total";
/// Dead letters a redrive left out (gone, value not dead-lettered, not acknowledged; label:
/// topic).
pub const DLQ_REDRIVE_REFUSED: &str = "choreo_dlq_redrive_refused_total";

/// The `definition` label.
pub const LABEL_DEFINITION: &str = "definition";
/// The `kind` label of [`INPUTS`]: `event`, `deadline` or `command`.
pub const LABEL_KIND: &str = "kind";

/// Histogram buckets for durations in seconds: 1 ms to 2 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Histogram buckets for [`BATCH_RECORDS`].
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// Registers every metric's description and unit with the installed recorder. Idempotent.
pub fn describe() {
    describe_counter!(
        SAGAS_STARTED,
        Unit::Count,
        "Sagas whose start event was applied"
    );
    describe_counter!(
        SAGAS_COMPLETED,
        Unit::Count,
        "Sagas whose every step completed"
    );
    describe_counter!(
        SAGAS_COMPENSATED,
        Unit::Count,
        "Sagas aborted and fully compensated"
    );
    describe_counter!(
        SAGAS_NEEDS_OPERATOR,
        Unit::Count,
        "Sagas that entered needs_operator (a compensation never acknowledged, or a step whose outcome is unknown)"
    );
    describe_counter!(
        LATE_COMPENSATIONS,
        Unit::Count,
        "Compensations of steps that succeeded after their saga was compensated"
    );
    describe_counter!(
        MISMATCHED_STATES,
        Unit::Count,
        "Restored saga states that do not fit the definition version they are pinned to"
    );
    describe_gauge!(
        SAGAS_IN_FLIGHT,
        Unit::Count,
        "Sagas neither completed nor compensated on the partitions this replica owns"
    );
    describe_counter!(
        SAGAS_EXPIRED,
        Unit::Count,
        "Sagas deleted after needing an operator longer than the retention"
    );
    describe_gauge!(
        SAGAS_PENDING,
        Unit::Count,
        "Sagas waiting for their start event on the partitions this replica owns"
    );
    describe_histogram!(
        DEADLINE_LATENESS_SECONDS,
        Unit::Seconds,
        "How long after it was due a deadline fired"
    );
    describe_histogram!(
        TRANSACTION_COMMIT_SECONDS,
        Unit::Seconds,
        "Time to commit one batch (a Kafka transaction when exactly-once)"
    );
    describe_counter!(
        TRANSACTION_ABORTS,
        Unit::Count,
        "Batches aborted and retried"
    );
    describe_counter!(
        PRODUCERS_REPLACED,
        Unit::Count,
        "Producers replaced after a fatal error"
    );
    describe_histogram!(
        RESTORE_SECONDS,
        Unit::Seconds,
        "Time to restore one partition's saga states from the changelog"
    );
    describe_counter!(
        RESTORED_SAGAS,
        Unit::Count,
        "Saga states read back from the changelog"
    );
    describe_histogram!(BATCH_RECORDS, Unit::Count, "Inputs applied per batch");
    describe_counter!(
        INPUTS,
        Unit::Count,
        "Inputs applied, by kind (event, deadline, command)"
    );
    describe_counter!(
        DEAD_LETTERED,
        Unit::Count,
        "Inputs the coordinator could not use, sent to a dead-letter topic"
    );
    describe_counter!(
        DLQ_REDRIVEN,
        Unit::Count,
        "Dead letters republished to their origin topic by an operator, by dead-letter topic"
    );
    describe_counter!(
        DLQ_REDRIVE_REFUSED,
        Unit::Count,
        "Dead letters a redrive left out (gone, value not dead-lettered, not acknowledged), by dead-letter topic"
    );
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());

/// Installs the Prometheus recorder as the process-wide `metrics` recorder (with buckets for
/// seconds and batch sizes), describes every metric, and starts a thread that runs the
/// recorder's upkeep every 5 s. A second call returns the handle of the first.
pub fn install_prometheus() -> Result<PrometheusHandle, crate::CoordinatorError> {
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let failed = |e: &dyn std::fmt::Display| {
        crate::CoordinatorError::Startup(format!(
            "cannot install the Prometheus metrics recorder: {e}"
        ))
    };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_RECORDS.into()), BATCH_BUCKETS))
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| failed(&e))?;
    describe();
    choreo_bus::telemetry::describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| failed(&e))?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}
