//! PodTopologySpread: `topologySpreadConstraints` with `DoNotSchedule` filter nodes whose
//! domain would exceed `maxSkew` over the least loaded domain; `ScheduleAnyway` constraints
//! score nodes in less loaded domains higher. A pod with a controller and no constraints of
//! its own gets Kubernetes' system defaults (zone skew 3, hostname skew 5, both soft), spread
//! over the pods with its labels.

use crate::framework::{CycleState, NodeInfo, Plugin, normalize_scores};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use shoal_api::pod::PodExt;
use shoal_api::selector::LabelSelectorExt;
use std::collections::HashMap;

const NAME: &str = "PodTopologySpread";
const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";

#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    key: String,
    selector: LabelSelector,
    hard: bool,
    min_domains: Option<i32>,
}

/// Pods per domain (label value) of one constraint, over the nodes the pod could go to.
#[derive(Debug)]
struct Counts {
    c: Constraint,
    per_domain: HashMap<String, i64>,
    min: i64,
    /// 1 if the incoming pod matches its own selector (it will count once placed).
    own: i64,
}

/// The hard constraints' counts, from pre-filter for filter.
#[derive(Debug, Default)]
struct State {
    hard: Vec<Counts>,
}

fn constraints(pod: &Pod) -> Vec<Constraint> {
    let spec = pod.spec.as_ref();
    let own: Vec<Constraint> = spec
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .map(|c| Constraint {
            max_skew: i64::from(c.max_skew.max(1)),
            key: c.topology_key.clone(),
            selector: c.label_selector.clone().unwrap_or_default(),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            min_domains: c.min_domains,
        })
        .collect();
    if !own.is_empty() {
        return own;
    }
    let controlled = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if !controlled || labels.is_empty() {
        return Vec::new();
    }
    let selector = LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    };
    [(ZONE, 3), (HOSTNAME, 5)]
        .into_iter()
        .map(|(key, skew)| Constraint {
            max_skew: skew,
            key: key.into(),
            selector: selector.clone(),
            hard: false,
            min_domains: None,
        })
        .collect()
}

fn count(c: &Constraint, pod: &Pod, nodes: &[&NodeInfo]) -> Counts {
    let ns = pod.metadata.namespace.as_deref();
    let mut per_domain: HashMap<String, i64> = HashMap::new();
    for n in nodes {
        let Some(value) = n.labels().and_then(|l| l.get(&c.key)) else {
            continue;
        };
        if !pod.fits_node_affinity(&n.node) {
            continue;
        }
        let matching = n
            .assigned
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata.namespace.as_deref() == ns
                    && c.selector.selects(p.metadata.labels.as_ref())
            })
            .count() as i64;
        *per_domain.entry(value.clone()).or_default() += matching;
    }
    let mut min = per_domain.values().copied().min().unwrap_or(0);
    if c.min_domains
        .is_some_and(|m| (per_domain.len() as i64) < i64::from(m))
    {
        min = 0;
    }
    let own = i64::from(c.selector.selects(pod.metadata.labels.as_ref()));
    Counts {
        c: c.clone(),
        per_domain,
        min,
        own,
    }
}

pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &str {
        NAME
    }

    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[NodeInfo],
    ) -> Result<(), String> {
        let all = constraints(pod);
        if all.is_empty() {
            return Ok(());
        }
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let hard = all
            .iter()
            .filter(|c| c.hard)
            .map(|c| count(c, pod, &refs))
            .collect();
        let soft: Vec<Constraint> = all.into_iter().filter(|c| !c.hard).collect();
        state.write(NAME, State { hard });
        state.write("PodTopologySpread/soft", soft);
        Ok(())
    }

    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let Some(s) = state.read::<State>(NAME) else {
            return Ok(());
        };
        for k in &s.hard {
            let Some(value) = node.labels().and_then(|l| l.get(&k.c.key)) else {
                return Err(
                    "node(s) didn't match pod topology spread constraints (missing required label)"
                        .into(),
                );
            };
            let here = k.per_domain.get(value).copied().unwrap_or(0);
            if here + k.own - k.min > k.c.max_skew {
                return Err("node(s) didn't match pod topology spread constraints".into());
            }
        }
        Ok(())
    }

    fn pre_score(&self, state: &mut CycleState, pod: &Pod, feasible: &[&NodeInfo]) {
        let Some(soft) = state.read::<Vec<Constraint>>("PodTopologySpread/soft") else {
            return;
        };
        if soft.is_empty() {
            return;
        }
        let counted: Vec<Counts> = soft.iter().map(|c| count(c, pod, feasible)).collect();
        state.write("PodTopologySpread/score", counted);
    }

    /// Pods already in the node's domains (fewer is better); -1 for a node missing a key.
    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Option<i64> {
        let counted = state.read::<Vec<Counts>>("PodTopologySpread/score")?;
        let mut total = 0;
        for k in counted {
            match node.labels().and_then(|l| l.get(&k.c.key)) {
                Some(v) => total += k.per_domain.get(v).copied().unwrap_or(0),
                None => return Some(-1),
            }
        }
        Some(total)
    }

    fn normalize(&self, _state: &CycleState, _pod: &Pod, scores: &mut [i64]) {
        let missing: Vec<bool> = scores.iter().map(|s| *s < 0).collect();
        let max = scores.iter().copied().max().unwrap_or(0);
        for s in scores.iter_mut() {
            if *s < 0 {
                *s = max;
            }
        }
        normalize_scores(scores, true);
        for (s, m) in scores.iter_mut().zip(missing) {
            if m {
                *s = 0;
            }
        }
    }

    fn weight(&self) -> i64 {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Framework;
    use serde_json::json;

    fn node(name: &str, zone: &str) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value::<k8s_openapi::api::core::v1::Node>(json!({
                "metadata": {"name": name, "labels": {ZONE: zone, HOSTNAME: name}},
                "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, constraints: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c"}], "topologySpreadConstraints": constraints}
        }))
        .unwrap()
    }

    #[test]
    fn hard_constraints_keep_zones_within_max_skew() {
        let fw = Framework::new(crate::plugins::defaults());
        let mut nodes = vec![node("a", "z1"), node("b", "z1"), node("c", "z2")];
        let c = json!([{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "web"}}}]);
        // z1 has two pods, z2 none: the next must go to z2.
        nodes[0].add(pod("x", json!([])));
        nodes[1].add(pod("y", json!([])));
        let d = fw.schedule(&pod("p", c.clone()), &nodes).unwrap();
        assert_eq!(nodes[d.node].name(), "c");
        // If z2 is full, z1 may not take it either: the skew would be 3.
        nodes[2].allocatable_pods = 0;
        let err = fw.schedule(&pod("p", c), &nodes).err().unwrap();
        assert!(
            err.starts_with("0/3 nodes are available: 1 Too many pods, 2 node(s) didn't match pod topology spread constraints."),
            "{err}"
        );
    }

    #[test]
    fn soft_defaults_spread_a_controllers_pods() {
        let fw = Framework::new(crate::plugins::defaults());
        let mut nodes = vec![node("a", "z1"), node("b", "z1")];
        let mut owned = pod("p", json!([]));
        owned.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true
        })).unwrap()]);
        for _ in 0..4 {
            let d = fw.schedule(&owned, &nodes).unwrap();
            nodes[d.node].add(owned.clone());
        }
        assert_eq!(nodes[0].pods, 2);
        assert_eq!(nodes[1].pods, 2);
    }
}
