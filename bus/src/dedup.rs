//! Deduplication by event id (`ce_id`).
//!
//! The bus asks [`DedupStore::seen`] before calling a handler and calls [`DedupStore::mark`] only
//! after the handler succeeded, so a failed attempt is never remembered as done.
//!
//! The default, [`MemoryDedup`], remembers the most recent `capacity` ids per subscriber process
//! (100 000 by default; about 100 bytes each, so ~10 MB) and forgets the oldest first. A duplicate
//! that arrives after more than `capacity` newer events, or after a restart, is not caught by it:
//! [`crate::dedup_kafka::KafkaDedup`] keeps the ids in a Kafka topic, for where that matters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

/// A store of handled event ids.
#[async_trait]
pub trait DedupStore: Send + Sync + std::fmt::Debug {
    /// Whether `id` was handled already (for this `scope`, e.g. a handler name).
    async fn seen(&self, scope: &str, id: &str) -> bool;
    /// Records that `id` was handled.
    async fn mark(&self, scope: &str, id: &str);
}

/// The default: a bounded in-memory set with first-in-first-out eviction.
///
/// The ids are kept per scope, each once (an `Arc<str>` shared by its scope's set and the
/// eviction queue), so asking allocates nothing and remembering allocates the id once.
#[derive(Debug)]
pub struct MemoryDedup {
    capacity: usize,
    inner: Mutex<Remembered>,
}

/// The hasher of the remembered ids: foldhash, seeded per process (SipHash, std's default, was
/// 3 % of a fast subscriber's handling).
type Ids = foldhash::fast::RandomState;

#[derive(Debug, Default)]
struct Remembered {
    /// Per scope, the ids remembered.
    scopes: HashMap<Arc<str>, HashSet<Arc<str>, Ids>>,
    /// (scope, id), oldest first.
    order: VecDeque<(Arc<str>, Arc<str>)>,
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
            inner: Mutex::new(Remembered::default()),
        }
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.order.len()).unwrap_or(0)
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
        g.scopes.get(scope).is_some_and(|ids| ids.contains(id))
    }

    async fn mark(&self, scope: &str, id: &str) {
        self.remember(scope, id);
    }
}

impl MemoryDedup {
    /// Records that `id` was handled (what [`DedupStore::mark`] does, without waiting).
    pub fn remember(&self, scope: &str, id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Remembered { scopes, order } = &mut *g;
        let scope: Arc<str> = match scopes.get_key_value(scope) {
            Some((s, _)) => Arc::clone(s),
            None => Arc::from(scope),
        };
        let ids = scopes.entry(Arc::clone(&scope)).or_default();
        if ids.contains(id) {
            return;
        }
        let id: Arc<str> = Arc::from(id);
        ids.insert(Arc::clone(&id));
        order.push_back((scope, id));
        while order.len() > self.capacity {
            let Some((s, old)) = order.pop_front() else {
                break;
            };
            if let Some(ids) = scopes.get_mut(&s) {
                ids.remove(&old);
                if ids.is_empty() {
                    scopes.remove(&s);
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

    #[tokio::test]
    async fn an_id_is_remembered_once_and_forgotten_in_the_order_it_came() {
        let d = MemoryDedup::with_capacity(3);
        d.mark("h", "a").await;
        d.mark("h", "a").await;
        d.mark("g", "a").await;
        assert_eq!(
            d.len(),
            2,
            "a repeated id is one entry; another scope's is its own"
        );
        d.mark("h", "b").await;
        d.mark("g", "c").await;
        assert!(
            !d.seen("h", "a").await,
            "the oldest, h/a, is forgotten first"
        );
        assert!(d.seen("g", "a").await);
        d.mark("h", "d").await;
        assert!(!d.seen("g", "a").await, "then g/a");
        assert!(d.seen("h", "b").await && d.seen("g", "c").await && d.seen("h", "d").await);
        assert_eq!(d.len(), 3);
    }
}
