//! What a pod's PersistentVolumeClaims ask of its node, as kube-scheduler's VolumeBinding
//! plugin decides it: a missing claim, or an unbound claim of a class that binds at once
//! (`Immediate`), keeps the pod unschedulable until it is there and bound; a bound claim's
//! volume may pin the pod to nodes (a `local` volume's node affinity on
//! `kubernetes.io/hostname`); an unbound claim of a `WaitForFirstConsumer` class goes wherever
//! the pod goes, and the chosen node is written into the claim's
//! `volume.kubernetes.io/selected-node` annotation before the pod is bound, for that node's
//! provisioner.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use std::collections::HashMap;

pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The claims, volumes and classes the scheduler follows.
#[derive(Default)]
pub struct Volumes {
    /// By `namespace/name`.
    pub claims: HashMap<String, PersistentVolumeClaim>,
    pub volumes: HashMap<String, PersistentVolume>,
    pub classes: HashMap<String, StorageClass>,
}

/// What a pod's claims need.
#[derive(Debug, Default, PartialEq)]
pub struct Needs {
    /// The nodes it may go to (`None`: any).
    pub nodes: Option<Vec<String>>,
    /// Claims (`namespace`, `name`) to annotate with the chosen node.
    pub select: Vec<(String, String)>,
}

impl Volumes {
    /// What `pod`'s claims need, or why it cannot be placed yet.
    pub fn needs(&self, pod: &Pod) -> Result<Needs, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut needs = Needs::default();
        let claims = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref());
        for c in claims {
            let name = c.claim_name.as_str();
            let claim = self
                .claims
                .get(&format!("{ns}/{name}"))
                .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let spec = claim.spec.clone().unwrap_or_default();
            match spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
                Some(volume) => {
                    let pv = self.volumes.get(volume).ok_or_else(|| {
                        format!("persistentvolume \"{volume}\" of claim \"{name}\" not found")
                    })?;
                    if let Some(hosts) = pinned_hosts(pv) {
                        needs.nodes = Some(match needs.nodes.take() {
                            None => hosts,
                            Some(prev) => prev.into_iter().filter(|n| hosts.contains(n)).collect(),
                        });
                    }
                }
                None => {
                    let waits = spec
                        .storage_class_name
                        .as_deref()
                        .and_then(|c| self.classes.get(c))
                        .and_then(|c| c.volume_binding_mode.as_deref())
                        == Some("WaitForFirstConsumer");
                    if !waits {
                        return Err("pod has unbound immediate PersistentVolumeClaims".into());
                    }
                    needs.select.push((ns.to_owned(), name.to_owned()));
                }
            }
        }
        Ok(needs)
    }
}

/// The hosts a volume's node affinity allows (`kubernetes.io/hostname In [...]`), if it
/// names any.
fn pinned_hosts(pv: &PersistentVolume) -> Option<Vec<String>> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let hosts: Vec<String> = terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .filter(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")
        .flat_map(|e| e.values.iter().flatten().cloned())
        .collect();
    (!hosts.is_empty()).then_some(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
        .unwrap()
    }

    fn with(claim: serde_json::Value, class_mode: &str) -> Volumes {
        let mut v = Volumes::default();
        v.claims
            .insert("d/data".into(), serde_json::from_value(claim).unwrap());
        v.classes.insert(
            "c".into(),
            serde_json::from_value(json!({"metadata": {"name": "c"}, "provisioner": "x", "volumeBindingMode": class_mode})).unwrap(),
        );
        v.volumes.insert(
            "pv".into(),
            serde_json::from_value(json!({"metadata": {"name": "pv"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}})).unwrap(),
        );
        v
    }

    #[test]
    fn claims_pin_wait_or_keep_the_pod_pending() {
        assert_eq!(
            Volumes::default().needs(&pod()),
            Err("persistentvolumeclaim \"data\" not found".into())
        );
        let unbound = json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "c"}});
        assert_eq!(
            with(unbound.clone(), "Immediate").needs(&pod()),
            Err("pod has unbound immediate PersistentVolumeClaims".into())
        );
        assert_eq!(
            with(unbound, "WaitForFirstConsumer")
                .needs(&pod())
                .unwrap()
                .select,
            [("d".to_owned(), "data".to_owned())]
        );
        let bound = json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "c", "volumeName": "pv"}});
        assert_eq!(
            with(bound, "Immediate").needs(&pod()).unwrap().nodes,
            Some(vec!["n2".to_owned()])
        );
    }
}
