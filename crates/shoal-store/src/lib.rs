//! The etcd-shaped revisioned key-value store that sits under the API server.
//!
//! Owns the [`Store`] trait (seam 1 in ARCHITECTURE.md) and its backends:
//! [`memory::MemoryStore`] for unit tests, [`embedded::EmbeddedStore`] on redb (the default) and
//! [`etcd::EtcdStore`] on an etcd cluster.
//! Every backend passes the one conformance suite in [`conformance`], expanded per backend by
//! [`store_conformance!`].
//!
//! The model is etcd's: one global [`Revision`] that grows with every write; each key carries
//! `create_revision`, `mod_revision` and `version`; writes are transactions guarded by
//! compare-on-`mod_revision`; watches deliver every change in revision order with the previous
//! value; compaction drops history and makes older revisions fail with [`StoreError::Compacted`].
//!
//! It knows nothing of Kubernetes objects: values are opaque bytes. Start at [`Store`].

pub mod conformance;
pub mod embedded;
mod error;
pub mod etcd;
pub mod memory;
mod mvcc;
mod types;
mod watch;

pub use error::StoreError;
pub use types::{
    Compare, Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Revision, Txn, TxnResult,
    prefix_end,
};
pub use watch::{ProgressRequester, WatchItem, WatchStream};

use async_trait::async_trait;

/// An etcd-shaped store. Cheap to share as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Runs a transaction: if every compare holds, applies `success` under one new revision
    /// (if anything changed), otherwise reads `failure_get`.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Reads a key range at the current or at a historic revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError>;

    /// Streams every change under `prefix` with a revision `>= from`, in revision order, each
    /// with its previous value. `from == Revision(0)` means "changes after now".
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;

    /// Drops history older than `revision`; the latest version of every live key is kept.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The newest revision committed.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The revision history was last compacted at (`Revision(0)` if never).
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;
}
