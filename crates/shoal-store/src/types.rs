use bytes::Bytes;
use std::fmt;

/// A point in the store's global history. Grows by one with every transaction that writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub i64);

impl Revision {
    pub const ZERO: Revision = Revision(0);
    pub fn get(self) -> i64 {
        self.0
    }
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A key with its value and etcd-style revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation; 1 after create.
    pub version: i64,
}

/// A guard evaluated atomically with a transaction's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals the given one; `Revision(0)` means "the key is absent".
    ModRevision { key: String, revision: Revision },
}

impl Compare {
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::ModRevision {
            key: key.into(),
            revision: Revision::ZERO,
        }
    }
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Compare::ModRevision {
            key: key.into(),
            revision,
        }
    }
    pub fn key(&self) -> &str {
        match self {
            Compare::ModRevision { key, .. } => key,
        }
    }
    /// Whether the compare holds given the key's current `mod_revision` (0 if absent).
    pub fn holds(&self, current_mod_revision: Revision) -> bool {
        match self {
            Compare::ModRevision { revision, .. } => *revision == current_mod_revision,
        }
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// An etcd-style transaction: `if compare { success } else { get failure_get }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure_get: Vec<String>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, c: Compare) -> Self {
        self.compare.push(c);
        self
    }
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.success.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.success.push(Op::Delete { key: key.into() });
        self
    }
    pub fn or_get(mut self, key: impl Into<String>) -> Self {
        self.failure_get.push(key.into());
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store revision after the transaction (its own revision if it wrote).
    pub revision: Revision,
    /// On success: per `success` op, the key after the op (`None` after a delete).
    pub results: Vec<Option<KeyValue>>,
    /// On success: per `success` op, the key before the op.
    pub prev: Vec<Option<KeyValue>>,
    /// On failure: per `failure_get` key, its current value.
    pub current: Vec<Option<KeyValue>>,
}

/// A read of `[start, end)`, or of the single key `start` when `end` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    pub start: String,
    pub end: String,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read at this revision; `None` (or 0) reads the current one.
    pub revision: Option<Revision>,
}

impl RangeRequest {
    pub fn key(key: impl Into<String>) -> Self {
        RangeRequest {
            start: key.into(),
            ..Default::default()
        }
    }
    pub fn prefix(prefix: &str) -> Self {
        RangeRequest {
            start: prefix.to_owned(),
            end: prefix_end(prefix),
            ..Default::default()
        }
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    pub fn at(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
    /// Whether `key` is inside the requested range.
    pub fn contains(&self, key: &str) -> bool {
        if self.end.is_empty() {
            key == self.start
        } else {
            key >= self.start.as_str() && key < self.end.as_str()
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's `--prefix`).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            // Keys are UTF-8; incrementing an ASCII byte keeps them so.
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    // Only reachable for a prefix of non-ASCII bytes: scan to the end of the keyspace.
    "\u{10FFFF}".to_owned()
}

/// The keys found by a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys exist in the range after the last one returned.
    pub more: bool,
    /// Number of keys in the whole range at that revision.
    pub count: usize,
    /// The revision the read was served at.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// After a put: the new key; after a delete: the key with an empty value and
    /// `mod_revision` set to the delete's revision.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}
