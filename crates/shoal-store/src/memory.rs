//! An in-memory backend for unit tests: the same MVCC rules as the embedded store, no disk.

use crate::mvcc::{self, Record, WriteTables};
use crate::watch::{History, WatchHub};
use crate::{
    Event, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Tables {
    revision: Revision,
    compacted: Revision,
    /// `(key, revision) -> record`, the key's history.
    kv: BTreeMap<(String, Revision), Record>,
    /// `revision -> keys written`.
    log: BTreeMap<Revision, Vec<String>>,
}

impl WriteTables for Tables {
    fn latest(&mut self, key: &str) -> Result<Option<(Revision, Record)>, StoreError> {
        Ok(latest_at(&self.kv, key, Revision(i64::MAX)))
    }
    fn insert(&mut self, key: &str, revision: Revision, record: &Record) -> Result<(), StoreError> {
        self.kv.insert((key.to_owned(), revision), record.clone());
        Ok(())
    }
    fn log(&mut self, revision: Revision, keys: &[String]) -> Result<(), StoreError> {
        self.log.insert(revision, keys.to_vec());
        Ok(())
    }
}

fn latest_at(
    kv: &BTreeMap<(String, Revision), Record>,
    key: &str,
    at: Revision,
) -> Option<(Revision, Record)> {
    let lo = (key.to_owned(), Revision(i64::MIN));
    let hi = (key.to_owned(), at);
    kv.range(lo..=hi)
        .next_back()
        .map(|((_, r), rec)| (*r, rec.clone()))
}

/// A [`Store`] that lives in memory.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    tables: Mutex<Tables>,
    hub: Hub,
}

struct Hub(WatchHub);
impl Default for Hub {
    fn default() -> Self {
        Hub(WatchHub::new())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock would be a bug in this module; the tables are only
        // mutated by `apply_txn`, which leaves them consistent on every return path.
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl History for Shared {
    fn history(
        &self,
        start: &str,
        end: &str,
        from: Revision,
    ) -> Result<(Vec<Event>, Revision), StoreError> {
        let t = self.lock();
        if from <= t.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: t.compacted,
            });
        }
        let req = RangeRequest {
            start: start.to_owned(),
            end: end.to_owned(),
            ..Default::default()
        };
        let mut events = Vec::new();
        for (rev, keys) in t.log.range(from..) {
            for key in keys.iter().filter(|k| req.contains(k)) {
                let Some(record) = t.kv.get(&(key.clone(), *rev)) else {
                    continue;
                };
                let prev = latest_at(&t.kv, key, Revision(rev.0 - 1));
                events.push(mvcc::event_from(key, *rev, record, prev));
            }
        }
        Ok((events, t.revision))
    }
    fn current(&self) -> Revision {
        self.lock().revision
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let mut t = self.inner.lock();
        let current = t.revision;
        let (result, events) = mvcc::apply_txn(&mut *t, &txn, current)?;
        t.revision = result.revision;
        if !events.is_empty() {
            // Published under the lock so batches leave in revision order.
            self.inner.hub.0.publish(Arc::new(events));
        }
        Ok(result)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let t = self.inner.lock();
        let at = mvcc::check_read_revision(req.revision, t.revision, t.compacted)?;
        let lo = Bound::Included((req.start.clone(), Revision(i64::MIN)));
        if req.end.is_empty() {
            // One key: its newest record at `at` only, however long its history (a quota
            // charged on every create, a Lease renewed every few seconds).
            let hi = Bound::Included((req.start.clone(), at));
            let newest =
                t.kv.range((lo, hi))
                    .next_back()
                    .map(|((k, r), rec)| Ok((k.clone(), *r, rec.clone())));
            return mvcc::range_scan(newest.into_iter(), &req, at);
        }
        let hi = Bound::Excluded((req.end.clone(), Revision(i64::MIN)));
        let entries =
            t.kv.range((lo, hi))
                .map(|((k, r), rec)| Ok((k.clone(), *r, rec.clone())));
        mvcc::range_scan(entries, &req, at)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        Ok(self.inner.hub.0.watch(self.inner.clone(), prefix, from))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut t = self.inner.lock();
        if revision > t.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: t.revision,
            });
        }
        if revision <= t.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: t.compacted,
            });
        }
        let doomed = mvcc::compaction_victims(
            t.kv.iter()
                .map(|((k, r), rec)| (k.as_str(), *r, rec.value.is_none())),
            revision,
        );
        for key in doomed {
            t.kv.remove(&key);
        }
        t.log = t.log.split_off(&revision.next());
        t.compacted = revision;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.lock().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.lock().compacted)
    }
}
