//! The operator's view of every saga: a read-only copy of the saga state changelog, kept by
//! every replica (whichever partitions it owns), so any replica answers any query.
//!
//! The changelog's tail (`coordinator/changelog.rs`) is the only writer; the operator API reads.
//! Each saga is kept as its changelog value (the compact binary format of
//! [`SagaState::encode`]) beside its [`SagaSummary`]: a listing reads the summaries, and a saga
//! is decoded when it is asked for (or when a listing filters on its steps).
//! What each read costs, whatever the number of sagas `n`:
//!
//! - **a listing** ([`SagaView::list`]) filters every saga once and keeps its page in a heap of
//!   at most `limit` entries (`O(n log limit)`, memory `O(limit)`): it never sorts every saga.
//!   Pages follow each other through a [`Cursor`] (the last saga of a page), so a saga that
//!   arrives meanwhile never shifts a page;
//! - **counts per status** (and per definition) are kept as states come and go, so a listing
//!   reads them rather than counting (`O(definitions)`);
//! - **what changed** ([`SagaView::changes_since`]) is a ring of the last
//!   [`CHANGE_FEED_CAPACITY`] changes, each numbered; a reader that fell further behind (or
//!   asks for more than it can take at once) is told to reload instead
//!   ([`Changes::reset`]). [`SagaView::subscribe`] wakes readers when the number moves.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use choreo_saga::{SagaState, Status, StepStatus};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::index::Names;

/// Every status, in the order a saga goes through them.
pub const ALL_STATUSES: [Status; 6] = [
    Status::Pending,
    Status::Running,
    Status::Compensating,
    Status::Completed,
    Status::Compensated,
    Status::NeedsOperator,
];

/// A listing's page size when the query names none.
pub const DEFAULT_LIMIT: usize = 100;

/// How many changes the view remembers for its readers ([`SagaView::changes_since`]): about a
/// second of a busy cluster's changes; a reader further behind reloads.
pub const CHANGE_FEED_CAPACITY: usize = 8_192;

fn slot(status: Status) -> usize {
    ALL_STATUSES.iter().position(|s| *s == status).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A position in a listing (newest first, then by saga id): the last saga of a page. The next
/// page starts after it. Written `<created_at ms>:<saga id>`; take it as opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The saga's creation time, ms since the epoch.
    pub created_at: u64,
    /// The saga's id.
    pub saga_id: String,
}

impl Cursor {
    /// The cursor after `s`.
    pub fn after(s: &SagaSummary) -> Self {
        Self {
            created_at: s.created_at,
            saga_id: s.saga_id.clone(),
        }
    }

    /// Reads a cursor as [`Cursor`]'s `Display` writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "\"{}\" is not a cursor (pass the \"next\" of the previous page)",
                text.chars().take(80).collect::<String>()
            )
        };
        let (at, id) = text.split_once(':').ok_or_else(bad)?;
        let created_at = at.parse::<u64>().map_err(|_| bad())?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            created_at,
            saga_id: id.to_owned(),
        })
    }

    /// Where a saga with this creation time and id stands in a listing (smaller comes first).
    fn key(&self) -> (Reverse<u64>, &str) {
        (Reverse(self.created_at), self.saga_id.as_str())
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.created_at, self.saga_id)
    }
}

/// Filters for listing sagas.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// Only sagas of this definition.
    pub definition: Option<String>,
    /// Only sagas pinned to this definition version.
    pub version: Option<u32>,
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
    /// At most this many (default [`DEFAULT_LIMIT`], newest first).
    pub limit: Option<usize>,
    /// Only sagas after this one in the listing's order (the next page).
    #[serde(skip)]
    pub before: Option<Cursor>,
}

impl ListQuery {
    /// Whether `s` passes every filter (the cursor and the limit aside).
    pub fn matches(&self, s: &SagaState, now_ms: u64) -> bool {
        let summary = Summary {
            definition: &s.definition,
            version: s.version,
            correlation_id: &s.correlation_id,
            status: s.status,
            created_at: s.created_at.0,
            updated_at: s.updated_at.0,
        };
        self.matches_summary(&summary, now_ms)
            && self.waiting_on.as_deref().is_none_or(|w| waits_on(s, w))
    }

