//! The offset-store protocol of one partition when records are handled concurrently (key-level
//! concurrency): records are taken in offset order, finish in any order, and the offset a
//! worker may store is always just below the lowest record not finished yet — so a crash
//! replays every record that was not done, and nothing that was acknowledged is lost. Pure:
//! no I/O.

use std::collections::BTreeSet;

/// Which records of a partition are taken and not finished.
#[derive(Debug, Default)]
pub(super) struct OffsetTracker {
    unfinished: BTreeSet<i64>,
    /// The highest offset finished so far.
    highest_done: Option<i64>,
    /// The last offset answered by [`OffsetTracker::storable`].
    stored: Option<i64>,
    /// The first offset taken: nothing below it is this worker's to store.
    first: Option<i64>,
}

impl OffsetTracker {
    /// A record was taken (offsets are taken in increasing order).
    pub(super) fn take(&mut self, offset: i64) {
        self.first.get_or_insert(offset);
        self.unfinished.insert(offset);
    }

    /// A record is done with (handled, skipped or dead-lettered).
    pub(super) fn finish(&mut self, offset: i64) {
        self.unfinished.remove(&offset);
        self.highest_done = Some(self.highest_done.map_or(offset, |h| h.max(offset)));
    }

    /// Records taken and not finished.
    pub(super) fn in_flight(&self) -> usize {
        self.unfinished.len()
    }

    /// The offset of the last record below which everything is finished, when it moved since
    /// the last call (the worker stores it; the consumer commits the record after it).
    pub(super) fn storable(&mut self) -> Option<i64> {
        let done_through = match self.unfinished.first() {
            Some(&lowest) => lowest.checked_sub(1)?,
            None => self.highest_done?,
        };
        // Offsets below the first taken one are not this worker's (already committed).
        if self.first.is_none_or(|f| done_through < f)
            || self.stored.is_some_and(|s| s >= done_through)
        {
            return None;
        }
        self.stored = Some(done_through);
        Some(done_through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_below_the_lowest_unfinished_record() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.take(o);
        }
        assert_eq!(t.storable(), None, "nothing finished");
        t.finish(11);
        assert_eq!(t.storable(), None, "not 9: below the first record taken");
        t.finish(13);
        assert_eq!(t.storable(), None, "10 and 12 are still in flight");
        t.finish(10);
        assert_eq!(t.storable(), Some(11), "10 and 11 are done, 12 is not");
        assert_eq!(t.storable(), None, "no change, nothing new to store");
        t.finish(12);
        assert_eq!(t.storable(), Some(13), "10 to 13 done, 14 in flight");
        t.finish(14);
        assert_eq!(t.storable(), Some(14));
        assert_eq!(t.in_flight(), 0);
        t.take(15);
        assert_eq!(t.storable(), None);
        t.finish(15);
        assert_eq!(t.storable(), Some(15));
    }

    /// Whatever order records finish in, the stored offset never passes an unfinished record,
    /// and ends at the last one (a property over shuffles).
    #[test]
    fn never_passes_an_unfinished_record_whatever_the_finishing_order() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..500 {
            let n = 1 + (round % 40) as i64;
            let mut order: Vec<i64> = (100..100 + n).collect();
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            let mut t = OffsetTracker::default();
            for o in 100..100 + n {
                t.take(o);
            }
            let mut done = BTreeSet::new();
            for o in order {
                t.finish(o);
                done.insert(o);
                if let Some(s) = t.storable() {
                    assert!(
                        (100..=s).all(|x| done.contains(&x)),
                        "round {round}: stored {s} with an unfinished record below it"
                    );
                }
            }
            assert_eq!(
                t.storable().or(t.stored),
                Some(100 + n - 1),
                "round {round}"
            );
        }
    }
}
