//! The MVCC rules shared by every local backend, written once over small table traits.
//!
//! A key's history is a sequence of [`Record`]s keyed by `(key, revision)`; a tombstone marks a
//! delete. The revision log maps each revision to the keys it touched, which feeds watches.

use crate::{
    Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Revision, StoreError, Txn,
    TxnResult,
};
use bytes::Bytes;

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub create_revision: Revision,
    pub version: i64,
    /// `None` marks a delete.
    pub value: Option<Bytes>,
}

impl Record {
    pub(crate) fn to_kv(&self, key: &str, mod_revision: Revision) -> Option<KeyValue> {
        self.value.as_ref().map(|v| KeyValue {
            key: key.to_owned(),
            value: v.clone(),
            create_revision: self.create_revision,
            mod_revision,
            version: self.version,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(17 + value.len());
        out.push(u8::from(self.value.is_some()));
        out.extend_from_slice(&self.create_revision.0.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        if bytes.len() < 17 {
            return None;
        }
        let create = i64::from_le_bytes(bytes[1..9].try_into().ok()?);
        let version = i64::from_le_bytes(bytes[9..17].try_into().ok()?);
        let value = match bytes[0] {
            1 => Some(Bytes::copy_from_slice(&bytes[17..])),
            0 => None,
            _ => return None,
        };
        Some(Record {
            create_revision: Revision(create),
            version,
            value,
        })
    }
}

/// Write access to a backend's tables inside one write transaction.
pub(crate) trait WriteTables {
    /// The newest version of `key` (possibly a tombstone) and its revision.
    fn latest(&mut self, key: &str) -> Result<Option<(Revision, Record)>, StoreError>;
    fn insert(&mut self, key: &str, revision: Revision, record: &Record) -> Result<(), StoreError>;
    fn log(&mut self, revision: Revision, keys: &[String]) -> Result<(), StoreError>;
}

/// The current live value of `key` given its newest record.
fn live(key: &str, latest: Option<(Revision, Record)>) -> Option<KeyValue> {
    latest.and_then(|(rev, rec)| rec.to_kv(key, rev))
}

/// Applies `txn` at `current`; returns its result and, if it wrote, the events of the new
/// revision.
pub(crate) fn apply_txn<T: WriteTables>(
    tables: &mut T,
    txn: &Txn,
    current: Revision,
) -> Result<(TxnResult, Vec<Event>), StoreError> {
    let mut ok = true;
    for c in &txn.compare {
        let mod_rev =
            live(c.key(), tables.latest(c.key())?).map_or(Revision::ZERO, |kv| kv.mod_revision);
        if !c.holds(mod_rev) {
            ok = false;
            break;
        }
    }
    if !ok {
        let mut current_kvs = Vec::with_capacity(txn.failure_get.len());
        for key in &txn.failure_get {
            current_kvs.push(live(key, tables.latest(key)?));
        }
        let result = TxnResult {
            succeeded: false,
            revision: current,
            results: vec![],
            prev: vec![],
            current: current_kvs,
        };
        return Ok((result, vec![]));
    }

    let rev = current.next();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(txn.success.len());
    let mut prevs = Vec::with_capacity(txn.success.len());
    let mut touched: Vec<String> = Vec::new();
    for op in &txn.success {
        let prev = live(op.key(), tables.latest(op.key())?);
        match op {
            Op::Put { key, value } => {
                let record = Record {
                    create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    value: Some(value.clone()),
                };
                tables.insert(key, rev, &record)?;
                let kv = record.to_kv(key, rev);
                if let Some(kv) = &kv {
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        prev_kv: prev.clone(),
                    });
                }
                results.push(kv);
                touched.push(key.clone());
            }
            Op::Delete { key } => {
                if let Some(p) = &prev {
                    let tomb = Record {
                        create_revision: Revision::ZERO,
                        version: 0,
                        value: None,
                    };
                    tables.insert(key, rev, &tomb)?;
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            value: Bytes::new(),
                            create_revision: Revision::ZERO,
                            mod_revision: rev,
                            version: 0,
                        },
                        prev_kv: Some(p.clone()),
                    });
                    touched.push(key.clone());
                }
                results.push(None);
            }
        }
        prevs.push(prev);
    }
    // A transaction that changed nothing (deletes of absent keys) does not take a revision,
    // as in etcd.
    let revision = if events.is_empty() {
        current
    } else {
        touched.dedup();
        tables.log(rev, &touched)?;
        rev
    };
    let result = TxnResult {
        succeeded: true,
        revision,
        results,
        prev: prevs,
        current: vec![],
    };
    Ok((result, events))
}