    /// Whether `s` passes every filter read from a summary (all but `waiting_on`).
    fn matches_summary(&self, s: &Summary<'_>, now_ms: u64) -> bool {
        self.definition.as_deref().is_none_or(|d| s.definition == d)
            && self.version.is_none_or(|v| s.version == v)
            && self.status.is_none_or(|st| s.status == st)
            && self
                .min_age_ms
                .is_none_or(|a| now_ms.saturating_sub(s.created_at) >= a)
            && self
                .max_age_ms
                .is_none_or(|a| now_ms.saturating_sub(s.created_at) <= a)
            && self.stuck_ms.is_none_or(|a| {
                !matches!(s.status, Status::Completed | Status::Compensated)
                    && now_ms.saturating_sub(s.updated_at) >= a
            })
            && self
                .search
                .as_deref()
                .is_none_or(|t| s.correlation_id.contains(t))
    }
}

/// Whether step `step` of `s` started and has no answer yet.
fn waits_on(s: &SagaState, step: &str) -> bool {
    s.steps
        .iter()
        .any(|st| st.name == step && st.status == StepStatus::Running)
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

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The page's sagas, newest first.
    pub sagas: Vec<SagaSummary>,
    /// How many sagas pass the filters, on every page.
    pub total: usize,
    /// Where the next page starts, when there is one.
    pub next: Option<Cursor>,
}

/// What changed since a reader last asked ([`SagaView::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The number of the latest change: ask from here next time.
    pub seq: u64,
    /// The sagas that changed (or went), each once, oldest change first; empty when `reset`.
    pub saga_ids: Vec<String>,
    /// Too much changed to say what (the reader fell behind the ring, or more sagas changed
    /// than it takes at once): reload.
    pub reset: bool,
}

/// What the listing filters read of a saga.
struct Summary<'a> {
    definition: &'a str,
    version: u32,
    correlation_id: &'a str,
    status: Status,
    created_at: u64,
    updated_at: u64,
}

/// One saga in the view: what a listing shows of it, and its changelog value (shared with the
/// owning replica's store when this replica owns the saga; see [`SagaView::share`]). Kept
/// compact, since the view holds every saga: the saga id is the map's key too, the definition
/// name is shared by the sagas of a definition, and the correlation id is read from the saga
/// id when that is `<definition>/<correlation id>`.
#[derive(Debug)]
struct Viewed {
    saga_id: Arc<str>,
    definition: Arc<str>,
    correlation: Correlation,
    version: u32,
    status: Status,
    created_at: u64,
    updated_at: u64,
    value: Arc<[u8]>,
}

/// Where a viewed saga's correlation id is.
#[derive(Debug)]
enum Correlation {
    /// In the saga id, from this byte on.
    InSagaId(u32),
    /// Its own.
    Own(Box<str>),
}

impl Viewed {
    fn correlation_id(&self) -> &str {
        match &self.correlation {
            Correlation::InSagaId(at) => self.saga_id.get(*at as usize..).unwrap_or_default(),
            Correlation::Own(c) => c,
        }
    }

