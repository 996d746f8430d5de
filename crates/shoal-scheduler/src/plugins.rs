//! The plugin interface (a trait object, so a Wasm plugin can implement it later) and the
//! built-in filters and scores.

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint};
use std::collections::HashSet;

/// A node as the scheduler sees it: the object plus what the pods bound to it ask for.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Node,
    pub requested_cpu_millis: u64,
    pub requested_memory: u64,
    pub pods: u64,
    /// Requests as scoring counts them: a container without a cpu or memory request counts
    /// as 100m / 200Mi (Kubernetes' non-zero defaults), so empty pods still spread.
    pub nonzero_cpu_millis: u64,
    pub nonzero_memory: u64,
    /// `(protocol, hostPort)` in use.
    pub host_ports: HashSet<(String, i32)>,
}

impl NodeInfo {
    /// A node with nothing on it yet.
    pub fn new(node: Node) -> Self {
        Self {
            node,
            requested_cpu_millis: 0,
            requested_memory: 0,
            pods: 0,
            nonzero_cpu_millis: 0,
            nonzero_memory: 0,
            host_ports: HashSet::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    fn allocatable(&self, key: &str) -> Option<&str> {
        let status = self.node.status.as_ref()?;
        status
            .allocatable
            .as_ref()
            .or(status.capacity.as_ref())?
            .get(key)
            .map(|q| q.0.as_str())
    }

    pub fn allocatable_cpu_millis(&self) -> u64 {
        self.allocatable("cpu")
            .and_then(|q| shoal_api::quantity::millis(q).ok())
            .unwrap_or(0)
    }

    pub fn allocatable_memory(&self) -> u64 {
        self.allocatable("memory")
            .and_then(|q| shoal_api::quantity::bytes(q).ok())
            .unwrap_or(0)
    }

    pub fn allocatable_pods(&self) -> u64 {
        self.allocatable("pods")
            .and_then(|q| q.parse().ok())
            .unwrap_or(110)
    }

    /// Adds `pod`'s requests to the node.
    pub fn add(&mut self, pod: &Pod) {
        let r = requests(pod);
        self.requested_cpu_millis += r.cpu_millis;
        self.requested_memory += r.memory;
        let nz = nonzero_requests(pod);
        self.nonzero_cpu_millis += nz.cpu_millis;
        self.nonzero_memory += nz.memory;
        self.pods += 1;
        self.host_ports.extend(host_ports(pod));
    }
}

/// What a pod asks of a node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: u64,
    pub memory: u64,
}

/// The pod's effective requests: the sum over its containers, or the largest init container's
/// if that is more (requests default to limits, as Kubernetes defaults them).
pub fn requests(pod: &Pod) -> Requests {
    sum_requests(pod, false)
}

/// Requests for scoring: each container asks at least 100m cpu and 200Mi memory.
pub fn nonzero_requests(pod: &Pod) -> Requests {
    sum_requests(pod, true)
}

const NONZERO_CPU_MILLIS: u64 = 100;
const NONZERO_MEMORY: u64 = 200 * 1024 * 1024;

fn sum_requests(pod: &Pod, nonzero: bool) -> Requests {
    let Some(spec) = &pod.spec else {
        return Requests::default();
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let res = c.resources.as_ref();
        let get = |key: &str| {
            res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(key)))
                .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(key))))
                .map(|q| q.0.clone())
        };
        let cpu = get("cpu")
            .and_then(|q| shoal_api::quantity::millis(&q).ok())
            .unwrap_or(0);
        let memory = get("memory")
            .and_then(|q| shoal_api::quantity::bytes(&q).ok())
            .unwrap_or(0);
        if nonzero {
            Requests {
                cpu_millis: if cpu == 0 { NONZERO_CPU_MILLIS } else { cpu },
                memory: if memory == 0 { NONZERO_MEMORY } else { memory },
            }
        } else {
            Requests {
                cpu_millis: cpu,
                memory,
            }
        }
    };
    let mut sum = Requests::default();
    for c in &spec.containers {
        let r = of(c);
        sum.cpu_millis += r.cpu_millis;
        sum.memory += r.memory;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        sum.cpu_millis = sum.cpu_millis.max(r.cpu_millis);
        sum.memory = sum.memory.max(r.memory);
    }
    sum
}

fn host_ports(pod: &Pod) -> Vec<(String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|h| *h > 0)?;
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), hp))
        })
        .collect()
}

/// A scheduling plugin. `filter` says why a node does not fit (the reason is counted into the
/// `0/N nodes are available: ...` message); `score` ranks the nodes that fit, 0–100.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &str;
    fn filter(&self, _pod: &Pod, _node: &NodeInfo) -> Result<(), String> {
        Ok(())
    }
    fn score(&self, _pod: &Pod, _node: &NodeInfo) -> Option<i64> {
        None
    }
}

