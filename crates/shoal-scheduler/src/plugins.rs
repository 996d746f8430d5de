//! The built-in plugins: NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
//! NodePorts, NodeResourcesFit (least-allocated), NodeResourcesBalancedAllocation, and the
//! ones that look at other pods, PodTopologySpread and InterPodAffinity ([`crate::spread`],
//! [`crate::interpod`]).

pub use crate::framework::{
    CycleState, NodeInfo, Plugin, Requests, nonzero_requests, normalize_scores, requests,
};
use k8s_openapi::api::core::v1::Pod;
use shoal_api::node::NodeExt;
use shoal_api::pod::{PodExt, QosClass};
use shoal_api::predicates::{term_matches, tolerates};

pub struct NodeName;
impl Plugin for NodeName {
    fn name(&self) -> &str {
        "NodeName"
    }
    fn filter(&self, _s: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name() => {
                Err("node(s) didn't match the requested node name".into())
            }
            _ => Ok(()),
        }
    }
}

pub struct NodeUnschedulable;
impl Plugin for NodeUnschedulable {
    fn name(&self) -> &str {
        "NodeUnschedulable"
    }
    fn filter(&self, _s: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let cordoned = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Ok(());
        }
        let tolerated = pod.tolerations().iter().any(|t| {
            t.key.as_deref() == Some("node.kubernetes.io/unschedulable")
                && t.effect.as_deref().is_none_or(|e| e == "NoSchedule")
        });
        if tolerated {
            Ok(())
        } else {
            Err("node(s) were unschedulable".into())
        }
    }
}

/// The taint of a node under memory pressure.
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";

pub struct TaintToleration;
impl Plugin for TaintToleration {
    fn name(&self) -> &str {
        "TaintToleration"
    }
    fn filter(&self, _s: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let tols = pod.tolerations();
        // Guaranteed and Burstable pods tolerate memory pressure (Kubernetes' admission gives
        // them the toleration): only BestEffort pods stay off a node short of memory.
        let best_effort = || pod.qos() == QosClass::BestEffort;
        let untolerated = node
            .node
            .taints()
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .filter(|t| t.key != MEMORY_PRESSURE || best_effort())
            .find(|taint| !tols.iter().any(|t| tolerates(t, taint)));
        match untolerated {
            None => Ok(()),
            Some(taint) => Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )),
        }
    }
}

pub struct NodeAffinity;
impl Plugin for NodeAffinity {
    fn name(&self) -> &str {
        "NodeAffinity"
    }
    fn filter(&self, _s: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        if pod.fits_node_affinity(&node.node) {
            Ok(())
        } else {
            Err("node(s) didn't match Pod's node affinity/selector".into())
        }
    }
    /// Preferred node affinity: the weights of the matching terms, normalized.
    fn score(&self, _s: &CycleState, pod: &Pod, node: &NodeInfo) -> Option<i64> {
        let preferred = pod
            .spec
            .as_ref()?
            .affinity
            .as_ref()?
            .node_affinity
            .as_ref()?
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()?;
        Some(
            preferred
                .iter()
                .filter(|t| term_matches(&t.preference, &node.node))
                .map(|t| i64::from(t.weight))
                .sum(),
        )
    }
    fn normalize(&self, _s: &CycleState, _pod: &Pod, scores: &mut [i64]) {
        if scores.iter().any(|s| *s != 0) {
            normalize_scores(scores, false);
        }
    }
    fn weight(&self) -> i64 {
        2
    }
}

