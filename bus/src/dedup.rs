//! Deduplication by event id (`ce_id`).
//!
//! The bus asks [`DedupStore::seen`] before calling a handler and calls [`DedupStore::mark`] only
//! after the handler succeeded, so a failed attempt is never remembered as done.
//!
//! The default, [`MemoryDedup`], remembers the most recent `capacity` ids per subscriber process
//! (100 000 by default; about 100 bytes each, so ~10 MB) and forgets the oldest first. A duplicate
//! that arrives after more than `capacity` newer events, or after a restart, is not caught by it:
//! [`crate::dedup_kafka::KafkaDedup`] keeps the ids in a Kafka topic, for where that matters.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

/// A store of handled event ids.
#[async_trait]
pub trait DedupStore: Send + Sync + std::fmt::Debug {
    /// Whether `id` was handled already (for this `scope`, e.g. a handler name).
    async fn seen(&self, scope: &str, id: &str) -> bool;
    /// Records that `id` was handled.
    async fn mark(&self, scope: &str, id: &str);
}

/// (scope, event id).
type ScopedId = (String, String);

/// The default: a bounded in-memory set with first-in-first-out eviction.
#[derive(Debug)]
pub struct MemoryDedup {
    capacity: usize,
    inner: Mutex<(HashSet<ScopedId>, VecDeque<ScopedId>)>,
}

/// The default capacity of [`MemoryDedup`].
pub const DEFAULT_DEDUP_CAPACITY: usize = 100_000;

impl Default for MemoryDedup {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_DEDUP_CAPACITY)
    }
}

impl MemoryDedup {
    /// A store remembering at most `capacity` ids.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.1.len()).unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl DedupStore for MemoryDedup {
    async fn seen(&self, scope: &str, id: &str) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.contains(&(scope.to_owned(), id.to_owned()))
    }

    async fn mark(&self, scope: &str, id: &str) {
        self.remember(scope, id);
    }
}

impl MemoryDedup {
    /// Records that `id` was handled (what [`DedupStore::mark`] does, without waiting).
    pub fn remember(&self, scope: &str, id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (scope.to_owned(), id.to_owned());
        if g.0.insert(key.clone()) {
            g.1.push_back(key);
            while g.1.len() > self.capacity {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_and_scoped() {
        let d = MemoryDedup::with_capacity(2);
        d.mark("h", "a").await;
        d.mark("h", "b").await;
        assert!(d.seen("h", "a").await);
        assert!(!d.seen("other", "a").await);
        d.mark("h", "c").await;
        assert!(!d.seen("h", "a").await, "the oldest id is forgotten");
        assert!(d.seen("h", "c").await);
        assert_eq!(d.len(), 2);
    }
}
