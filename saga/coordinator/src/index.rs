//! The deadline index of the partitions one replica owns (BRIEF decision 5): every pending
//! deadline of every owned saga, ordered by due time, plus the retention expiry of finished
//! sagas. Rebuilt from the saga states on restore; changed only after a transaction commits.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

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

/// Deadlines and expiries by due time, and by saga.
///
/// Every operation is logarithmic in the number of entries, or linear in one saga's few entries
/// (a saga has at most one entry per deadline kind and one expiry): a tombstone forgetting a saga
/// does not scan the index. The saga id is stored once per saga, and a step name once for the
/// whole index: an entry names its step by a number (8 bytes for what is due, against 24 with a
/// shared name), which keeps an entry of the time order at 40 bytes.
#[derive(Debug, Default)]
pub struct DeadlineIndex {
    by_time: BTreeSet<(Millis, i32, Arc<str>, Kept)>,
    by_saga: HashMap<Arc<str>, Vec<(Kept, Millis, i32)>>,
    /// Step names by number, each kept once (they come from the definitions, so they are few).
    steps: Vec<Arc<str>>,
    /// The number of each step name.
    step_numbers: HashMap<Arc<str>, u32>,
}

/// `name` kept once in `names`: the one there, or a new one added.
pub(crate) fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.get(name) {
        return Arc::clone(n);
    }
    let n: Arc<str> = name.into();
    names.insert(Arc::clone(&n));
    n
}

/// [`Due`] as the index keeps it: its kind, and the number of its step name (0 for a kind
/// without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Kept {
    kind: Kind,
    step: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Saga,
    Step,
    CompensationAck,
    Expiry,
}

impl Kept {
    /// `due`, with its step's number as `number` gives it (none: no `Kept`).
    fn of(due: &Due, mut number: impl FnMut(&str) -> Option<u32>) -> Option<Kept> {
        let (kind, step) = match due {
            Due::Deadline(DeadlineKind::Saga) => (Kind::Saga, 0),
            Due::Deadline(DeadlineKind::Step(s)) => (Kind::Step, number(s)?),
            Due::Deadline(DeadlineKind::CompensationAck(s)) => (Kind::CompensationAck, number(s)?),
            Due::Expiry => (Kind::Expiry, 0),
        };
        Some(Kept { kind, step })
    }
}

