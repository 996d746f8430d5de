//! The scheduling framework: the [`Plugin`] interface (a trait object, so a Wasm plugin can
//! implement it), the per-node view [`NodeInfo`], the per-pod [`CycleState`], and
//! [`Framework::schedule`], which runs the extension points in Kubernetes' order:
//! pre-filter, filter (on a sample of the nodes, as `percentageOfNodesToScore` does),
//! post-filter, pre-score, score, normalize — and reserve / unreserve around binding.

use k8s_openapi::api::core::v1::{Node, Pod};
use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The highest score a plugin gives a node (after normalize).
pub const MAX_SCORE: i64 = 100;

/// A node as the scheduler sees it: the object, what the pods bound to it ask for, and those
/// pods.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub requested_cpu_millis: u64,
    pub requested_memory: u64,
    /// Requests as scoring counts them: a container without a cpu or memory request counts
    /// as 100m / 200Mi (Kubernetes' non-zero defaults), so empty pods still spread.
    pub nonzero_cpu_millis: u64,
    pub nonzero_memory: u64,
    /// How many pods are bound to the node.
    pub pods: u64,
    /// The pods bound to the node.
    pub assigned: Vec<Arc<Pod>>,
    /// Those of them with required pod anti-affinity (which every incoming pod is checked
    /// against).
    pub with_anti_affinity: Vec<Arc<Pod>>,
    /// `(protocol, hostPort)` in use.
    pub host_ports: HashSet<(String, i32)>,
    pub allocatable_cpu_millis: u64,
    pub allocatable_memory: u64,
    pub allocatable_pods: u64,
}

