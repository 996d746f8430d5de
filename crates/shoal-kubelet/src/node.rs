//! The Node object, its status, and the heartbeat Lease in `kube-node-lease`.

use crate::Kubelet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use shoal_api::node::{CONTAINER_POD_CIDR, NodeExt};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The version a Shoal kubelet reports (`kubectl get nodes` shows it).
pub const KUBELET_VERSION: &str = shoal_api::version::GIT_VERSION;

/// How often the node's status (conditions, images) is rewritten.
const STATUS_EVERY: Duration = Duration::from_secs(60);

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn status(k: &Kubelet, images: Value) -> Value {
    let c = &k.config;
    let version = k.runtime.version();
    let reserved = c.reserved();
    let storage = crate::eviction::storage::filesystem(&c.data_dir)
        .map(|(capacity, _)| capacity)
        .unwrap_or(0);
    let evict =
        |t: Option<crate::eviction::Quantity>, capacity: u64| t.map_or(0, |t| t.of(capacity));
    let capacity = json!({
        "cpu": format!("{}m", c.cpu_millis),
        "memory": format!("{}Ki", c.memory_bytes / 1024),
        "ephemeral-storage": format!("{}Ki", storage / 1024),
        "pods": c.max_pods.to_string(),
    });
    // Kubernetes' node allocatable: capacity less kube-reserved, system-reserved and the hard
    // eviction threshold.
    let memory = c
        .memory_bytes
        .saturating_sub(reserved.memory_bytes)
        .saturating_sub(evict(c.eviction_hard.memory_available, c.memory_bytes));
    let storage_allocatable = storage
        .saturating_sub(reserved.ephemeral_storage_bytes)
        .saturating_sub(evict(c.eviction_hard.nodefs_available, storage));
    let allocatable = json!({
        "cpu": format!("{}m", c.cpu_millis.saturating_sub(reserved.cpu_millis)),
        "memory": format!("{}Ki", memory / 1024),
        "ephemeral-storage": format!("{}Ki", storage_allocatable / 1024),
        "pods": c.max_pods.to_string(),
    });
    let pressure = k.pressure();
    let t = now();
    let since = k
        .started
        .round(jiff::Unit::Second)
        .unwrap_or(k.started)
        .to_string();
    let condition = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": since})
    };
    let pressure_condition =
        |ty: &str, p: &crate::eviction::PressureCondition, on: (&str, &str), off: (&str, &str)| {
            let (status, (reason, message)) = if p.on { ("True", on) } else { ("False", off) };
            let at = p.since.max(k.started);
            json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t,
               "lastTransitionTime": at.round(jiff::Unit::Second).unwrap_or(at).to_string()})
        };
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "addresses": [
            {"type": "InternalIP", "address": c.address.to_string()},
            {"type": "Hostname", "address": c.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": c.port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "osImage": "Shoal (WebAssembly components, WASI 0.2)",
            "containerRuntimeVersion": version.to_string(),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": platform(c).0,
            "architecture": platform(c).1,
        },
        "conditions": [
            pressure_condition("MemoryPressure", &pressure.memory,
                ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
                ("KubeletHasSufficientMemory", "kubelet has sufficient memory available")),
            pressure_condition("DiskPressure", &pressure.disk,
                ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "images": images,
        "runtimeHandlers": k.runtime.runtime_handlers().into_iter()
            .map(|h| json!({"name": h, "features": {"recursiveReadOnlyMounts": false, "userNamespaces": false}}))
            .collect::<Vec<_>>(),
    })
}

async fn images(k: &Kubelet) -> Value {
    let list = k.runtime.list_images().await.unwrap_or_default();
    Value::Array(
        list.into_iter()
            .map(|i| json!({"names": i.names, "sizeBytes": i.size}))
            .collect(),
    )
}

