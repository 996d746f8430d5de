//! `shoal`: the one binary. `shoal up` runs a single-node control plane; each component also
//! runs alone as a subcommand.

mod join;
mod kubeconfig;
mod node;
mod policy;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_apiserver::tls::Pki;
use shoal_apiserver::{ApiServer, router};
use shoal_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// mimalloc: the API server allocates many small JSON values per request; glibc malloc
/// showed up as ~17% of CPU in the create benchmark.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Kubernetes-compatible orchestration for WebAssembly workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// One redb file under the data directory (durable).
    Embedded,
    /// An etcd cluster (`--etcd-endpoints`); several API servers can share it.
    Etcd,
    /// In memory only: everything is lost at exit.
    Memory,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the store, certificates, token and kubeconfig live.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the API server listens on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// The store backend.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// etcd client URLs, comma-separated (with `--store etcd`).
    #[arg(long, value_delimiter = ',', required_if_eq("store", "etcd"))]
    etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) that signed the etcd servers' certificates.
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
    /// The range Services take ClusterIPs from; the `kubernetes` Service gets its first
    /// address. On loopback by default, so ClusterIPs are reachable from the node without
    /// root and no Service traffic leaves the machine.
    #[arg(long, default_value = shoal_api::net::DEFAULT_SERVICE_CIDR)]
    service_cluster_ip_range: shoal_api::net::Cidr,
    /// The range NodePort and LoadBalancer Services take node ports from.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// An `EncryptionConfiguration` saying which resources are encrypted at rest, and how.
    /// `shoal up` without it encrypts Secrets with a key it generates once
    /// (`DATA_DIR/encryption-config.yaml`); `shoal apiserver` without it encrypts nothing
    /// (API servers sharing an etcd need the same file).
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// A static token file (kube-apiserver's CSV: `token,user,uid,"group1,group2"`): more
    /// users, each by its bearer token; what they may do is RBAC's.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// An AdmissionConfiguration (`apiserver.config.k8s.io/v1`) whose `PodSecurity` plugin
    /// holds a PodSecurityConfiguration: the levels of namespaces without labels and the
    /// users, RuntimeClasses and namespaces exempt.
    #[arg(long)]
    admission_control_config_file: Option<PathBuf>,
    /// An `audit.k8s.io/v1` Policy; without it the built-in one (nothing for health checks,
    /// metadata only for Secrets and ConfigMaps, request bodies for other writes).
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// Where audit events go (JSON lines); `shoal up` without it writes `DATA_DIR/audit.log`,
    /// `shoal apiserver` without it writes none.
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// The size in megabytes at which the audit log is rotated.
    #[arg(long, default_value_t = 100)]
    audit_log_maxsize: u64,
    /// How many rotated audit logs are kept.
    #[arg(long, default_value_t = 3)]
    audit_log_maxbackup: usize,
    /// Seats for read-only requests of users outside `system:masters` (long-running ones,
    /// such as watches, need none); one user may hold half of them.
    #[arg(long, default_value_t = shoal_apiserver::flowcontrol::DEFAULT_READONLY)]
    max_requests_inflight: usize,
    /// Seats for mutating requests, as for `--max-requests-inflight`.
    #[arg(long, default_value_t = shoal_apiserver::flowcontrol::DEFAULT_MUTATING)]
    max_mutating_requests_inflight: usize,
    /// The ECDSA P-256 private key (PKCS#8 PEM) ServiceAccount tokens are signed with; without
    /// it, `DATA_DIR/pki/sa.key`, generated once (API servers sharing an etcd need the same).
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// More public keys (PEM) tokens may be signed with, for key rotation; repeatable.
    #[arg(long)]
    service_account_key_file: Vec<PathBuf>,
    /// The `iss` of the tokens this server issues and accepts.
    #[arg(long, default_value = shoal_apiserver::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// The audiences tokens must name (comma-separated); the issuer when empty.
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range such as 30000-32767"))?;
    let (lo, hi): (u16, u16) = (
        lo.trim()
            .parse()
            .map_err(|_| format!("{lo:?} is not a port"))?,
        hi.trim()
            .parse()
            .map_err(|_| format!("{hi:?} is not a port"))?,
    );
    if lo == 0 || lo > hi {
        return Err(format!(
            "{s:?}: the range must run from 1 upwards, low to high"
        ));
    }
    Ok(lo..=hi)
}

