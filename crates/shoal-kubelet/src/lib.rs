//! The node agent: registers its Node, renews its Lease, runs every pod bound to it through a
//! [`PodRuntime`], reports their status and events, and serves their logs over HTTPS.
//!
//! Everything it knows about the cluster it learns and writes through kube-rs, exactly as a
//! kubelet talks to a Kubernetes API server.

mod error;
mod events;
pub mod eviction;
mod manager;
pub mod network;
mod node;
mod pods;
mod probe;
pub mod provisioner;
mod resolve;
pub mod server;
pub mod sim;
mod stats;
mod status;
mod worker;

pub use error::{Error, Result};
use shoal_runtime::PodRuntime;
use shoal_supervisor::{Restart, Supervisor};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a kubelet is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// Pods' volumes and logs live under `<data_dir>/pods`.
    pub data_dir: PathBuf,
    /// The node's pod network (`spec.podCIDR`).
    pub pod_cidr: String,
    /// The subnet of the node's container pods, if it runs containers: published on the
    /// Node for the other nodes' routes (`node.shoal.dev/container-pod-cidr`).
    pub container_pod_cidr: Option<String>,
    /// The node's InternalIP, where the API server reaches the kubelet.
    pub address: IpAddr,
    /// The cluster's DNS domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// The cluster DNS Service's address (`--cluster-dns`).
    pub cluster_dns: Option<IpAddr>,
    /// The port the kubelet's HTTPS server listens on.
    pub port: u16,
    /// Crash-loop back-off: the first delay, doubled per restart up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// What the node offers (`status.capacity`); allocatable is the same.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    /// Lease duration; the lease is renewed every quarter of it.
    pub lease_duration: Duration,
    /// Kept from pods for the control plane and the system (`--kube-reserved`,
    /// `--system-reserved`): allocatable is capacity less both and the eviction thresholds.
    pub kube_reserved: eviction::Reserved,
    pub system_reserved: eviction::Reserved,
    /// `--eviction-hard`.
    pub eviction_hard: eviction::Thresholds,
    /// How often the eviction manager reads its signals.
    pub eviction_interval: Duration,
    /// How long a pressure condition stays on after its signal last crossed
    /// (`--eviction-pressure-transition-period`).
    pub pressure_transition: Duration,
}

impl Config {
    /// Defaults for a node named `node_name` keeping its state in `data_dir`.
    pub fn new(node_name: &str, data_dir: &Path) -> Self {
        Self {
            node_name: node_name.to_owned(),
            data_dir: data_dir.to_owned(),
            pod_cidr: "127.64.0.0/16".into(),
            container_pod_cidr: None,
            address: IpAddr::from([127, 0, 0, 1]),
            cluster_domain: "cluster.local".into(),
            cluster_dns: Some(IpAddr::from([127, 96, 0, 10])),
            port: 10250,
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            cpu_millis: std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000,
            memory_bytes: host_memory().unwrap_or(4 << 30),
            max_pods: 1100,
            lease_duration: Duration::from_secs(40),
            kube_reserved: eviction::Reserved::default(),
            system_reserved: eviction::Reserved::default(),
            eviction_hard: eviction::Thresholds {
                memory_available: Some(eviction::Quantity::Bytes(100 << 20)),
                nodefs_available: None,
            },
            eviction_interval: Duration::from_secs(1),
            pressure_transition: Duration::from_secs(30),
        }
    }

    /// What the control plane and the system keep: kube-reserved and system-reserved.
    pub fn reserved(&self) -> eviction::Reserved {
        self.kube_reserved + self.system_reserved
    }

    /// The memory pods may use together before growth fails: capacity less the reservations
    /// (the runtime's budget; allocatable is this less the eviction threshold).
    pub fn pod_memory_budget(&self) -> u64 {
        self.memory_bytes
            .saturating_sub(self.reserved().memory_bytes)
    }

    /// Where the pod `ns/name` with `uid` keeps its logs and volumes.
    pub fn pod_dir(&self, ns: &str, name: &str, uid: &str) -> PathBuf {
        self.data_dir
            .join("pods")
            .join(format!("{ns}_{name}_{uid}"))
    }
}

fn host_memory() -> Option<u64> {
    shoal_runtime::memory::total_memory()
}

/// Keeps `kubelet_running_pods` (pods with a sandbox) as an entry goes from `was` to `now`.
fn running_pods(was: bool, now: bool) {
    match (was, now) {
        (false, true) => metrics::gauge!("kubelet_running_pods").increment(1.0),
        (true, false) => metrics::gauge!("kubelet_running_pods").decrement(1.0),
        _ => {}
    }
}

