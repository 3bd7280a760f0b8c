//! The operator's view of every saga: a read-only copy of the saga state changelog, kept by
//! every replica (whichever partitions it owns), so any replica answers any query.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use choreo_saga::{SagaState, Status, StepStatus};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// Filters for listing sagas.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// Only sagas of this definition.
    pub definition: Option<String>,
    /// Only sagas in this status (`pending`, `running`, `compensating`, `completed`,
    /// `compensated`, `needs_operator`).
    pub status: Option<Status>,
    /// Only sagas created at least this many milliseconds ago.
    pub min_age_ms: Option<u64>,
    /// Only sagas created at most this many milliseconds ago.
    pub max_age_ms: Option<u64>,
    /// Only sagas stuck this long: neither completed nor compensated, and unchanged for at
    /// least this many milliseconds.
    pub stuck_ms: Option<u64>,
    /// Only sagas waiting on this step: started, its answer not in yet.
    pub waiting_on: Option<String>,
    /// Only sagas whose correlation id contains this text.
    pub search: Option<String>,
    /// At most this many (default 100, newest first).
    pub limit: Option<usize>,
}

/// One line of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SagaSummary {
    /// `<definition>/<correlation id>`.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Pinned definition version.
    pub version: u32,
    /// Correlation id.
    pub correlation_id: String,
    /// Status.
    pub status: Status,
    /// Created at, ms since epoch.
    pub created_at: u64,
    /// Last change, ms since epoch.
    pub updated_at: u64,
}

impl From<&SagaState> for SagaSummary {
    fn from(s: &SagaState) -> Self {
        Self {
            saga_id: s.saga_id.clone(),
            definition: s.definition.clone(),
            version: s.version,
            correlation_id: s.correlation_id.clone(),
            status: s.status,
            created_at: s.created_at.0,
            updated_at: s.updated_at.0,
        }
    }
}

/// Every saga's latest committed state, by saga id.
#[derive(Debug, Default)]
pub struct SagaView {
    sagas: DashMap<String, Arc<SagaState>>,
    caught_up: AtomicBool,
}

impl SagaView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a state read from the changelog.
    pub fn upsert(&self, state: SagaState) {
        self.sagas.insert(state.saga_id.clone(), Arc::new(state));
    }

    /// Forgets a saga (a changelog tombstone).
    pub fn remove(&self, saga_id: &str) {
        self.sagas.remove(saga_id);
    }

    /// One saga.
    pub fn get(&self, saga_id: &str) -> Option<Arc<SagaState>> {
        self.sagas.get(saga_id).map(|s| Arc::clone(&s))
    }

    /// Sagas matching `q`, newest first.
    pub fn list(&self, q: &ListQuery, now_ms: u64) -> Vec<SagaSummary> {
        let mut out: Vec<SagaSummary> = self
            .sagas
            .iter()
            .filter(|s| q.definition.as_deref().is_none_or(|d| s.definition == d))
            .filter(|s| q.status.is_none_or(|st| s.status == st))
            .filter(|s| {
                q.min_age_ms
                    .is_none_or(|a| now_ms.saturating_sub(s.created_at.0) >= a)
            })
            .filter(|s| {
                q.max_age_ms
                    .is_none_or(|a| now_ms.saturating_sub(s.created_at.0) <= a)
            })
            .filter(|s| {
                q.stuck_ms.is_none_or(|a| {
                    !matches!(s.status, Status::Completed | Status::Compensated)
                        && now_ms.saturating_sub(s.updated_at.0) >= a
                })
            })
            .filter(|s| {
                q.waiting_on.as_deref().is_none_or(|w| {
                    s.steps
                        .iter()
                        .any(|st| st.name == w && st.status == StepStatus::Running)
                })
            })
            .filter(|s| {
                q.search
                    .as_deref()
                    .is_none_or(|t| s.correlation_id.contains(t))
            })
            .map(|s| SagaSummary::from(s.value().as_ref()))
            .collect();
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.saga_id.cmp(&b.saga_id))
        });
        out.truncate(q.limit.unwrap_or(100));
        out
    }

    /// Number of sagas per status.
    pub fn counts(&self) -> std::collections::BTreeMap<Status, usize> {
        let mut m = std::collections::BTreeMap::new();
        for s in &self.sagas {
            *m.entry(s.status).or_insert(0) += 1;
        }
        m
    }

    /// Number of sagas known.
    pub fn len(&self) -> usize {
        self.sagas.len()
    }

    /// Whether no saga is known.
    pub fn is_empty(&self) -> bool {
        self.sagas.is_empty()
    }

    /// Marks the view as having read the changelog up to its end once.
    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }

    /// Whether the view has read the changelog up to its end once (readiness).
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }
}
