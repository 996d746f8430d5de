//! The PersistentVolume binder (Kubernetes' `persistentvolume-binder`) for volumes made by
//! hand: a volume without a claim is `Available`; a claim whose class binds at once
//! (`Immediate`, or no class) is bound to the smallest Available volume of its class that is
//! large enough and offers its access modes (or to the volume it names); a bound volume whose
//! claim is gone is `Released`. Dynamically provisioned `local-path` volumes are bound and
//! reclaimed by the kubelet of their node.

use crate::Error;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);

/// Runs the binder (forever).
pub async fn run(client: kube::Client) {
    loop {
        if let Err(e) = pass(&client).await {
            tracing::warn!(error = %e, "persistent volume binder");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

fn storage(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> u64 {
    q.and_then(|q| shoal_api::quantity::bytes(&q.0).ok())
        .unwrap_or(0)
}

async fn pass(client: &kube::Client) -> Result<(), Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let classes: Api<StorageClass> = Api::all(client.clone());
    let mut pvs = volumes.list(&ListParams::default()).await?.items;
    let pvcs = claims.list(&ListParams::default()).await?.items;
    let params = PatchParams::default();
    let phase = |pv: &PersistentVolume| {
        pv.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    for pv in &pvs {
        let name = pv.metadata.name.as_deref().unwrap_or("");
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let want = match claim_ref {
            None => "Available",
            Some(r) if pvcs.iter().any(|c| c.metadata.uid == r.uid) => continue,
            // Pre-bound to a claim not made yet (no uid): waits Available for it.
            Some(r) if r.uid.is_none() => "Available",
            Some(_) => "Released",
        };
        if phase(pv) != want {
            volumes
                .patch_status(
                    name,
                    &params,
                    &Patch::Merge(json!({"status": {"phase": want}})),
                )
                .await?;
        }
    }
    for pvc in &pvcs {
        let spec = pvc.spec.clone().unwrap_or_default();
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound || pvc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let class = spec.storage_class_name.clone().unwrap_or_default();
        if !class.is_empty()
            && let Some(sc) = classes.get_opt(&class).await?
            && sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
            && spec.volume_name.as_deref().is_none_or(str::is_empty)
        {
            continue;
        }
        let want = storage(
            spec.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage")),
        );
        let modes = spec.access_modes.clone().unwrap_or_default();
        let ns = pvc.metadata.namespace.as_deref().unwrap_or("default");
        let name = pvc.metadata.name.as_deref().unwrap_or("");
        let fits = |pv: &PersistentVolume| {
            let s = pv.spec.clone().unwrap_or_default();
            let free = s.claim_ref.as_ref().is_none_or(|r| {
                r.namespace.as_deref() == Some(ns) && r.name.as_deref() == Some(name)
            });
            free && phase(pv) == "Available"
                && s.storage_class_name.clone().unwrap_or_default() == class
                && storage(s.capacity.as_ref().and_then(|c| c.get("storage"))) >= want
                && modes
                    .iter()
                    .all(|m| s.access_modes.iter().flatten().any(|x| x == m))
        };
        let chosen = match spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => pvs
                .iter()
                .position(|pv| pv.metadata.name.as_deref() == Some(v) && fits(pv)),
            None => pvs
                .iter()
                .enumerate()
                .filter(|(_, pv)| fits(pv))
                .min_by_key(|(_, pv)| {
                    storage(
                        pv.spec
                            .as_ref()
                            .and_then(|s| s.capacity.as_ref())
                            .and_then(|c| c.get("storage")),
                    )
                })
                .map(|(i, _)| i),
        };
        let Some(i) = chosen else { continue };
        let pv = pvs.remove(i);
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let pv_spec = pv.spec.clone().unwrap_or_default();
        let claim_ref = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
            "name": name, "uid": pvc.metadata.uid, "resourceVersion": pvc.metadata.resource_version});
        volumes
            .patch(
                &pv_name,
                &params,
                &Patch::Merge(json!({"spec": {"claimRef": claim_ref}})),
            )
            .await?;
        volumes
            .patch_status(
                &pv_name,
                &params,
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await?;
        let pvcs_ns: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        pvcs_ns
            .patch(
                name,
                &params,
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                    "spec": {"volumeName": pv_name}}),
                ),
            )
            .await?;
        pvcs_ns
            .patch_status(
                name,
                &params,
                &Patch::Merge(
                    json!({"status": {"phase": "Bound", "capacity": pv_spec.capacity,
                    "accessModes": pv_spec.access_modes}}),
                ),
            )
            .await?;
    }
    Ok(())
}
