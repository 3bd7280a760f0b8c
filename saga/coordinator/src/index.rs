//! The deadline index of the partitions one replica owns (BRIEF decision 5): every pending
//! deadline of every owned saga, ordered by due time, plus the retention expiry of finished
//! sagas. Rebuilt from the saga states on restore; changed only after a transaction commits.

use std::collections::{BTreeSet, HashMap};

use choreo_saga::{DeadlineKind, Millis};

/// What is due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Due {
    /// A saga deadline.
    Deadline(DeadlineKind),
    /// A finished saga's retention ran out: tombstone it.
    Expiry,
}

/// An entry of the index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// When.
    pub at: Millis,
    /// The owning partition.
    pub partition: i32,
    /// The saga.
    pub saga_id: String,
    /// What.
    pub due: Due,
}

/// Deadlines and expiries by due time.
#[derive(Debug, Default)]
pub struct DeadlineIndex {
    by_time: BTreeSet<Entry>,
    by_key: HashMap<(String, Due), Entry>,
}

impl DeadlineIndex {
    /// Adds or moves an entry (one per saga and kind).
    pub fn set(&mut self, partition: i32, saga_id: &str, due: Due, at: Millis) {
        self.cancel(saga_id, &due);
        let e = Entry {
            at,
            partition,
            saga_id: saga_id.to_owned(),
            due: due.clone(),
        };
        self.by_time.insert(e.clone());
        self.by_key.insert((saga_id.to_owned(), due), e);
    }

    /// Removes an entry.
    pub fn cancel(&mut self, saga_id: &str, due: &Due) {
        if let Some(old) = self.by_key.remove(&(saga_id.to_owned(), due.clone())) {
            self.by_time.remove(&old);
        }
    }

    /// Removes every entry of a saga.
    pub fn forget_saga(&mut self, saga_id: &str) {
        let keys: Vec<(String, Due)> = self
            .by_key
            .keys()
            .filter(|(s, _)| s == saga_id)
            .cloned()
            .collect();
        for (s, d) in keys {
            self.cancel(&s, &d);
        }
    }

    /// Removes every entry of a partition (revoked).
    pub fn forget_partition(&mut self, partition: i32) {
        self.by_time.retain(|e| e.partition != partition);
        self.by_key.retain(|_, e| e.partition != partition);
    }

    /// Entries due at `now`, oldest first, at most `limit` (they stay in the index until the
    /// transaction that handles them commits).
    pub fn due(&self, now: Millis, limit: usize) -> Vec<Entry> {
        self.by_time
            .iter()
            .take_while(|e| e.at <= now)
            .take(limit)
            .cloned()
            .collect()
    }

    /// When the next entry is due.
    pub fn next_at(&self) -> Option<Millis> {
        self.by_time.iter().next().map(|e| e.at)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_moves_and_forgets() {
        let mut ix = DeadlineIndex::default();
        ix.set(0, "order/a", Due::Deadline(DeadlineKind::Saga), Millis(50));
        ix.set(
            1,
            "order/b",
            Due::Deadline(DeadlineKind::Step("payment".into())),
            Millis(10),
        );
        ix.set(0, "order/a", Due::Expiry, Millis(99));
        assert_eq!(ix.next_at(), Some(Millis(10)));
        ix.set(
            1,
            "order/b",
            Due::Deadline(DeadlineKind::Step("payment".into())),
            Millis(70),
        );
        assert_eq!(ix.len(), 3, "moving keeps one entry per saga and kind");
        let due: Vec<String> = ix
            .due(Millis(70), 10)
            .into_iter()
            .map(|e| e.saga_id)
            .collect();
        assert_eq!(due, vec!["order/a", "order/b"]);
        ix.forget_partition(1);
        assert_eq!(ix.len(), 2);
        ix.forget_saga("order/a");
        assert!(ix.is_empty());
    }
}
