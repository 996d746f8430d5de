//! ReplicaSet: adopt matching orphans, create or delete pods until `spec.replicas` are active,
//! and report the counts in status.

use crate::{Error, selector_string};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

struct Ctx {
    client: kube::Client,
}

/// Runs the ReplicaSet controller (forever).
pub async fn run(client: kube::Client) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Ctx { client }))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "replicaset reconcile");
            }
        })
        .await;
}

fn error_policy(_rs: Arc<ReplicaSet>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "replicaset reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Which pods go first when scaling down, as Kubernetes ranks them: unscheduled, then pending,
/// then not ready, then the newest.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<jiff::Timestamp>>) {
    let scheduled = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    (
        u8::from(scheduled),
        u8::from(running),
        u8::from(ready(p)),
        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.metadata.namespace.as_deref().unwrap_or("default");
    let name = rs.metadata.name.as_deref().unwrap_or("");
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("replicaset {name} has no spec")))?;
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let selector = selector_string(&spec.selector)?;
    if selector.is_empty() {
        return Err(Error::Invalid(format!(
            "replicaset {name} selects every pod"
        )));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid,
                       "controller": true, "blockOwnerDeletion": true});
    let mut owned = Vec::new();
    for p in pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let controller = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        match controller {
            Some(o) if o.uid == uid => owned.push(p),
            Some(_) => {}
            None if p.metadata.deletion_timestamp.is_none() => {
                // Adopt the orphan.
                let mut refs =
                    serde_json::to_value(p.metadata.owner_references.clone().unwrap_or_default())
                        .unwrap_or_else(|_| json!([]));
                if let Some(a) = refs.as_array_mut() {
                    a.push(owner.clone());
                }
                let pname = p.metadata.name.clone().unwrap_or_default();
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": p.metadata.uid}});
                match pods
                    .patch(&pname, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) => tracing::debug!(pod = %pname, error = %e, "cannot adopt pod"),
                }
            }
            None => {}
        }
    }
    let mut live: Vec<&Pod> = owned.iter().filter(|p| active(p)).collect();
    if live.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let meta = template.metadata.unwrap_or_default();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": format!("{name}-"), "namespace": ns,
                         "labels": meta.labels, "annotations": meta.annotations,
                         "ownerReferences": [owner]},
            "spec": template.spec,
        });
        let pod: Pod = serde_json::from_value(pod)
            .map_err(|e| Error::Invalid(format!("replicaset {name} template: {e}")))?;
        for _ in live.len()..want {
            pods.create(&PostParams::default(), &pod).await?;
        }
    } else if live.len() > want {
        live.sort_by_key(|p| deletion_rank(p));
        for p in &live[..live.len() - want] {
            let pname = p.metadata.name.as_deref().unwrap_or("");
            match pods.delete(pname, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let status = json!({"status": {
        "replicas": live.len(),
        "fullyLabeledReplicas": live.len(),
        "readyReplicas": live.iter().filter(|p| ready(p)).count(),
        "availableReplicas": live.iter().filter(|p| ready(p)).count(),
        "observedGeneration": rs.metadata.generation,
    }});
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    sets.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}
