//! Live updates: `GET /api/sagas/live?<the list's filters>` answers server-sent events.
//!
//! Every message is one `sagas` event whose data is a [`LiveMessage`]: the counts, and the
//! sagas that changed since the previous message — those the filters match now (`changed`, as
//! summaries) and those they no longer match or that went (`left`, as ids). The first message
//! goes at once (the counts; nothing changed yet); then a message goes when something changed,
//! at most one per [`LIVE_INTERVAL`], so a busy cluster costs each reader one message a second.
//!
//! Bounds: a message names at most [`MAX_CHANGES_PER_MESSAGE`] sagas; when more changed, or
//! the reader fell behind the view's ring of changes, the message says `reset` and the reader
//! reloads its page. At most [`MAX_LIVE_STREAMS`] streams are open at once (503 beyond). A
//! comment line every [`KEEP_ALIVE`] keeps proxies from closing a quiet stream.
//!
//! Authentication is the rest of `/api`'s: `Authorization: Bearer <token>`. The console reads
//! the stream with `fetch` (whose requests carry headers) rather than `EventSource` (whose
//! requests cannot): so the token never travels in a URL, where logs, history and proxies keep
//! it, and no second kind of credential (a short-lived query token) has to be issued, guarded
//! and expired. Never a cookie: a cookie would ride along with any cross-site request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sagas::ListParams;
use super::{ApiError, ApiState, now_ms, status_counts};
use crate::api_auth::Role;
use crate::view::{ListQuery, SagaSummary, SagaView};

/// At most one message per this long on each stream.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// The most sagas one message names; beyond, it says `reset`.
pub const MAX_CHANGES_PER_MESSAGE: usize = 500;
/// The most live streams open at once (each costs a filter pass over the changes once a
/// second).
pub const MAX_LIVE_STREAMS: usize = 256;
/// How often a quiet stream sends a comment line.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// The server's shutdown: open streams end when it is cancelled, so that a graceful shutdown
/// does not wait for them.
#[derive(Debug, Clone)]
pub struct Shutdown(pub CancellationToken);

/// One `sagas` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveMessage {
    /// The number of the view's latest change included.
    pub seq: u64,
    /// Sagas per status (every definition).
    pub counts: std::collections::BTreeMap<String, usize>,
    /// Sagas per status, per definition.
    pub counts_by_definition:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
    /// Sagas that changed and match the filters, newest first.
    pub changed: Vec<SagaSummary>,
    /// Sagas that changed and no longer match the filters, or were forgotten.
    pub left: Vec<String>,
    /// Too much changed to list: reload the page.
    pub reset: bool,
}

impl LiveMessage {
    fn new(view: &SagaView, query: &ListQuery, since: u64) -> Self {
        let changes = view.changes_since(since, MAX_CHANGES_PER_MESSAGE);
        let now = now_ms();
        let (mut changed, mut left) = (Vec::new(), Vec::new());
        for id in &changes.saga_ids {
            match view.get(id) {
                Some(s) if query.matches(&s, now) => changed.push(SagaSummary::from(s.as_ref())),
                _ => left.push(id.clone()),
            }
        }
        changed.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.saga_id.cmp(&b.saga_id))
        });
        Self {
            seq: changes.seq,
            counts: status_counts(&view.counts()),
            counts_by_definition: view
                .counts_by_definition()
                .iter()
                .map(|(d, c)| (d.clone(), status_counts(c)))
                .collect(),
            changed,
            left,
            reset: changes.reset,
        }
    }

    fn event(&self) -> Event {
        Event::default()
            .event("sagas")
            .json_data(self)
            .unwrap_or_else(|_| Event::default().event("sagas").data("{\"reset\":true}"))
    }
}

/// Counts an open stream; uncounts it when the stream is dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let mut n = OPEN_STREAMS.load(Ordering::Acquire);
        loop {
            if n >= MAX_LIVE_STREAMS {
                return None;
            }
            match OPEN_STREAMS.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Slot),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

struct LiveStream {
    view: Arc<SagaView>,
    query: ListQuery,
    changes: watch::Receiver<u64>,
    seq: u64,
    last_sent: Option<Instant>,
    stop: CancellationToken,
    _slot: Slot,
}

fn messages(state: LiveStream) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures::stream::unfold(state, |mut st| async move {
        if let Some(at) = st.last_sent {
            // Wait for a change, then for the interval to pass since the last message.
            tokio::select! {
                () = st.stop.cancelled() => return None,
                r = st.changes.changed() => r.ok()?,
            }
            tokio::select! {
                () = st.stop.cancelled() => return None,
                () = tokio::time::sleep_until(at + LIVE_INTERVAL) => {}
            }
        } else {
            st.changes.borrow_and_update();
        }
        let message = LiveMessage::new(&st.view, &st.query, st.seq);
        st.seq = message.seq;
        st.last_sent = Some(Instant::now());
        Some((Ok(message.event()), st))
    })
}

pub(super) async fn live(
    State(s): State<ApiState>,
    shutdown: Option<Extension<Shutdown>>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    s.auth.check(&headers, Role::Viewer)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = params.into_query()?;
    let slot = Slot::take().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "{MAX_LIVE_STREAMS} live streams are open, the most this replica serves: try another replica or later"
        ))
    })?;
    let stop = shutdown.map_or_else(CancellationToken::new, |Extension(Shutdown(t))| {
        t.child_token()
    });
    let changes = s.view.subscribe();
    let state = LiveStream {
        seq: s.view.seq(),
        view: Arc::clone(&s.view),
        query,
        changes,
        last_sent: None,
        stop,
        _slot: slot,
    };
    Ok(Sse::new(messages(state)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
