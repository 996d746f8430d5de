//! What the kubelet measures, as Kubernetes' kubelet serves it: the Summary API
//! (`/stats/summary`, `stats/v1alpha1`) and the resource metrics (`/metrics/resource`, the
//! Prometheus text metrics-server reads). Memory is what the runtime charges each pod:
//! linear memories, tables and instances' host-side state; the node's figure is all pods
//! together against the budget the runtime enforces. CPU is the time guests ran, from the
//! runtime's accounting (the same that enforces `limits.cpu`), sampled every
//! [`SAMPLE_PERIOD`]: the usage rate is over the last period, as cAdvisor's is.

use crate::Kubelet;
use serde_json::{Value, json};
use shoal_runtime::{ContainerStats, SandboxStats};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often CPU time is sampled: the window of the usage rates.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// (pod uid, container name).
type Key = (String, String);

/// The CPU usage rates of the node's containers, in nanocores.
#[derive(Default)]
pub struct CpuRates {
    state: Mutex<Rates>,
}

#[derive(Default)]
struct Rates {
    last: HashMap<Key, (Instant, u64)>,
    rate: HashMap<Key, u64>,
}

impl CpuRates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rates> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a sample of every container's cumulative CPU time.
    fn sample(&self, stats: &[SandboxStats], now: Instant) {
        let mut r = self.lock();
        let mut seen = std::collections::HashSet::new();
        for s in stats {
            for c in &s.containers {
                let key = (s.uid.clone(), c.name.clone());
                if let Some((t0, n0)) = r.last.get(&key).copied() {
                    let dt = now.saturating_duration_since(t0).as_nanos();
                    // A new run starts its count at zero: wait for its second sample.
                    if c.cpu_nanos >= n0 && dt > 0 {
                        let rate = (u128::from(c.cpu_nanos - n0) * 1_000_000_000 / dt) as u64;
                        r.rate.insert(key.clone(), rate);
                    } else {
                        r.rate.remove(&key);
                    }
                }
                r.last.insert(key.clone(), (now, c.cpu_nanos));
                seen.insert(key);
            }
        }
        r.last.retain(|k, _| seen.contains(k));
        r.rate.retain(|k, _| seen.contains(k));
    }

    /// The container's usage over the last period, once it has been sampled twice.
    fn rate(&self, uid: &str, container: &str) -> Option<u64> {
        self.lock()
            .rate
            .get(&(uid.to_owned(), container.to_owned()))
            .copied()
    }
}

/// Samples CPU time every [`SAMPLE_PERIOD`] for as long as the kubelet runs.
pub async fn sample_cpu(k: Arc<Kubelet>) {
    loop {
        let stats = k.runtime.list_pod_sandbox_stats().await.unwrap_or_default();
        k.cpu.sample(&stats, Instant::now());
        tokio::time::sleep(SAMPLE_PERIOD).await;
    }
}

/// One pod's usage, per container.
struct PodMemory {
    namespace: String,
    name: String,
    uid: String,
    total: u64,
    containers: Vec<ContainerStats>,
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

/// A Summary API `cpu` entry: the rate over the last period (when known) and the total.
fn cpu(now: &str, nanocores: Option<u64>, total_nanos: u64) -> Value {
    let mut c = json!({"time": now, "usageCoreNanoSeconds": total_nanos});
    if let Some(n) = nanocores {
        c["usageNanoCores"] = json!(n);
    }
    c
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
    let (mut node_rate, mut node_nanos) = (0u64, 0u64);
    let pods: Vec<Value> = pods(k)
        .await
        .into_iter()
        .map(|p| {
            let rates: Vec<Option<u64>> = p
                .containers
                .iter()
                .map(|c| k.cpu.rate(&p.uid, &c.name))
                .collect();
            let pod_nanos: u64 = p.containers.iter().map(|c| c.cpu_nanos).sum();
            let pod_rate = rates.iter().flatten().sum::<u64>();
            node_rate += pod_rate;
            node_nanos += pod_nanos;
            let known = rates.iter().any(Option::is_some);
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "cpu": cpu(&now, known.then_some(pod_rate), pod_nanos),
                "memory": memory(&now, p.total, None),
                "containers": p.containers.iter().zip(&rates).map(|(c, rate)| json!({
                    "name": c.name,
                    "cpu": cpu(&now, *rate, c.cpu_nanos),
                    "memory": memory(&now, c.memory_bytes, None),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "node": {
            "nodeName": k.config.node_name,
            "startTime": k.started.to_string(),
            "cpu": cpu(&now, Some(node_rate), node_nanos),
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
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        out.push_str(&format!(
            "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n"
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
                p.containers.iter().map(move |c| {
                    format!(
                        "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {}",
                        c.name, p.namespace, p.name, c.memory_bytes
                    )
                })
            })
            .collect(),
    );
    let secs = |nanos: u64| nanos as f64 / 1e9;
    family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        pods.iter()
            .flat_map(|p| {
                p.containers.iter().map(move |c| {
                    format!(
                        "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {}",
                        c.name,
                        p.namespace,
                        p.name,
                        secs(c.cpu_nanos)
                    )
                })
            })
            .collect(),
    );
    out
}
