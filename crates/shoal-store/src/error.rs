use crate::Revision;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision is older than the last compaction (Kubernetes: 410 Gone).
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision has not happened yet.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The store is shutting down or its writer has stopped.
    #[error("store is closed")]
    Closed,
    /// The backend failed (I/O, corruption, connection).
    #[error("store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored bytes could not be decoded.
    #[error("corrupt record at key {key:?}")]
    Corrupt { key: String },
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}