pub struct NodeName;
impl Plugin for NodeName {
    fn name(&self) -> &str {
        "NodeName"
    }
    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
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
    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let cordoned = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let tolerated = tolerations(pod).iter().any(|t| {
            t.key.as_deref() == Some("node.kubernetes.io/unschedulable")
                && t.effect.as_deref().is_none_or(|e| e == "NoSchedule")
        });
        if cordoned && !tolerated {
            Err("node(s) were unschedulable".into())
        } else {
            Ok(())
        }
    }
}

pub fn tolerations(pod: &Pod) -> Vec<k8s_openapi::api::core::v1::Toleration> {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default()
}

pub fn tolerates(t: &k8s_openapi::api::core::v1::Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

pub struct TaintToleration;
impl Plugin for TaintToleration {
    fn name(&self) -> &str {
        "TaintToleration"
    }
    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let tols = tolerations(pod);
        let taints = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        for taint in taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        {
            if !tols.iter().any(|t| tolerates(t, taint)) {
                return Err(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.as_deref().unwrap_or("")
                ));
            }
        }
        Ok(())
    }
}

fn requirement_matches(
    r: &NodeSelectorRequirement,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let v = labels.get(&r.key);
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let exprs = term.match_expressions.iter().flatten();
    let name = node.metadata.name.clone().unwrap_or_default();
    let fields = term.match_fields.iter().flatten().all(|f| {
        let mut m = std::collections::BTreeMap::new();
        m.insert("metadata.name".to_owned(), name.clone());
        requirement_matches(f, &m)
    });
    let any = term
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
        || term.match_fields.as_ref().is_some_and(|f| !f.is_empty());
    any && fields && exprs.into_iter().all(|r| requirement_matches(r, &labels))
}

pub struct NodeAffinity;
impl Plugin for NodeAffinity {
    fn name(&self) -> &str {
        "NodeAffinity"
    }
    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let labels = node.node.metadata.labels.clone().unwrap_or_default();
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let affinity_ok = required.is_none_or(|r| {
            r.node_selector_terms
                .iter()
                .any(|t| term_matches(t, &node.node))
        });
        if selector_ok && affinity_ok {
            Ok(())
        } else {
            Err("node(s) didn't match Pod's node affinity/selector".into())
        }
    }
}

pub struct NodeResourcesFit;
impl Plugin for NodeResourcesFit {
    fn name(&self) -> &str {
        "NodeResourcesFit"
    }
    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let r = requests(pod);
        let mut why = Vec::new();
        if node.pods + 1 > node.allocatable_pods() {
            why.push("Too many pods");
        }
        if r.cpu_millis > 0
            && node.requested_cpu_millis + r.cpu_millis > node.allocatable_cpu_millis()
        {
            why.push("Insufficient cpu");
        }
        if r.memory > 0 && node.requested_memory + r.memory > node.allocatable_memory() {
            why.push("Insufficient memory");
        }
        match why.first() {
            None => Ok(()),
            Some(_) => Err(why.join(", ")),
        }
    }
    /// Least allocated: the more room a node keeps, the higher it scores.
    fn score(&self, pod: &Pod, node: &NodeInfo) -> Option<i64> {
        let r = nonzero_requests(pod);
        let frac = |used: u64, cap: u64| {
            if cap == 0 {
                0.0
            } else {
                (cap.saturating_sub(used) as f64 / cap as f64).clamp(0.0, 1.0)
            }
        };
        let cpu = frac(
            node.nonzero_cpu_millis + r.cpu_millis,
            node.allocatable_cpu_millis(),
        );
        let mem = frac(node.nonzero_memory + r.memory, node.allocatable_memory());
        Some(((cpu + mem) / 2.0 * 100.0) as i64)
    }
}

/// Balanced allocation: nodes whose cpu and memory use stay close score higher.
pub struct BalancedAllocation;
impl Plugin for BalancedAllocation {
    fn name(&self) -> &str {
        "NodeResourcesBalancedAllocation"
    }
    fn score(&self, pod: &Pod, node: &NodeInfo) -> Option<i64> {
        let r = nonzero_requests(pod);
        let frac = |used: u64, cap: u64| {
            if cap == 0 {
                1.0
            } else {
                (used as f64 / cap as f64).min(1.0)
            }
        };
        let cpu = frac(
            node.nonzero_cpu_millis + r.cpu_millis,
            node.allocatable_cpu_millis(),
        );
        let mem = frac(node.nonzero_memory + r.memory, node.allocatable_memory());
        Some(((1.0 - (cpu - mem).abs()) * 100.0) as i64)
    }
}

pub struct NodePorts;
impl Plugin for NodePorts {
    fn name(&self) -> &str {
        "NodePorts"
    }
    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        if host_ports(pod).iter().any(|p| node.host_ports.contains(p)) {
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
        Box::new(BalancedAllocation),
    ]
}
