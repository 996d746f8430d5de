//! InterPodAffinity: required pod affinity (the node's topology domain must hold a matching
//! pod, unless none exists anywhere and the pod matches its own term), required pod
//! anti-affinity (the domain must hold none), the anti-affinity of pods already placed
//! (symmetry), and preferred affinity / anti-affinity as scores.
//!
//! Term namespaces: `namespaces`, else the pod's own; an empty `namespaceSelector` means all
//! namespaces. A non-empty `namespaceSelector` is not evaluated (the scheduler does not watch
//! Namespaces) and counts as the listed or own namespaces only.

use crate::framework::{CycleState, NodeInfo, Plugin, normalize_scores};
use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use shoal_api::selector::LabelSelectorExt;
use std::collections::{HashMap, HashSet};

const NAME: &str = "InterPodAffinity";

/// Whether `term`, written in a pod of namespace `owner_ns`, selects `pod`.
fn term_selects(term: &PodAffinityTerm, owner_ns: Option<&str>, pod: &Pod) -> bool {
    let ns = pod.metadata.namespace.as_deref();
    let all = term.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    });
    let in_ns = all
        || match term.namespaces.as_deref() {
            Some(list) if !list.is_empty() => ns.is_some_and(|n| list.iter().any(|x| x == n)),
            _ => ns == owner_ns,
        };
    in_ns
        && pod.metadata.deletion_timestamp.is_none()
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| s.selects(pod.metadata.labels.as_ref()))
}

fn required_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[])
}

/// The pod's required anti-affinity terms.
pub fn required_anti(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[])
}

/// Preferred terms with their signed weights (anti-affinity negative).
fn preferred(pod: &Pod) -> Vec<(&PodAffinityTerm, i64)> {
    let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return Vec::new();
    };
    let pos = a
        .pod_affinity
        .as_ref()
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|w| (&w.pod_affinity_term, i64::from(w.weight)));
    let neg = a
        .pod_anti_affinity
        .as_ref()
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|w| (&w.pod_affinity_term, -i64::from(w.weight)));
    pos.chain(neg).collect()
}

#[derive(Debug, Default)]
struct State {
    /// Domains `(key, value)` where a placed pod's required anti-affinity rejects this pod.
    existing_anti: HashMap<String, HashSet<String>>,
    /// Per required anti-affinity term of this pod: the values of its key holding a match.
    anti: Vec<(String, HashSet<String>)>,
    /// Per required affinity term: its key, the values holding a match, and whether the pod
    /// may go anywhere because no pod matches yet and it matches its own term.
    affinity: Vec<(String, HashSet<String>, bool)>,
}

pub struct InterPodAffinity;

impl Plugin for InterPodAffinity {
    fn name(&self) -> &str {
        NAME
    }

    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[NodeInfo],
    ) -> Result<(), String> {
        let ns = pod.metadata.namespace.as_deref();
        let aff = required_affinity(pod);
        let anti = required_anti(pod);
        let mut s = State {
            anti: anti
                .iter()
                .map(|t| (t.topology_key.clone(), HashSet::new()))
                .collect(),
            affinity: aff
                .iter()
                .map(|t| (t.topology_key.clone(), HashSet::new(), false))
                .collect(),
            ..Default::default()
        };
        let mut any_match = vec![false; aff.len()];
        let mut relevant = !aff.is_empty() || !anti.is_empty();
        for n in nodes {
            let labels = n.labels();
            let value = |key: &str| labels.and_then(|l| l.get(key)).cloned();
            // Placed pods whose anti-affinity rejects this one (symmetry).
            for p in &n.with_anti_affinity {
                relevant = true;
                for t in required_anti(p) {
                    if term_selects(t, p.metadata.namespace.as_deref(), pod)
                        && let Some(v) = value(&t.topology_key)
                    {
                        s.existing_anti
                            .entry(t.topology_key.clone())
                            .or_default()
                            .insert(v);
                    }
                }
            }
            if aff.is_empty() && anti.is_empty() {
                continue;
            }
            for p in &n.assigned {
                for (k, t) in anti.iter().enumerate() {
                    if term_selects(t, ns, p)
                        && let Some(v) = value(&t.topology_key)
                    {
                        s.anti[k].1.insert(v);
                    }
                }
                for (k, t) in aff.iter().enumerate() {
                    if term_selects(t, ns, p) {
                        any_match[k] = true;
                        if let Some(v) = value(&t.topology_key) {
                            s.affinity[k].1.insert(v);
                        }
                    }
                }
            }
        }
        for (k, t) in aff.iter().enumerate() {
            s.affinity[k].2 = !any_match[k] && term_selects(t, ns, pod);
        }
        if relevant {
            state.write(NAME, s);
        }
        Ok(())
    }

    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let Some(s) = state.read::<State>(NAME) else {
            return Ok(());
        };
        let labels = node.labels();
        let value = |key: &str| labels.and_then(|l| l.get(key));
        if s.existing_anti
            .iter()
            .any(|(k, values)| value(k).is_some_and(|v| values.contains(v)))
        {
            return Err("node(s) didn't satisfy existing pods anti-affinity rules".into());
        }
        if s.anti
            .iter()
            .any(|(k, values)| value(k).is_some_and(|v| values.contains(v)))
        {
            return Err("node(s) didn't match pod anti-affinity rules".into());
        }
        for (k, values, first) in &s.affinity {
            let ok = match value(k) {
                Some(v) => values.contains(v) || *first,
                None => false,
            };
            if !ok {
                return Err("node(s) didn't match pod affinity rules".into());
            }
        }
        Ok(())
    }

    fn pre_score(&self, state: &mut CycleState, pod: &Pod, feasible: &[&NodeInfo]) {
        let terms = preferred(pod);
        if terms.is_empty() {
            return;
        }
        let ns = pod.metadata.namespace.as_deref();
        // Weight per domain: every matching pod in a domain adds its term's weight.
        let mut weights: HashMap<(String, String), i64> = HashMap::new();
        for n in feasible {
            let labels = n.labels();
            for p in &n.assigned {
                for (t, w) in &terms {
                    if term_selects(t, ns, p)
                        && let Some(v) = labels.and_then(|l| l.get(&t.topology_key))
                    {
                        *weights
                            .entry((t.topology_key.clone(), v.clone()))
                            .or_default() += w;
                    }
                }
            }
        }
        state.write("InterPodAffinity/score", weights);
    }

    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Option<i64> {
        let weights = state.read::<HashMap<(String, String), i64>>("InterPodAffinity/score")?;
        let labels = node.labels()?;
        Some(
            weights
                .iter()
                .filter(|((k, v), _)| labels.get(k) == Some(v))
                .map(|(_, w)| *w)
                .sum(),
        )
    }

    fn normalize(&self, _state: &CycleState, _pod: &Pod, scores: &mut [i64]) {
        normalize_scores(scores, false);
    }

    fn weight(&self) -> i64 {
        2
    }
}