/// Where plugin modules (admission policies, scheduler plugins) may come from.
#[derive(clap::Args, Clone)]
struct PluginArgs {
    /// A directory `file://` plugin modules may be read from (with everything below it);
    /// repeatable. Without one, file modules are refused.
    #[arg(long = "plugin-dir")]
    plugin_dirs: Vec<PathBuf>,
    /// Allow plugin modules from `http://` URLs and from URLs and registries on loopback
    /// addresses (development registries, tests). Off by default: a module reference must
    /// not reach services on this machine.
    #[arg(long)]
    allow_loopback_plugin_sources: bool,
}

impl PluginArgs {
    fn sources(&self) -> shoal_plugin_host::source::SourcePolicy {
        shoal_plugin_host::source::SourcePolicy {
            plugin_dirs: self.plugin_dirs.clone(),
            allow_loopback: self.allow_loopback_plugin_sources,
        }
    }

    /// The process's plugin engine (one per process, shared by admission and scheduling).
    fn host(&self) -> anyhow::Result<shoal_plugin_host::Host> {
        shoal_plugin_host::Host::new(shoal_plugin_host::DEFAULT_MEMORY_LIMIT)
            .context("cannot start the plugin engine")
    }
}

#[derive(Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Start a single-node cluster: API server, scheduler, controllers and a kubelet (on the embedded store
    /// unless `--store` says otherwise).
    Up {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        plugins: PluginArgs,
        #[command(flatten)]
        kubelet: node::KubeletArgs,
        #[command(flatten)]
        controllers: ControllerArgs,
        #[command(flatten)]
        leader: LeaderArgs,
    },
    /// Run the API server alone.
    Apiserver {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Run a kubelet that joins the cluster of KUBECONFIG as a node.
    Kubelet {
        /// The kubeconfig to reach the API server with. With `--bootstrap-kubeconfig`, where
        /// the node's own credentials are written once it has joined. A bearer token in it
        /// also guards the kubelet API; without one, the API server's reviews do.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// A kubeconfig with a bootstrap token (`shoal bootstrap-kubeconfig`): when
        /// `--kubeconfig` holds no valid certificate yet, the kubelet asks for one through a
        /// CertificateSigningRequest and writes it there.
        #[arg(long)]
        bootstrap_kubeconfig: Option<PathBuf>,
        /// Where the node keeps images, compiled components, pod volumes and logs.
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        kubelet: node::KubeletArgs,
    },
    /// Run the scheduler alone against the cluster of KUBECONFIG.
    Scheduler {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
        #[command(flatten)]
        leader: LeaderArgs,
        /// Where to serve `/metrics` (Prometheus text) and `/healthz` over HTTP; keep it on
        /// loopback. Port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:10259")]
        metrics_bind_address: std::net::SocketAddr,
    },
    /// Run the controllers alone against the cluster of KUBECONFIG.
    ControllerManager {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        controllers: ControllerArgs,
        #[command(flatten)]
        leader: LeaderArgs,
        /// Where to serve `/metrics` (Prometheus text) and `/healthz` over HTTP; keep it on
        /// loopback. Port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:10257")]
        metrics_bind_address: std::net::SocketAddr,
    },
    /// Register N simulated nodes (kwok-like) with the cluster of KUBECONFIG: their leases are
    /// renewed and pods bound to them are marked Running without executing anything.
    SimulateNodes {
        #[arg(long)]
        kubeconfig: PathBuf,
        /// How many nodes.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Node names are PREFIX0, PREFIX1, ...
        #[arg(long, default_value = "sim-")]
        prefix: String,
        /// Each node's cpu capacity.
        #[arg(long, default_value = "32")]
        cpu: String,
        /// Each node's memory capacity.
        #[arg(long, default_value = "256Gi")]
        memory: String,
        /// Each node's pod capacity.
        #[arg(long, default_value_t = 110)]
        max_pods: u32,
        /// Leave bound pods as they are instead of marking them Running.
        #[arg(long)]
        no_run_pods: bool,
        /// Lifetime of each node's Lease in seconds; renewed every quarter of it.
        #[arg(long, default_value_t = 40)]
        node_lease_duration_seconds: u64,
    },
    /// Manage the node's Wasm images.
    #[command(subcommand)]
    Image(node::ImageCommand),
    /// Back up, restore or migrate the embedded store (Shoal must be stopped).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run an admission policy offline: `test` prints its verdict, `bench` its latency.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Create a bootstrap token and print a kubeconfig holding it, with which a kubelet joins
    /// (`shoal kubelet --bootstrap-kubeconfig`).
    BootstrapKubeconfig {
        /// An admin kubeconfig of the cluster (default: the data directory's).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// How long the token may be used, as `24h` or `30m`; it is deleted after.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: std::time::Duration,
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print a kubeconfig for a user (a client certificate signed by the cluster CA, user =
    /// CN, groups = O), ready for `kubectl --kubeconfig`; what the user may do is RBAC's.
    Kubeconfig {
        /// The user name.
        #[arg(long)]
        user: String,
        /// A group the user is in (at most two; repeat the flag).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// The cluster's data directory (its CA and admin kubeconfig).
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args, Clone)]
struct ControllerArgs {
    /// Seconds a node may go without renewing its lease before it is marked NotReady and
    /// tainted unreachable.
    #[arg(long, default_value_t = 40.0)]
    node_monitor_grace_period: f64,
    /// The cluster CA (PEM) published to every namespace as the `kube-root-ca.crt` ConfigMap;
    /// without it, the CA of the kubeconfig (`shoal up`: the cluster's own).
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// The CA certificate (PEM) approved CertificateSigningRequests are signed with (`shoal
    /// up`: the cluster's own).
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The longest a signed certificate is valid, as `8760h` or `30m`.
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: std::time::Duration,
    /// How often each HorizontalPodAutoscaler is reconciled, as `15s`.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// The scale-down stabilization window of autoscalers whose behavior sets none, as `5m`
    /// (`0s`: none).
    #[arg(long, default_value = "5m", value_parser = parse_duration_or_zero)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// How far from its target a metric must be (a fraction) before the replica count changes.
    #[arg(long, default_value_t = 0.1)]
    horizontal_pod_autoscaler_tolerance: f64,
    /// How long after a pod starts its CPU samples may be skipped as not yet representative.
    #[arg(long, default_value = "5m", value_parser = parse_duration_or_zero)]
    horizontal_pod_autoscaler_cpu_initialization_period: std::time::Duration,
    /// How long after a pod starts a not-ready pod counts as still starting.
    #[arg(long, default_value = "30s", value_parser = parse_duration_or_zero)]
    horizontal_pod_autoscaler_initial_readiness_delay: std::time::Duration,
}

/// A duration such as `5m` or `0s`.
fn parse_duration_or_zero(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration such as 5m or 30s: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("{s:?} may not be negative"))
}

/// A duration such as `8760h`, `1h30m` or `90s`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration such as 24h or 90s: {e}"))?;
    std::time::Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} must be a positive duration"))
}

