//! Preemption, as kube-scheduler's DefaultPreemption post-filter does it: when a pod fits no
//! node, find a node where removing pods of lower priority would let it fit, keep as many of
//! those pods as still lets it fit (higher priorities reprieved first), and prefer the node
//! whose victims have the lowest highest priority, then the fewest victims. The scheduler then
//! deletes the victims (each gets a `Preempted` event) and nominates the node in the pod's
//! `status.nominatedNodeName`; the pod is scheduled there once they are gone.

use crate::framework::{Framework, NodeInfo};
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;

/// A pod's priority (set by the API server's Priority admission; 0 when absent).
pub fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The node to preempt on and the pods to remove there.
#[derive(Debug)]
pub struct Plan {
    pub node: usize,
    pub victims: Vec<Arc<Pod>>,
}

/// `node` as it would be without `victims`.
fn without(node: &NodeInfo, victims: &[Arc<Pod>]) -> NodeInfo {
    let mut info = NodeInfo::new(node.node.clone());
    for p in &node.assigned {
        if !victims.iter().any(|v| Arc::ptr_eq(v, p)) {
            info.add(p.clone());
        }
    }
    info
}

fn fits(framework: &Framework, pod: &Pod, node: &NodeInfo) -> bool {
    framework.schedule(pod, std::slice::from_ref(node)).is_ok()
}

/// Whether the pod may preempt at all: not `preemptionPolicy: Never`, and not while the
/// victims of an earlier preemption for it are still terminating on its nominated node.
pub fn may_preempt(pod: &Pod, nodes: &[NodeInfo]) -> bool {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never")
    {
        return false;
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    let waiting = nominated.is_some_and(|n| {
        nodes.iter().filter(|i| i.name() == n).any(|i| {
            i.assigned
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < priority(pod))
        })
    });
    !waiting
}

/// The best preemption for `pod`, if any node would take it without lower-priority pods.
pub fn plan(framework: &Framework, pod: &Pod, nodes: &[NodeInfo]) -> Option<Plan> {
    let prio = priority(pod);
    let mut best: Option<((i32, usize), Plan)> = None;
    for (i, node) in nodes.iter().enumerate() {
        let mut candidates: Vec<Arc<Pod>> = node
            .assigned
            .iter()
            .filter(|p| priority(p) < prio && p.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        if candidates.is_empty() || !fits(framework, pod, &without(node, &candidates)) {
            continue;
        }
        // Reprieve as many as possible, the highest priorities first.
        candidates.sort_by_key(|p| std::cmp::Reverse(priority(p)));
        let mut victims = candidates.clone();
        for c in &candidates {
            let trial: Vec<Arc<Pod>> = victims
                .iter()
                .filter(|v| !Arc::ptr_eq(v, c))
                .cloned()
                .collect();
            if fits(framework, pod, &without(node, &trial)) {
                victims = trial;
            }
        }
        let rank = (
            victims
                .iter()
                .map(|p| priority(p))
                .max()
                .unwrap_or(i32::MIN),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, Plan { node: i, victims }));
        }
    }
    best.map(|(_, plan)| plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn node(name: &str, pods: &[Pod]) -> NodeInfo {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "2"}}}))
        .unwrap();
        let mut info = NodeInfo::new(n);
        for p in pods {
            info.add(p.clone());
        }
        info
    }

    fn pod(name: &str, priority: i32, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c"}], "priority": priority, "nodeName": node}}))
        .unwrap()
    }

    #[test]
    fn the_node_with_the_cheapest_victims_is_chosen_and_only_what_is_needed_goes() {
        let framework = Framework::new(crate::plugins::defaults());
        let nodes = vec![
            node("a", &[pod("a1", 100, Some("a")), pod("a2", 5, Some("a"))]),
            node("b", &[pod("b1", 1, Some("b")), pod("b2", 2, Some("b"))]),
        ];
        let high = pod("high", 1000, None);
        assert!(
            framework.schedule(&high, &nodes).is_err(),
            "both nodes are full"
        );
        let chosen = plan(&framework, &high, &nodes).expect("a preemption");
        assert_eq!(chosen.node, 1, "node b's victims have lower priorities");
        let victims: Vec<&str> = chosen
            .victims
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            victims,
            ["b1"],
            "one pod's room is enough; the higher one is reprieved"
        );
        // Nothing of lower priority: no preemption.
        assert!(plan(&framework, &pod("low", 0, None), &nodes).is_none());
        let mut never = high.clone();
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert!(!may_preempt(&never, &nodes));
    }
}
