//! The one conformance suite every [`Store`] backend must pass.
//!
//! Each case is an `async fn(Arc<dyn Store>)` taking a fresh, empty store.
//! [`store_conformance!`](crate::store_conformance) expands to one named `#[tokio::test]` per
//! case for a backend, given an expression that makes a [`Fixture`].

use crate::{Compare, EventKind, RangeRequest, Revision, Store, StoreError, Txn};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// A fresh store plus whatever must live as long as it (a temporary directory, a process).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send>,
}

/// Expands to one `#[tokio::test]` per conformance case for the backend `$make`, an async
/// expression evaluating to a [`Fixture`].
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            put_then_get_returns_revisions,
            revision_is_global_and_grows_by_one_per_write,
            version_counts_writes_and_restarts_after_delete,
            stale_mod_revision_fails_and_returns_current,
            create_if_absent_fails_when_present,
            delete_returns_previous_value,
            noop_delete_takes_no_revision,
            range_prefix_honours_limit_and_reports_more,
            range_reads_historic_revision,
            range_rejects_compacted_and_future_revisions,
            watch_replays_history_with_previous_values,
            watch_delivers_live_changes_in_order,
            watch_only_sees_its_prefix,
            watch_from_compacted_revision_fails,
            compaction_keeps_latest_versions,
            concurrent_writers_on_one_key_exactly_one_wins,
            watch_sees_every_revision_without_gaps_under_concurrent_writes,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture: $crate::conformance::Fixture = $make.await;
                $crate::conformance::$case(fixture.store.clone()).await;
                drop(fixture);
            }
        )*
    };
}

async fn put(s: &Arc<dyn Store>, key: &str, value: &str) -> Revision {
    let r = s
        .txn(Txn::new().put(key, value.to_owned()))
        .await
        .expect("put");
    assert!(r.succeeded);
    r.revision
}

async fn get(s: &Arc<dyn Store>, key: &str) -> Option<crate::KeyValue> {
    s.range(RangeRequest::key(key))
        .await
        .expect("get")
        .kvs
        .into_iter()
        .next()
}

async fn next_events(w: &mut crate::WatchStream) -> Vec<crate::Event> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10s")
        .expect("watch open")
        .expect("watch ok")
}

pub async fn put_then_get_returns_revisions(s: Arc<dyn Store>) {
    let rev = put(&s, "/a", "1").await;
    let kv = get(&s, "/a").await.expect("present");
    assert_eq!(kv.value.as_ref(), b"1");
    assert_eq!(kv.create_revision, rev);
    assert_eq!(kv.mod_revision, rev);
    assert_eq!(kv.version, 1);
    assert!(get(&s, "/missing").await.is_none());
}

pub async fn revision_is_global_and_grows_by_one_per_write(s: Arc<dyn Store>) {
    assert_eq!(s.current_revision().await.unwrap(), Revision(0));
    let r1 = put(&s, "/a", "1").await;
    let r2 = put(&s, "/b", "1").await;
    let r3 = put(&s, "/a", "2").await;
    assert_eq!((r1.0, r2.0, r3.0), (1, 2, 3));
    assert_eq!(s.current_revision().await.unwrap(), Revision(3));
    let multi = s
        .txn(Txn::new().put("/c", "x").put("/d", "y"))
        .await
        .unwrap();
    assert_eq!(
        multi.revision,
        Revision(4),
        "one transaction takes one revision"
    );
}

pub async fn version_counts_writes_and_restarts_after_delete(s: Arc<dyn Store>) {
    let c = put(&s, "/k", "1").await;
    put(&s, "/k", "2").await;
    let kv = get(&s, "/k").await.unwrap();
    assert_eq!((kv.version, kv.create_revision), (2, c));
    s.txn(Txn::new().delete("/k")).await.unwrap();
    let c2 = put(&s, "/k", "3").await;
    let kv = get(&s, "/k").await.unwrap();
    assert_eq!((kv.version, kv.create_revision), (1, c2));
}