pub struct NodeResourcesFit;
impl Plugin for NodeResourcesFit {
    fn name(&self) -> &str {
        "NodeResourcesFit"
    }
    fn filter(&self, s: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let r = s.requests;
        let mut why = Vec::new();
        if node.pods + 1 > node.allocatable_pods {
            why.push("Too many pods");
        }
        if r.cpu_millis > 0
            && node.requested_cpu_millis + r.cpu_millis > node.allocatable_cpu_millis
        {
            why.push("Insufficient cpu");
        }
        if r.memory > 0 && node.requested_memory + r.memory > node.allocatable_memory {
            why.push("Insufficient memory");
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join(", "))
        }
    }
    /// Least allocated: the more room a node keeps, the higher it scores.
    fn score(&self, s: &CycleState, _pod: &Pod, node: &NodeInfo) -> Option<i64> {
        let r = s.nonzero;
        let frac = |used: u64, cap: u64| {
            if cap == 0 {
                0.0
            } else {
                (cap.saturating_sub(used) as f64 / cap as f64).clamp(0.0, 1.0)
            }
        };
        let cpu = frac(
            node.nonzero_cpu_millis + r.cpu_millis,
            node.allocatable_cpu_millis,
        );
        let mem = frac(node.nonzero_memory + r.memory, node.allocatable_memory);
        Some(((cpu + mem) / 2.0 * 100.0) as i64)
    }
}

/// Balanced allocation: nodes whose cpu and memory use stay close score higher.
pub struct BalancedAllocation;
impl Plugin for BalancedAllocation {
    fn name(&self) -> &str {
        "NodeResourcesBalancedAllocation"
    }
    fn score(&self, s: &CycleState, _pod: &Pod, node: &NodeInfo) -> Option<i64> {
        let r = s.nonzero;
        let frac = |used: u64, cap: u64| {
            if cap == 0 {
                1.0
            } else {
                (used as f64 / cap as f64).min(1.0)
            }
        };
        let cpu = frac(
            node.nonzero_cpu_millis + r.cpu_millis,
            node.allocatable_cpu_millis,
        );
        let mem = frac(node.nonzero_memory + r.memory, node.allocatable_memory);
        Some(((1.0 - (cpu - mem).abs()) * 100.0) as i64)
    }
}

pub struct NodePorts;
impl Plugin for NodePorts {
    fn name(&self) -> &str {
        "NodePorts"
    }
    fn filter(&self, s: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        if s.host_ports.iter().any(|p| node.host_ports.contains(p)) {
            Err("node(s) didn't have free ports for the requested pod ports".into())
        } else {
            Ok(())
        }
    }
}

/// The default profile, in Kubernetes' order.
pub fn defaults() -> Vec<Box<dyn Plugin>> {
    vec![
        Box::new(NodeUnschedulable),
        Box::new(NodeName),
        Box::new(TaintToleration),
        Box::new(NodeAffinity),
        Box::new(NodePorts),
        Box::new(NodeResourcesFit),
        Box::new(crate::spread::PodTopologySpread),
        Box::new(crate::interpod::InterPodAffinity),
        Box::new(BalancedAllocation),
    ]
}

/// RuntimeClass handlers by class name, as the scheduler's watch of RuntimeClasses keeps them.
pub type RuntimeClasses =
    std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>;

/// A pod with a `runtimeClassName` goes only to nodes whose status lists the class's handler
/// among its `runtimeHandlers` (a node listing none runs Wasm components only). A class that
/// does not exist makes the pod unschedulable everywhere, saying so.
pub struct RuntimeHandler(pub RuntimeClasses);

impl RuntimeHandler {
    const NAME: &str = "RuntimeHandler";
}

impl Plugin for RuntimeHandler {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _nodes: &[NodeInfo],
    ) -> Result<(), String> {
        let Some(class) = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|c| !c.is_empty())
        else {
            return Ok(());
        };
        let handler = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(class)
            .cloned()
            .ok_or_else(|| format!("RuntimeClass {class:?} not found"))?;
        state.write(Self::NAME, handler);
        Ok(())
    }
    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let Some(handler) = state.read::<String>(Self::NAME) else {
            return Ok(());
        };
        let listed = node
            .node
            .status
            .as_ref()
            .and_then(|s| s.runtime_handlers.as_ref())
            .filter(|h| !h.is_empty());
        let has = match listed {
            Some(hs) => hs
                .iter()
                .any(|h| h.name.as_deref() == Some(handler.as_str())),
            None => handler == "wasmtime",
        };
        if has {
            Ok(())
        } else {
            Err(format!("node(s) had no runtime handler {handler:?}"))
        }
    }
}
