//! The operator view: pages follow each other by cursor (every saga once, in order, none
//! shifted by a newcomer), counts follow states as they come and go, and the change feed says
//! what changed — or to reload when it cannot.

mod support;
use support::*;

use choreo_coordinator::view::{CHANGE_FEED_CAPACITY, Cursor, ListQuery};

fn saga(id: &str, created_at: u64, status: Status) -> SagaState {
    static ORDER: std::sync::OnceLock<Definition> = std::sync::OnceLock::new();
    let mut s = SagaState::new(ORDER.get_or_init(order_def), id, Millis(created_at));
    s.status = status;
    s
}

fn page_ids(view: &SagaView, q: &ListQuery) -> (Vec<String>, usize, Option<Cursor>) {
    let p = view.list(q, 1_000_000);
    (
        p.sagas.into_iter().map(|s| s.saga_id).collect(),
        p.total,
        p.next,
    )
}

#[test]
fn pages_follow_each_other_by_cursor_every_saga_once_newest_first() {
    let view = SagaView::new();
    // 250 sagas; creation times repeat (every 3 share one), so ties are broken by saga id.
    for i in 0..250u64 {
        view.upsert(saga(&format!("o-{i:03}"), 1_000 + i / 3, Status::Running));
    }
    let mut expected: Vec<(u64, String)> = (0..250u64)
        .map(|i| (1_000 + i / 3, format!("order/o-{i:03}")))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let mut q = ListQuery {
        limit: Some(40),
        ..ListQuery::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (ids, total, next) = page_ids(&view, &q);
        let want = if pages >= 2 { 251 } else { 250 };
        assert_eq!(total, want, "the total counts every page");
        assert!(ids.len() <= 40);
        seen.extend(ids);
        pages += 1;
        if pages == 2 {
            // A saga that arrives meanwhile is newer than the cursor: it shifts no page.
            view.upsert(saga("o-new", 9_999, Status::Running));
        }
        match next {
            Some(c) => q.before = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 7, "250 sagas in pages of 40");
    assert_eq!(seen, expected, "every saga once, in order, across pages");

    // The cursor reads back as written.
    let c = Cursor::parse("1700000000000:order/a:b").expect("cursor");
    assert_eq!(
        (c.created_at, c.saga_id.as_str()),
        (1_700_000_000_000, "order/a:b")
    );
    assert_eq!(c.to_string(), "1700000000000:order/a:b");
    assert!(Cursor::parse("yesterday").is_err());
    assert!(Cursor::parse("12:").is_err());
}

#[test]
fn filters_apply_before_the_page_is_cut() {
    let view = SagaView::new();
    for i in 0..30u64 {
        let status = if i % 3 == 0 {
            Status::NeedsOperator
        } else {
            Status::Running
        };
        view.upsert(saga(&format!("o-{i:02}"), 1_000 + i, status));
    }
    let mut v2 = saga("o-v2", 5_000, Status::NeedsOperator);
    v2.version = 2;
    view.upsert(v2);
    let q = ListQuery {
        status: Some(Status::NeedsOperator),
        version: Some(1),
        limit: Some(4),
        ..ListQuery::default()
    };
    let (ids, total, next) = page_ids(&view, &q);
    assert_eq!(total, 10, "needs_operator of v1 only");
    assert_eq!(
        ids,
        ["order/o-27", "order/o-24", "order/o-21", "order/o-18"]
    );
    assert!(next.is_some());
    let q = ListQuery {
        version: Some(2),
        ..ListQuery::default()
    };
    assert_eq!(page_ids(&view, &q).0, ["order/o-v2"]);
}

#[test]
fn counts_follow_states_as_they_come_and_go() {
    let view = SagaView::new();
    view.upsert(saga("a", 1, Status::Running));
    view.upsert(saga("b", 2, Status::Running));
    let mut r = saga("r", 3, Status::Running);
    r.saga_id = "refund/r".into();
    r.definition = "refund".into();
    view.upsert(r);
    assert_eq!(view.counts().get(&Status::Running), Some(&3));
    // A saga that moves is counted once, in its new status.
    view.upsert(saga("a", 1, Status::Compensating));
    view.upsert(saga("a", 1, Status::Compensated));
    assert_eq!(view.counts().get(&Status::Running), Some(&2));
    assert_eq!(view.counts().get(&Status::Compensating), None);
    assert_eq!(view.counts().get(&Status::Compensated), Some(&1));
    let by = view.counts_by_definition();
    assert_eq!(by["order"].get(&Status::Running), Some(&1));
    assert_eq!(by["refund"].get(&Status::Running), Some(&1));
    // A tombstone uncounts it; one for a saga never seen changes nothing.
    view.remove("order/a");
    view.remove("order/never");
    view.remove("refund/r");
    assert_eq!(view.counts().get(&Status::Compensated), None);
    assert!(!view.counts_by_definition().contains_key("refund"));
    let total: usize = view.counts().values().sum();
    assert_eq!(total, view.len(), "counts agree with the sagas held");
}

#[test]
fn the_change_feed_names_each_changed_saga_once_or_says_reload() {
    let view = SagaView::new();
    let start = view.seq();
    view.upsert(saga("a", 1, Status::Running));
    view.upsert(saga("b", 2, Status::Running));
    view.upsert(saga("a", 1, Status::Completed));
    view.remove("order/b");
    let c = view.changes_since(start, 10);
    assert!(!c.reset);
    assert_eq!(c.saga_ids, ["order/a", "order/b"]);
    assert_eq!(c.seq, start + 4);
    assert!(view.changes_since(c.seq, 10).saga_ids.is_empty());
    // More sagas than the reader takes at once: reload.
    assert!(view.changes_since(start, 1).reset);
    // Fallen behind the ring: reload.
    let behind = view.seq();
    for i in 0..=CHANGE_FEED_CAPACITY {
        view.upsert(saga(&format!("x{i}"), 3, Status::Running));
    }
    let c = view.changes_since(behind, usize::MAX);
    assert!(c.reset, "the ring no longer holds change {}", behind + 1);
    let recent = view.seq() - 3;
    let c = view.changes_since(recent, 10);
    assert!(!c.reset);
    assert_eq!(c.saga_ids.len(), 3);
}

#[tokio::test]
async fn readers_are_woken_by_a_change() {
    let view = SagaView::new();
    let mut rx = view.subscribe();
    view.upsert(saga("a", 1, Status::Running));
    rx.changed().await.expect("woken");
    assert_eq!(*rx.borrow(), view.seq());
}

/// The owning replica's value and the view's are one allocation, whichever of the two has it
/// first; a value the view has not read yet waits for it, and is matched by its bytes only.
#[test]
fn an_owned_saga_value_is_kept_once_by_the_owner_and_the_view() {
    use std::sync::Arc;
    let view = SagaView::new();
    let (first, second) = (saga("o-1", 1_000, Status::Running), {
        let mut s = saga("o-1", 1_000, Status::Running);
        s.updated_at = Millis(2_000);
        s
    });
    let (v1, v2) = (first.encode(), second.encode());
    assert_ne!(v1, v2);

    // The owner commits before the view reads the changelog.
    let (_, owned) = view.share("order/o-1", v1.clone());
    assert_eq!(view.handed_off(), 1);
    view.upsert_encoded(&first, v1.clone());
    assert!(
        Arc::ptr_eq(&owned, &view.value_of("order/o-1").expect("viewed")),
        "the view keeps the owner's bytes"
    );
    assert_eq!(view.handed_off(), 0, "taken by the view");

    // The view read it first (a restore): the owner takes the view's bytes.
    let (_, restored) = view.share("order/o-1", v1.clone());
    assert!(Arc::ptr_eq(&restored, &owned));
    assert_eq!(view.handed_off(), 0);

    // The owner is a change ahead: the older value the view reads is not the owner's.
    let (_, ahead) = view.share("order/o-1", v2.clone());
    view.upsert_encoded(&first, v1);
    assert!(!Arc::ptr_eq(
        &ahead,
        &view.value_of("order/o-1").expect("viewed")
    ));
    assert_eq!(view.handed_off(), 1, "still waiting for its bytes");
    view.upsert_encoded(&second, v2);
    assert!(Arc::ptr_eq(
        &ahead,
        &view.value_of("order/o-1").expect("viewed")
    ));
    assert_eq!(view.handed_off(), 0);
}

/// The view keeps a correlation id inside the saga id when the saga id is
/// `<definition>/<correlation id>`, and on its own otherwise: listings show and search both.
#[test]
fn listings_show_and_search_the_correlation_id_whatever_the_saga_id() {
    let view = SagaView::new();
    view.upsert(saga("o-17", 1_000, Status::Running));
    let mut other = saga("o-18", 1_001, Status::Running);
    other.saga_id = "imported-18".into();
    view.upsert(other);
    let all = view.list(&ListQuery::default(), 1_000_000);
    let shown: Vec<(String, String, String)> = all
        .sagas
        .iter()
        .map(|s| {
            (
                s.saga_id.clone(),
                s.definition.clone(),
                s.correlation_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("imported-18".into(), "order".into(), "o-18".into()),
            ("order/o-17".into(), "order".into(), "o-17".into()),
        ]
    );
    for (text, want) in [("o-18", "imported-18"), ("o-17", "order/o-17")] {
        let q = ListQuery {
            search: Some(text.into()),
            ..ListQuery::default()
        };
        let (ids, total, _) = page_ids(&view, &q);
        assert_eq!((ids, total), (vec![want.to_owned()], 1), "search {text}");
    }
}
