//! The ingest's memory of recent events, by CloudEvents identity (`source` + `id`): an event
//! sent again — a client retrying after a lost answer, or twice at once — is produced once,
//! and the repeat is answered with the first one's partition and offset.
//!
//! The memory is this process's and bounded (the oldest identities are forgotten first), so
//! a repeat sent to another ingest instance, after a restart, or after the window, is
//! produced again; consumers deduplicate on `ce_id` too ([`choreo_bus::DedupStore`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use choreo_bus::Delivery;
use tokio::sync::OnceCell;

type Key = (String, String);

/// Recent event identities and where each landed.
#[derive(Debug)]
pub struct Recent {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cells: HashMap<Key, Arc<OnceCell<Delivery>>>,
    order: VecDeque<Key>,
}

impl Recent {
    /// A memory of the last `capacity` identities (0 remembers none: no deduplication).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    fn cell(&self, source: &str, id: &str) -> Arc<OnceCell<Delivery>> {
        let key = (source.to_owned(), id.to_owned());
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = inner.cells.get(&key) {
            return Arc::clone(c);
        }
        let cell = Arc::new(OnceCell::new());
        inner.cells.insert(key.clone(), Arc::clone(&cell));
        inner.order.push_back(key);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.cells.remove(&old);
            }
        }
        cell
    }

    /// Runs `produce` unless the event was produced already (or is being produced by another
    /// request, which this one then waits for). Returns where it landed and whether this was
    /// a repeat. A failed `produce` is forgotten: the next attempt produces.
    pub async fn once<F, Fut, E>(
        &self,
        source: &str,
        id: &str,
        produce: F,
    ) -> Result<(Delivery, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Delivery, E>>,
    {
        if self.capacity == 0 {
            return produce().await.map(|d| (d, false));
        }
        let cell = self.cell(source, id);
        let mut ran = false;
        let delivery = cell
            .get_or_try_init(|| {
                ran = true;
                produce()
            })
            .await?;
        Ok((delivery.clone(), !ran))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn delivery(offset: i64) -> Delivery {
        Delivery {
            topic: "t".into(),
            partition: 0,
            offset,
            id: "e".into(),
        }
    }

    #[tokio::test]
    async fn a_repeat_is_not_produced_and_gets_the_first_answer() {
        let recent = Recent::new(10);
        let produced = AtomicUsize::new(0);
        let produce = || async {
            let n = produced.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(delivery(n as i64 + 7))
        };
        assert_eq!(
            recent.once("s", "e", produce).await,
            Ok((delivery(7), false))
        );
        assert_eq!(
            recent.once("s", "e", produce).await,
            Ok((delivery(7), true))
        );
        assert_eq!(
            recent.once("other-source", "e", produce).await,
            Ok((delivery(8), false))
        );
        assert_eq!(produced.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_attempt_is_forgotten() {
        let recent = Recent::new(10);
        let r: Result<_, String> = recent
            .once("s", "e", || async { Err("down".to_owned()) })
            .await;
        assert_eq!(r, Err("down".into()));
        let r = recent
            .once("s", "e", || async { Ok::<_, String>(delivery(1)) })
            .await;
        assert_eq!(r, Ok((delivery(1), false)));
    }

    #[tokio::test]
    async fn the_oldest_identity_is_forgotten_past_capacity() {
        let recent = Recent::new(2);
        for id in ["a", "b", "c"] {
            let _ = recent
                .once("s", id, || async { Ok::<_, String>(delivery(0)) })
                .await;
        }
        let again =
            |id: &'static str| recent.once("s", id, || async { Ok::<_, String>(delivery(9)) });
        assert_eq!(again("c").await, Ok((delivery(0), true)));
        assert_eq!(again("a").await, Ok((delivery(9), false)));
    }
}
