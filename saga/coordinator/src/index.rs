//! The deadline index of the partitions one replica owns (BRIEF decision 5): every pending
//! deadline of every owned saga, ordered by due time, plus the retention expiry of finished
//! sagas. Rebuilt from the saga states on restore; changed only after a transaction commits.

use std::collections::{BTreeSet, HashMap};
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
/// whole index: an entry names its step by a number, packed with its kind into 4 bytes (24 with
/// a shared name), which keeps an entry of the time order at 32 bytes and a saga's entry of the
/// other order at 16.
#[derive(Debug, Default)]
pub struct DeadlineIndex {
    by_time: BTreeSet<(Millis, i32, Arc<str>, Kept)>,
    /// A saga's entries, sized exactly (a `Vec` would add 8 bytes to every slot of the map).
    by_saga: HashMap<Arc<str>, Box<[SagaEntry]>, crate::Ids>,
    /// Step names by number.
    steps: Names,
}

/// Names kept once each and numbered in the order first seen: the step names of the index, the
/// definition names of the view and the owned store. They come from the definitions, so they
/// are few; what holds one names it by its number.
#[derive(Debug, Default)]
pub(crate) struct Names {
    all: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32, crate::Ids>,
}

impl Names {
    /// `name`'s number and the name as kept (a new name gets the next number).
    pub(crate) fn keep(&mut self, name: &str) -> (u32, &Arc<str>) {
        let n = match self.numbers.get(name) {
            Some(n) => *n,
            None => {
                let n = u32::try_from(self.all.len()).expect("fewer than 2^32 names");
                let kept: Arc<str> = name.into();
                self.all.push(Arc::clone(&kept));
                self.numbers.insert(kept, n);
                n
            }
        };
        (n, &self.all[n as usize])
    }

    /// `name`'s number, if it is kept.
    pub(crate) fn number(&self, name: &str) -> Option<u32> {
        self.numbers.get(name).copied()
    }

    /// The name numbered `n`.
    pub(crate) fn name(&self, n: u32) -> Option<&Arc<str>> {
        self.all.get(n as usize)
    }

    /// How many are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }
}

/// An entry as a saga's own list keeps it: what, when, and the owning partition (16 bytes).
type SagaEntry = (Kept, Millis, i32);

/// [`Due`] as the index keeps it: its kind in the top two bits, and the number of its step
/// name (0 for a kind without one) in the other 30, so that it orders by kind, then step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Kept(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Saga = 0,
    Step = 1,
    CompensationAck = 2,
    Expiry = 3,
}

/// The bits of [`Kept`] that number a step.
const STEP_BITS: u32 = 30;
/// How many step names the index can number.
const MAX_STEPS: u32 = 1 << STEP_BITS;

impl Kept {
    /// `due`, with its step's number as `number` gives it (none: no `Kept`).
    fn of(due: &Due, mut number: impl FnMut(&str) -> Option<u32>) -> Option<Kept> {
        let (kind, step) = match due {
            Due::Deadline(DeadlineKind::Saga) => (Kind::Saga, 0),
            Due::Deadline(DeadlineKind::Step(s)) => (Kind::Step, number(s)?),
            Due::Deadline(DeadlineKind::CompensationAck(s)) => (Kind::CompensationAck, number(s)?),
            Due::Expiry => (Kind::Expiry, 0),
        };
        (step < MAX_STEPS).then_some(Kept(((kind as u32) << STEP_BITS) | step))
    }

    fn kind(self) -> Kind {
        match self.0 >> STEP_BITS {
            0 => Kind::Saga,
            1 => Kind::Step,
            2 => Kind::CompensationAck,
            _ => Kind::Expiry,
        }
    }

    fn step(self) -> u32 {
        self.0 & (MAX_STEPS - 1)
    }
}

impl DeadlineIndex {
    /// Adds or moves an entry (one per saga and kind).
    pub fn set(&mut self, partition: i32, saga_id: &str, due: Due, at: Millis) {
        let due = self.keep(&due);
        if let Some(key) = self
            .by_saga
            .get_key_value(saga_id)
            .map(|(k, _)| Arc::clone(k))
        {
            let entries = self.by_saga.get_mut(saga_id).expect("present");
            if let Some(entry) = entries.iter_mut().find(|(d, _, _)| *d == due) {
                // Moved: in place, so that the saga's slice is not made again.
                let (_, old_at, old_partition) = *entry;
                self.by_time
                    .remove(&(old_at, old_partition, Arc::clone(&key), due));
                *entry = (due, at, partition);
                self.by_time.insert((at, partition, key, due));
                return;
            }
            let mut grown = Vec::with_capacity(entries.len() + 1);
            grown.extend_from_slice(entries);
            grown.push((due, at, partition));
            *entries = grown.into_boxed_slice();
            self.by_time.insert((at, partition, key, due));
        } else {
            let key: Arc<str> = Arc::from(saga_id);
            self.by_time.insert((at, partition, Arc::clone(&key), due));
            self.by_saga.insert(key, Box::new([(due, at, partition)]));
        }
    }

    /// `due` as kept, its step name numbered (a new name gets the next number).
    fn keep(&mut self, due: &Due) -> Kept {
        let steps = &mut self.steps;
        Kept::of(due, |s| Some(steps.keep(s).0)).expect("fewer than 2^30 step names")
    }

    /// `due` as kept, if the index can hold it (its step name is known).
    fn kept(&self, due: &Due) -> Option<Kept> {
        Kept::of(due, |s| self.steps.number(s))
    }

    /// What a kept entry is due for.
    fn due_of(&self, kept: Kept) -> Due {
        let step = || {
            self.steps
                .name(kept.step())
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        match kept.kind() {
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
        let (due, at, partition) = entries[i];
        if entries.len() == 1 {
            self.by_saga.remove(saga_id);
        } else {
            let mut left = std::mem::take(entries).into_vec();
            left.swap_remove(i);
            *entries = left.into_boxed_slice();
        }
        self.by_time.remove(&(at, partition, key, due));
    }

    /// Removes every entry of a saga.
    pub fn forget_saga(&mut self, saga_id: &str) {
        if let Some((key, entries)) = self.by_saga.remove_entry(saga_id) {
            for &(due, at, partition) in &entries {
                self.by_time.remove(&(at, partition, Arc::clone(&key), due));
            }
        }
    }

    /// Removes every entry of a partition (revoked).
    pub fn forget_partition(&mut self, partition: i32) {
        self.by_time.retain(|(_, p, _, _)| *p != partition);
        self.by_saga.retain(|_, entries| {
            if entries.iter().any(|(_, _, p)| *p == partition) {
                let mut left = std::mem::take(entries).into_vec();
                left.retain(|(_, _, p)| *p != partition);
                *entries = left.into_boxed_slice();
            }
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
            32,
            "an entry of the time order"
        );
        assert_eq!(size_of::<SagaEntry>(), 16, "an entry of a saga's own");
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