impl NodeInfo {
    /// A node with nothing on it yet.
    pub fn new(node: impl Into<Arc<Node>>) -> Self {
        let node: Arc<Node> = node.into();
        let allocatable = |key: &str| -> Option<String> {
            let status = node.status.as_ref()?;
            status
                .allocatable
                .as_ref()
                .or(status.capacity.as_ref())?
                .get(key)
                .map(|q| q.0.clone())
        };
        let allocatable_cpu_millis = allocatable("cpu")
            .and_then(|q| shoal_api::quantity::millis(&q).ok())
            .unwrap_or(0);
        let allocatable_memory = allocatable("memory")
            .and_then(|q| shoal_api::quantity::bytes(&q).ok())
            .unwrap_or(0);
        let allocatable_pods = allocatable("pods")
            .and_then(|q| q.parse().ok())
            .unwrap_or(110);
        Self {
            node,
            requested_cpu_millis: 0,
            requested_memory: 0,
            nonzero_cpu_millis: 0,
            nonzero_memory: 0,
            pods: 0,
            assigned: Vec::new(),
            with_anti_affinity: Vec::new(),
            host_ports: HashSet::new(),
            allocatable_cpu_millis,
            allocatable_memory,
            allocatable_pods,
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// The node's labels.
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.metadata.labels.as_ref()
    }

    /// Adds `pod` (bound to this node) to the node's accounts.
    pub fn add(&mut self, pod: impl Into<Arc<Pod>>) {
        let pod: Arc<Pod> = pod.into();
        let account = PodAccount::of(&pod);
        self.add_accounted(pod, &account);
    }

    /// As [`NodeInfo::add`], with the pod's account already worked out.
    pub fn add_accounted(&mut self, pod: Arc<Pod>, account: &PodAccount) {
        self.requested_cpu_millis += account.requests.cpu_millis;
        self.requested_memory += account.requests.memory;
        self.nonzero_cpu_millis += account.nonzero.cpu_millis;
        self.nonzero_memory += account.nonzero.memory;
        self.pods += 1;
        self.host_ports.extend(account.host_ports.iter().cloned());
        if account.anti_affinity {
            self.with_anti_affinity.push(pod.clone());
        }
        self.assigned.push(pod);
    }
}

/// What a pod takes from its node, worked out once per pod version.
#[derive(Debug, Clone, Default)]
pub struct PodAccount {
    pub requests: Requests,
    pub nonzero: Requests,
    pub host_ports: Vec<(String, i32)>,
    pub anti_affinity: bool,
}

impl PodAccount {
    pub fn of(pod: &Pod) -> Self {
        Self {
            requests: requests(pod),
            nonzero: nonzero_requests(pod),
            host_ports: host_ports(pod),
            anti_affinity: !crate::interpod::required_anti(pod).is_empty(),
        }
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
        };
        let cpu = get("cpu")
            .and_then(|q| shoal_api::quantity::millis(&q.0).ok())
            .unwrap_or(0);
        let memory = get("memory")
            .and_then(|q| shoal_api::quantity::bytes(&q.0).ok())
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

/// The `(protocol, hostPort)` pairs a pod takes on its node.
pub fn host_ports(pod: &Pod) -> Vec<(String, i32)> {
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

/// What one scheduling cycle knows about its pod: computed once (requests, host ports), plus
/// whatever plugins keep between their extension points (under their name).
pub struct CycleState {
    pub requests: Requests,
    pub nonzero: Requests,
    pub host_ports: Vec<(String, i32)>,
    data: HashMap<String, Box<dyn Any + Send + Sync>>,
}

impl CycleState {
    pub fn new(pod: &Pod) -> Self {
        Self {
            requests: requests(pod),
            nonzero: nonzero_requests(pod),
            host_ports: host_ports(pod),
            data: HashMap::new(),
        }
    }

    /// Keeps `value` for the plugin `name`.
    pub fn write<T: Any + Send + Sync>(&mut self, name: &str, value: T) {
        self.data.insert(name.to_owned(), Box::new(value));
    }

    /// What the plugin `name` kept, if it kept a `T`.
    pub fn read<T: Any + Send + Sync>(&self, name: &str) -> Option<&T> {
        self.data.get(name)?.downcast_ref()
    }
}

/// A scheduling plugin. Every extension point has a default that does nothing, so a plugin
/// implements only those it needs.
///
/// - `pre_filter`: once per pod, before filtering; may compute what its filter needs over all
///   nodes, or reject the pod everywhere (the reason counts for every node).
/// - `filter`: whether the pod fits a node; the error is the reason counted into
///   `0/N nodes are available: ...`.
/// - `post_filter`: after no node fits; may nominate a node (preemption would) or add to the
///   explanation.
/// - `pre_score`, `score`, `normalize`: rank the nodes that fit; `normalize` rescales this
///   plugin's scores to 0–[`MAX_SCORE`]; the total is weighted by `weight`.
/// - `reserve` / `unreserve`: around binding, to keep or release per-node state.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &str;
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        _pod: &Pod,
        _nodes: &[NodeInfo],
    ) -> Result<(), String> {
        Ok(())
    }
    fn filter(&self, _state: &CycleState, _pod: &Pod, _node: &NodeInfo) -> Result<(), String> {
        Ok(())
    }
    /// Whether the plugin filters in batches ([`Plugin::filter_many`]): plugins with a cost
    /// per call (Wasm). Batched plugins filter after the others.
    fn batched(&self) -> bool {
        false
    }
    /// `filter` over a batch of nodes, one verdict per node in order (called for plugins
    /// that are [`Plugin::batched`]).
    fn filter_many(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
    ) -> Vec<Result<(), String>> {
        nodes.iter().map(|n| self.filter(state, pod, n)).collect()
    }
    fn post_filter(
        &self,
        _state: &CycleState,
        _pod: &Pod,
        _nodes: &[NodeInfo],
        _reasons: &BTreeMap<String, usize>,
    ) -> Option<usize> {
        None
    }
    fn pre_score(&self, _state: &mut CycleState, _pod: &Pod, _feasible: &[&NodeInfo]) {}
    fn score(&self, _state: &CycleState, _pod: &Pod, _node: &NodeInfo) -> Option<i64> {
        None
    }
    /// `score` over a batch of nodes, one entry per node in order.
    fn score_many(&self, state: &CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Vec<Option<i64>> {
        nodes.iter().map(|n| self.score(state, pod, n)).collect()
    }
    fn normalize(&self, _state: &CycleState, _pod: &Pod, _scores: &mut [i64]) {}
    fn weight(&self) -> i64 {
        1
    }
    fn reserve(&self, _state: &CycleState, _pod: &Pod, _node: &str) -> Result<(), String> {
        Ok(())
    }
    fn unreserve(&self, _state: &CycleState, _pod: &Pod, _node: &str) {}
}

/// Rescales raw scores so the highest is [`MAX_SCORE`] (`reverse`: the lowest is).
pub fn normalize_scores(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    for s in scores.iter_mut() {
        *s = if max == min {
            MAX_SCORE
        } else if reverse {
            MAX_SCORE * (max - *s) / (max - min)
        } else {
            MAX_SCORE * (*s - min) / (max - min)
        };
    }
}

/// How many nodes batched plugins filter at once.
const FILTER_BATCH: usize = 64;

/// How many feasible nodes to find before scoring, as kube-scheduler's adaptive
/// `percentageOfNodesToScore`: all of a small cluster, 50% less 1% per 125 nodes (at least
/// 5%, at least 100 nodes) of a big one.
pub fn nodes_to_find(total: usize) -> usize {
    if total < 100 {
        return total;
    }
    let pct = 50usize.saturating_sub(total / 125).max(5);
    (total * pct / 100).max(100)
}

/// A scheduling profile: plugins in order.
pub struct Framework {
    plugins: Vec<Arc<dyn Plugin>>,
    /// Where the next cycle starts looking, so sampling goes round the nodes.
    next_start: AtomicUsize,
}

/// The outcome of one scheduling cycle that found a node.
pub struct Decision {
    pub node: usize,
    pub state: CycleState,
}

impl Framework {
    pub fn new(plugins: Vec<Box<dyn Plugin>>) -> Self {
        Self::shared(plugins.into_iter().map(Arc::from).collect())
    }

