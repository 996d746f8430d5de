//! Simulated nodes, in the spirit of kwok: N Nodes registered with capacity and a Ready
//! condition, their Leases renewed, and (unless told not to) the pods bound to them marked
//! Running and Ready without executing anything; a deleted pod is removed at once. This lets
//! the control plane be measured at thousands of nodes on one machine.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use shoal_api::node::NodeExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The label every simulated node carries (value `true`).
pub const SIMULATED_LABEL: &str = "shoal.dev/simulated";

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes are named `<prefix><i>` for i in 0..count.
    pub prefix: String,
    pub count: usize,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// Zones the nodes are spread over (`topology.kubernetes.io/zone=zone-<i % zones>`).
    pub zones: usize,
    /// Mark pods bound to the nodes Running (off: leave them bound, as scheduler_perf does).
    pub run_pods: bool,
    /// Lease lifetime; renewed every quarter of it.
    pub lease_duration: Duration,
    /// Requests in flight at once while registering and renewing.
    pub parallel: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            prefix: "sim-".into(),
            count: 100,
            cpu: "32".into(),
            memory: "256Gi".into(),
            max_pods: 110,
            zones: 3,
            run_pods: true,
            lease_duration: Duration::from_secs(40),
            parallel: 32,
        }
    }
}

fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn node_object(c: &SimConfig, i: usize) -> serde_json::Value {
    let name = format!("{}{i}", c.prefix);
    let t = now();
    let capacity = json!({"cpu": c.cpu, "memory": c.memory, "pods": c.max_pods.to_string()});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "wasm32",
            "topology.kubernetes.io/zone": format!("zone-{}", i % c.zones.max(1)),
            SIMULATED_LABEL: "true",
        }},
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated node is ready", "lastHeartbeatTime": t, "lastTransitionTime": t}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": shoal_api::version::GIT_VERSION, "containerRuntimeVersion": "simulated://0",
                         "kernelVersion": "", "osImage": "simulated", "operatingSystem": "linux",
                         "architecture": "wasm32", "machineID": "", "systemUUID": "", "bootID": "",
                         "kubeProxyVersion": shoal_api::version::GIT_VERSION},
        },
    })
}

async fn for_each_parallel<F, Fut>(count: usize, parallel: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(0..count)
        .for_each_concurrent(parallel.max(1), f)
        .await;
}

/// Registers the nodes (taking over existing ones) and returns when all exist.
pub async fn register(client: &kube::Client, c: &SimConfig) -> crate::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let failed = std::sync::atomic::AtomicUsize::new(0);
    for_each_parallel(c.count, c.parallel, |i| {
        let nodes = nodes.clone();
        let failed = &failed;
        async move {
            let obj = node_object(c, i);
            let node: Node = match serde_json::from_value(obj.clone()) {
                Ok(n) => n,
                Err(_) => return,
            };
            let name = format!("{}{i}", c.prefix);
            let created = match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => true,
                Err(kube::Error::Api(e)) if e.code == 409 => true,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "cannot register simulated node");
                    false
                }
            };
            let status = Patch::Merge(json!({"status": obj["status"]}));
            if !created
                || nodes
                    .patch_status(&name, &PatchParams::default(), &status)
                    .await
                    .is_err()
            {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    let failed = failed.into_inner();
    if failed > 0 {
        return Err(crate::Error::SimulatedNodes { count: failed });
    }
    Ok(())
}

async fn renew_leases(client: &kube::Client, c: &SimConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for_each_parallel(c.count, c.parallel, |i| {
        let leases = leases.clone();
        async move {
            let name = format!("{}{i}", c.prefix);
            let spec = json!({"holderIdentity": name, "renewTime": micro_now(),
                              "leaseDurationSeconds": c.lease_duration.as_secs()});
            let patch = Patch::Merge(json!({ "spec": spec }));
            match leases.patch(&name, &PatchParams::default(), &patch).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                       "metadata": {"name": name, "namespace": "kube-node-lease"},
                                       "spec": spec});
                    if let Ok(l) = serde_json::from_value::<Lease>(lease) {
                        let _ = leases.create(&PostParams::default(), &l).await;
                    }
                }
                Err(e) => tracing::debug!(node = %name, error = %e, "lease renewal"),
            }
        }
    })
    .await;
}

/// Nodes the node lifecycle controller marked not Ready (say, while this process was down)
/// report Ready again.
async fn ready_again(client: &kube::Client, c: &SimConfig) {
    let nodes: Api<Node> = Api::all(client.clone());
    let lp = kube::api::ListParams::default().labels(&format!("{SIMULATED_LABEL}=true"));
    let Ok(list) = nodes.list(&lp).await else {
        return;
    };
    for n in list.items {
        let ready = n.is_ready();
        let Some(name) = n.metadata.name.as_deref() else {
            continue;
        };
        let Some(i) = name
            .strip_prefix(c.prefix.as_str())
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if !ready {
            let status = Patch::Merge(json!({"status": node_object(c, i)["status"]}));
            let _ = nodes
                .patch_status(name, &PatchParams::default(), &status)
                .await;
        }
    }
}

fn running_status(pod: &Pod, node_index: usize) -> serde_json::Value {
    let t = now();
    let containers: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": t}}})
        })
        .collect();
    let ip = format!(
        "10.{}.{}.{}",
        (node_index >> 8) & 0xff,
        node_index & 0xff,
        2
    );
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": t,
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        "containerStatuses": containers,
    }})
}

async fn run_pods(client: kube::Client, c: Arc<SimConfig>) {
    let names: HashSet<String> = (0..c.count).map(|i| format!("{}{i}", c.prefix)).collect();
    let all: Api<Pod> = Api::all(client.clone());
    let mut stream = watcher(all, watcher::Config::default())
        .default_backoff()
        .boxed();
    let limit = Arc::new(tokio::sync::Semaphore::new(c.parallel.max(1)));
    while let Some(e) = stream.next().await {
        let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = e else {
            continue;
        };
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !names.contains(&node) {
            continue;
        }
        let deleting = p.metadata.deletion_timestamp.is_some();
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        if !deleting && phase.as_deref() != Some("Pending") && phase.is_some() {
            continue;
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        let index: usize = node[c.prefix.len()..].parse().unwrap_or(0);
        tokio::spawn(async move {
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            let name = p.metadata.name.as_deref().unwrap_or("");
            let pods: Api<Pod> = Api::namespaced(client, ns);
            let r = if deleting {
                let mut dp = DeleteParams::default().grace_period(0);
                dp.preconditions = Some(kube::api::Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                });
                pods.delete(name, &dp).await.map(|_| ())
            } else {
                pods.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(running_status(&p, index)),
                )
                .await
                .map(|_| ())
            };
            if let Err(e) = r {
                tracing::debug!(pod = %name, error = %e, "simulated pod");
            }
            drop(permit);
        });
    }
}

/// Registers the simulated nodes and keeps them alive (and their pods running) until
/// `shutdown`.
pub async fn run(
    client: kube::Client,
    c: SimConfig,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    register(&client, &c).await?;
    serve(client, c, shutdown).await;
    Ok(())
}

/// Keeps registered simulated nodes alive (and their pods running) until `shutdown`.
pub async fn serve(client: kube::Client, c: SimConfig, shutdown: CancellationToken) {
    let c = Arc::new(c);
    let pods = c
        .run_pods
        .then(|| tokio::spawn(run_pods(client.clone(), c.clone())));
    loop {
        renew_leases(&client, &c).await;
        ready_again(&client, &c).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(c.lease_duration / 4) => {}
        }
    }
    if let Some(p) = pods {
        p.abort();
    }
}
