//! What the kubelet measures, as Kubernetes' kubelet serves it: the Summary API
//! (`/stats/summary`, `stats/v1alpha1`) and the resource metrics (`/metrics/resource`, the
//! Prometheus text metrics-server reads). Memory is what the runtime charges each pod:
//! linear memories, tables and instances' host-side state; the node's figure is all pods
//! together against the budget the runtime enforces.

use crate::Kubelet;
use serde_json::{Value, json};
use shoal_runtime::SandboxStats;
use std::collections::HashMap;

/// One pod's memory, per container.
struct PodMemory {
    namespace: String,
    name: String,
    uid: String,
    total: u64,
    containers: Vec<(String, u64)>,
}

async fn pods(k: &Kubelet) -> Vec<PodMemory> {
    let stats: Vec<SandboxStats> = k.runtime.list_pod_sandbox_stats().await.unwrap_or_default();
    let mut by_uid: HashMap<String, SandboxStats> = HashMap::new();
    for s in stats {
        match by_uid.get(&s.uid) {
            Some(prev) if prev.memory_bytes >= s.memory_bytes => {}
            _ => {
                by_uid.insert(s.uid.clone(), s);
            }
        }
    }
    let mut out: Vec<PodMemory> = k
        .active
        .all()
        .into_iter()
        .filter_map(|p| {
            let uid = p.pod.metadata.uid.clone()?;
            let s = by_uid.get(&uid)?;
            Some(PodMemory {
                namespace: p.pod.metadata.namespace.clone().unwrap_or_default(),
                name: p.pod.metadata.name.clone().unwrap_or_default(),
                uid,
                total: s.memory_bytes,
                containers: s.containers.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn memory(now: &str, bytes: u64, available: Option<u64>) -> Value {
    let mut m =
        json!({"time": now, "usageBytes": bytes, "workingSetBytes": bytes, "rssBytes": bytes});
    if let Some(a) = available {
        m["availableBytes"] = json!(a);
    }
    m
}

/// The Summary API's answer.
pub async fn summary(k: &Kubelet) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let node = k.runtime.node_memory().unwrap_or_default();
    let fs = crate::eviction::storage::filesystem(&k.config.data_dir).ok();
    let pods: Vec<Value> = pods(k)
        .await
        .into_iter()
        .map(|p| {
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "memory": memory(&now, p.total, None),
                "containers": p.containers.iter().map(|(name, bytes)| json!({
                    "name": name, "memory": memory(&now, *bytes, None),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "node": {
            "nodeName": k.config.node_name,
            "startTime": k.started.to_string(),
            "memory": memory(&now, node.used_bytes, Some(node.limit_bytes.saturating_sub(node.used_bytes))),
            "fs": fs.map(|(capacity, free)| json!({
                "time": now, "capacityBytes": capacity, "availableBytes": free,
                "usedBytes": capacity.saturating_sub(free),
            })),
        },
        "pods": pods,
    })
}

/// The resource metrics in Prometheus' text format.
pub async fn resource_metrics(k: &Kubelet) -> String {
    let ts = jiff::Timestamp::now().as_millisecond();
    let node = k.runtime.node_memory().unwrap_or_default();
    let pods = pods(k).await;
    let mut out = String::new();
    let mut family = |name: &str, help: &str, lines: Vec<String>| {
        out.push_str(&format!(
            "# HELP {name} [STABLE] {help}\n# TYPE {name} gauge\n"
        ));
        for l in lines {
            out.push_str(&format!("{name}{l} {ts}\n"));
        }
    };
    family(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        vec![format!(" {}", node.used_bytes)],
    );
    family(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        pods.iter()
            .map(|p| {
                format!(
                    "{{namespace=\"{}\",pod=\"{}\"}} {}",
                    p.namespace, p.name, p.total
                )
            })
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        pods.iter()
            .flat_map(|p| {
                p.containers.iter().map(move |(c, bytes)| {
                    format!(
                        "{{container=\"{c}\",namespace=\"{}\",pod=\"{}\"}} {bytes}",
                        p.namespace, p.name
                    )
                })
            })
            .collect(),
    );
    out
}