#[cfg(test)]
mod tests {
    use crate::framework::{Framework, NodeInfo};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn node(name: &str) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value::<k8s_openapi::api::core::v1::Node>(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}
            }))
            .unwrap(),
        )
    }

    fn pod(app: &str, affinity: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": "default", "labels": {"app": app}},
            "spec": {"containers": [{"name": "c"}], "affinity": affinity}
        }))
        .unwrap()
    }

    fn term(app: &str) -> serde_json::Value {
        json!([{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}])
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart_until_nodes_run_out() {
        let fw = Framework::new(crate::plugins::defaults());
        let mut nodes = vec![node("a"), node("b")];
        let p = pod(
            "web",
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web")}}),
        );
        for _ in 0..2 {
            let d = fw.schedule(&p, &nodes).unwrap();
            nodes[d.node].add(p.clone());
        }
        assert_eq!((nodes[0].pods, nodes[1].pods), (1, 1));
        // Both placed pods reject it, which Kubernetes reports first.
        let err = fw.schedule(&p, &nodes).err().unwrap();
        assert!(
            err.starts_with("0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules."),
            "{err}"
        );
        // A pod that only itself refuses the others' company.
        let loner = pod(
            "solo",
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web")}}),
        );
        let err = fw.schedule(&loner, &nodes).err().unwrap();
        assert!(
            err.starts_with(
                "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
            ),
            "{err}"
        );
        // Symmetry: a pod the placed pods' anti-affinity rejects cannot join them either.
        let other = pod("web", json!(null));
        let err = fw.schedule(&other, &nodes).err().unwrap();
        assert!(
            err.contains("didn't satisfy existing pods anti-affinity rules"),
            "{err}"
        );
    }

    #[test]
    fn affinity_follows_matching_pods_and_the_first_may_go_anywhere() {
        let fw = Framework::new(crate::plugins::defaults());
        let mut nodes = vec![node("a"), node("b"), node("c")];
        let follower = pod(
            "cache",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db")}}),
        );
        let err = fw.schedule(&follower, &nodes).err().unwrap();
        assert!(
            err.contains("3 node(s) didn't match pod affinity rules"),
            "{err}"
        );
        nodes[2].add(pod("db", json!(null)));
        assert_eq!(fw.schedule(&follower, &nodes).unwrap().node, 2);
        // A pod matching its own term may start the group anywhere.
        let selfish = pod(
            "db2",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db2")}}),
        );
        assert!(fw.schedule(&selfish, &nodes).is_ok());
    }

    #[test]
    fn preferred_affinity_scores() {
        let fw = Framework::new(crate::plugins::defaults());
        let mut nodes = vec![node("a"), node("b")];
        nodes[1].add(pod("db", json!(null)));
        let p = pod(
            "app",
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": term("db")[0]}]}}),
        );
        assert_eq!(fw.schedule(&p, &nodes).unwrap().node, 1);
    }
}
