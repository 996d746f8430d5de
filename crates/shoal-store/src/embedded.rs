//! The default backend: one redb file, a single writer thread that group-commits.
//!
//! Writers send their transactions to one thread. It takes every transaction waiting in its
//! queue, applies them in order inside one redb write transaction (each under its own
//! revision, each seeing the ones before it), commits once with an fsync, and only then
//! answers every caller and publishes the events. So an acknowledged write is on disk, and
//! many writers share one fsync.

use crate::mvcc::{self, Record, WriteTables};
use crate::watch::{History, WatchHub};
use crate::{
    Event, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// `(key, revision) -> encoded Record`: every version of every key since the last compaction.
const KV: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("kv");
/// `revision -> keys written at it, NUL-separated`: the log watches replay.
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
/// `"revision"` and `"compacted"`.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// The most transactions one commit takes; bounds the latency a commit adds to the first one.
const MAX_BATCH: usize = 1024;

enum Command {
    Txn(Txn, oneshot::Sender<Result<TxnResult, StoreError>>),
    Compact(Revision, oneshot::Sender<Result<(), StoreError>>),
}

/// A durable [`Store`] in one redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Command>,
}

struct Shared {
    db: Database,
    revision: AtomicI64,
    compacted: AtomicI64,
    hub: WatchHub,
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::backend(e.into())
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let (revision, compacted) = {
            let w = db.begin_write().map_err(backend)?;
            let (r, c) = {
                w.open_table(KV).map_err(backend)?;
                w.open_table(LOG).map_err(backend)?;
                let meta = w.open_table(META).map_err(backend)?;
                let get = |k: &str| -> Result<i64, StoreError> {
                    Ok(meta.get(k).map_err(backend)?.map_or(0, |v| v.value()))
                };
                (get("revision")?, get("compacted")?)
            };
            w.commit().map_err(backend)?;
            (r, c)
        };
        let shared = Arc::new(Shared {
            db,
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            hub: WatchHub::new(),
        });
        let (tx, rx) = mpsc::channel(8192);
        let s = shared.clone();
        std::thread::Builder::new()
            .name("shoal-store-writer".into())
            .spawn(move || writer_loop(s, rx))
            .map_err(StoreError::backend)?;
        Ok(EmbeddedStore { shared, writer: tx })
    }

    async fn send<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(cmd(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let s = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(StoreError::backend)?
    }
}

struct WriteSet<'t> {
    kv: redb::Table<'t, (&'static str, i64), &'static [u8]>,
    log: redb::Table<'t, i64, &'static [u8]>,
}

impl WriteTables for WriteSet<'_> {
    fn latest(&mut self, key: &str) -> Result<Option<(Revision, Record)>, StoreError> {
        let mut it = self
            .kv
            .range((key, i64::MIN)..=(key, i64::MAX))
            .map_err(backend)?;
        match it.next_back() {
            None => Ok(None),
            Some(entry) => {
                let (k, v) = entry.map_err(backend)?;
                let rec = Record::decode(v.value()).ok_or_else(|| StoreError::Corrupt {
                    key: key.to_owned(),
                })?;
                Ok(Some((Revision(k.value().1), rec)))
            }
        }
    }
    fn insert(&mut self, key: &str, revision: Revision, record: &Record) -> Result<(), StoreError> {
        self.kv
            .insert((key, revision.0), record.encode().as_slice())
            .map_err(backend)?;
        Ok(())
    }
    fn log(&mut self, revision: Revision, keys: &[String]) -> Result<(), StoreError> {
        self.log
            .insert(revision.0, keys.join("\0").as_bytes())
            .map_err(backend)?;
        Ok(())
    }
}

enum Reply {
    Txn(oneshot::Sender<Result<TxnResult, StoreError>>, TxnResult),
    Compact(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
}

fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let mut events: Vec<Vec<Event>> = Vec::new();
        match commit_batch(&shared, &mut batch, &mut events) {
            Ok((replies, revision, compacted)) => {
                shared.revision.store(revision.0, Ordering::Release);
                shared.compacted.store(compacted.0, Ordering::Release);
                for e in events.drain(..) {
                    shared.hub.publish(Arc::new(e));
                }
                for r in replies {
                    match r {
                        Reply::Txn(tx, res) => {
                            let _ = tx.send(Ok(res));
                        }
                        Reply::Compact(tx, res) => {
                            let _ = tx.send(res);
                        }
                    }
                }
            }
            Err(e) => {
                // Nothing of the batch was committed: every caller learns that it failed.
                tracing::error!(error = %e, "store commit failed");
                let msg = e.to_string();
                for cmd in batch.drain(..) {
                    let err = || StoreError::Backend(msg.clone().into());
                    match cmd {
                        Command::Txn(_, tx) => {
                            let _ = tx.send(Err(err()));
                        }
                        Command::Compact(_, tx) => {
                            let _ = tx.send(Err(err()));
                        }
                    }
                }
            }
        }
        batch.clear();
    }
}