impl DeadlineIndex {
    /// Adds or moves an entry (one per saga and kind).
    pub fn set(&mut self, partition: i32, saga_id: &str, due: Due, at: Millis) {
        self.cancel(saga_id, &due);
        let due = self.keep(&due);
        let key: Arc<str> = match self.by_saga.get_key_value(saga_id) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(saga_id),
        };
        self.by_time.insert((at, partition, Arc::clone(&key), due));
        let entries = self.by_saga.entry(key).or_default();
        // Sized exactly: a saga has one or two entries, and `push` would make room for four.
        entries.reserve_exact(1);
        entries.push((due, at, partition));
    }

    /// `due` as kept, its step name numbered (a new name gets the next number).
    fn keep(&mut self, due: &Due) -> Kept {
        let (steps, numbers) = (&mut self.steps, &mut self.step_numbers);
        Kept::of(due, |s| {
            Some(match numbers.get(s) {
                Some(n) => *n,
                None => {
                    let n = u32::try_from(steps.len()).expect("fewer than 2^32 step names");
                    let name: Arc<str> = s.into();
                    steps.push(Arc::clone(&name));
                    numbers.insert(name, n);
                    n
                }
            })
        })
        .expect("every step name is numbered")
    }

    /// `due` as kept, if the index can hold it (its step name is known).
    fn kept(&self, due: &Due) -> Option<Kept> {
        Kept::of(due, |s| self.step_numbers.get(s).copied())
    }

    /// What a kept entry is due for.
    fn due_of(&self, kept: Kept) -> Due {
        let step = || self.steps[kept.step as usize].to_string();
        match kept.kind {
            Kind::Saga => Due::Deadline(DeadlineKind::Saga),
            Kind::Step => Due::Deadline(DeadlineKind::Step(step())),
            Kind::CompensationAck => Due::Deadline(DeadlineKind::CompensationAck(step())),
            Kind::Expiry => Due::Expiry,
        }
    }

    /// Removes an entry.
    pub fn cancel(&mut self, saga_id: &str, due: &Due) {
        let Some(due) = self.kept(due) else { return };
        let Some((key, entries)) = self.by_saga.get_key_value(saga_id) else {
            return;
        };
        let Some(i) = entries.iter().position(|(d, _, _)| *d == due) else {
            return;
        };
        let key = Arc::clone(key);
        let entries = self.by_saga.get_mut(saga_id).expect("present");
        let (due, at, partition) = entries.swap_remove(i);
        if entries.is_empty() {
            self.by_saga.remove(saga_id);
        }
        self.by_time.remove(&(at, partition, key, due));
    }

    /// Removes every entry of a saga.
    pub fn forget_saga(&mut self, saga_id: &str) {
        if let Some((key, entries)) = self.by_saga.remove_entry(saga_id) {
            for (due, at, partition) in entries {
                self.by_time.remove(&(at, partition, Arc::clone(&key), due));
            }
        }
    }

    /// Removes every entry of a partition (revoked).
    pub fn forget_partition(&mut self, partition: i32) {
        self.by_time.retain(|(_, p, _, _)| *p != partition);
        self.by_saga.retain(|_, entries| {
            entries.retain(|(_, _, p)| *p != partition);
            !entries.is_empty()
        });
    }

    /// Entries due at `now`, oldest first, at most `limit` (they stay in the index until the
    /// transaction that handles them commits).
    pub fn due(&self, now: Millis, limit: usize) -> Vec<Entry> {
        self.by_time
            .iter()
            .take_while(|(at, ..)| *at <= now)
            .take(limit)
            .map(|(at, partition, saga_id, due)| Entry {
                at: *at,
                partition: *partition,
                saga_id: saga_id.to_string(),
                due: self.due_of(*due),
            })
            .collect()
    }

    /// When the next entry is due.
    pub fn next_at(&self) -> Option<Millis> {
        self.by_time.iter().next().map(|(at, ..)| *at)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }

    /// Number of sagas with at least one entry.
    pub fn sagas(&self) -> usize {
        self.by_saga.len()
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
        assert_eq!(ix.sagas(), 0, "no saga is remembered without entries");
    }

    #[test]
    fn steps_are_kept_by_number_and_given_back_by_name() {
        let mut ix = DeadlineIndex::default();
        let step = |s: &str| Due::Deadline(DeadlineKind::Step(s.into()));
        let ack = |s: &str| Due::Deadline(DeadlineKind::CompensationAck(s.into()));
        ix.set(0, "order/a", step("payment"), Millis(1));
        ix.set(0, "order/b", step("shipping"), Millis(2));
        ix.set(0, "order/c", ack("payment"), Millis(3));
        ix.set(0, "order/a", ack("shipping"), Millis(4));
        ix.cancel("order/b", &step("never-seen"));
        ix.cancel("order/b", &ack("shipping"));
        assert_eq!(
            ix.len(),
            4,
            "a cancel of another kind or step removes nothing"
        );
        let due: Vec<(String, Due)> = ix
            .due(Millis(10), 10)
            .into_iter()
            .map(|e| (e.saga_id, e.due))
            .collect();
        assert_eq!(
            due,
            vec![
                ("order/a".into(), step("payment")),
                ("order/b".into(), step("shipping")),
                ("order/c".into(), ack("payment")),
                ("order/a".into(), ack("shipping")),
            ]
        );
        assert_eq!(ix.steps.len(), 2, "each step name once");
        ix.cancel("order/a", &step("payment"));
        assert_eq!(ix.due(Millis(1), 10), vec![]);
        assert_eq!(
            size_of::<(Millis, i32, Arc<str>, Kept)>(),
            40,
            "an entry of the time order"
        );
    }

    #[test]
    fn forgetting_one_saga_leaves_every_other_and_cancel_is_exact() {
        let mut ix = DeadlineIndex::default();
        for i in 0..1000 {
            let saga = format!("order/{i}");
            ix.set(
                i % 3,
                &saga,
                Due::Deadline(DeadlineKind::Saga),
                Millis(1000 - i as u64),
            );
            ix.set(i % 3, &saga, Due::Expiry, Millis(5000 + i as u64));
        }
        ix.forget_saga("order/500");
        ix.cancel("order/7", &Due::Expiry);
        ix.cancel("order/7", &Due::Expiry);
        ix.cancel("order/unknown", &Due::Expiry);
        assert_eq!(ix.len(), 2000 - 3);
        assert_eq!(ix.sagas(), 999);
        let first = ix.due(Millis(1), 5);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].saga_id, "order/999");
        assert!(
            ix.due(Millis(u64::MAX), usize::MAX)
                .iter()
                .all(|e| e.saga_id != "order/500")
        );
        ix.forget_partition(0);
        assert!(
            ix.due(Millis(u64::MAX), usize::MAX)
                .iter()
                .all(|e| e.partition != 0)
        );
        assert_eq!(ix.len(), ix.due(Millis(u64::MAX), usize::MAX).len());
    }
}
