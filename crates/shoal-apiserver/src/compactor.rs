//! Periodic compaction of the store's history, as the Kubernetes API server does for etcd:
//! every interval, compact to the revision that was current one interval ago, so watches can
//! resume from anything newer than one interval and older revisions get 410 Gone.

use shoal_store::{Revision, Store};
use std::sync::Arc;
use std::time::Duration;

/// How often history is compacted (Kubernetes' `--etcd-compaction-interval` default).
pub const INTERVAL: Duration = Duration::from_secs(300);

/// Runs forever; spawn it.
pub async fn run(store: Arc<dyn Store>, interval: Duration) {
    let mut previous: Option<Revision> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = match store.current_revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "compactor cannot read the current revision");
                continue;
            }
        };
        if let Some(target) = previous {
            let compacted = store.compacted_revision().await.unwrap_or(Revision::ZERO);
            if target > compacted {
                match store.compact(target).await {
                    Ok(()) => tracing::debug!(revision = target.0, "compacted store history"),
                    Err(e) => tracing::warn!(error = %e, revision = target.0, "compaction failed"),
                }
            }
        }
        previous = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::Txn;
    use shoal_store::memory::MemoryStore;

    #[tokio::test(start_paused = true)]
    async fn compacts_to_the_revision_one_interval_old() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for i in 0..3 {
            store
                .txn(Txn::new().put(format!("/k{i}"), "v"))
                .await
                .unwrap();
        }
        tokio::spawn(run(store.clone(), Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.txn(Txn::new().put("/later", "v")).await.unwrap();
        assert_eq!(
            store.compacted_revision().await.unwrap(),
            Revision(0),
            "nothing is compacted on the first tick"
        );
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(
            store.compacted_revision().await.unwrap(),
            Revision(3),
            "the revision seen one interval ago"
        );
    }
}