    fn filtered(&self) -> Summary<'_> {
        Summary {
            definition: &self.definition,
            version: self.version,
            correlation_id: self.correlation_id(),
            status: self.status,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    fn summary(&self) -> SagaSummary {
        SagaSummary {
            saga_id: self.saga_id.to_string(),
            definition: self.definition.to_string(),
            version: self.version,
            correlation_id: self.correlation_id().to_owned(),
            status: self.status,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Values the owning replica holds that the view has not read from the changelog yet, so that
/// the view keeps the same bytes rather than a copy ([`SagaView::share`]).
#[derive(Debug, Default)]
struct Handoff {
    /// By saga id (the owner's, which the view keeps too when it takes the value).
    values: DashMap<Arc<str>, (Arc<[u8]>, Instant), crate::Ids>,
    /// Upserts since the last sweep of entries the view never matched.
    since_sweep: AtomicUsize,
}

/// A handed-off value the view has not matched within this long is let go (it was superseded
/// before the view read it); the view then keeps a copy of what it reads, as without sharing.
const HANDOFF_MAX_AGE: Duration = Duration::from_secs(300);
/// How many upserts pass between sweeps of the handoff.
const HANDOFF_SWEEP_EVERY: usize = 4096;

/// A saga in a listing's heap, ordered as the listing is (the greatest is the last).
struct Ranked(Arc<Viewed>);

impl Ranked {
    fn key(&self) -> (Reverse<u64>, &str) {
        (Reverse(self.0.created_at), &*self.0.saga_id)
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.key().cmp(&other.key())
    }
}

/// A viewed saga's state. Its value decoded when it came in, so this fails only on a bug: said,
/// and the saga is then missing from the answer.
fn decoded(viewed: &Viewed) -> Option<SagaState> {
    match SagaState::decode(&viewed.value) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(saga_id = %viewed.saga_id, error = %e, "a saga state in the operator view does not decode");
            None
        }
    }
}

#[derive(Debug, Default)]
struct Feed {
    /// The number of the latest change.
    seq: u64,
    /// The last [`CHANGE_FEED_CAPACITY`] changes: (number, saga id).
    recent: VecDeque<(u64, String)>,
}

/// Every saga's latest committed state, by saga id.
#[derive(Debug)]
pub struct SagaView {
    sagas: DashMap<Arc<str>, Arc<Viewed>, crate::Ids>,
    /// Definition names, each kept once for all its sagas (and numbered for the owned store).
    definitions: Mutex<Names>,
    handoff: Handoff,
    /// Per definition, the number of sagas in each status (indexed like [`ALL_STATUSES`]).
    counts: Mutex<BTreeMap<Arc<str>, [usize; ALL_STATUSES.len()]>>,
    feed: Mutex<Feed>,
    changed: watch::Sender<u64>,
    caught_up: AtomicBool,
}

impl Default for SagaView {
    fn default() -> Self {
        Self {
            sagas: DashMap::default(),
            handoff: Handoff::default(),
            definitions: Mutex::default(),
            counts: Mutex::default(),
            feed: Mutex::default(),
            changed: watch::Sender::new(0),
            caught_up: AtomicBool::new(false),
        }
    }
}

impl SagaView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a state read from the changelog.
    pub fn upsert(&self, state: SagaState) {
        let value = state.encode();
        self.upsert_encoded(&state, value);
    }

    /// Adds or replaces a saga, given its changelog value too (`value` is `state.encode()`, or
    /// the value `state` was decoded from).
    pub fn upsert_encoded(&self, state: &SagaState, value: Vec<u8>) {
        let id = state.saga_id.as_str();
        let (handed_id, value) = self.take_handed_off(id, value);
        let saga_id: Arc<str> = match self.sagas.get(id) {
            Some(v) => Arc::clone(&v.saga_id),
            None => handed_id.unwrap_or_else(|| id.into()),
        };
        let definition = self.definition(&state.definition);
        let prefix = definition.len() + 1;
        let correlation = if id.len() == prefix + state.correlation_id.len()
            && id.starts_with(&*definition)
            && id.as_bytes()[definition.len()] == b'/'
            && id.ends_with(state.correlation_id.as_str())
        {
            Correlation::InSagaId(u32::try_from(prefix).unwrap_or(u32::MAX))
        } else {
            Correlation::Own(state.correlation_id.as_str().into())
        };
        let viewed = Viewed {
            saga_id: Arc::clone(&saga_id),
            definition: Arc::clone(&definition),
            correlation,
            version: state.version,
            status: state.status,
            created_at: state.created_at.0,
            updated_at: state.updated_at.0,
            value,
        };
        let old = self.sagas.insert(saga_id, Arc::new(viewed));
        {
            let mut counts = lock(&self.counts);
            if let Some(old) = &old {
                Self::uncount(&mut counts, &old.definition, old.status);
            }
            counts.entry(definition).or_default()[slot(state.status)] += 1;
        }
        self.record(id.to_owned());
    }

    /// The definition name, kept once (for the view's sagas and the owned store's).
    pub(crate) fn definition(&self, name: &str) -> Arc<str> {
        Arc::clone(lock(&self.definitions).keep(name).1)
    }

    /// The definition name's number (the owned store names a saga's definition by it).
    pub(crate) fn definition_number(&self, name: &str) -> u32 {
        lock(&self.definitions).keep(name).0
    }

    /// The definition name numbered `n`.
    pub(crate) fn definition_named(&self, n: u32) -> Option<Arc<str>> {
        lock(&self.definitions).name(n).cloned()
    }

    /// The value the owning replica keeps for `saga_id` (after a commit, or restored), shared
    /// with the view: the view's own bytes when they are the same, else `value`, handed to the
    /// view to keep when it reads the same bytes from the changelog. A replica's owned sagas
    /// thus cost one copy of their value, not two. The saga id comes back shared the same way,
    /// for the owner's map key.
    pub fn share(&self, saga_id: &str, value: Vec<u8>) -> (Arc<str>, Arc<[u8]>) {
        let id = match self.sagas.get(saga_id) {
            Some(viewed) if *viewed.value == *value => {
                return (Arc::clone(&viewed.saga_id), Arc::clone(&viewed.value));
            }
            Some(viewed) => Arc::clone(&viewed.saga_id),
            None => saga_id.into(),
        };
        let value: Arc<[u8]> = value.into();
        self.handoff
            .values
            .insert(Arc::clone(&id), (Arc::clone(&value), Instant::now()));
        (id, value)
    }

    /// `value`, read from the changelog for `saga_id`: the owner's bytes (and saga id) when it
    /// handed the same ones over.
    fn take_handed_off(&self, saga_id: &str, value: Vec<u8>) -> (Option<Arc<str>>, Arc<[u8]>) {
        let handoff = &self.handoff;
        if handoff.since_sweep.fetch_add(1, Ordering::Relaxed) >= HANDOFF_SWEEP_EVERY {
            handoff.since_sweep.store(0, Ordering::Relaxed);
            handoff
                .values
                .retain(|_, (_, at)| at.elapsed() < HANDOFF_MAX_AGE);
        }
        match handoff
            .values
            .remove_if(saga_id, |_, (shared, _)| **shared == *value)
        {
            Some((id, (shared, _))) => (Some(id), shared),
            None => (None, value.into()),
        }
    }

    /// A saga's changelog value as the view keeps it.
    pub fn value_of(&self, saga_id: &str) -> Option<Arc<[u8]>> {
        self.sagas.get(saga_id).map(|v| Arc::clone(&v.value))
    }

    /// How many handed-off values wait for the view to read them (see [`Self::share`]).
    pub fn handed_off(&self) -> usize {
        self.handoff.values.len()
    }

    /// Forgets a saga (a changelog tombstone).
    pub fn remove(&self, saga_id: &str) {
        if let Some((_, old)) = self.sagas.remove(saga_id) {
            Self::uncount(&mut lock(&self.counts), &old.definition, old.status);
            self.record(saga_id.to_owned());
        }
    }

    fn uncount(
        counts: &mut BTreeMap<Arc<str>, [usize; ALL_STATUSES.len()]>,
        definition: &str,
        status: Status,
    ) {
        if let Some(c) = counts.get_mut(definition) {
            c[slot(status)] = c[slot(status)].saturating_sub(1);
            if c.iter().all(|n| *n == 0) {
                counts.remove(definition);
            }
        }
    }

    fn record(&self, saga_id: String) {
        let seq = {
            let mut feed = lock(&self.feed);
            feed.seq += 1;
            let seq = feed.seq;
            feed.recent.push_back((seq, saga_id));
            if feed.recent.len() > CHANGE_FEED_CAPACITY {
                feed.recent.pop_front();
            }
            seq
        };
        self.changed.send_replace(seq);
    }

    /// One saga.
    pub fn get(&self, saga_id: &str) -> Option<Arc<SagaState>> {
        let viewed = self.sagas.get(saga_id).map(|s| Arc::clone(&s))?;
        decoded(&viewed).map(Arc::new)
    }

    /// A page of the sagas matching `q`, newest first (then by saga id), after `q.before`.
    pub fn list(&self, q: &ListQuery, now_ms: u64) -> Page {
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).max(1);
        // The `limit` first sagas after the cursor: a max-heap whose top is the last of them.
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(limit + 1);
        let (mut total, mut after_cursor) = (0usize, 0usize);
        let before = q.before.as_ref();
        for s in &self.sagas {
            if !q.matches_summary(&s.filtered(), now_ms) {
                continue;
            }
            if let Some(step) = q.waiting_on.as_deref()
                && !decoded(s.value()).is_some_and(|st| waits_on(&st, step))
            {
                continue;
            }
            total += 1;
            let key = (Reverse(s.created_at), &*s.saga_id);
            if before.is_some_and(|c| key <= c.key()) {
                continue;
            }
            after_cursor += 1;
            if heap.len() == limit {
                if heap.peek().is_some_and(|top| key >= top.key()) {
                    continue;
                }
                heap.pop();
            }
            heap.push(Ranked(Arc::clone(s.value())));
        }
        let sagas: Vec<SagaSummary> = heap
            .into_sorted_vec()
            .iter()
            .map(|r| r.0.summary())
            .collect();
        let next = (after_cursor > sagas.len())
            .then(|| sagas.last().map(Cursor::after))
            .flatten();
        Page { sagas, total, next }
    }