    /// A profile of plugins shared with other profiles.
    pub fn shared(plugins: Vec<Arc<dyn Plugin>>) -> Self {
        Self {
            plugins,
            next_start: AtomicUsize::new(0),
        }
    }

    pub fn plugins(&self) -> &[Arc<dyn Plugin>] {
        &self.plugins
    }

    /// Chooses a node for `pod`, or says why none fits (`0/3 nodes are available: 1
    /// Insufficient memory, 2 node(s) had untolerated taint {dedicated: gpu}. preemption: ...`).
    pub fn schedule(&self, pod: &Pod, nodes: &[NodeInfo]) -> Result<Decision, String> {
        let mut state = CycleState::new(pod);
        let n = nodes.len();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for p in &self.plugins {
            if let Err(why) = p.pre_filter(&mut state, pod, nodes) {
                reasons.insert(why, n);
                return Err(unschedulable_message(n, &reasons));
            }
        }
        let want = nodes_to_find(n);
        let start = if n == 0 {
            0
        } else {
            self.next_start.load(Ordering::Relaxed) % n
        };
        let mut feasible: Vec<usize> = Vec::with_capacity(want.min(n));
        let mut looked = 0;
        // Plugins that take nodes in batches (Wasm) see, after the others, batches of the
        // nodes the others let through (like kube-scheduler's parallel filtering, the last
        // batch may look at a few more nodes than needed).
        let single: Vec<&Arc<dyn Plugin>> = self.plugins.iter().filter(|p| !p.batched()).collect();
        let batched: Vec<&Arc<dyn Plugin>> = self.plugins.iter().filter(|p| p.batched()).collect();
        let mut pending: Vec<usize> = Vec::new();
        let count = |why: String, reasons: &mut BTreeMap<String, usize>| {
            for r in why.split(", ") {
                *reasons.entry(r.to_owned()).or_default() += 1;
            }
        };
        while looked < n && feasible.len() < want {
            let i = (start + looked) % n;
            debug_assert!(pending.len() < FILTER_BATCH);
            looked += 1;
            match single
                .iter()
                .find_map(|p| p.filter(&state, pod, &nodes[i]).err())
            {
                Some(why) => count(why, &mut reasons),
                None if batched.is_empty() => feasible.push(i),
                None => pending.push(i),
            }
            // Full batches only (the last one may overshoot `want`; the rest is dropped):
            // a call per node near the end would cost more than filtering a few extra nodes.
            if !pending.is_empty() && (pending.len() >= FILTER_BATCH || looked == n) {
                for p in &batched {
                    if pending.is_empty() {
                        break;
                    }
                    let refs: Vec<&NodeInfo> = pending.iter().map(|i| &nodes[*i]).collect();
                    let verdicts = p.filter_many(&state, pod, &refs);
                    let mut kept = 0;
                    for (k, verdict) in verdicts.into_iter().enumerate().take(pending.len()) {
                        match verdict {
                            Ok(()) => {
                                pending[kept] = pending[k];
                                kept += 1;
                            }
                            Err(why) => count(why, &mut reasons),
                        }
                    }
                    pending.truncate(kept);
                }
                feasible.append(&mut pending);
            }
        }
        feasible.truncate(want);
        if n > 0 {
            self.next_start
                .store((start + looked) % n, Ordering::Relaxed);
        }
        if feasible.is_empty() {
            for p in &self.plugins {
                if let Some(i) = p.post_filter(&state, pod, nodes, &reasons) {
                    return Ok(Decision { node: i, state });
                }
            }
            return Err(unschedulable_message(n, &reasons));
        }
        if feasible.len() == 1 {
            return Ok(Decision {
                node: feasible[0],
                state,
            });
        }
        let candidates: Vec<&NodeInfo> = feasible.iter().map(|i| &nodes[*i]).collect();
        for p in &self.plugins {
            p.pre_score(&mut state, pod, &candidates);
        }
        let mut total = vec![0i64; feasible.len()];
        let mut scores = vec![0i64; feasible.len()];
        for p in &self.plugins {
            let mut any = false;
            for (s, got) in scores
                .iter_mut()
                .zip(p.score_many(&state, pod, &candidates))
            {
                match got {
                    Some(v) => {
                        *s = v;
                        any = true;
                    }
                    None => *s = 0,
                }
            }
            if !any {
                continue;
            }
            p.normalize(&state, pod, &mut scores);
            let w = p.weight();
            for (t, s) in total.iter_mut().zip(&scores) {
                *t += w * s;
            }
        }
        let best = total
            .iter()
            .enumerate()
            .max_by_key(|(k, s)| (**s, std::cmp::Reverse(*k)))
            .map(|(k, _)| feasible[k])
            .unwrap_or(feasible[0]);
        Ok(Decision { node: best, state })
    }

