//! Watches the pods bound to this node and hands each to its own worker.

use crate::Kubelet;
use crate::worker;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`: one worker per pod uid, fed every version of its pod (`None` once the
/// pod is gone from the API).
pub async fn run(k: Arc<Kubelet>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(k.client.clone());
    let selector = format!("spec.nodeName={}", k.config.node_name);
    let mut stream = watcher(pods, watcher::Config::default().fields(&selector)).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut since_prune = 0usize;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            e = stream.next() => match e {
                Some(e) => e,
                None => return Ok(()),
            },
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                if let Some(seen) = &mut listing {
                    seen.insert(uid.clone());
                }
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        let _ = tx.send(Some(pod));
                    }
                    _ => {
                        let (tx, rx) = watch::channel(Some(pod));
                        tokio::spawn(worker::run(k.clone(), rx));
                        workers.insert(uid, tx);
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    let _ = tx.send(None);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    for (uid, tx) in &workers {
                        if !seen.contains(uid) {
                            let _ = tx.send(None);
                        }
                    }
                }
            }
        }
        since_prune += 1;
        if since_prune >= 256 {
            since_prune = 0;
            workers.retain(|_, tx| !tx.is_closed());
        }
    }
}