impl ControllerArgs {
    fn config(&self) -> anyhow::Result<shoal_controllers::Config> {
        let grace = std::time::Duration::try_from_secs_f64(self.node_monitor_grace_period)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--node-monitor-grace-period must be a positive number of seconds")?;
        anyhow::ensure!(
            (0.0..1.0).contains(&self.horizontal_pod_autoscaler_tolerance),
            "--horizontal-pod-autoscaler-tolerance must be at least 0 and below 1"
        );
        let root_ca = match &self.root_ca_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
            ),
            None => None,
        };
        let signing = match (
            &self.cluster_signing_cert_file,
            &self.cluster_signing_key_file,
        ) {
            (Some(cert), Some(key)) => {
                let read = |f: &PathBuf| {
                    std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))
                };
                Some(shoal_controllers::certificates::Signing {
                    ca_pem: read(cert)?,
                    key_pem: read(key)?,
                    duration: self.cluster_signing_duration,
                })
            }
            _ => None,
        };
        Ok(shoal_controllers::Config {
            node_monitor_grace_period: grace,
            root_ca,
            signing,
            autoscaler: shoal_controllers::podautoscaler::Settings {
                sync_period: self.horizontal_pod_autoscaler_sync_period,
                downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
                tolerance: self.horizontal_pod_autoscaler_tolerance,
                cpu_initialization_period: self.horizontal_pod_autoscaler_cpu_initialization_period,
                initial_readiness_delay: self.horizontal_pod_autoscaler_initial_readiness_delay,
            },
        })
    }
}

