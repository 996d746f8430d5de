//! Pure predicates on Pods that several components need: QoS class, requests and limits,
//! priority, whether a pod has finished.

use crate::quantity;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

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

/// A pod's QoS class: the one its status records, else computed from its spec.
pub fn pod_qos(pod: &Pod) -> QosClass {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("BestEffort") => QosClass::BestEffort,
        Some("Guaranteed") => QosClass::Guaranteed,
        Some("Burstable") => QosClass::Burstable,
        _ => pod.spec.as_ref().map_or(QosClass::BestEffort, qos_class),
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

/// What a pod's containers request of `resource` together (init containers not counted).
pub fn pod_request(pod: &Pod, resource: &str) -> u64 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| container_request(c, resource))
        .sum()
}

/// `spec.priority` (0 when unset).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether the pod has finished (`Succeeded` or `Failed`).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
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
        assert_eq!(pod_request(&pod, "memory"), 65 << 20);
        assert_eq!(priority(&pod), 0);
    }
}