fn commit_batch(
    shared: &Shared,
    batch: &mut Vec<Command>,
    events: &mut Vec<Vec<Event>>,
) -> Result<(Vec<Reply>, Revision, Revision), StoreError> {
    let w = shared.db.begin_write().map_err(backend)?;
    let mut revision = Revision(shared.revision.load(Ordering::Acquire));
    let mut compacted = Revision(shared.compacted.load(Ordering::Acquire));
    let mut replies = Vec::with_capacity(batch.len());
    {
        let mut set = WriteSet {
            kv: w.open_table(KV).map_err(backend)?,
            log: w.open_table(LOG).map_err(backend)?,
        };
        let mut meta = w.open_table(META).map_err(backend)?;
        for cmd in batch.drain(..) {
            match cmd {
                Command::Txn(txn, tx) => {
                    let (res, evs) = mvcc::apply_txn(&mut set, &txn, revision)?;
                    revision = res.revision;
                    if !evs.is_empty() {
                        events.push(evs);
                    }
                    replies.push(Reply::Txn(tx, res));
                }
                Command::Compact(at, tx) => {
                    let res = if at > revision {
                        Err(StoreError::FutureRevision {
                            requested: at,
                            current: revision,
                        })
                    } else if at <= compacted {
                        Err(StoreError::Compacted {
                            requested: at,
                            compacted,
                        })
                    } else {
                        compact(&mut set, at)?;
                        compacted = at;
                        Ok(())
                    };
                    replies.push(Reply::Compact(tx, res));
                }
            }
        }
        meta.insert("revision", revision.0).map_err(backend)?;
        meta.insert("compacted", compacted.0).map_err(backend)?;
    }
    w.commit().map_err(backend)?;
    Ok((replies, revision, compacted))
}

fn compact(set: &mut WriteSet<'_>, at: Revision) -> Result<(), StoreError> {
    let mut entries = Vec::new();
    for entry in set.kv.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let (key, rev) = k.value();
        if rev <= at.0 {
            entries.push((key.to_owned(), Revision(rev), v.value().first() == Some(&0)));
        }
    }
    let victims =
        mvcc::compaction_victims(entries.iter().map(|(k, r, t)| (k.as_str(), *r, *t)), at);
    for (key, rev) in victims {
        set.kv.remove((key.as_str(), rev.0)).map_err(backend)?;
    }
    set.log.retain_in(..=at.0, |_, _| false).map_err(backend)?;
    Ok(())
}

impl History for Shared {
    fn history(
        &self,
        start: &str,
        end: &str,
        from: Revision,
    ) -> Result<(Vec<Event>, Revision), StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let meta = r.open_table(META).map_err(backend)?;
        let get = |k: &str| -> Result<i64, StoreError> {
            Ok(meta.get(k).map_err(backend)?.map_or(0, |v| v.value()))
        };
        let (current, compacted) = (Revision(get("revision")?), Revision(get("compacted")?));
        if from <= compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted,
            });
        }
        let req = RangeRequest {
            start: start.to_owned(),
            end: end.to_owned(),
            ..Default::default()
        };
        let kv = r.open_table(KV).map_err(backend)?;
        let log = r.open_table(LOG).map_err(backend)?;
        let mut events = Vec::new();
        for entry in log.range(from.0..).map_err(backend)? {
            let (rev, keys) = entry.map_err(backend)?;
            let rev = Revision(rev.value());
            let keys = String::from_utf8_lossy(keys.value()).into_owned();
            for key in keys.split('\0').filter(|k| req.contains(k)) {
                let mut it = kv.range((key, i64::MIN)..=(key, rev.0)).map_err(backend)?;
                let corrupt = || StoreError::Corrupt {
                    key: key.to_owned(),
                };
                let Some(cur) = it.next_back() else { continue };
                let (_, v) = cur.map_err(backend)?;
                let record = Record::decode(v.value()).ok_or_else(corrupt)?;
                let prev = match it.next_back() {
                    Some(p) => {
                        let (pk, pv) = p.map_err(backend)?;
                        Some((
                            Revision(pk.value().1),
                            Record::decode(pv.value()).ok_or_else(corrupt)?,
                        ))
                    }
                    None => None,
                };
                events.push(mvcc::event_from(key, rev, &record, prev));
            }
        }
        Ok((events, current))
    }
    fn current(&self) -> Revision {
        Revision(self.revision.load(Ordering::Acquire))
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.send(|tx| Command::Txn(txn, tx)).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.read(move |s| {
            let r = s.db.begin_read().map_err(backend)?;
            let meta = r.open_table(META).map_err(backend)?;
            let get = |k: &str| -> Result<i64, StoreError> {
                Ok(meta.get(k).map_err(backend)?.map_or(0, |v| v.value()))
            };
            let at = mvcc::check_read_revision(
                req.revision,
                Revision(get("revision")?),
                Revision(get("compacted")?),
            )?;
            let kv = r.open_table(KV).map_err(backend)?;
            let decode = |e: Result<_, redb::StorageError>| {
                let (k, v): (
                    redb::AccessGuard<'_, (&str, i64)>,
                    redb::AccessGuard<'_, &[u8]>,
                ) = e.map_err(backend)?;
                let (key, rev) = k.value();
                let rec = Record::decode(v.value()).ok_or_else(|| StoreError::Corrupt {
                    key: key.to_owned(),
                })?;
                Ok((key.to_owned(), Revision(rev), rec))
            };
            if req.end.is_empty() {
                // One key: its newest record at `at` only, however long its history.
                let newest = kv
                    .range((req.start.as_str(), i64::MIN)..=(req.start.as_str(), at.0))
                    .map_err(backend)?
                    .next_back()
                    .map(decode);
                return mvcc::range_scan(newest.into_iter(), &req, at);
            }
            let iter = kv
                .range((req.start.as_str(), i64::MIN)..(req.end.as_str(), i64::MIN))
                .map_err(backend)?;
            mvcc::range_scan(iter.map(decode), &req, at)
        })
        .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        Ok(self.shared.hub.watch(self.shared.clone(), prefix, from))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.send(|tx| Command::Compact(revision, tx)).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(Revision(self.shared.revision.load(Ordering::Acquire)))
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(Revision(self.shared.compacted.load(Ordering::Acquire)))
    }
}
