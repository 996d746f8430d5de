//! Garbage collector for the workload kinds (Pods, ReplicationControllers, ReplicaSets,
//! Deployments, Jobs, CronJobs, DaemonSets, StatefulSets, ControllerRevisions) and Services with their EndpointSlices and Endpoints: dependents whose owners are all gone are deleted (background
//! propagation); an owner deleted with `propagationPolicy: Orphan` has its dependents'
//! ownerReferences removed, one deleted with `Foreground` waits until its dependents are gone;
//! then the `orphan` or `foregroundDeletion` finalizer is removed.

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// How often dependents are checked against their owners.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The kinds the collector watches, as owners and as dependents.
const KINDS: [(&str, &str, &str); 12] = [
    ("", "v1", "Pod"),
    ("", "v1", "ReplicationController"),
    ("apps", "v1", "ControllerRevision"),
    ("", "v1", "Service"),
    ("", "v1", "Endpoints"),
    ("discovery.k8s.io", "v1", "EndpointSlice"),
    ("apps", "v1", "ReplicaSet"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "DaemonSet"),
    ("apps", "v1", "StatefulSet"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
];

/// Runs the collector (forever).
pub async fn run(client: kube::Client) {
    let mut stores: Vec<(ApiResource, Store<DynamicObject>)> = Vec::new();
    // The watches end with this run (a restarted collector starts its own).
    let mut feeds = Vec::new();
    for (group, version, kind) in KINDS {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let writer = reflector::store::Writer::new(ar.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        )
        .applied_objects()
        .for_each(|_| async {});
        feeds.push(shoal_supervisor::AbortOnDrop(tokio::spawn(stream)));
        stores.push((ar, store));
    }
    for (_, store) in &stores {
        if store.wait_until_ready().await.is_err() {
            return;
        }
    }
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let objects: Vec<(ObjectMeta, &ApiResource)> = stores
            .iter()
            .flat_map(|(ar, store)| {
                store
                    .state()
                    .iter()
                    .map(|o| (o.metadata.clone(), ar))
                    .collect::<Vec<_>>()
            })
            .collect();
        sweep(&client, &objects).await;
    }
}

fn ns(m: &ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or("default")
}

async fn patch_meta(
    client: &kube::Client,
    ar: &ApiResource,
    m: &ObjectMeta,
    meta: serde_json::Value,
) {
    let name = m.name.as_deref().unwrap_or("");
    let patch = Patch::Merge(json!({ "metadata": meta }));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns(m), ar);
    if let Err(e) = api.patch(name, &PatchParams::default(), &patch).await {
        tracing::debug!(%name, error = %e, "garbage collector patch");
    }
}

async fn delete(client: &kube::Client, ar: &ApiResource, m: &ObjectMeta) {
    let name = m.name.as_deref().unwrap_or("");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns(m), ar);
    if let Err(e) = api.delete(name, &DeleteParams::background()).await {
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

async fn sweep(client: &kube::Client, objects: &[(ObjectMeta, &ApiResource)]) {
    let known: HashMap<String, ObjectMeta> = objects
        .iter()
        .filter_map(|(m, _)| Some((m.uid.clone()?, m.clone())))
        .collect();

    // Owners being deleted with the orphan or foreground finalizer.
    for (owner, ar) in objects {
        if owner.deletion_timestamp.is_none() {
            continue;
        }
        let finalizers = owner.finalizers.clone().unwrap_or_default();
        let uid = owner.uid.clone().unwrap_or_default();
        let mine: Vec<&(ObjectMeta, &ApiResource)> = objects
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
            for (d, dar) in &mine {
                let refs: Vec<&OwnerReference> = d
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|o| o.uid != uid)
                    .collect();
                patch_meta(client, dar, d, json!({ "ownerReferences": refs })).await;
            }
            patch_meta(client, ar, owner, done("orphan")).await;
        } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
            if mine.is_empty() {
                patch_meta(client, ar, owner, done("foregroundDeletion")).await;
            }
            for (d, dar) in &mine {
                if d.deletion_timestamp.is_none() {
                    delete(client, dar, d).await;
                }
            }
        }
    }

    // Background: dependents whose owners are all gone.
    let mut cache = HashMap::new();
    for (d, ar) in objects {
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
            delete(client, ar, d).await;
        }
    }
}