    /// Number of sagas per status (every definition).
    pub fn counts(&self) -> BTreeMap<Status, usize> {
        let mut m = BTreeMap::new();
        for c in lock(&self.counts).values() {
            for (status, n) in ALL_STATUSES.iter().zip(c) {
                if *n > 0 {
                    *m.entry(*status).or_insert(0) += n;
                }
            }
        }
        m
    }

    /// Number of sagas per status, of each definition.
    pub fn counts_by_definition(&self) -> BTreeMap<String, BTreeMap<Status, usize>> {
        lock(&self.counts)
            .iter()
            .map(|(d, c)| {
                let m = ALL_STATUSES
                    .iter()
                    .zip(c)
                    .filter(|(_, n)| **n > 0)
                    .map(|(s, n)| (*s, *n))
                    .collect();
                (d.to_string(), m)
            })
            .collect()
    }

    /// The number of the latest change (0: none yet).
    pub fn seq(&self) -> u64 {
        lock(&self.feed).seq
    }

    /// Wakes when a saga changes; the value is the number of the latest change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The sagas that changed after change number `since`, each once — at most `max` of them,
    /// else [`Changes::reset`].
    pub fn changes_since(&self, since: u64, max: usize) -> Changes {
        let feed = lock(&self.feed);
        let seq = feed.seq;
        let reset = Changes {
            seq,
            saga_ids: Vec::new(),
            reset: true,
        };
        if since >= seq {
            return Changes {
                seq,
                saga_ids: Vec::new(),
                reset: false,
            };
        }
        // The ring must still hold change `since + 1`.
        if feed
            .recent
            .front()
            .is_none_or(|(first, _)| *first > since + 1)
        {
            return reset;
        }
        let mut seen = BTreeSet::new();
        let mut saga_ids = Vec::new();
        for (_, id) in feed.recent.iter().filter(|(n, _)| *n > since) {
            if seen.insert(id.as_str()) {
                if saga_ids.len() == max {
                    return reset;
                }
                saga_ids.push(id.clone());
            }
        }
        Changes {
            seq,
            saga_ids,
            reset: false,
        }
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