/// The node's `kubernetes.io/os` and `kubernetes.io/arch`: a node that runs containers is
/// the Linux machine it is (manifests selecting `kubernetes.io/os: linux` land there); a node
/// of Wasm pods only is `wasi`/`wasm32`, so they do not.
fn platform(c: &crate::Config) -> (&'static str, &'static str) {
    if c.container_pod_cidr.is_none() {
        return ("wasi", "wasm32");
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

/// Creates the Node (or adopts an existing one of the same name) and writes its status.
pub async fn register(k: &Kubelet) -> crate::Result<()> {
    let c = &k.config;
    let nodes: Api<Node> = Api::all(k.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": c.node_name, "labels": {
            "kubernetes.io/hostname": c.node_name,
            "kubernetes.io/os": platform(c).0,
            "kubernetes.io/arch": platform(c).1,
            "node.shoal.dev/runtime": k.runtime.version().name,
        }},
        "spec": {"podCIDR": c.pod_cidr, "podCIDRs": [c.pod_cidr]},
    }))?;
    let mut node = node;
    let mut annotations = serde_json::Map::new();
    annotations.insert(CONTAINER_POD_CIDR.into(), json!(c.container_pod_cidr));
    node.metadata.annotations = c
        .container_pod_cidr
        .as_ref()
        .map(|cidr| [(CONTAINER_POD_CIDR.to_owned(), cidr.clone())].into());
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %c.node_name, "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = %c.node_name, "node already registered; taking it over");
            // What this run of the node publishes (null takes a stale subnet away).
            let labels = json!({
                "kubernetes.io/os": platform(c).0,
                "kubernetes.io/arch": platform(c).1,
            });
            nodes
                .patch(
                    &c.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": annotations, "labels": labels}}),
                    ),
                )
                .await?;
        }
        Err(source) => {
            return Err(crate::Error::Register {
                node: c.node_name.clone(),
                source,
            });
        }
    }
    write_status(k).await
}

pub(crate) async fn write_status(k: &Kubelet) -> crate::Result<()> {
    let nodes: Api<Node> = Api::all(k.client.clone());
    let status = status(k, images(k).await);
    nodes
        .patch_status(
            &k.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// Now as a MicroTime: exactly six fractional digits, which kubectl insists on.
fn micro_time() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn lease(k: &Kubelet, node_uid: Option<String>) -> crate::Result<Lease> {
    let c = &k.config;
    let mut owner = vec![];
    if let Some(uid) = node_uid {
        owner.push(json!({"apiVersion": "v1", "kind": "Node", "name": c.node_name, "uid": uid}));
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": c.node_name, "namespace": "kube-node-lease", "ownerReferences": owner},
        "spec": {
            "holderIdentity": c.node_name,
            "leaseDurationSeconds": c.lease_duration.as_secs(),
            "renewTime": micro_time(),
        },
    }))?)
}

async fn renew(k: &Kubelet) -> crate::Result<()> {
    let leases: Api<Lease> = Api::namespaced(k.client.clone(), "kube-node-lease");
    let patch = json!({"spec": {
        "holderIdentity": k.config.node_name,
        "renewTime": micro_time(),
    }});
    match leases
        .patch(
            &k.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let uid = Api::<Node>::all(k.client.clone())
                .get_opt(&k.config.node_name)
                .await?
                .and_then(|n| n.metadata.uid);
            leases
                .create(&PostParams::default(), &lease(k, uid)?)
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Renews the lease every quarter of its duration and rewrites the node status every minute,
/// or at once when someone else marked the node not Ready.
pub async fn heartbeat(k: std::sync::Arc<Kubelet>, shutdown: CancellationToken) {
    let every = k.config.lease_duration / 4;
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(e) = renew(&k).await {
            tracing::warn!(error = %e, "cannot renew the node lease");
        }
        // The node lifecycle controller marks a node that went quiet Unknown; say Ready again
        // at once rather than at the next periodic update.
        let marked = match Api::<Node>::all(k.client.clone())
            .get_opt(&k.config.node_name)
            .await
        {
            Ok(Some(n)) => n.condition("Ready").is_some_and(|c| c.status != "True"),
            _ => false,
        };
        if marked || last_status.elapsed() >= STATUS_EVERY {
            last_status = tokio::time::Instant::now();
            if let Err(e) = write_status(&k).await {
                tracing::warn!(error = %e, "cannot update the node status");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