pub async fn stale_mod_revision_fails_and_returns_current(s: Arc<dyn Store>) {
    let r1 = put(&s, "/k", "1").await;
    let r2 = put(&s, "/k", "2").await;
    let res = s
        .txn(
            Txn::new()
                .when(Compare::mod_revision("/k", r1))
                .put("/k", "stale")
                .or_get("/k"),
        )
        .await
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.current[0].as_ref().unwrap().mod_revision, r2);
    assert_eq!(res.current[0].as_ref().unwrap().value.as_ref(), b"2");
    let ok = s
        .txn(
            Txn::new()
                .when(Compare::mod_revision("/k", r2))
                .put("/k", "3"),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.prev[0].as_ref().unwrap().value.as_ref(), b"2");
}

pub async fn create_if_absent_fails_when_present(s: Arc<dyn Store>) {
    let first = s
        .txn(Txn::new().when(Compare::absent("/k")).put("/k", "1"))
        .await
        .unwrap();
    assert!(first.succeeded);
    let second = s
        .txn(
            Txn::new()
                .when(Compare::absent("/k"))
                .put("/k", "2")
                .or_get("/k"),
        )
        .await
        .unwrap();
    assert!(!second.succeeded);
    assert_eq!(get(&s, "/k").await.unwrap().value.as_ref(), b"1");
}

pub async fn delete_returns_previous_value(s: Arc<dyn Store>) {
    put(&s, "/k", "v").await;
    let res = s.txn(Txn::new().delete("/k")).await.unwrap();
    assert!(res.succeeded);
    assert_eq!(res.prev[0].as_ref().unwrap().value.as_ref(), b"v");
    assert!(get(&s, "/k").await.is_none());
}

pub async fn noop_delete_takes_no_revision(s: Arc<dyn Store>) {
    let r = put(&s, "/k", "v").await;
    let res = s.txn(Txn::new().delete("/absent")).await.unwrap();
    assert!(res.succeeded);
    assert_eq!(res.revision, r);
    assert_eq!(s.current_revision().await.unwrap(), r);
}

pub async fn range_prefix_honours_limit_and_reports_more(s: Arc<dyn Store>) {
    for k in ["/p/a", "/p/b", "/p/c", "/q/a", "/pz"] {
        put(&s, k, "v").await;
    }
    let all = s.range(RangeRequest::prefix("/p/")).await.unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/b", "/p/c"]);
    assert!(!all.more);
    assert_eq!(all.count, 3);
    let page = s.range(RangeRequest::prefix("/p/").limit(2)).await.unwrap();
    assert_eq!(page.kvs.len(), 2);
    assert!(page.more);
    assert_eq!(page.count, 3);
    let mut rest = RangeRequest::prefix("/p/").at(page.revision);
    rest.start = format!("{}\0", page.kvs[1].key);
    let rest = s.range(rest).await.unwrap();
    assert_eq!(rest.kvs.len(), 1);
    assert_eq!(rest.kvs[0].key, "/p/c");
}

pub async fn range_reads_historic_revision(s: Arc<dyn Store>) {
    let r1 = put(&s, "/h/a", "1").await;
    put(&s, "/h/a", "2").await;
    put(&s, "/h/b", "1").await;
    s.txn(Txn::new().delete("/h/a")).await.unwrap();
    let old = s.range(RangeRequest::prefix("/h/").at(r1)).await.unwrap();
    assert_eq!(old.kvs.len(), 1);
    assert_eq!(old.kvs[0].value.as_ref(), b"1");
    assert_eq!(old.revision, r1);
    let now = s.range(RangeRequest::prefix("/h/")).await.unwrap();
    assert_eq!(now.kvs.len(), 1);
    assert_eq!(now.kvs[0].key, "/h/b");
}

