//! ReplicaSet: adopt matching orphans, create or delete pods until `spec.replicas` are active,
//! and report the counts in status.

use crate::runner::Ctx;
use crate::{
    Error, PodName, claim, controller_ref, pod_active, pod_available, pod_from_template, pod_ready,
    selector_string,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs the ReplicaSet controller (forever).
pub async fn run(client: kube::Client) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller =
        Controller::new(sets, watcher::Config::default()).owns(pods, watcher::Config::default());
    crate::runner::run("replicaset", client, controller, reconcile).await;
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
        u8::from(pod_ready(p)),
        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.metadata.namespace.as_deref().unwrap_or("default");
    let name = rs.metadata.name.as_deref().unwrap_or("");
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
    let owner = controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
    let candidates = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let owned = claim(&pods, &owner, candidates).await;
    let mut live: Vec<&Pod> = owned.iter().filter(|p| pod_active(p)).collect();
    if live.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let prefix = format!("{name}-");
        let pod = pod_from_template(&template, ns, PodName::Generate(&prefix), &owner, &[]);
        for _ in live.len()..want {
            crate::create_pod(&ctx.client, "replicaset-controller", rs.as_ref(), &pod).await?;
        }
    } else if live.len() > want {
        live.sort_by_key(|p| deletion_rank(p));
        for p in &live[..live.len() - want] {
            let pname = p.metadata.name.as_deref().unwrap_or("");
            match pods.delete(pname, &DeleteParams::default()).await {
                Ok(_) => crate::record(
                    &ctx.client,
                    "replicaset-controller",
                    rs.as_ref(),
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted pod: {pname}"),
                ),
                Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // Available: ready for minReadySeconds; look again when the next one will be.
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut available = 0;
    let mut again = Duration::from_secs(300);
    for p in &live {
        match pod_available(p, min_ready, now) {
            Ok(()) => available += 1,
            Err(Some(wait)) => again = again.min(wait + Duration::from_millis(50)),
            Err(None) => {}
        }
    }
    let status = json!({"status": {
        "replicas": live.len(),
        "fullyLabeledReplicas": live.len(),
        "readyReplicas": live.iter().filter(|p| pod_ready(p)).count(),
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    }});
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    sets.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(Action::requeue(again))
}
