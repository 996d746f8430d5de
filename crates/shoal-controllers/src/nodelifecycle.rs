//! Node lifecycle: a node whose Lease (in `kube-node-lease`) has not been renewed within the
//! grace period gets its conditions set to Unknown (`NodeStatusUnknown`, "Kubelet stopped
//! posting node status.") and the `node.kubernetes.io/unreachable` NoSchedule and NoExecute
//! taints; a node reporting Ready=False gets `node.kubernetes.io/not-ready`. Pods on a node
//! with a NoExecute taint they do not tolerate are evicted at once, or after their
//! `tolerationSeconds`; their controllers replace them elsewhere. Pods bound to a node that has
//! not existed for 40 s (Kubernetes' pod GC quarantine: a node about to register, or a pod
//! bound before its node appears, is left alone) are deleted outright.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use shoal_api::node::NodeExt;
use shoal_api::pod::PodExt;
use shoal_api::predicates::tolerates;
use std::collections::HashMap;
use std::time::Duration;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Node conditions that taint the node while they are True (Kubernetes' TaintNodesByCondition),
/// with their NoSchedule taint.
pub const PRESSURE_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];

/// How often nodes and pods are checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long a node pods are bound to must stay missing before they are deleted (Kubernetes'
/// pod GC `quarantineTime`).
const QUARANTINE: jiff::SignedDuration = jiff::SignedDuration::from_secs(40);

/// Runs the node lifecycle controller (forever). `grace` is how long a node may go without
/// renewing its lease (Kubernetes' node-monitor-grace-period, 40 s by default).
pub async fn run(client: kube::Client, grace: Duration) {
    let (nodes, _nodes) = shoal_client::watch_store(Api::<Node>::all(client.clone()), || {});
    let (leases, _leases) = shoal_client::watch_store(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        || {},
    );
    let (pods, _pods) = shoal_client::watch_store(Api::<Pod>::all(client.clone()), || {});
    for ready in [
        nodes.wait_until_ready().await,
        leases.wait_until_ready().await,
        pods.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return;
        }
    }
    // Nodes first seen now get a full grace period, whatever their old lease says.
    let started = jiff::Timestamp::now();
    // Since when each node that pods are bound to has been missing.
    let mut missing_since: HashMap<String, jiff::Timestamp> = HashMap::new();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let now = jiff::Timestamp::now();
        let lease_times: HashMap<String, jiff::Timestamp> = leases
            .state()
            .iter()
            .filter_map(|l| {
                Some((
                    l.metadata.name.clone()?,
                    l.spec.as_ref()?.renew_time.as_ref()?.0,
                ))
            })
            .collect();
        let all_nodes = nodes.state();
        for node in &all_nodes {
            if let Err(e) = check_node(&client, node, &lease_times, grace, started, now).await {
                tracing::debug!(error = %e, "node lifecycle");
            }
        }
        let by_name: HashMap<&str, &Node> = all_nodes
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
            .collect();
        let all_pods = pods.state();
        let mut still_missing = HashMap::new();
        for pod in &all_pods {
            if let Some(n) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                && !n.is_empty()
                && !by_name.contains_key(n)
            {
                let since = missing_since.get(n).copied().unwrap_or(now);
                still_missing.insert(n.to_owned(), since);
            }
        }
        missing_since = still_missing;
        let gone: Vec<&str> = missing_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= QUARANTINE)
            .map(|(n, _)| n.as_str())
            .collect();
        for pod in &all_pods {
            if let Err(e) = check_pod(&client, pod, &by_name, &gone, now).await {
                tracing::debug!(error = %e, "taint eviction");
            }
        }
    }
}

fn ready_status(node: &Node) -> Option<&str> {
    node.condition("Ready").map(|c| c.status.as_str())
}

/// The last sign of life: lease renewal, else the Ready heartbeat, else creation.
fn last_seen(node: &Node, leases: &HashMap<String, jiff::Timestamp>) -> Option<jiff::Timestamp> {
    let name = node.metadata.name.as_deref()?;
    leases.get(name).copied().or_else(|| {
        node.condition("Ready")?
            .last_heartbeat_time
            .as_ref()
            .map(|t| t.0)
            .or(node.metadata.creation_timestamp.as_ref().map(|t| t.0))
    })
}

/// The taints a node should carry for its readiness, with the others it has kept as they are.
pub fn wanted_taints(current: &[Taint], ready: Option<&str>, now: &str) -> Vec<Taint> {
    let key = match ready {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| (t.key != UNREACHABLE && t.key != NOT_READY) || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(
                    serde_json::from_value(json!({"key": key, "effect": effect,
                        "timeAdded": (effect == "NoExecute").then_some(now)}))
                    .unwrap_or_default(),
                );
            }
        }
    }
    out
}

