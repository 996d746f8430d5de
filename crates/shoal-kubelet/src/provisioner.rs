//! The `local-path` provisioner of this node: volumes are directories under the node's data
//! directory (`local-path/`), mounted into pods like any directory.
//!
//! A claim of a class whose provisioner is `shoal.dev/local-path` waits for its first pod (the
//! class's `WaitForFirstConsumer`); the scheduler names the node in the claim's
//! `volume.kubernetes.io/selected-node` annotation. This node's kubelet then makes the
//! directory, creates a `local` PersistentVolume pinned to the node (node affinity on
//! `kubernetes.io/hostname`) and bound to the claim, and binds the claim. When the claim is
//! gone, a volume with reclaim policy `Delete` is removed with its directory; one with
//! `Retain` is marked `Released` and kept.

use crate::Kubelet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const PROVISIONER: &str = "shoal.dev/local-path";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// How often claims and volumes are looked at.
const INTERVAL: Duration = Duration::from_millis(500);

/// Runs until the kubelet stops.
pub async fn run(k: Arc<Kubelet>) {
    loop {
        if let Err(e) = pass(&k).await {
            tracing::warn!(error = %e, "local-path provisioning");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

fn root(k: &Kubelet) -> PathBuf {
    k.config.data_dir.join("local-path")
}

async fn pass(k: &Kubelet) -> Result<(), kube::Error> {
    let node = k.config.node_name.as_str();
    let claims: Api<PersistentVolumeClaim> = Api::all(k.client.clone());
    let all_claims = claims.list(&ListParams::default()).await?.items;
    let classes: Api<StorageClass> = Api::all(k.client.clone());
    for claim in &all_claims {
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        let spec = claim.spec.clone().unwrap_or_default();
        let unbound = spec.volume_name.as_deref().is_none_or(str::is_empty);
        if !unbound
            || claim.metadata.deletion_timestamp.is_some()
            || annotations.get(SELECTED_NODE).map(String::as_str) != Some(node)
        {
            continue;
        }
        let Some(class_name) = spec.storage_class_name.as_deref() else {
            continue;
        };
        let Some(class) = classes.get_opt(class_name).await? else {
            continue;
        };
        if class.provisioner != PROVISIONER {
            continue;
        }
        provision(k, claim, &class).await?;
    }
    reclaim(k, &all_claims).await
}

async fn provision(
    k: &Kubelet,
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
) -> Result<(), kube::Error> {
    let node = k.config.node_name.as_str();
    let ns = claim.metadata.namespace.as_deref().unwrap_or("default");
    let name = claim.metadata.name.as_deref().unwrap_or("");
    let uid = claim.metadata.uid.as_deref().unwrap_or("");
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let pv_name = format!("pvc-{uid}");
    let dir = root(k).join(format!("{pv_name}_{ns}_{name}"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot make a local-path volume");
        return Ok(());
    }
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "volumeMode": "Filesystem",
            "local": {"path": dir.to_string_lossy()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    let volumes: Api<PersistentVolume> = Api::all(k.client.clone());
    match volumes.create(&PostParams::default(), &volume).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    bind(
        k,
        ns,
        name,
        &pv_name,
        &size,
        spec.access_modes.unwrap_or_default(),
    )
    .await?;
    shoal_client::Recorder::new(k.client.clone(), PROVISIONER, Some(node)).record(
        claim,
        None,
        shoal_client::EventType::Normal,
        "ProvisioningSucceeded",
        format!("Successfully provisioned volume {pv_name}"),
    );
    Ok(())
}

/// Binds the claim `ns/name` and the volume `pv` to each other.
async fn bind(
    k: &Kubelet,
    ns: &str,
    name: &str,
    pv: &str,
    size: &str,
    modes: Vec<String>,
) -> Result<(), kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(k.client.clone(), ns);
    let params = PatchParams::default();
    let spec = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
        "pv.kubernetes.io/bound-by-controller": "yes"}}, "spec": {"volumeName": pv}});
    claims.patch(name, &params, &Patch::Merge(spec)).await?;
    let status =
        json!({"status": {"phase": "Bound", "capacity": {"storage": size}, "accessModes": modes}});
    claims
        .patch_status(name, &params, &Patch::Merge(status))
        .await?;
    let volumes: Api<PersistentVolume> = Api::all(k.client.clone());
    volumes
        .patch_status(
            pv,
            &params,
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await?;
    Ok(())
}

/// Volumes of this node whose claim is gone: deleted with their directory (`Delete`) or
/// `Released` (`Retain`).
async fn reclaim(k: &Kubelet, claims: &[PersistentVolumeClaim]) -> Result<(), kube::Error> {
    let volumes: Api<PersistentVolume> = Api::all(k.client.clone());
    let root = root(k);
    for pv in volumes.list(&ListParams::default()).await?.items {
        let provisioned = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVISIONED_BY))
            .map(String::as_str)
            == Some(PROVISIONER);
        let spec = pv.spec.clone().unwrap_or_default();
        let Some(path) = spec.local.as_ref().map(|l| PathBuf::from(&l.path)) else {
            continue;
        };
        if !provisioned || !path.starts_with(&root) || pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(claim_ref) = spec.claim_ref.as_ref() else {
            continue;
        };
        let claim_alive = claims
            .iter()
            .any(|c| c.metadata.uid == claim_ref.uid && c.metadata.deletion_timestamp.is_none());
        if claim_alive {
            continue;
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") {
            if let Err(e) = std::fs::remove_dir_all(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, volume = %name, "cannot remove a local-path volume");
                continue;
            }
            match volumes.delete(&name, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e),
            }
        } else if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released") {
            volumes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Released"}})),
                )
                .await?;
        }
    }
    Ok(())
}
