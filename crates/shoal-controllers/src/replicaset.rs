//! ReplicaSet and ReplicationController (its older core/v1 form, with a plain label map as
//! selector): adopt matching orphans, create or delete pods until `spec.replicas` are active,
//! and report the counts in status.

use crate::runner::Ctx;
use crate::{
    Error, PodName, claim, controller_ref, pod_active, pod_available, pod_from_template, pod_ready,
    selector_string,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
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

/// Runs the ReplicationController controller (forever).
pub async fn run_replication_controllers(client: kube::Client) {
    let rcs: Api<ReplicationController> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller =
        Controller::new(rcs, watcher::Config::default()).owns(pods, watcher::Config::default());
    crate::runner::run("replicationcontroller", client, controller, reconcile_rc).await;
}

/// What a ReplicaSet or a ReplicationController asks for.
struct Want<'a> {
    api_version: &'static str,
    kind: &'static str,
    component: &'static str,
    name: &'a str,
    ns: &'a str,
    replicas: usize,
    selector: String,
    template: PodTemplateSpec,
    min_ready_seconds: i32,
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
    let want = Want {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        component: "replicaset-controller",
        name,
        ns,
        replicas: spec.replicas.unwrap_or(1).max(0) as usize,
        selector: selector_string(&spec.selector)?,
        template: spec.template.clone().unwrap_or_default(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
    };
    let (status, again) = sync(rs.as_ref(), &want, &ctx).await?;
    let status = json!({"status": with_generation(status, rs.metadata.generation)});
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    sets.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(Action::requeue(again))
}

async fn reconcile_rc(rc: Arc<ReplicationController>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if rc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rc.metadata.namespace.as_deref().unwrap_or("default");
    let name = rc.metadata.name.as_deref().unwrap_or("");
    let spec = rc
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("replicationcontroller {name} has no spec")))?;
    let selector: Vec<String> = spec
        .selector
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let want = Want {
        api_version: "v1",
        kind: "ReplicationController",
        component: "replication-controller",
        name,
        ns,
        replicas: spec.replicas.unwrap_or(1).max(0) as usize,
        selector: selector.join(","),
        template: spec.template.clone().unwrap_or_default(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
    };
    let (status, again) = sync(rc.as_ref(), &want, &ctx).await?;
    let status = json!({"status": with_generation(status, rc.metadata.generation)});
    let rcs: Api<ReplicationController> = Api::namespaced(ctx.client.clone(), ns);
    rcs.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(Action::requeue(again))
}

fn with_generation(mut status: serde_json::Value, generation: Option<i64>) -> serde_json::Value {
    status["observedGeneration"] = json!(generation);
    status
}

/// Creates or deletes `owner`'s pods until `want.replicas` are active; returns the status
/// counts and when to look again (the next pod to become available).
async fn sync<K>(
    owner_obj: &K,
    want: &Want<'_>,
    ctx: &Ctx,
) -> Result<(serde_json::Value, Duration), Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    let (name, ns) = (want.name, want.ns);
    if want.selector.is_empty() {
        return Err(Error::Invalid(format!(
            "{} {name} selects every pod",
            want.kind.to_lowercase()
        )));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let owner = controller_ref(want.api_version, want.kind, owner_obj.meta());
    let candidates = pods
        .list(&ListParams::default().labels(&want.selector))
        .await?
        .items;
    let owned = claim(&pods, &owner, candidates).await;
    let mut live: Vec<&Pod> = owned.iter().filter(|p| pod_active(p)).collect();
    if live.len() < want.replicas {
        let prefix = format!("{name}-");
        let pod = pod_from_template(&want.template, ns, PodName::Generate(&prefix), &owner, &[]);
        for _ in live.len()..want.replicas {
            crate::create_pod(&ctx.client, want.component, owner_obj, &pod).await?;
        }
    } else if live.len() > want.replicas {
        live.sort_by_key(|p| deletion_rank(p));
        for p in &live[..live.len() - want.replicas] {
            let pname = p.metadata.name.as_deref().unwrap_or("");
            match pods.delete(pname, &DeleteParams::default()).await {
                Ok(_) => crate::record(
                    &ctx.client,
                    want.component,
                    owner_obj,
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
    let mut available = 0;
    let mut again = Duration::from_secs(300);
    for p in &live {
        match pod_available(p, want.min_ready_seconds, now) {
            Ok(()) => available += 1,
            Err(Some(wait)) => again = again.min(wait + Duration::from_millis(50)),
            Err(None) => {}
        }
    }
    let status = json!({
        "replicas": live.len(),
        "fullyLabeledReplicas": live.len(),
        "readyReplicas": live.iter().filter(|p| pod_ready(p)).count(),
        "availableReplicas": available,
    });
    Ok((status, again))
}
