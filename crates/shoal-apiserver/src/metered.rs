//! `etcd_request_duration_seconds`: every store call timed, by operation and the kind of object
//! (Kubernetes' storage latency metric, whichever backend the store is).

use async_trait::async_trait;
use shoal_store::{
    Op, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};
use std::sync::Arc;
use std::time::Instant;

/// A store that times what it passes on.
pub struct MeteredStore(pub Arc<dyn Store>);

/// The resource a key belongs to: `pods` for `/registry/pods/ns/x`, `deployments.apps` for
/// `/registry/apps/deployments/ns/x`.
fn kind_of(key: &str) -> String {
    let mut parts = key.trim_start_matches('/').split('/');
    let _root = parts.next();
    let first = parts.next().unwrap_or("");
    if shoal_api::resources::groups().contains(&first) || first.contains('.') {
        let plural = parts.next().unwrap_or("");
        format!("{plural}.{first}")
    } else {
        first.to_owned()
    }
}

fn observe(operation: &'static str, key: &str, started: Instant) {
    metrics::histogram!(
        "etcd_request_duration_seconds",
        "operation" => operation,
        "type" => kind_of(key),
    )
    .record(started.elapsed().as_secs_f64());
}

#[async_trait]
impl Store for MeteredStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let operation = match txn.success.first() {
            Some(Op::Delete { .. }) => "delete",
            Some(Op::Put { .. }) if txn.compare.is_empty() => "update",
            Some(Op::Put { .. }) => "txn",
            None => "get",
        };
        let key = txn
            .success
            .first()
            .map(|o| o.key().to_owned())
            .or_else(|| txn.failure_get.first().cloned())
            .unwrap_or_default();
        let t = Instant::now();
        let r = self.0.txn(txn).await;
        observe(operation, &key, t);
        r
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let operation = if req.end.is_empty() { "get" } else { "list" };
        let key = req.start.clone();
        let t = Instant::now();
        let r = self.0.range(req).await;
        observe(operation, &key, t);
        r
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let t = Instant::now();
        let r = self.0.watch(prefix, from).await;
        observe("watch", prefix, t);
        r
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.0.compact(revision).await;
        observe("compact", "", t);
        r
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.0.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.0.compacted_revision().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_name_their_resource() {
        assert_eq!(super::kind_of("/registry/pods/default/web"), "pods");
        assert_eq!(
            super::kind_of("/registry/apps/deployments/a/b"),
            "deployments.apps"
        );
        assert_eq!(super::kind_of("/registry/namespaces/"), "namespaces");
    }
}