pub async fn range_rejects_compacted_and_future_revisions(s: Arc<dyn Store>) {
    let r1 = put(&s, "/k", "1").await;
    let r2 = put(&s, "/k", "2").await;
    put(&s, "/k", "3").await;
    s.compact(r2).await.unwrap();
    let err = s.range(RangeRequest::key("/k").at(r1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");
    let err = s
        .range(RangeRequest::key("/k").at(Revision(99)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err:?}");
    assert_eq!(s.compacted_revision().await.unwrap(), r2);
}

pub async fn watch_replays_history_with_previous_values(s: Arc<dyn Store>) {
    let r1 = put(&s, "/w/a", "1").await;
    put(&s, "/w/a", "2").await;
    s.txn(Txn::new().delete("/w/a")).await.unwrap();
    let mut w = s.watch("/w/", r1).await.unwrap();
    let e1 = next_events(&mut w).await;
    assert_eq!((e1[0].kind, e1[0].kv.mod_revision), (EventKind::Put, r1));
    assert!(e1[0].prev_kv.is_none());
    let e2 = next_events(&mut w).await;
    assert_eq!(e2[0].prev_kv.as_ref().unwrap().value.as_ref(), b"1");
    let e3 = next_events(&mut w).await;
    assert_eq!(e3[0].kind, EventKind::Delete);
    assert_eq!(e3[0].prev_kv.as_ref().unwrap().value.as_ref(), b"2");
}

pub async fn watch_delivers_live_changes_in_order(s: Arc<dyn Store>) {
    put(&s, "/w/before", "x").await;
    let mut w = s.watch("/w/", Revision(0)).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        expected.push(put(&s, &format!("/w/{i}"), "v").await);
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        for e in next_events(&mut w).await {
            seen.push(e.kv.mod_revision);
        }
    }
    assert_eq!(
        seen, expected,
        "no history before the watch, every change after it, in order"
    );
}

pub async fn watch_only_sees_its_prefix(s: Arc<dyn Store>) {
    let mut w = s.watch("/a/", Revision(0)).await.unwrap();
    put(&s, "/b/x", "no").await;
    let r = put(&s, "/a/x", "yes").await;
    let ev = next_events(&mut w).await;
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].kv.key.as_str(), ev[0].kv.mod_revision), ("/a/x", r));
}

pub async fn watch_from_compacted_revision_fails(s: Arc<dyn Store>) {
    let r1 = put(&s, "/k", "1").await;
    let r2 = put(&s, "/k", "2").await;
    s.compact(r2).await.unwrap();
    let result: Result<(), StoreError> = match s.watch("/", r1).await {
        Err(e) => Err(e),
        Ok(mut w) => match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Err(e))) => Err(e),
            other => panic!("expected an error, got {other:?}"),
        },
    };
    assert!(
        matches!(result, Err(StoreError::Compacted { .. })),
        "{result:?}"
    );
    // From just after the compaction the watch works.
    let mut w = s.watch("/", r2.next()).await.unwrap();
    let r3 = put(&s, "/k", "3").await;
    assert_eq!(next_events(&mut w).await[0].kv.mod_revision, r3);
}

pub async fn compaction_keeps_latest_versions(s: Arc<dyn Store>) {
    put(&s, "/c/a", "1").await;
    put(&s, "/c/a", "2").await;
    put(&s, "/c/b", "1").await;
    s.txn(Txn::new().delete("/c/b")).await.unwrap();
    let r = put(&s, "/c/c", "1").await;
    s.compact(r).await.unwrap();
    let now = s.range(RangeRequest::prefix("/c/")).await.unwrap();
    let got: Vec<_> = now
        .kvs
        .iter()
        .map(|k| (k.key.as_str(), k.value.as_ref(), k.version))
        .collect();
    assert_eq!(
        got,
        [("/c/a", b"2".as_ref(), 2), ("/c/c", b"1".as_ref(), 1)]
    );
    let at = s.range(RangeRequest::prefix("/c/").at(r)).await.unwrap();
    assert_eq!(at.kvs.len(), 2);
}

pub async fn concurrent_writers_on_one_key_exactly_one_wins(s: Arc<dyn Store>) {
    let mut rev = put(&s, "/race", "0").await;
    for round in 0..20 {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.txn(
                    Txn::new()
                        .when(Compare::mod_revision("/race", rev))
                        .put("/race", format!("{round}-{w}")),
                )
                .await
                .unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            let r = t.await.unwrap();
            if r.succeeded {
                winners += 1;
                rev = r.revision;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

pub async fn watch_sees_every_revision_without_gaps_under_concurrent_writes(s: Arc<dyn Store>) {
    let start = s.current_revision().await.unwrap().next();
    let mut w = s.watch("/g/", start).await.unwrap();
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                for j in 0..100 {
                    s.txn(Txn::new().put(format!("/g/{i}/{}", j % 7), "v"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.await.unwrap();
    }
    let end = s.current_revision().await.unwrap();
    let mut next = start;
    while next <= end {
        for e in next_events(&mut w).await {
            assert_eq!(e.kv.mod_revision, next, "gap-free, in order, no duplicates");
            next = next.next();
        }
    }
}
