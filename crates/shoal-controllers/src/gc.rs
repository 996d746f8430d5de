//! Garbage collector for ReplicaSets and Pods: dependents whose owners are all gone are deleted
//! (background propagation); an owner deleted with `propagationPolicy: Orphan` has its
//! dependents' ownerReferences removed, one deleted with `Foreground` waits until its dependents
//! are gone; then the `orphan` or `foregroundDeletion` finalizer is removed.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// How often dependents are checked against their owners.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Runs the collector (forever).
pub async fn run(client: kube::Client) {
    let (pods, pods_w) = reflector::store::<Pod>();
    let (sets, sets_w) = reflector::store::<ReplicaSet>();
    let pod_stream = reflector(
        pods_w,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .applied_objects()
    .for_each(|_| async {});
    let set_stream = reflector(
        sets_w,
        watcher(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .applied_objects()
    .for_each(|_| async {});
    tokio::spawn(pod_stream);
    tokio::spawn(set_stream);
    if pods.wait_until_ready().await.is_err() || sets.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let pods: Vec<ObjectMeta> = pods.state().iter().map(|p| p.metadata.clone()).collect();
        let sets: Vec<(ObjectMeta, &'static str)> = sets
            .state()
            .iter()
            .map(|s| (s.metadata.clone(), "ReplicaSet"))
            .collect();
        sweep(&client, &pods, &sets).await;
    }
}

fn ns(m: &ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or("default")
}

async fn patch_meta(client: &kube::Client, kind: &str, m: &ObjectMeta, meta: serde_json::Value) {
    let name = m.name.as_deref().unwrap_or("");
    let patch = Patch::Merge(json!({ "metadata": meta }));
    let pp = PatchParams::default();
    let r = match kind {
        "Pod" => Api::<Pod>::namespaced(client.clone(), ns(m))
            .patch(name, &pp, &patch)
            .await
            .map(|_| ()),
        _ => Api::<ReplicaSet>::namespaced(client.clone(), ns(m))
            .patch(name, &pp, &patch)
            .await
            .map(|_| ()),
    };
    if let Err(e) = r {
        tracing::debug!(%name, error = %e, "garbage collector patch");
    }
}

async fn delete(client: &kube::Client, kind: &str, m: &ObjectMeta) {
    let name = m.name.as_deref().unwrap_or("");
    let dp = DeleteParams::background();
    let r = match kind {
        "Pod" => Api::<Pod>::namespaced(client.clone(), ns(m))
            .delete(name, &dp)
            .await
            .map(|_| ()),
        _ => Api::<ReplicaSet>::namespaced(client.clone(), ns(m))
            .delete(name, &dp)
            .await
            .map(|_| ()),
    };
    if let Err(e) = r {
        tracing::debug!(%name, error = %e, "garbage collector delete");
    }
}

/// Whether `owner` (in namespace `ns`) still exists with the uid the reference names.
async fn owner_exists(
    client: &kube::Client,
    ns: &str,
    owner: &OwnerReference,
    known: &HashMap<String, ObjectMeta>,
    cache: &mut HashMap<String, bool>,
) -> bool {
    // Seen by this collector's watch: it exists. Otherwise ask the API server, which is
    // authoritative (the watch may simply not have caught up with a new owner).
    if let Some(m) = known.get(&owner.uid) {
        return m.name.as_deref() == Some(owner.name.as_str());
    }
    if let Some(b) = cache.get(&owner.uid) {
        return *b;
    }
    let (group, version) = match owner.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", owner.api_version.as_str()),
    };
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &owner.kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let exists = match api.get_opt(&owner.name).await {
        Ok(Some(o)) => o.metadata.uid.as_deref() == Some(owner.uid.as_str()),
        Ok(None) => false,
        // Unknown kinds and errors keep the dependent: deleting on doubt would lose data.
        Err(_) => true,
    };
    cache.insert(owner.uid.clone(), exists);
    exists
}

async fn sweep(client: &kube::Client, pods: &[ObjectMeta], sets: &[(ObjectMeta, &'static str)]) {
    let dependents: Vec<(&ObjectMeta, &str)> = pods
        .iter()
        .map(|m| (m, "Pod"))
        .chain(sets.iter().map(|(m, k)| (m, *k)))
        .collect();
    let known: HashMap<String, ObjectMeta> = sets
        .iter()
        .filter_map(|(m, _)| Some((m.uid.clone()?, m.clone())))
        .collect();

    // Owners being deleted with the orphan or foreground finalizer.
    for (owner, kind) in sets {
        if owner.deletion_timestamp.is_none() {
            continue;
        }
        let finalizers = owner.finalizers.clone().unwrap_or_default();
        let uid = owner.uid.clone().unwrap_or_default();
        let mine: Vec<&(&ObjectMeta, &str)> = dependents
            .iter()
            .filter(|(d, _)| {
                ns(d) == ns(owner) && d.owner_references.iter().flatten().any(|o| o.uid == uid)
            })
            .collect();
        let done = |f: &str| {
            let rest: Vec<&String> = finalizers.iter().filter(|x| *x != f).collect();
            json!({ "finalizers": rest })
        };
        if finalizers.iter().any(|f| f == "orphan") {
            for (d, dkind) in &mine {
                let refs: Vec<&OwnerReference> = d
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|o| o.uid != uid)
                    .collect();
                patch_meta(client, dkind, d, json!({ "ownerReferences": refs })).await;
            }
            patch_meta(client, kind, owner, done("orphan")).await;
        } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
            if mine.is_empty() {
                patch_meta(client, kind, owner, done("foregroundDeletion")).await;
            }
            for (d, dkind) in &mine {
                if d.deletion_timestamp.is_none() {
                    delete(client, dkind, d).await;
                }
            }
        }
    }

    // Background: dependents whose owners are all gone.
    let mut cache = HashMap::new();
    for (d, kind) in &dependents {
        let owners = d.owner_references.clone().unwrap_or_default();
        if owners.is_empty() || d.deletion_timestamp.is_some() {
            continue;
        }
        let mut any = false;
        for o in &owners {
            if owner_exists(client, ns(d), o, &known, &mut cache).await {
                any = true;
                break;
            }
        }
        if !any {
            delete(client, kind, d).await;
        }
    }
}