/// Checks a requested read revision against the store's current and compacted revisions.
pub(crate) fn check_read_revision(
    requested: Option<Revision>,
    current: Revision,
    compacted: Revision,
) -> Result<Revision, StoreError> {
    match requested {
        None | Some(Revision(0)) => Ok(current),
        Some(r) if r > current => Err(StoreError::FutureRevision {
            requested: r,
            current,
        }),
        Some(r) if r < compacted => Err(StoreError::Compacted {
            requested: r,
            compacted,
        }),
        Some(r) => Ok(r),
    }
}

/// Builds a range response from the `(key, revision, record)` entries of the range, in key
/// then revision order, keeping for each key its newest version at `at`.
pub(crate) fn range_scan<I>(
    entries: I,
    req: &RangeRequest,
    at: Revision,
) -> Result<RangeResponse, StoreError>
where
    I: Iterator<Item = Result<(String, Revision, Record), StoreError>>,
{
    let mut kvs = Vec::new();
    let mut count = 0usize;
    let mut pending: Option<(String, Revision, Record)> = None;
    let flush =
        |p: Option<(String, Revision, Record)>, kvs: &mut Vec<KeyValue>, count: &mut usize| {
            if let Some((k, r, rec)) = p
                && let Some(kv) = rec.to_kv(&k, r)
            {
                *count += 1;
                if req.limit == 0 || kvs.len() < req.limit {
                    kvs.push(kv);
                }
            }
        };
    for entry in entries {
        let (key, rev, rec) = entry?;
        if rev > at {
            continue;
        }
        if pending.as_ref().is_some_and(|(k, _, _)| *k != key) {
            flush(pending.take(), &mut kvs, &mut count);
        }
        pending = Some((key, rev, rec));
    }
    flush(pending.take(), &mut kvs, &mut count);
    let more = count > kvs.len();
    Ok(RangeResponse {
        kvs,
        more,
        count,
        revision: at,
    })
}

/// Builds one event from a logged revision of `key`: its record at `rev` and the version
/// before it.
pub(crate) fn event_from(
    key: &str,
    rev: Revision,
    record: &Record,
    prev: Option<(Revision, Record)>,
) -> Event {
    let prev_kv = prev.and_then(|(r, rec)| rec.to_kv(key, r));
    match record.to_kv(key, rev) {
        Some(kv) => Event {
            kind: EventKind::Put,
            kv,
            prev_kv,
        },
        None => Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                value: Bytes::new(),
                create_revision: Revision::ZERO,
                mod_revision: rev,
                version: 0,
            },
            prev_kv,
        },
    }
}

/// The `(key, revision)` entries compaction at `at` removes: every version at or below `at`
/// that is not the newest one of its key there, and tombstones at or below `at`.
/// `entries` come in key then revision order as `(key, revision, is_tombstone)`.
pub(crate) fn compaction_victims<'a>(
    entries: impl Iterator<Item = (&'a str, Revision, bool)>,
    at: Revision,
) -> Vec<(String, Revision)> {
    let mut doomed = Vec::new();
    let mut last: Option<(&str, Revision, bool)> = None;
    for (key, rev, tomb) in entries {
        if rev > at {
            continue;
        }
        // An older version of the same key, or a tombstone at or below `at` of the key
        // before: neither is needed to read at or after `at`.
        if let Some((lk, lr, lt)) = last
            && (lk == key || lt)
        {
            doomed.push((lk.to_owned(), lr));
        }
        last = Some((key, rev, tomb));
    }
    if let Some((lk, lr, true)) = last {
        doomed.push((lk.to_owned(), lr));
    }
    doomed
}