/// Leader election of the scheduler and the controller-manager, with kube-scheduler's and
/// kube-controller-manager's flags and defaults.
#[derive(clap::Args, Clone)]
struct LeaderArgs {
    /// The candidate's identity; a fresh one per process unless set (`shoal up` keeps one per
    /// data directory, so a restarted node takes its own Lease back at once).
    #[arg(skip)]
    identity: Option<String>,
    /// Hold a Lease in kube-system (`kube-scheduler`, `kube-controller-manager`) while
    /// working, so that of several replicas one works at a time.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a Lease not renewed stays held (`15s`).
    #[arg(long, default_value = "15s", value_parser = seconds)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long the leader tries to renew before it gives up its work (`10s`).
    #[arg(long, default_value = "10s", value_parser = seconds)]
    leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire and the leader renews (`2s`).
    #[arg(long, default_value = "2s", value_parser = seconds)]
    leader_elect_retry_period: std::time::Duration,
}

/// `15s`, `1.5s`, `500ms` or a number of seconds.
fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let (number, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| std::time::Duration::try_from_secs_f64(n * scale).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive duration such as 15s"))
}

impl LeaderArgs {
    /// Runs `work` as `name` (the Lease) would: under leader election unless it is off.
    async fn run<F, Fut>(&self, name: &str, client: kube::Client, stop: CancellationToken, work: F)
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        if !self.leader_elect {
            return work(stop).await;
        }
        let mut election = shoal_client::leader::Election {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            ..shoal_client::leader::Election::new(name)
        };
        if let Some(id) = &self.identity {
            election.identity = id.clone();
        }
        election.run(client, stop, work).await;
    }
}

/// This host's name and an id kept in `dir`: the same candidate across restarts of one node.
fn stable_identity(dir: &std::path::Path) -> String {
    let file = dir.join("leader-identity");
    let id = match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            if let Err(e) = std::fs::write(&file, &id) {
                tracing::warn!(error = %e, "cannot keep the leader election identity");
            }
            id
        }
    };
    format!("{}_{id}", shoal_client::leader::host_name())
}

/// The scheduler, under leader election: a fresh one each time this process leads.
async fn run_scheduler(
    client: kube::Client,
    config: shoal_scheduler::Config,
    leader: LeaderArgs,
    stop: CancellationToken,
) {
    let c = client.clone();
    leader
        .run("kube-scheduler", client, stop, move |token| {
            let scheduler = shoal_scheduler::Scheduler::new(
                c.clone(),
                shoal_scheduler::plugins::defaults(),
                config.clone(),
            );
            scheduler.run(token)
        })
        .await;
}

/// The controllers, under leader election.
async fn run_controllers(
    client: kube::Client,
    config: shoal_controllers::Config,
    supervisor: shoal_supervisor::Supervisor,
    leader: LeaderArgs,
    stop: CancellationToken,
) {
    let c = client.clone();
    leader
        .run("kube-controller-manager", client, stop, move |token| {
            let (c, config, supervisor) = (c.clone(), config.clone(), supervisor.clone());
            async move { shoal_controllers::run(c, config, &supervisor, token).await }
        })
        .await;
}

