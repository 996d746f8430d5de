//! Preemption, as kube-scheduler's DefaultPreemption post-filter does it: when a pod fits no
//! node, find a node where removing pods of lower priority would let it fit, keep as many of
//! those pods as still lets it fit (higher priorities reprieved first), and prefer the node
//! whose victims violate the fewest PodDisruptionBudgets, then have the lowest highest
//! priority, then are the fewest (victims a budget protects are reprieved before the others,
//! as kube-scheduler does). The scheduler then
//! deletes the victims (each gets a `Preempted` event) and nominates the node in the pod's
//! `status.nominatedNodeName`; the pod is scheduled there once they are gone.

use crate::framework::{Framework, NodeInfo};
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;

/// A pod's priority (set by the API server's Priority admission; 0 when absent).
pub fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// What a PodDisruptionBudget lets go: the pods it selects in its namespace, and how many
/// more of them may be disrupted.
#[derive(Debug, Clone)]
pub struct Budget {
    pub namespace: String,
    pub selector: shoal_api::selector::LabelSelector,
    pub allowed: i32,
    /// Pods the API server already counted as disrupted (their eviction is under way).
    pub disrupted: Vec<String>,
}

impl Budget {
    /// The budget a PodDisruptionBudget object describes (none without a usable selector).
    pub fn of(pdb: &k8s_openapi::api::policy::v1::PodDisruptionBudget) -> Option<Budget> {
        let selector = serde_json::to_value(pdb.spec.as_ref()?.selector.as_ref()?).ok()?;
        let selector = shoal_api::selector::LabelSelector::from_object(&selector).ok()?;
        let status = pdb.status.as_ref();
        Some(Budget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        })
    }

    fn selects(&self, p: &Pod) -> bool {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        p.metadata.namespace.as_deref().unwrap_or("default") == self.namespace
            && !labels.is_empty()
            && !self.selector.is_empty()
            && self.selector.matches(&labels)
    }
}

/// Splits `pods` (highest priority first) into those whose removal would take a budget below
/// zero and the others, spending the budgets in that order.
fn split_by_budget(pods: &[Arc<Pod>], budgets: &[Budget]) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut left: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
    let (mut violating, mut other) = (Vec::new(), Vec::new());
    for p in pods {
        let name = p.metadata.name.as_deref().unwrap_or("");
        let mut violates = false;
        for (b, left) in budgets.iter().zip(left.iter_mut()) {
            if b.selects(p) && !b.disrupted.iter().any(|d| d == name) {
                *left -= 1;
                violates |= *left < 0;
            }
        }
        if violates {
            violating.push(p.clone());
        } else {
            other.push(p.clone());
        }
    }
    (violating, other)
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
pub fn plan(
    framework: &Framework,
    pod: &Pod,
    nodes: &[NodeInfo],
    budgets: &[Budget],
) -> Option<Plan> {
    let prio = priority(pod);
    let mut best: Option<((usize, i32, usize), Plan)> = None;
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
        // Reprieve as many as possible: those a budget protects first, then the others,
        // the highest priorities first in each group.
        candidates.sort_by_key(|p| std::cmp::Reverse(priority(p)));
        let (violating, other) = split_by_budget(&candidates, budgets);
        let mut victims = candidates.clone();
        for c in violating.iter().chain(&other) {
            let trial: Vec<Arc<Pod>> = victims
                .iter()
                .filter(|v| !Arc::ptr_eq(v, c))
                .cloned()
                .collect();
            if fits(framework, pod, &without(node, &trial)) {
                victims = trial;
            }
        }
        let violations = victims
            .iter()
            .filter(|v| violating.iter().any(|x| Arc::ptr_eq(x, v)))
            .count();
        let rank = (
            violations,
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
        let chosen = plan(&framework, &high, &nodes, &[]).expect("a preemption");
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
        assert!(plan(&framework, &pod("low", 0, None), &nodes, &[]).is_none());
        let mut never = high.clone();
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert!(!may_preempt(&never, &nodes));
    }

    #[test]
    fn victims_a_disruption_budget_protects_are_spared_when_another_node_will_do() {
        let framework = Framework::new(crate::plugins::defaults());
        let labelled = |name: &str, prio: i32, node: &str, app: &str| {
            let mut p = pod(name, prio, Some(node));
            p.metadata.labels = Some([("app".to_owned(), app.to_owned())].into());
            p
        };
        // Node a's victims have the lower priorities, but a budget with no disruption left
        // protects them; node b's do not.
        let nodes = vec![
            node(
                "a",
                &[labelled("a1", 1, "a", "db"), labelled("a2", 1, "a", "db")],
            ),
            node(
                "b",
                &[labelled("b1", 5, "b", "web"), labelled("b2", 5, "b", "web")],
            ),
        ];
        let budget = Budget {
            namespace: "default".into(),
            selector: shoal_api::selector::LabelSelector::parse("app=db").unwrap(),
            allowed: 0,
            disrupted: Vec::new(),
        };
        let high = pod("high", 1000, None);
        let chosen = plan(&framework, &high, &nodes, std::slice::from_ref(&budget)).unwrap();
        assert_eq!(chosen.node, 1, "the node without budget violations");
        // With budget to spare, the cheaper node is chosen again.
        let spare = Budget {
            allowed: 1,
            ..budget
        };
        let chosen = plan(&framework, &high, &nodes, &[spare]).unwrap();
        assert_eq!(chosen.node, 0);
    }
}
