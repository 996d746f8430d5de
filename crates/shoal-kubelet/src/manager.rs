//! Watches the pods bound to this node and hands each to its own worker.

use crate::Kubelet;
use crate::worker;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use shoal_api::pod::PodExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`: one worker per pod uid, fed every version of its pod (`None` once the
/// pod is gone from the API).
pub async fn run(k: Arc<Kubelet>, shutdown: CancellationToken) -> crate::Result<()> {
    let pods: Api<Pod> = Api::all(k.client.clone());
    let selector = format!("spec.nodeName={}", k.config.node_name);
    let mut stream = watcher(pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut since_prune = 0usize;
    // Whether each pod had finished when last seen; finished pods do not count against max pods.
    let mut terminal: HashMap<String, bool> = HashMap::new();
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
                terminal.insert(uid.clone(), pod.is_terminal());
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        let _ = tx.send(Some(pod));
                    }
                    _ => {
                        let used = workers
                            .iter()
                            .filter(|(u, tx)| !tx.is_closed() && terminal.get(*u) == Some(&false))
                            .count();
                        let pod = admit(&k, pod, used).await;
                        terminal.insert(uid.clone(), pod.is_terminal());
                        let name = format!(
                            "kubelet/pod/{}/{}",
                            pod.metadata.namespace.as_deref().unwrap_or("default"),
                            pod.metadata.name.as_deref().unwrap_or("")
                        );
                        let span = tracing::info_span!(
                            "pod",
                            ns = pod.metadata.namespace.as_deref().unwrap_or("default"),
                            name = pod.metadata.name.as_deref().unwrap_or(""),
                            uid = %uid,
                        );
                        let (tx, rx) = watch::channel(Some(pod));
                        let worker_k = k.clone();
                        // A worker that panics starts again on the pod's latest version.
                        k.supervisor.spawn(
                            name,
                            shoal_supervisor::Restart::OnPanic,
                            shutdown.clone(),
                            move || {
                                use tracing::Instrument;
                                worker::run(worker_k.clone(), rx.clone()).instrument(span.clone())
                            },
                        );
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
            terminal.retain(|uid, _| workers.contains_key(uid));
        }
    }
}

/// Kubelet admission: a pod beyond the node's `pods` capacity is rejected as Kubernetes does
/// (`Failed`, reason `OutOfpods`); its worker then only waits for its deletion.
async fn admit(k: &Kubelet, pod: Pod, used: usize) -> Pod {
    let capacity = k.config.max_pods as usize;
    if pod.is_terminal() || pod.metadata.deletion_timestamp.is_some() {
        return pod;
    }
    // Node pressure turns away pods that have not started yet (a pod already running when the
    // kubelet restarted is the eviction manager's business).
    let pending = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    let (reason, message) = if used >= capacity {
        (
            "OutOfpods",
            format!(
                "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: {used}, capacity: {capacity}"
            ),
        )
    } else {
        match crate::eviction::admit(k, &pod) {
            Err(why) if pending => ("Evicted", why),
            _ => return pod,
        }
    };
    crate::events::Recorder::new(k.client.clone(), &k.config.node_name).record(
        &pod,
        None,
        crate::events::Kind::Warning,
        reason,
        message.clone(),
    );
    let api: Api<Pod> = Api::namespaced(
        k.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = serde_json::json!({"status": {
        "phase": "Failed", "reason": reason, "message": message,
    }});
    match api
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status),
        )
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "cannot reject pod");
            pod
        }
    }
}
