//! Pure predicates on Pods that several components need ([`PodExt`]): QoS class, requests
//! and limits, priority, whether a pod has finished, whether it may run on a node.

use crate::node::NodeExt;
use crate::predicates::{term_matches, tolerates};
use crate::quantity;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, Taint, Toleration};

/// Kubernetes' QoS classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QosClass {
    BestEffort,
    Burstable,
    Guaranteed,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::BestEffort => "BestEffort",
            QosClass::Burstable => "Burstable",
            QosClass::Guaranteed => "Guaranteed",
        }
    }
}

/// The QoS class of a pod spec, as Kubernetes computes it: no requests or limits at all is
/// `BestEffort`; cpu and memory limits on every container with requests equal to them (or
/// unset) is `Guaranteed`; anything else `Burstable`.
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let mut any = false;
    let mut guaranteed = !spec.containers.is_empty();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let res = c.resources.as_ref();
        let req = res.and_then(|r| r.requests.as_ref());
        let lim = res.and_then(|r| r.limits.as_ref());
        any |= req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty());
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

fn quantity_of(c: &Container, kind: &str, resource: &str) -> Option<u64> {
    let res = c.resources.as_ref()?;
    let list = if kind == "limits" {
        res.limits.as_ref()
    } else {
        res.requests.as_ref().or(res.limits.as_ref())
    }?;
    let q = list.get(resource)?;
    if resource == "cpu" {
        quantity::millis(&q.0).ok()
    } else {
        quantity::bytes(&q.0).ok()
    }
}

/// A container's request of `resource` in bytes (millis for cpu), defaulting to its limit.
pub fn container_request(c: &Container, resource: &str) -> Option<u64> {
    quantity_of(c, "requests", resource)
}

/// A container's limit of `resource` in bytes (millis for cpu).
pub fn container_limit(c: &Container, resource: &str) -> Option<u64> {
    quantity_of(c, "limits", resource)
}

/// What every component asks of a Pod.
pub trait PodExt {
    /// Its QoS class: the one its status records, else computed from its spec.
    fn qos(&self) -> QosClass;
    /// What its containers request of `resource` together (init containers not counted).
    fn request(&self, resource: &str) -> u64;
    /// `spec.priority` (0 when unset).
    fn priority(&self) -> i32;
    /// Whether it has finished (`Succeeded` or `Failed`).
    fn is_terminal(&self) -> bool;
    /// Its tolerations.
    fn tolerations(&self) -> &[Toleration];
    /// The first NoSchedule or NoExecute taint of `node` it does not tolerate.
    fn untolerated_taint<'a>(&self, node: &'a Node) -> Option<&'a Taint>;
    /// Whether `node` satisfies its nodeSelector and required node affinity.
    fn fits_node_affinity(&self, node: &Node) -> bool;
}

impl PodExt for Pod {
    fn qos(&self) -> QosClass {
        match self.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
            Some("BestEffort") => QosClass::BestEffort,
            Some("Guaranteed") => QosClass::Guaranteed,
            Some("Burstable") => QosClass::Burstable,
            _ => self.spec.as_ref().map_or(QosClass::BestEffort, qos_class),
        }
    }

    fn request(&self, resource: &str) -> u64 {
        self.spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter_map(|c| container_request(c, resource))
            .sum()
    }

    fn priority(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }

    fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }

    fn tolerations(&self) -> &[Toleration] {
        self.spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[])
    }

    fn untolerated_taint<'a>(&self, node: &'a Node) -> Option<&'a Taint> {
        let tols = self.tolerations();
        node.taints()
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|taint| !tols.iter().any(|t| tolerates(t, taint)))
    }

    fn fits_node_affinity(&self, node: &Node) -> bool {
        let Some(spec) = self.spec.as_ref() else {
            return true;
        };
        let labels = node.metadata.labels.as_ref();
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !selector_ok {
            return false;
        }
        spec.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(containers: serde_json::Value) -> PodSpec {
        serde_json::from_value(serde_json::json!({ "containers": containers })).unwrap()
    }

    #[test]
    fn qos_classes_follow_kubernetes() {
        assert_eq!(
            qos_class(&spec(serde_json::json!([{"name": "a"}]))),
            QosClass::BestEffort
        );
        let g = spec(serde_json::json!([{"name": "a", "resources": {
            "limits": {"cpu": "1", "memory": "1Gi"}}}]));
        assert_eq!(qos_class(&g), QosClass::Guaranteed);
        let b = spec(serde_json::json!([{"name": "a", "resources": {
            "requests": {"memory": "1Gi"}}}]));
        assert_eq!(qos_class(&b), QosClass::Burstable);
        let mixed = spec(serde_json::json!([{"name": "a", "resources": {
            "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}]));
        assert_eq!(qos_class(&mixed), QosClass::Burstable);
    }

    #[test]
    fn requests_default_to_limits() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi"}}},
            {"name": "b", "resources": {"requests": {"memory": "1Mi"}}}]}}))
        .unwrap();
        assert_eq!(pod.request("memory"), 65 << 20);
        assert_eq!(pod.priority(), 0);
    }
}