#[derive(Subcommand)]
// Parsed once per process, like `Command`.
#[allow(clippy::large_enum_variant)]
enum StoreCommand {
    /// Copy the embedded store to FILE, checked to open as a store.
    Snapshot {
        file: PathBuf,
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Replace the embedded store with FILE, a snapshot.
    Restore {
        file: PathBuf,
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Overwrite an existing store.
        #[arg(long)]
        force: bool,
    },
    /// Copy every object of the embedded store into etcd, keeping each as stored (uid too).
    Migrate {
        /// The target; only `etcd` is supported.
        #[arg(long, value_enum)]
        to: StoreKind,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Opens an existing embedded store file, failing if it is missing or in use.
fn open_existing(path: &std::path::Path) -> anyhow::Result<shoal_store::embedded::EmbeddedStore> {
    anyhow::ensure!(path.exists(), "no store at {}", path.display());
    shoal_store::embedded::EmbeddedStore::open(path).with_context(|| {
        format!(
            "cannot open the store at {} (is Shoal still running?)",
            path.display()
        )
    })
}

async fn run_store(cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Snapshot { file, data_dir } => {
            let src = data_dir.unwrap_or_else(default_data_dir).join("store.redb");
            let store = open_existing(&src)?;
            let revision = store.current_revision().await?;
            // Holding the store open keeps anyone else from writing while the file is copied.
            std::fs::copy(&src, &file)
                .with_context(|| format!("cannot write {}", file.display()))?;
            drop(store);
            println!(
                "snapshot of revision {revision} written to {}",
                file.display()
            );
            Ok(())
        }
        StoreCommand::Restore {
            file,
            data_dir,
            force,
        } => {
            let dir = data_dir.unwrap_or_else(default_data_dir);
            let dst = dir.join("store.redb");
            anyhow::ensure!(
                force || !dst.exists(),
                "{} exists; pass --force to replace it",
                dst.display()
            );
            let revision = open_existing(&file)?.current_revision().await?;
            std::fs::create_dir_all(&dir)?;
            std::fs::copy(&file, &dst)
                .with_context(|| format!("cannot write {}", dst.display()))?;
            println!("restored revision {revision} into {}", dst.display());
            Ok(())
        }
        StoreCommand::Migrate { to, server } => {
            anyhow::ensure!(matches!(to, StoreKind::Etcd), "only --to etcd is supported");
            let dir = server.data_dir.clone().unwrap_or_else(default_data_dir);
            let from = open_existing(&dir.join("store.redb"))?;
            let target = open_store(
                &ServerArgs {
                    store: StoreKind::Etcd,
                    ..server
                },
                &dir,
            )
            .await?;
            let all = from
                .range(shoal_store::RangeRequest::prefix("/registry/"))
                .await?;
            let (mut copied, mut present) = (0, Vec::new());
            for kv in all.kvs {
                let res = target
                    .txn(
                        shoal_store::Txn::new()
                            .when(shoal_store::Compare::absent(kv.key.as_str()))
                            .put(kv.key.as_str(), kv.value.clone()),
                    )
                    .await?;
                if res.succeeded {
                    copied += 1;
                } else {
                    present.push(kv.key);
                }
            }
            println!("copied {copied} objects into etcd");
            anyhow::ensure!(
                present.is_empty(),
                "{} keys already existed in etcd and were left as they were: {}",
                present.len(),
                present.join(", ")
            );
            Ok(())
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("shoal");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/shoal"),
        None => PathBuf::from("shoal-data"),
    }
}

async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    token.cancel();
}

async fn open_store(args: &ServerArgs, dir: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match args.store {
        StoreKind::Embedded => {
            let path = dir.join("store.redb");
            Arc::new(
                shoal_store::embedded::EmbeddedStore::open(&path)
                    .with_context(|| format!("cannot open the store at {}", path.display()))?,
            )
        }
        StoreKind::Memory => Arc::new(shoal_store::memory::MemoryStore::new()),
        StoreKind::Etcd => {
            let opts = shoal_store::etcd::EtcdOptions {
                endpoints: args.etcd_endpoints.clone(),
                ca_file: args.etcd_cafile.clone(),
                cert_file: args.etcd_certfile.clone(),
                key_file: args.etcd_keyfile.clone(),
            };
            Arc::new(
                shoal_store::etcd::EtcdStore::connect(&opts)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
                    .with_context(|| {
                        format!("cannot reach etcd at {}", args.etcd_endpoints.join(","))
                    })?,
            )
        }
    })
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The encryption at rest the API server applies: the given file, or for a single-node
/// cluster one generated once in the data directory (readable by its owner only).
fn encryption_config(
    args: &ServerArgs,
    dir: &std::path::Path,
    single_node: bool,
) -> anyhow::Result<Option<shoal_apiserver::encryption::EncryptionConfig>> {
    let file = match &args.encryption_provider_config {
        Some(f) => f.clone(),
        None if single_node => {
            let f = dir.join("encryption-config.yaml");
            if !f.exists() {
                write_private(
                    &f,
                    &shoal_apiserver::encryption::EncryptionConfig::generate(),
                )?;
            }
            f
        }
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let config = shoal_apiserver::encryption::EncryptionConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(Some(config))
}

/// Writes `content` to a new file only its owner may read.
fn write_private(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut out, content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What signs and verifies ServiceAccount tokens: the given key, or one generated once in the
/// data directory.
fn service_account_issuer(
    args: &ServerArgs,
    dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<shoal_apiserver::serviceaccount::TokenIssuer>> {
    use shoal_apiserver::serviceaccount::TokenIssuer;
    let file = match &args.service_account_signing_key_file {
        Some(f) => f.clone(),
        None => {
            let f = dir.join("pki").join("sa.key");
            if !f.exists() {
                std::fs::create_dir_all(dir.join("pki"))?;
                let key = TokenIssuer::generate_key().map_err(|e| anyhow::anyhow!(e))?;
                write_private(&f, &key)?;
            }
            f
        }
    };
    let key = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut public = Vec::new();
    for f in &args.service_account_key_file {
        let pem =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        public.push(pem);
    }
    let issuer = TokenIssuer::new(
        &key,
        &public,
        &args.service_account_issuer,
        args.api_audiences.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(std::sync::Arc::new(issuer))
}

/// The audit log the API server writes, if any.
fn audit_log(
    args: &ServerArgs,
    dir: &std::path::Path,
    single_node: bool,
) -> anyhow::Result<Option<std::sync::Arc<shoal_apiserver::audit::Audit>>> {
    use shoal_apiserver::audit::{Audit, LogFile, Policy};
    let path = match &args.audit_log_path {
        Some(p) => p.clone(),
        None if single_node => dir.join("audit.log"),
        None => return Ok(None),
    };
    let text = match &args.audit_policy_file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        None => Policy::default_text().to_owned(),
    };
    let policy = Policy::parse(&text).map_err(|e| anyhow::anyhow!("audit policy: {e}"))?;
    let file = LogFile {
        path,
        max_bytes: args.audit_log_maxsize.max(1) * 1024 * 1024,
        backups: args.audit_log_maxbackup,
    };
    let audit = Audit::start(policy, file, 10_000).context("cannot start the audit log")?;
    Ok(Some(std::sync::Arc::new(audit)))
}

async fn run_apiserver(
    args: ServerArgs,
    plugins: PluginArgs,
    kubelet: Option<(node::KubeletArgs, shoal_controllers::Config, LeaderArgs)>,
) -> anyhow::Result<()> {
    // Every long-running task of the process, and `/readyz` reporting on them.
    let supervisor = shoal_supervisor::Supervisor::new();
    let host = plugins.host()?;
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let store = open_store(&args, &dir).await?;
    let encryption = encryption_config(&args, &dir, kubelet.is_some())?;
    let audit = audit_log(&args, &dir, kubelet.is_some())?;
    let service_ip = args.service_cluster_ip_range.first_host().to_string();
    let service_range = args.service_cluster_ip_range;
    // The serving certificate also names the address listened on, when it is a particular
    // one: nodes on other machines reach the API server there.
    let mut names = vec![service_ip];
    let listen_ip = args.listen.ip();
    if !listen_ip.is_unspecified() && !listen_ip.is_loopback() {
        names.push(listen_ip.to_string());
    }
    let pki = Pki::load_or_create(&dir.join("pki"), &names)
        .context("cannot set up the cluster's certificates")?;
    let tokens = match &args.token_auth_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            shoal_apiserver::auth::parse_token_file(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
        }
        None => Vec::new(),
    };
    let service_accounts = service_account_issuer(&args, &dir)?;
    let pod_security = match &args.admission_control_config_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            shoal_apiserver::admission::podsecurity::Config::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
        }
        None => Default::default(),
    };
    let options = shoal_apiserver::Options {
        token: Some(pki.token.clone()),
        service_accounts: Some(service_accounts),
        tokens,
        plugins: Some(shoal_apiserver::PluginOptions {
            host: host.clone(),
            sources: plugins.sources(),
        }),
        supervisor: supervisor.clone(),
        services: shoal_apiserver::ServiceNetwork {
            cidr: args.service_cluster_ip_range,
            node_ports: args.service_node_port_range.clone(),
        },
        encryption,
        audit,
        max_in_flight: Some((
            args.max_requests_inflight,
            args.max_mutating_requests_inflight,
        )),
        pod_security,
    };
    let server = ApiServer::start(store, options)
        .await
        .context("cannot start the API server")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if let Err(e) = server.publish_endpoint(addr).await {
        // Another API server may run with another range; this one still serves.
        tracing::error!(error = %e, "cannot publish the `kubernetes` Service");
    }
    let kubeconfig = dir.join("kubeconfig");
    kubeconfig::write(&kubeconfig, addr, &pki.ca_pem, &pki.token)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    println!("Shoal API server listening on https://{addr}");
    println!("Use it with:  export KUBECONFIG={}", kubeconfig.display());
    println!(
        "         or:  kubectl --kubeconfig {} get namespaces",
        kubeconfig.display()
    );
    let token = CancellationToken::new();
    tokio::spawn(shutdown_signal(token.clone()));
    let serving = tokio::spawn(shoal_net::serve(
        listener,
        router(server),
        Some(pki.server_config),
        token.clone(),
    ));
    let node = match kubelet {
        Some((mut args, mut controllers, mut leader)) => {
            controllers
                .root_ca
                .get_or_insert_with(|| pki.ca_pem.clone());
            args.cluster_ca = Some(pki.ca_pem.clone());
            leader.identity = Some(stable_identity(&dir));
            // Pods resolve through the kube-dns address of this cluster's Service range.
            args.cluster_dns
                .get_or_insert_with(|| service_range.dns_host().into());
            // Each component with its own identity, as kubeadm sets a cluster up: a client
            // certificate per component, in a kubeconfig of its own.
            let signer = shoal_apiserver::tls::signer(&dir.join("pki"))
                .context("cannot read the cluster CA")?;
            if controllers.signing.is_none() {
                let key = dir.join("pki").join("ca.key");
                controllers.signing = Some(shoal_controllers::certificates::Signing {
                    ca_pem: pki.ca_pem.clone(),
                    key_pem: std::fs::read_to_string(&key)
                        .with_context(|| format!("cannot read {}", key.display()))?,
                    duration: std::time::Duration::from_secs(365 * 86_400),
                });
            }
            let admin = std::fs::read_to_string(&kubeconfig)?;
            let identity = |file: &str, user: &str, groups: &[String]| -> anyhow::Result<PathBuf> {
                let (cert, key) = signer.issue_client(
                    user,
                    groups,
                    std::time::Duration::from_secs(365 * 86_400),
                )?;
                let path = dir.join(file);
                kubeconfig::write_private(&path, &kubeconfig::for_user(&admin, user, &cert, &key)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(path)
            };
            let node_name = args.node_name.clone().unwrap_or_else(node::host_name);
            args.node_name = Some(node_name.clone());
            let scheduler_client =
                node::client_from(&identity("scheduler.conf", "system:kube-scheduler", &[])?)
                    .await?;
            let controllers_client = node::client_from(&identity(
                "controller-manager.conf",
                "system:kube-controller-manager",
                &[],
            )?)
            .await?;
            let kubelet_client = node::client_from(&identity(
                "kubelet.conf",
                &format!("system:node:{node_name}"),
                &["system:nodes".to_owned()],
            )?)
            .await?;
            let ingress_client = node::client_from(&identity(
                "ingress-controller.conf",
                shoal_apiserver::rbac::defaults::INGRESS_CONTROLLER,
                &[],
            )?)
            .await?;
            let scheduling = shoal_scheduler::Config {
                plugins: Some(shoal_scheduler::wasm::PluginConfig {
                    host,
                    sources: plugins.sources(),
                }),
                supervisor: supervisor.clone(),
            };
            tokio::spawn(run_scheduler(
                scheduler_client,
                scheduling,
                leader.clone(),
                token.clone(),
            ));
            tokio::spawn(run_controllers(
                controllers_client,
                controllers,
                supervisor.clone(),
                leader,
                token.clone(),
            ));
            Some(
                node::start_kubelet(
                    kubelet_client,
                    Some(pki.token.clone()),
                    &args,
                    &dir,
                    node::Addons {
                        dns: Some(node::client_from(&kubeconfig).await?),
                        ingress: Some(ingress_client),
                    },
                    supervisor,
                    token.clone(),
                )
                .await?,
            )
        }
        None => None,
    };
    let _ = serving.await;
    if let Some(n) = node {
        let _ = n.await;
    }
    println!("Shoal stopped");
    Ok(())
}

async fn run_kubelet(
    kubeconfig: &std::path::Path,
    data_dir: Option<PathBuf>,
    mut args: node::KubeletArgs,
) -> anyhow::Result<()> {
    args.cluster_ca = node::ca_of(kubeconfig)?;
    let dir = data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let client = node::client_from(kubeconfig).await?;
    let token = node::kubeconfig_token(kubeconfig)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    let supervisor = shoal_supervisor::Supervisor::new();
    let addons = node::Addons {
        dns: None,
        ingress: match &args.ingress_kubeconfig {
            Some(path) => Some(node::client_from(path).await?),
            None => None,
        },
    };
    let kubelet =
        node::start_kubelet(client, token, &args, &dir, addons, supervisor, shutdown).await?;
    let _ = kubelet.await;
    println!("Shoal kubelet stopped");
    Ok(())
}

/// Serves the process's `/metrics` and a `/healthz` at `addr` (a standalone scheduler's or
/// controller-manager's, as Kubernetes' components serve theirs); returns where.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics (--metrics-bind-address)"))?;
    let at = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        shoal_metrics::CONTENT_TYPE,
                    )],
                    shoal_metrics::render(),
                )
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(shoal_net::serve(listener, app, None, shutdown));
    Ok(at)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shoal_metrics::install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            server,
            plugins,
            kubelet,
            controllers,
            leader,
        } => {
            run_apiserver(
                server,
                plugins,
                Some((kubelet, controllers.config()?, leader)),
            )
            .await
        }
        Command::Apiserver { server, plugins } => run_apiserver(server, plugins, None).await,
        Command::Kubelet {
            kubeconfig,
            bootstrap_kubeconfig,
            data_dir,
            kubelet,
        } => {
            if let Some(b) = &bootstrap_kubeconfig
                && !join::has_valid_certificate(&kubeconfig)
            {
                let node = kubelet.node_name.clone().unwrap_or_else(node::host_name);
                join::bootstrap(b, &kubeconfig, &node).await?;
            }
            run_kubelet(&kubeconfig, data_dir, kubelet).await
        }
        Command::BootstrapKubeconfig {
            kubeconfig,
            ttl,
            data_dir,
        } => {
            let admin = kubeconfig
                .unwrap_or_else(|| data_dir.unwrap_or_else(default_data_dir).join("kubeconfig"));
            print!("{}", join::bootstrap_kubeconfig(&admin, ttl).await?);
            Ok(())
        }
        Command::Scheduler {
            kubeconfig,
            plugins,
            leader,
            metrics_bind_address,
        } => {
            let client = node::client_from(&kubeconfig).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            let at = serve_metrics(metrics_bind_address, shutdown.clone()).await?;
            println!("Shoal scheduler running (metrics at http://{at}/metrics)");
            let config = shoal_scheduler::Config {
                plugins: Some(shoal_scheduler::wasm::PluginConfig {
                    host: plugins.host()?,
                    sources: plugins.sources(),
                }),
                supervisor: shoal_supervisor::Supervisor::new(),
            };
            run_scheduler(client, config, leader, shutdown).await;
            Ok(())
        }
        Command::ControllerManager {
            kubeconfig,
            controllers,
            leader,
            metrics_bind_address,
        } => {
            let mut config = controllers.config()?;
            if config.root_ca.is_none() {
                config.root_ca = node::ca_of(&kubeconfig)?;
            }
            let client = node::client_from(&kubeconfig).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            let at = serve_metrics(metrics_bind_address, shutdown.clone()).await?;
            println!("Shoal controller-manager running (metrics at http://{at}/metrics)");
            let supervisor = shoal_supervisor::Supervisor::new();
            run_controllers(client, config, supervisor, leader, shutdown).await;
            Ok(())
        }
        Command::SimulateNodes {
            kubeconfig,
            count,
            prefix,
            cpu,
            memory,
            max_pods,
            no_run_pods,
            node_lease_duration_seconds,
        } => {
            anyhow::ensure!(
                node_lease_duration_seconds > 0,
                "--node-lease-duration-seconds must be positive"
            );
            let client = node::client_from(&kubeconfig).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            let config = shoal_kubelet::sim::SimConfig {
                prefix,
                count,
                cpu,
                memory,
                max_pods,
                run_pods: !no_run_pods,
                lease_duration: std::time::Duration::from_secs(node_lease_duration_seconds),
                ..Default::default()
            };
            shoal_kubelet::sim::register(&client, &config).await?;
            println!("Shoal simulating {count} nodes");
            shoal_kubelet::sim::serve(client, config, shutdown).await;
            Ok(())
        }
        Command::Image(cmd) => node::run_image(cmd, default_data_dir()).await,
        Command::Store(cmd) => run_store(cmd).await,
        Command::Policy(cmd) => policy::run(cmd).await,
        Command::Kubeconfig {
            user,
            groups,
            days,
            data_dir,
        } => {
            let dir = data_dir.unwrap_or_else(default_data_dir);
            let admin = dir.join("kubeconfig");
            let admin = std::fs::read_to_string(&admin).with_context(|| {
                format!(
                    "cannot read {} (has `shoal up --data-dir {}` run?)",
                    admin.display(),
                    dir.display()
                )
            })?;
            let (cert, key) = shoal_apiserver::tls::issue_client_certificate(
                &dir.join("pki"),
                &user,
                &groups,
                days,
            )
            .context("cannot issue a client certificate")?;
            print!("{}", kubeconfig::for_user(&admin, &user, &cert, &key)?);
            Ok(())
        }
    }
}