/// `current` with a NoSchedule taint for each pressure condition that is True among
/// `conditions` (type, status), and without those of conditions that are not.
pub fn pressure_taints(current: &[Taint], conditions: &[(String, String)]) -> Vec<Taint> {
    let on = |ty: &str| conditions.iter().any(|(t, s)| t == ty && s == "True");
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            PRESSURE_TAINTS
                .iter()
                .all(|(ty, key)| t.key != *key || on(ty))
        })
        .cloned()
        .collect();
    for (ty, key) in PRESSURE_TAINTS {
        if on(ty) && !out.iter().any(|t| t.key == key && t.effect == "NoSchedule") {
            out.push(Taint {
                key: key.to_owned(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
    }
    out
}

async fn check_node(
    client: &kube::Client,
    node: &Node,
    leases: &HashMap<String, jiff::Timestamp>,
    grace: Duration,
    started: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let api: Api<Node> = Api::all(client.clone());
    let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let seen = last_seen(node, leases).unwrap_or(started).max(started);
    let stale = now.duration_since(seen).as_secs_f64() > grace.as_secs_f64();
    let mut ready = ready_status(node).map(str::to_owned);
    if stale && ready.as_deref() != Some("Unknown") {
        let conditions: Vec<Value> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                v["status"] = json!("Unknown");
                v["reason"] = json!("NodeStatusUnknown");
                v["message"] = json!("Kubelet stopped posting node status.");
                v["lastTransitionTime"] = json!(stamp);
                v
            })
            .collect();
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await?;
        tracing::info!(node = %name, "node stopped renewing its lease: NotReady");
        ready = Some("Unknown".into());
    }
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let conditions: Vec<(String, String)> = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    let wanted = pressure_taints(
        &wanted_taints(&current, ready.as_deref(), &stamp),
        &conditions,
    );
    if wanted != current {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": wanted}})),
        )
        .await?;
    }
    Ok(())
}

/// When a pod on `node` must go: now, at a time, or never (`None`).
pub fn eviction_time(pod: &Pod, node: &Node) -> Option<jiff::Timestamp> {
    let tols = pod.tolerations();
    let mut at: Option<jiff::Timestamp> = None;
    for taint in node.taints().iter().filter(|t| t.effect == "NoExecute") {
        let added = taint
            .time_added
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let matching: Vec<_> = tols.iter().filter(|t| tolerates(t, taint)).collect();
        let deadline = if matching.is_empty() {
            Some(added)
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            None
        } else {
            let secs = matching
                .iter()
                .filter_map(|t| t.toleration_seconds)
                .min()
                .unwrap_or(0)
                .max(0);
            Some(added + jiff::SignedDuration::from_secs(secs))
        };
        if let Some(d) = deadline {
            at = Some(at.map_or(d, |a| a.min(d)));
        }
    }
    at
}

async fn check_pod(
    client: &kube::Client,
    pod: &Pod,
    nodes: &HashMap<&str, &Node>,
    missing_long: &[&str],
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let Some(node_name) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    else {
        return Ok(());
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let gone = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        other => other.map(|_| ()),
    };
    let Some(node) = nodes.get(node_name) else {
        if !missing_long.contains(&node_name) {
            // Missing for less than the quarantine: it may be about to register.
            return Ok(());
        }
        // The node is gone: nothing will ever stop this pod (Kubernetes' pod GC).
        tracing::info!(pod = %name, node = %node_name, "deleting a pod of a deleted node");
        return gone(
            api.delete(name, &DeleteParams::default().grace_period(0))
                .await,
        );
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let finished = pod.is_terminal();
    if finished {
        return Ok(());
    }
    if eviction_time(pod, node).is_some_and(|t| t <= now) {
        tracing::info!(pod = %name, node = %node_name, "evicting: NoExecute taint not tolerated (any longer)");
        crate::record(
            client,
            "taint-eviction-controller",
            pod,
            "Normal",
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        );
        return gone(api.delete(name, &DeleteParams::default()).await);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_decides_the_taints_and_others_stay() {
        let other: Taint =
            serde_json::from_value(json!({"key": "gpu", "effect": "NoSchedule"})).unwrap();
        let t = wanted_taints(
            std::slice::from_ref(&other),
            Some("Unknown"),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(t.len(), 3);
        assert!(
            t.iter()
                .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        );
        let back = wanted_taints(&t, Some("True"), "2026-01-01T00:00:00Z");
        assert_eq!(back, vec![other.clone()]);
        let nr = wanted_taints(&t, Some("False"), "x");
        assert!(nr.iter().all(|t| t.key != UNREACHABLE));
        assert!(nr.iter().any(|t| t.key == NOT_READY));
    }

    #[test]
    fn pressure_conditions_taint_the_node_while_they_are_true() {
        let cond = |ty: &str, st: &str| (ty.to_owned(), st.to_owned());
        let t = pressure_taints(
            &[],
            &[cond("MemoryPressure", "True"), cond("Ready", "True")],
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].key, "node.kubernetes.io/memory-pressure");
        assert_eq!(t[0].effect, "NoSchedule");
        let cleared = pressure_taints(&t, &[cond("MemoryPressure", "False")]);
        assert!(cleared.is_empty());
    }

    #[test]
    fn pods_go_after_their_toleration_seconds() {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}]}}))
            .unwrap();
        let pod = |tols: Value| -> Pod {
            serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tols}}))
                .unwrap()
        };
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(eviction_time(&pod(json!([])), &node), Some(t0));
        let five = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        assert_eq!(
            eviction_time(&five, &node),
            Some(t0 + jiff::SignedDuration::from_secs(5))
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &node), None);
    }
}
