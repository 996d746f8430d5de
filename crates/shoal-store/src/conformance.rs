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
            one_key_reads_its_version_at_any_revision,
            range_rejects_compacted_and_future_revisions,
            watch_replays_history_with_previous_values,
            watch_delivers_live_changes_in_order,
            watch_only_sees_its_prefix,
            watch_from_compacted_revision_fails,
            compaction_keeps_latest_versions,
            concurrent_writers_on_one_key_exactly_one_wins,
            watch_sees_every_revision_without_gaps_under_concurrent_writes,
            watch_progress_reports_writes_outside_the_prefix,
            watch_resumes_from_any_revision,
            watches_keep_running_across_compaction,
            concurrent_random_history_is_linearizable,
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
    // An empty store starts at 0 (etcd at 1): only differences are specified.
    let base = s.current_revision().await.unwrap();
    let r1 = put(&s, "/a", "1").await;
    let r2 = put(&s, "/b", "1").await;
    let r3 = put(&s, "/a", "2").await;
    assert_eq!((r1.0 - base.0, r2.0 - base.0, r3.0 - base.0), (1, 2, 3));
    assert_eq!(s.current_revision().await.unwrap(), r3);
    let multi = s
        .txn(Txn::new().put("/c", "x").put("/d", "y"))
        .await
        .unwrap();
    assert_eq!(
        multi.revision,
        r3.next(),
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

/// A key read on its own (the fast path of a hot key with a long history) gives the version
/// in force at the revision asked, nothing once deleted, and the version before the deletion
/// at an older revision.
pub async fn one_key_reads_its_version_at_any_revision(s: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..50 {
        revs.push(put(&s, "/one/k", &i.to_string()).await);
    }
    put(&s, "/one/k2", "neighbour").await;
    let now = s.range(RangeRequest::key("/one/k")).await.unwrap();
    assert_eq!(now.kvs.len(), 1);
    assert_eq!(now.kvs[0].value.as_ref(), b"49");
    assert_eq!(now.kvs[0].mod_revision, revs[49]);
    assert_eq!(now.count, 1);
    let then = s
        .range(RangeRequest::key("/one/k").at(revs[10]))
        .await
        .unwrap();
    assert_eq!(then.kvs[0].value.as_ref(), b"10");
    assert_eq!(then.kvs[0].version, 11);
    s.txn(Txn::new().delete("/one/k")).await.unwrap();
    let gone = s.range(RangeRequest::key("/one/k")).await.unwrap();
    assert!(gone.kvs.is_empty());
    assert_eq!(gone.count, 0);
    let before = s
        .range(RangeRequest::key("/one/k").at(revs[49]))
        .await
        .unwrap();
    assert_eq!(before.kvs[0].value.as_ref(), b"49");
    assert!(
        s.range(RangeRequest::key("/one/none"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
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

pub async fn watch_progress_reports_writes_outside_the_prefix(s: Arc<dyn Store>) {
    let mut w = s.watch("/quiet/", Revision(0)).await.unwrap();
    let r = put(&s, "/loud/x", "v").await;
    let requester = w.progress_requester();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        requester.request();
        match tokio::time::timeout(Duration::from_millis(200), w.next_item()).await {
            Ok(Some(Ok(crate::WatchItem::Progress(p)))) if p >= r => break,
            Ok(Some(Ok(crate::WatchItem::Progress(_)))) | Err(_) => {}
            other => panic!("expected progress, got {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress at or past {r} within 10s"
        );
    }
}

pub async fn watch_resumes_from_any_revision(s: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..12 {
        let key = format!("/r/{}", i % 3);
        let r = if i % 4 == 3 {
            s.txn(Txn::new().delete(key)).await.unwrap().revision
        } else {
            put(&s, &key, &i.to_string()).await
        };
        revs.push(r);
    }
    revs.dedup();
    for (i, from) in revs.iter().enumerate() {
        let mut w = s.watch("/r/", *from).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < revs.len() - i {
            for e in next_events(&mut w).await {
                seen.push(e.kv.mod_revision);
            }
        }
        assert_eq!(seen, revs[i..], "resumed from {from}");
    }
}

pub async fn watches_keep_running_across_compaction(s: Arc<dyn Store>) {
    let first = put(&s, "/x/a", "0").await;
    let mut early = s.watch("/x/", first).await.unwrap();
    // Running: it has replayed its history and follows live changes.
    let mut seen: Vec<Revision> = next_events(&mut early)
        .await
        .iter()
        .map(|e| e.kv.mod_revision)
        .collect();
    let mut expected = vec![first];
    for i in 1..6 {
        expected.push(put(&s, "/x/a", &i.to_string()).await);
    }
    s.compact(expected[3]).await.unwrap();
    for i in 6..10 {
        expected.push(put(&s, "/x/b", &i.to_string()).await);
    }
    while seen.len() < expected.len() {
        for e in next_events(&mut early).await {
            seen.push(e.kv.mod_revision);
        }
    }
    assert_eq!(
        seen, expected,
        "a watch that was running keeps every event across a compaction"
    );
    let err = match s.watch("/x/", expected[1]).await {
        Err(e) => e,
        Ok(mut w) => match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("expected Compacted, got {other:?}"),
        },
    };
    assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");
    let mut late = s.watch("/x/", expected[4]).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < expected.len() - 4 {
        for e in next_events(&mut late).await {
            seen.push(e.kv.mod_revision);
        }
    }
    assert_eq!(seen, expected[4..]);
}

/// A small deterministic generator, so a failing history can be replayed by its seed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug, Clone)]
enum HOp {
    Put {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        expect: Revision,
        value: String,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

impl HOp {
    fn key(&self) -> &str {
        match self {
            HOp::Put { key, .. }
            | HOp::Cas { key, .. }
            | HOp::Delete { key }
            | HOp::Get { key } => key,
        }
    }
}

/// What an operation observed: a write at `revision` (with the key's previous state) or a
/// read of the key at `revision`.
#[derive(Debug, Clone)]
enum Outcome {
    Wrote { prev: Option<(String, Revision)> },
    Read { kv: Option<(String, Revision)> },
}

#[derive(Debug, Clone)]
struct Record {
    op: HOp,
    invoked: std::time::Instant,
    completed: std::time::Instant,
    revision: Revision,
    outcome: Outcome,
}

fn observed(kv: Option<&crate::KeyValue>) -> Option<(String, Revision)> {
    kv.map(|k| {
        (
            String::from_utf8_lossy(&k.value).into_owned(),
            k.mod_revision,
        )
    })
}

async fn run_op(s: &Arc<dyn Store>, op: &HOp) -> (Revision, Outcome) {
    match op {
        HOp::Put { key, value } => {
            let r = s
                .txn(Txn::new().put(key.as_str(), value.clone()))
                .await
                .unwrap();
            (
                r.revision,
                Outcome::Wrote {
                    prev: observed(r.prev[0].as_ref()),
                },
            )
        }
        HOp::Cas { key, expect, value } => {
            let r = s
                .txn(
                    Txn::new()
                        .when(Compare::mod_revision(key.as_str(), *expect))
                        .put(key.as_str(), value.clone())
                        .or_get(key.as_str()),
                )
                .await
                .unwrap();
            if r.succeeded {
                (
                    r.revision,
                    Outcome::Wrote {
                        prev: observed(r.prev[0].as_ref()),
                    },
                )
            } else {
                (
                    r.revision,
                    Outcome::Read {
                        kv: observed(r.current[0].as_ref()),
                    },
                )
            }
        }
        HOp::Delete { key } => {
            let r = s.txn(Txn::new().delete(key.as_str())).await.unwrap();
            match observed(r.prev[0].as_ref()) {
                Some(prev) => (r.revision, Outcome::Wrote { prev: Some(prev) }),
                // Deleting nothing changes nothing: it read the key's absence.
                None => (r.revision, Outcome::Read { kv: None }),
            }
        }
        HOp::Get { key } => {
            let r = s.range(RangeRequest::key(key.as_str())).await.unwrap();
            (
                r.revision,
                Outcome::Read {
                    kv: observed(r.kvs.first()),
                },
            )
        }
    }
}

/// Checks a concurrent history against a sequential model of the store, using the store's
/// revisions as the linearization order: every write has its own revision and the writes,
/// replayed in that order, explain what each one saw; every read equals the model at its
/// revision; and no operation is ordered before one that had completed before it began.
fn check_linearizable(base: Revision, history: &[Record]) -> Result<(), String> {
    use std::collections::BTreeMap;
    let mut writes: Vec<&Record> = history
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Wrote { .. }))
        .collect();
    writes.sort_by_key(|r| r.revision);
    for (i, w) in writes.iter().enumerate() {
        let want = Revision(base.0 + 1 + i as i64);
        if w.revision != want {
            return Err(format!(
                "writes must take consecutive revisions: expected {want}, found {:?} at {}",
                w.op, w.revision
            ));
        }
    }
    // Model state after each revision: key -> (value, mod_revision).
    let mut state: BTreeMap<String, (String, Revision)> = BTreeMap::new();
    let mut at: BTreeMap<Revision, BTreeMap<String, (String, Revision)>> = BTreeMap::new();
    at.insert(base, state.clone());
    for w in &writes {
        let key = w.op.key().to_owned();
        let before = state.get(&key).cloned();
        let Outcome::Wrote { prev } = &w.outcome else {
            unreachable!("filtered to writes")
        };
        if prev != &before {
            return Err(format!(
                "{:?} at {} saw previous {prev:?}, the model had {before:?}",
                w.op, w.revision
            ));
        }
        match &w.op {
            HOp::Put { value, .. } => {
                state.insert(key, (value.clone(), w.revision));
            }
            HOp::Cas { expect, value, .. } => {
                let current = before.as_ref().map_or(Revision::ZERO, |b| b.1);
                if current != *expect {
                    return Err(format!(
                        "{:?} succeeded at {} but the key's mod_revision was {current}",
                        w.op, w.revision
                    ));
                }
                state.insert(key, (value.clone(), w.revision));
            }
            HOp::Delete { .. } => {
                state.remove(&key);
            }
            HOp::Get { .. } => unreachable!("reads never write"),
        }
        at.insert(w.revision, state.clone());
    }
    for r in history {
        let Outcome::Read { kv } = &r.outcome else {
            continue;
        };
        let Some((_, model)) = at.range(..=r.revision).next_back() else {
            return Err(format!(
                "{:?} read at {} before the test began",
                r.op, r.revision
            ));
        };
        let want = model.get(r.op.key()).cloned();
        if kv != &want {
            return Err(format!(
                "{:?} at revision {} read {kv:?}, the model had {want:?}",
                r.op, r.revision
            ));
        }
        if let HOp::Cas { expect, .. } = &r.op
            && want.as_ref().map_or(Revision::ZERO, |w| w.1) == *expect
        {
            return Err(format!(
                "{:?} failed at {} although its compare held",
                r.op, r.revision
            ));
        }
    }
    // Real time: an operation that began after another completed is ordered after it.
    let mut by_completion: Vec<&Record> = history.iter().collect();
    by_completion.sort_by_key(|r| r.completed);
    let mut by_invocation: Vec<&Record> = history.iter().collect();
    by_invocation.sort_by_key(|r| r.invoked);
    let (mut i, mut max_before) = (0, Revision::ZERO);
    for b in by_invocation {
        while i < by_completion.len() && by_completion[i].completed < b.invoked {
            max_before = max_before.max(by_completion[i].revision);
            i += 1;
        }
        let is_write = matches!(b.outcome, Outcome::Wrote { .. });
        if b.revision < max_before || (is_write && b.revision == max_before) {
            return Err(format!(
                "{:?} at {} is ordered before an operation at {max_before} that completed before it began",
                b.op, b.revision
            ));
        }
    }
    Ok(())
}

pub async fn concurrent_random_history_is_linearizable(s: Arc<dyn Store>) {
    const CLIENTS: u64 = 8;
    const OPS: u64 = 60;
    let base = s.current_revision().await.unwrap();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
                let mut seen: std::collections::HashMap<String, Revision> = Default::default();
                let mut out = Vec::new();
                for i in 0..OPS {
                    let key = format!("/lin/{}", rng.below(3));
                    let value = format!("{c}-{i}");
                    let op = match rng.below(10) {
                        0..=2 => HOp::Get { key },
                        3..=4 => HOp::Put { key, value },
                        5..=8 => HOp::Cas {
                            expect: seen.get(&key).copied().unwrap_or_default(),
                            key,
                            value,
                        },
                        _ => HOp::Delete { key },
                    };
                    let invoked = std::time::Instant::now();
                    let (revision, outcome) = run_op(&s, &op).await;
                    let completed = std::time::Instant::now();
                    let last = match &outcome {
                        Outcome::Wrote { .. } if matches!(op, HOp::Delete { .. }) => Revision::ZERO,
                        Outcome::Wrote { .. } => revision,
                        Outcome::Read { kv } => kv.as_ref().map_or(Revision::ZERO, |k| k.1),
                    };
                    seen.insert(op.key().to_owned(), last);
                    out.push(Record {
                        op,
                        invoked,
                        completed,
                        revision,
                        outcome,
                    });
                }
                out
            })
        })
        .collect();
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    if let Err(e) = check_linearizable(base, &history) {
        panic!("not linearizable: {e}");
    }
    // The store's final state is the model's.
    let now = s.range(RangeRequest::prefix("/lin/")).await.unwrap();
    let writes = history
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Wrote { .. }))
        .count();
    assert_eq!(now.revision.0 - base.0, writes as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn rec(op: HOp, t: (u64, u64), revision: i64, outcome: Outcome) -> Record {
        let zero = Instant::now();
        Record {
            op,
            invoked: zero + Duration::from_millis(t.0),
            completed: zero + Duration::from_millis(t.1),
            revision: Revision(revision),
            outcome,
        }
    }

    fn put_a() -> Record {
        let op = HOp::Put {
            key: "a".into(),
            value: "1".into(),
        };
        rec(op, (0, 10), 1, Outcome::Wrote { prev: None })
    }

    #[test]
    fn the_checker_accepts_a_sequential_history() {
        let read = rec(
            HOp::Get { key: "a".into() },
            (20, 30),
            1,
            Outcome::Read {
                kv: Some(("1".into(), Revision(1))),
            },
        );
        assert_eq!(check_linearizable(Revision(0), &[put_a(), read]), Ok(()));
    }

    #[test]
    fn the_checker_catches_stale_reads_lost_writes_and_bad_compares() {
        // A read that began after the put completed but is ordered before it.
        let stale = rec(
            HOp::Get { key: "a".into() },
            (20, 30),
            0,
            Outcome::Read { kv: None },
        );
        assert!(check_linearizable(Revision(0), &[put_a(), stale]).is_err());
        // A read at the put's revision that does not see it.
        let lost = rec(
            HOp::Get { key: "a".into() },
            (20, 30),
            1,
            Outcome::Read { kv: None },
        );
        assert!(check_linearizable(Revision(0), &[put_a(), lost]).is_err());
        // A compare-and-swap that succeeded although the key had moved on.
        let cas = rec(
            HOp::Cas {
                key: "a".into(),
                expect: Revision(0),
                value: "2".into(),
            },
            (20, 30),
            2,
            Outcome::Wrote {
                prev: Some(("1".into(), Revision(1))),
            },
        );
        assert!(check_linearizable(Revision(0), &[put_a(), cas]).is_err());
        // Two writes on one revision.
        let mut twin = put_a();
        twin.op = HOp::Put {
            key: "b".into(),
            value: "1".into(),
        };
        assert!(check_linearizable(Revision(0), &[put_a(), twin]).is_err());
    }
}