/// What the logs server needs to know about the pods this kubelet runs.
#[derive(Default)]
pub struct PodIndex {
    pods: Mutex<HashMap<(String, String), PodEntry>>,
}

/// One pod as the logs server sees it.
#[derive(Clone, Debug)]
pub(crate) struct PodEntry {
    pub uid: String,
    pub dir: PathBuf,
    /// Container name → the runtime's id of its current run (to know when `follow` ends).
    pub running: HashMap<String, shoal_runtime::ContainerId>,
    /// The pod's address while it has a sandbox (port-forward dials it).
    pub ip: Option<std::net::IpAddr>,
}

impl PodIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PodEntry>> {
        self.pods.lock().expect("pod index lock is never poisoned")
    }

    pub(crate) fn get(&self, ns: &str, name: &str) -> Option<PodEntry> {
        self.lock().get(&(ns.to_owned(), name.to_owned())).cloned()
    }

    pub(crate) fn set_running(&self, ns: &str, name: &str, entry: PodEntry) {
        let running = entry.ip.is_some();
        let was = self
            .lock()
            .insert((ns.to_owned(), name.to_owned()), entry)
            .is_some_and(|e| e.ip.is_some());
        running_pods(was, running);
    }

    pub(crate) fn remove(&self, ns: &str, name: &str, uid: &str) {
        let mut pods = self.lock();
        let key = (ns.to_owned(), name.to_owned());
        if pods.get(&key).is_some_and(|e| e.uid == uid)
            && let Some(e) = pods.remove(&key)
        {
            running_pods(e.ip.is_some(), false);
        }
    }
}

/// A running kubelet's shared parts.
pub struct Kubelet {
    pub config: Config,
    pub client: kube::Client,
    pub runtime: Arc<dyn PodRuntime>,
    pub index: Arc<PodIndex>,
    /// When this kubelet started: the node conditions' transition time.
    started: jiff::Timestamp,
    /// Runs the lease, the pod manager and every pod's worker.
    pub supervisor: Supervisor,
    /// The pods with a worker (for eviction and stats).
    pub(crate) active: pods::ActivePods,
    /// The node's pressure conditions, kept by the eviction manager.
    pub(crate) pressure: Mutex<eviction::Pressure>,
    /// CPU usage rates, sampled from the runtime's CPU accounting.
    pub(crate) cpu: stats::CpuRates,
}

impl Kubelet {
    pub fn new(
        config: Config,
        client: kube::Client,
        runtime: Arc<dyn PodRuntime>,
        supervisor: Supervisor,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            client,
            runtime,
            index: Arc::default(),
            started: jiff::Timestamp::now(),
            supervisor,
            active: Default::default(),
            pressure: Default::default(),
            cpu: Default::default(),
        })
    }

    /// The node's pressure conditions now.
    pub fn pressure(&self) -> eviction::Pressure {
        self.pressure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers the node, then runs the lease and the pods until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        // As a kubelet does, keep trying until the API server takes the registration.
        let mut delay = Duration::from_millis(200);
        while let Err(e) = node::register(&self).await {
            tracing::warn!(error = %e, "cannot register the node yet; retrying in {delay:?}");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        let sup = self.supervisor.clone();
        let (this, stop) = (self.clone(), shutdown.clone());
        let lease = sup.spawn(
            "kubelet/lease",
            Restart::Always,
            shutdown.clone(),
            move || node::heartbeat(this.clone(), stop.clone()),
        );
        let this = self.clone();
        let evictions = sup.spawn(
            "kubelet/eviction",
            Restart::Always,
            shutdown.clone(),
            move || eviction::run(this.clone()),
        );
        let this = self.clone();
        let sampling = sup.spawn(
            "kubelet/cpu-sampler",
            Restart::Always,
            shutdown.clone(),
            move || stats::sample_cpu(this.clone()),
        );
        let this = self.clone();
        let provisioning = sup.spawn(
            "kubelet/local-path-provisioner",
            Restart::Always,
            shutdown.clone(),
            move || provisioner::run(this.clone()),
        );
        // A restarted manager starts every pod's worker again (the old workers see their
        // pods gone and stop theirs), as a restarted kubelet does.
        let (this, stop) = (self.clone(), shutdown.clone());
        let pods = sup.spawn(
            "kubelet/pods",
            Restart::Always,
            shutdown.clone(),
            move || {
                let (k, stop) = (this.clone(), stop.clone());
                async move {
                    if let Err(e) = manager::run(k, stop).await {
                        tracing::error!(error = %e, "the pod manager stopped");
                    }
                }
            },
        );
        let _ = pods.await;
        lease.abort();
        evictions.abort();
        sampling.abort();
        provisioning.abort();
        Ok(())
    }
}