    /// Runs every plugin's reserve for the chosen node; on a refusal, unreserves those that
    /// had reserved and says why.
    pub fn reserve(&self, state: &CycleState, pod: &Pod, node: &str) -> Result<(), String> {
        for (k, p) in self.plugins.iter().enumerate() {
            if let Err(why) = p.reserve(state, pod, node) {
                for q in self.plugins[..k].iter().rev() {
                    q.unreserve(state, pod, node);
                }
                return Err(why);
            }
        }
        Ok(())
    }

    /// Releases what `reserve` kept (binding failed).
    pub fn unreserve(&self, state: &CycleState, pod: &Pod, node: &str) {
        for p in self.plugins.iter().rev() {
            p.unreserve(state, pod, node);
        }
    }
}

/// Kubernetes' message for a pod that fits nowhere.
pub fn unschedulable_message(n: usize, reasons: &BTreeMap<String, usize>) -> String {
    // Sorted as Kubernetes sorts them: as whole strings, count first.
    let mut detail: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
    detail.sort();
    let mut message = format!("0/{n} nodes are available");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail.join(", "));
    }
    message.push_str(&format!(
        ". preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
    ));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_clusters_are_sampled_like_kube_scheduler() {
        assert_eq!(nodes_to_find(50), 50);
        assert_eq!(nodes_to_find(1000), 420);
        assert_eq!(nodes_to_find(5000), 500);
        assert_eq!(nodes_to_find(100_000), 5000);
    }

    #[test]
    fn normalizing_maps_the_range_onto_0_to_100() {
        let mut s = vec![2, 4, 6];
        normalize_scores(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![2, 4, 6];
        normalize_scores(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![3, 3];
        normalize_scores(&mut s, true);
        assert_eq!(s, vec![100, 100]);
    }

    /// A batched plugin that rejects odd-numbered nodes and prefers higher numbers.
    struct Odd;

    /// How many times `Odd` filtered.
    static ODD_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn number(n: &NodeInfo) -> i64 {
        n.name().trim_start_matches('n').parse().unwrap_or(0)
    }

    impl Plugin for Odd {
        fn name(&self) -> &str {
            "odd"
        }
        fn batched(&self) -> bool {
            true
        }
        fn filter_many(
            &self,
            _: &CycleState,
            _: &Pod,
            nodes: &[&NodeInfo],
        ) -> Vec<Result<(), String>> {
            ODD_CALLS.fetch_add(1, Ordering::Relaxed);
            nodes
                .iter()
                .map(|n| match number(n) % 2 {
                    0 => Ok(()),
                    _ => Err("node(s) were odd".to_owned()),
                })
                .collect()
        }
        fn score_many(&self, _: &CycleState, _: &Pod, nodes: &[&NodeInfo]) -> Vec<Option<i64>> {
            nodes.iter().map(|n| Some(number(n))).collect()
        }
    }

    fn nodes(n: usize) -> Vec<NodeInfo> {
        (0..n)
            .map(|i| {
                let node: Node = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("n{i}")},
                    "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
                .unwrap();
                NodeInfo::new(node)
            })
            .collect()
    }

    #[test]
    fn batched_plugins_filter_and_score_in_batches() {
        let fw = Framework::new(vec![Box::new(Odd)]);
        let pod = Pod::default();
        // 200 nodes, 100 to find: batches of 64 nodes (32 even ones each) and the last 8,
        // not a call per node; the best score among those found wins.
        let all = nodes(200);
        let Ok(d) = fw.schedule(&pod, &all) else {
            panic!("an even node fits")
        };
        assert_eq!(ODD_CALLS.load(Ordering::Relaxed), 4);
        assert_eq!(all[d.node].name(), "n198");
        // Nothing fits: every node is looked at and counted once.
        let odd: Vec<NodeInfo> = nodes(9)
            .into_iter()
            .filter(|n| number(n) % 2 == 1)
            .collect();
        let Err(err) = fw.schedule(&pod, &odd) else {
            panic!("no odd node fits")
        };
        assert!(
            err.starts_with("0/4 nodes are available: 4 node(s) were odd."),
            "{err}"
        );
    }
}
