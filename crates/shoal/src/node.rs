//! The node side of the binary: the kubelet (inside `shoal up` or alone) and `shoal image`.

use anyhow::Context;
use shoal_kubelet::eviction::{Reserved, Thresholds};
use shoal_kubelet::{Config, Kubelet};
use shoal_runtime_wasm::WasmRuntime;
use shoal_runtime_wasm::images::ImageStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Clone)]
pub struct KubeletArgs {
    /// The cluster CA (PEM), which pods' outgoing `https` requests trust (from the kubeconfig;
    /// `shoal up`: the cluster's own).
    #[arg(skip)]
    pub cluster_ca: Option<String>,
    /// The Node's name (default: this machine's host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's pod network; pods get loopback addresses from it, so no root is needed. A
    /// node running its own containerd puts its Wasm pods in --container-pod-cidr instead.
    #[arg(long, default_value = "127.64.0.0/16")]
    pub pod_cidr: String,
    /// The node's address (its InternalIP): the kubelet API, node ports and load balancers
    /// listen on it. A loopback address keeps everything on this machine; give each node of
    /// a machine its own (127.0.0.2, ...).
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: std::net::IpAddr,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The cluster DNS Service's address pods resolve through (default: the tenth address
    /// of the default Service range, where `shoal up` puts `kube-dns`).
    #[arg(long)]
    pub cluster_dns: Option<std::net::IpAddr>,
    /// Port the cluster DNS server listens on, UDP and TCP, on the node's address (with
    /// `shoal up`; 0 picks a free one). Pods and the node reach it as the `kube-dns`
    /// Service, port 53 of `--cluster-dns`.
    #[arg(long, default_value_t = 0)]
    pub cluster_dns_port: u16,
    /// Port of the kubelet's HTTPS API (logs); 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// First crash-loop back-off delay in seconds (Kubernetes: 10), doubled up to 300.
    #[arg(long, default_value_t = 10.0)]
    pub restart_backoff: f64,
    /// Lifetime of the node's Lease in seconds; it is renewed every quarter of it.
    #[arg(long, default_value_t = 40)]
    pub node_lease_duration_seconds: u64,
    /// How many pods the node runs at once (`status.capacity.pods`); more are rejected.
    #[arg(long, default_value_t = 1100)]
    pub max_pods: u32,
    /// Directory of sample `.wasm` workloads imported as `shoal.local/<name>:latest` at start
    /// (default: the build's `target/guests/wasm32-wasip2/release`, if present).
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// Kept from pods for Shoal itself, as `cpu=500m,memory=1Gi,ephemeral-storage=1Gi`
    /// (default: memory=1Gi under `shoal up`, where the control plane shares the process;
    /// memory=256Mi for `shoal kubelet`).
    #[arg(long)]
    pub kube_reserved: Option<Reserved>,
    /// Kept from pods for the rest of the machine.
    #[arg(long, default_value = "memory=512Mi")]
    pub system_reserved: Reserved,
    /// Hard eviction thresholds: below them the node reports pressure and evicts pods.
    #[arg(long, default_value = "memory.available<100Mi,nodefs.available<5%")]
    pub eviction_hard: Thresholds,
    /// Seconds a pressure condition stays on after its signal last crossed its threshold.
    #[arg(long, default_value_t = 30.0)]
    pub eviction_pressure_transition_period: f64,
    /// The node's memory capacity (default: the machine's).
    #[arg(long)]
    pub memory_capacity: Option<Quantity>,
    /// Port of the ingress controller's HTTP listener on the node's address (0 picks a free
    /// one). Ports below 1024 need root; without it the node says so and serves no ingress.
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// Port of the ingress controller's HTTPS listener (TLS from the Ingresses' Secrets).
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
    /// Kubeconfig of the ingress controller's identity (`system:shoal:ingress-controller`),
    /// for `shoal kubelet`; without it that node serves no ingress. `shoal up` issues its own.
    #[arg(long)]
    pub ingress_kubeconfig: Option<PathBuf>,
    /// OCI containers beside Wasm pods: `auto` starts a private containerd when this machine
    /// can run one (root; Debian's containerd, runc, containernetworking-plugins and
    /// busybox-static) and says why not otherwise; `on` fails without it; `off` runs Wasm pods
    /// only.
    #[arg(long, value_enum, default_value_t = Containers::Auto)]
    pub containers: Containers,
    /// An existing CRI socket (a containerd of the machine's) to run containers through,
    /// instead of a private containerd.
    #[arg(long)]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// The node's pod subnet with containers: container pods take the lower half (on the
    /// node's CNI bridge), Wasm pods the upper half. 198.18.0.0/15 is set aside for test
    /// networks; give each node of a cluster its own.
    #[arg(long, default_value = "198.18.0.0/24")]
    pub container_pod_cidr: String,
    /// A registry mirror, `REGISTRY=URL` (repeatable): images of REGISTRY (`docker.io` for
    /// `busybox`) are pulled from URL (`http://127.0.0.1:5000`) under their own names, by
    /// both runtimes.
    #[arg(long = "registry-mirror", value_parser = parse_mirror)]
    pub registry_mirrors: Vec<(String, String)>,
}

/// Whether a node runs OCI containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Containers {
    Auto,
    On,
    Off,
}

fn parse_mirror(s: &str) -> Result<(String, String), String> {
    let (registry, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not REGISTRY=URL"))?;
    if registry.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{s:?}: want REGISTRY=URL with an http:// or https:// URL"
        ));
    }
    Ok((registry.to_owned(), url.trim_end_matches('/').to_owned()))
}

/// The node's container runtime: a CRI client, and the private containerd behind it if the
/// node started one.
struct ContainerRuntime {
    cri: Arc<shoal_runtime_cri::CriRuntime>,
    containerd: Option<Arc<shoal_runtime_cri::containerd::Containerd>>,
    /// The part of the container subnet the node's Wasm pods take their addresses from,
    /// when the node owns the container network (its private containerd).
    wasm_pods: Option<String>,
}

/// Starts (or connects to) the node's container runtime; `Err` says why the node runs Wasm
/// pods only.
async fn start_containers(
    args: &KubeletArgs,
    dir: &Path,
    shutdown: &CancellationToken,
) -> Result<ContainerRuntime, String> {
    use shoal_runtime_cri::containerd;
    if args.containers == Containers::Off {
        return Err("containers are off (--containers off)".into());
    }
    if let Some(socket) = &args.container_runtime_endpoint {
        let cri = shoal_runtime_cri::CriRuntime::connect(socket)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(ContainerRuntime {
            cri: Arc::new(cri),
            containerd: None,
            wasm_pods: None,
        });
    }
    containerd::check().map_err(|e| e.to_string())?;
    // Containers take the lower half of the subnet, Wasm pods the upper: every pod of the
    // node has an address other machines route to.
    let subnet: shoal_api::net::Cidr = args
        .container_pod_cidr
        .parse()
        .map_err(|e| format!("--container-pod-cidr: {e}"))?;
    let (for_containers, for_wasm) = subnet.halves().ok_or_else(|| {
        format!(
            "--container-pod-cidr {subnet} is too small to share between containers and Wasm pods (a /29 at least)"
        )
    })?;
    let state = dir.join("containerd");
    // What a node killed before could stop its containers left behind.
    containerd::reap_processes(&state);
    // One bridge per node of this machine, named after its data directory.
    let bridge = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        state.hash(&mut h);
        format!("shoal{:08x}", h.finish() as u32)
    };
    let config = containerd::Config {
        dir: state,
        pod_cidr: args.container_pod_cidr.clone(),
        bridge,
        mirrors: args.registry_mirrors.clone(),
        wasm_pods: Some((for_wasm.to_string(), for_containers.last().to_string())),
    };
    let containerd = tokio::task::spawn_blocking(move || containerd::Containerd::start(config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start containerd: {e}"))?;
    let cri = shoal_runtime_cri::CriRuntime::connect(&containerd.socket())
        .await
        .map_err(|e| e.to_string())?
        .route_loopback_to_node(&containerd.config().bridge);
    // A node starts with no containers, as it starts with no Wasm instances: the kubelet
    // runs its pods afresh.
    cri.stop_all().await;
    tokio::spawn(containerd.clone().supervise(shutdown.clone()));
    Ok(ContainerRuntime {
        cri: Arc::new(cri),
        containerd: Some(containerd),
        wasm_pods: Some(for_wasm.to_string()),
    })
}

/// Keeps every container pod's NetworkPolicy table (`shoal_proxy::firewall`) in step with
/// the policies, pods and nodes the proxy sees, until `shutdown`. `gateway` is the node's
/// address on the bridge, `wasm_pods` the node's Wasm pod range.
async fn police_containers(
    cri: Arc<shoal_runtime_cri::CriRuntime>,
    network: shoal_proxy::network::NodeNetwork,
    nodes: shoal_proxy::routes::NodeAddresses,
    gateway: std::net::IpAddr,
    wasm_pods: String,
    shutdown: CancellationToken,
) {
    use shoal_proxy::firewall;
    let mut sandboxes = std::collections::HashMap::new();
    // The script last loaded into each namespace.
    let mut applied: std::collections::HashMap<String, String> = Default::default();
    let mut seen: Option<(Arc<shoal_proxy::policy::Policies>, Vec<std::net::IpAddr>)> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let Ok(now) = cri.pod_networks(&sandboxes).await else {
            continue;
        };
        let policies = network.snapshot().policies.clone();
        let mut trusted = nodes.read().unwrap_or_else(|p| p.into_inner()).clone();
        trusted.push(gateway);
        let same = seen
            .as_ref()
            .is_some_and(|(p, t)| Arc::ptr_eq(p, &policies) && *t == trusted)
            && now.len() == sandboxes.len()
            && now.keys().all(|k| sandboxes.contains_key(k));
        sandboxes = now;
        if same {
            continue;
        }
        applied.retain(|netns, _| sandboxes.values().any(|(_, n)| n == netns));
        let mut failed = false;
        for (ip, netns) in sandboxes.values() {
            // A pod the cluster does not know yet (its address not reported): next round.
            let Some(pod) = policies.pod(*ip) else {
                continue;
            };
            let script = firewall::ruleset(&policies.filter_for(*ip, pod), &trusted, &wasm_pods);
            if applied.get(netns) == Some(&script) {
                continue;
            }
            match firewall::apply(netns, &script).await {
                Ok(()) => {
                    applied.insert(netns.clone(), script);
                }
                // A sandbox torn down meanwhile (its namespace gone) needs no table.
                Err(_) if !std::path::Path::new(netns).exists() => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(pod = %ip, error = %e, "cannot load a container pod's network policy");
                }
            }
        }
        // After a failure, the next round tries again.
        seen = (!failed).then_some((policies, trusted));
    }
}

/// The cluster add-ons a node runs beside its kubelet, each with its own identity.
#[derive(Default)]
pub struct Addons {
    /// Publishes and serves cluster DNS (the installer's identity, under `shoal up`).
    pub dns: Option<kube::Client>,
    /// Runs the ingress controller.
    pub ingress: Option<kube::Client>,
}

/// A `--memory-capacity` value: a Kubernetes quantity of bytes.
#[derive(Clone, Copy, Debug)]
pub struct Quantity(pub u64);

impl std::str::FromStr for Quantity {
    type Err = shoal_api::quantity::QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        shoal_api::quantity::bytes(s).map(Quantity)
    }
}

/// The machine's host name, lower-cased as a Node name must be.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "shoal-node".into())
}

/// Where the sample workloads are built, relative to this executable (`target/debug/shoal`).
fn default_samples() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    let dir = target.join("guests/wasm32-wasip2/release");
    dir.is_dir().then_some(dir)
}

/// Imports every `*.wasm` in `dir` as `shoal.local/<stem>:latest`.
fn import_samples(images: &ImageStore, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = format!("shoal.local/{stem}:latest");
            let bytes = std::fs::read(&path)?;
            images
                .import(&name, &bytes)
                .with_context(|| format!("cannot import {}", path.display()))?;
            names.push(name);
        }
    }
    Ok(names)
}

/// Starts a kubelet on `data_dir/kubelet` talking to the API server through `client`; its
/// HTTPS API accepts `token` or, without one, whom the API server's reviews allow. Returns once it has registered; it runs until `shutdown`.
pub async fn start_kubelet(
    client: kube::Client,
    token: Option<String>,
    args: &KubeletArgs,
    data_dir: &Path,
    addons: Addons,
    supervisor: shoal_supervisor::Supervisor,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let dir = data_dir.join("kubelet");
    let containers = start_containers(args, &dir, &shutdown).await;
    // With a container network of its own, the node's Wasm pods live on it too (routable
    // from other machines); else on --pod-cidr (loopback).
    let wasm_pods = containers
        .as_ref()
        .ok()
        .and_then(|c| c.wasm_pods.clone())
        .unwrap_or_else(|| args.pod_cidr.clone());
    let runtime = WasmRuntime::new(&dir, &wasm_pods)
        .with_context(|| format!("cannot set up the Wasm runtime in {}", dir.display()))?;
    runtime.set_mirrors(args.registry_mirrors.clone());
    match &containers {
        Ok(c) => println!(
            "Containers run through {} (RuntimeClass runc)",
            shoal_runtime::PodRuntime::version(c.cri.as_ref())
        ),
        Err(why) if args.containers == Containers::On => {
            anyhow::bail!("--containers on, but containers cannot run here: {why}")
        }
        Err(why) => {
            println!("Wasm pods only: {why}");
            tracing::warn!(%why, "this node runs no OCI containers");
        }
    }
    if let Some(ca) = &args.cluster_ca {
        runtime
            .trust_ca(ca)
            .map_err(|e| anyhow::anyhow!("cannot trust the cluster CA: {e}"))?;
    }
    match args.samples.clone().or_else(default_samples) {
        Some(samples) => {
            let names = import_samples(runtime.images(), &samples)?;
            tracing::info!(images = ?names, "imported the sample workloads");
        }
        None => tracing::warn!(
            "sample workloads not found (build them with `cargo xtask guests`); shoal.local/* images are missing"
        ),
    }
    let node_name = args.node_name.clone().unwrap_or_else(host_name);
    let mut config = Config::new(&node_name, &dir);
    // The node's pods, all of them.
    config.pod_cidr = match &containers {
        Ok(c) if c.wasm_pods.is_some() => args.container_pod_cidr.clone(),
        _ => args.pod_cidr.clone(),
    };
    config.container_pod_cidr = containers.is_ok().then(|| args.container_pod_cidr.clone());
    config.address = args.node_ip;
    config.cluster_domain = args.cluster_domain.clone();
    config.cluster_dns = Some(args.cluster_dns.unwrap_or_else(|| {
        let range: shoal_api::net::Cidr = shoal_api::net::DEFAULT_SERVICE_CIDR
            .parse()
            .expect("the default Service range parses");
        range.dns_host().into()
    }));
    config.max_pods = args.max_pods;
    anyhow::ensure!(
        args.restart_backoff.is_finite() && args.restart_backoff > 0.0,
        "--restart-backoff must be a positive number of seconds"
    );
    config.backoff_initial = Duration::from_secs_f64(args.restart_backoff);
    anyhow::ensure!(
        args.node_lease_duration_seconds > 0,
        "--node-lease-duration-seconds must be positive"
    );
    config.lease_duration = Duration::from_secs(args.node_lease_duration_seconds);
    config.backoff_max = Duration::from_secs(300).max(config.backoff_initial);
    if let Some(m) = args.memory_capacity {
        config.memory_bytes = m.0;
    }
    config.kube_reserved = args.kube_reserved.unwrap_or(Reserved {
        memory_bytes: if addons.dns.is_some() {
            1 << 30
        } else {
            256 << 20
        },
        ..Default::default()
    });
    config.system_reserved = args.system_reserved;
    config.eviction_hard = args.eviction_hard.clone();
    config.pressure_transition =
        Duration::try_from_secs_f64(args.eviction_pressure_transition_period)
            .ok()
            .context("--eviction-pressure-transition-period must be a number of seconds")?;
    let budget = config.pod_memory_budget();
    anyhow::ensure!(
        budget > 0,
        "--kube-reserved and --system-reserved keep all of the node's {} bytes of memory from pods",
        config.memory_bytes
    );
    // Pods may use together what is not reserved; growth past it fails in the guest.
    runtime.memory_budget().set_limit(Some(budget));
    tracing::info!(
        budget = %shoal_kubelet::eviction::quantity(budget),
        "pods' memory budget (capacity less kube-reserved and system-reserved)"
    );
    let listener = tokio::net::TcpListener::bind((config.address, args.kubelet_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} for the kubelet API (choose another --kubelet-port)",
                config.address, args.kubelet_port
            )
        })?;
    config.port = listener.local_addr()?.port();
    let tls =
        shoal_kubelet::server::self_signed_tls(&[config.address.to_string(), node_name.clone()])?;
    let proxy_node = shoal_proxy::table::Node {
        name: node_name.clone(),
        ip: args.node_ip,
    };
    // The service proxy runs beside the kubelet, as kube-proxy does on every node; pods
    // route, resolve and are policed through its view of the network.
    let network = shoal_proxy::network::NodeNetwork::default();
    runtime.set_network(Arc::new(network.clone()));
    let dns_ip = config.cluster_dns.expect("set above");
    if let Some(installer) = &addons.dns {
        // The cluster's DNS add-on, as kube-dns runs in kube-system on Kubernetes (published
        // by the installer's identity, not the node's).
        let (udp, tcp) = shoal_proxy::dns::bind(args.node_ip, args.cluster_dns_port)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for cluster DNS on {}:{} (choose another --cluster-dns-port)",
                    args.node_ip, args.cluster_dns_port
                )
            })?;
        let at = tcp.local_addr()?;
        shoal_proxy::dns::publish(installer, dns_ip, at)
            .await
            .context("cannot publish the kube-dns Service")?;
        tokio::spawn(shoal_proxy::dns::serve(
            network.clone(),
            udp,
            tcp,
            shutdown.clone(),
        ));
        println!("Cluster DNS at {dns_ip}:53 (served on {at})");
    }
    // The activator (with the ingress controller's identity) wakes Deployments at zero for
    // requests through the ingress and connections to their Services, and reports both as
    // their activity.
    let activator = addons.ingress.as_ref().map(|client| {
        let node = args.node_name.clone().unwrap_or_else(host_name);
        let activator = shoal_proxy::ingress::activator::Activator::new(client.clone(), &node);
        tokio::spawn(activator.clone().report(shutdown.clone()));
        activator
    });
    if let (Some(ingress), Some(activator)) = (addons.ingress, &activator) {
        start_ingress(
            ingress,
            args,
            runtime.local_http(),
            activator.clone(),
            &supervisor,
            &shutdown,
        )
        .await?;
    }
    let policed = network.clone();
    let (proxy_client, proxy_stop, domain) = (
        client.clone(),
        shutdown.clone(),
        args.cluster_domain.clone(),
    );
    supervisor.spawn(
        "proxy",
        shoal_supervisor::Restart::Always,
        shutdown.clone(),
        move || {
            let proxy = shoal_proxy::Proxy::new(
                proxy_client.clone(),
                proxy_node.clone(),
                &domain,
                network.clone(),
            );
            match &activator {
                Some(a) => proxy.with_activator(a.clone()),
                None => proxy,
            }
            .run(proxy_stop.clone())
        },
    );
    // Routes to the other nodes' container pods (host-gw), on every node: a Wasm pod calls
    // them too.
    let own_subnet = config
        .container_pod_cidr
        .as_deref()
        .and_then(|c| c.parse().ok());
    let node_addresses = shoal_proxy::routes::NodeAddresses::default();
    tokio::spawn(shoal_proxy::routes::run(
        client.clone(),
        node_name.clone(),
        own_subnet,
        node_addresses.clone(),
        shutdown.clone(),
    ));
    if let (Ok(c), Some(subnet)) = (&containers, own_subnet) {
        tokio::spawn(police_containers(
            c.cri.clone(),
            policed,
            node_addresses,
            subnet.first_host().into(),
            wasm_pods.clone(),
            shutdown.clone(),
        ));
    }
    let runtime = Arc::new(runtime);
    // The ingress answers a Deployment waking from zero with a standby instance, if it opted in.
    let weak = Arc::downgrade(&runtime);
    runtime
        .local_http()
        .make_standby_with(Arc::new(move |template| {
            weak.upgrade()?.standby_handler(template)
        }));
    let runtimes = shoal_runtime::multi::Runtimes::new(runtime);
    let runtimes = match &containers {
        Ok(c) => runtimes.with(c.cri.clone()),
        Err(why) => runtimes.without(shoal_runtime::RUNC, why),
    };
    let kubelet = Kubelet::new(config, client, Arc::new(runtimes), supervisor);
    // The API server's own token when it runs in this process; else its TokenReviews and
    // SubjectAccessReviews say who may call.
    let auth = match token {
        Some(t) => shoal_kubelet::server::Auth::Token(t),
        None => shoal_kubelet::server::Auth::Webhook(shoal_kubelet::server::Webhook::new(
            kubelet.client.clone(),
            &node_name,
        )),
    };
    let app = shoal_kubelet::server::router(kubelet.clone(), auth);
    tokio::spawn(shoal_net::serve(listener, app, Some(tls), shutdown.clone()));
    println!("Shoal kubelet running node {node_name}");
    Ok(tokio::spawn(async move {
        if let Err(e) = kubelet.run(shutdown).await {
            tracing::error!(error = %e, "kubelet stopped");
        }
        // Containers do not end with the node's process as Wasm pods do: stop them, then
        // the private containerd.
        if let Ok(c) = containers {
            c.cri.stop_all().await;
            if let Some(containerd) = c.containerd {
                let _ = tokio::task::spawn_blocking(move || containerd.stop()).await;
            }
        }
    }))
}

/// Listens on the node's ingress ports (a port that cannot be bound is reported and left
/// out) and runs the ingress controller's watch, supervised.
async fn start_ingress(
    client: kube::Client,
    args: &KubeletArgs,
    local: shoal_runtime::local_http::LocalHttp,
    activator: Arc<shoal_proxy::ingress::activator::Activator>,
    supervisor: &shoal_supervisor::Supervisor,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    use shoal_proxy::ingress;
    let table = ingress::SharedTable::default();
    let mut serving = Vec::new();
    for (port, flag, tls) in [
        (args.ingress_http_port, "--ingress-http-port", None),
        (
            args.ingress_https_port,
            "--ingress-https-port",
            Some(
                ingress::tls::server_config(table.clone())
                    .map_err(|e| anyhow::anyhow!("cannot set up the ingress's TLS: {e}"))?,
            ),
        ),
    ] {
        // Served on the runtime the node's HTTP pods run on, so a request handed to one in
        // process does not hop between runtimes (bound there too: a socket belongs to the
        // runtime that registered it).
        let home = local.home().unwrap_or_else(tokio::runtime::Handle::current);
        let addr = (args.node_ip, port);
        let bound = home
            .spawn(async move { tokio::net::TcpListener::bind(addr).await })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(address = %args.node_ip, port, error = %e, "cannot listen for ingress traffic (choose another {flag}); not serving it");
                continue;
            }
        };
        let at = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        serving.push(format!("{scheme}://{at}"));
        home.spawn(shoal_net::serve(
            listener,
            ingress::forward::router(
                table.clone(),
                Some(activator.clone()),
                local.clone(),
                scheme,
            ),
            tls,
            shutdown.clone(),
        ));
    }
    if serving.is_empty() {
        return Ok(());
    }
    let stop = shutdown.clone();
    supervisor.spawn(
        "ingress",
        shoal_supervisor::Restart::Always,
        shutdown.clone(),
        move || ingress::watch(client.clone(), table.clone(), stop.clone()),
    );
    println!("Ingress controller at {}", serving.join(" and "));
    Ok(())
}

/// The bearer token of the kubeconfig's current user, if it has one.
pub fn kubeconfig_token(path: &Path) -> anyhow::Result<Option<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let kc: serde_json::Value = serde_saphyr::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
    let ctx_name = kc["current-context"].as_str().unwrap_or("");
    let user = kc["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == ctx_name)
        .and_then(|c| c["context"]["user"].as_str())
        .unwrap_or("");
    Ok(kc["users"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["name"] == user)
        .and_then(|u| u["user"]["token"].as_str())
        .map(str::to_owned))
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The CA (PEM) the kubeconfig at `path` trusts for its current cluster, if it names one.
pub fn ca_of(path: &Path) -> anyhow::Result<Option<String>> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    let current = kc
        .contexts
        .iter()
        .find(|c| Some(&c.name) == kc.current_context.as_ref())
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| current.is_none() || Some(&c.name) == current.as_ref())
        .and_then(|c| c.cluster.as_ref());
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("the kubeconfig's certificate-authority-data is not base64")?;
        return Ok(Some(String::from_utf8_lossy(&pem).into_owned()));
    }
    match &cluster.certificate_authority {
        Some(f) => Ok(Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?,
        )),
        None => Ok(None),
    }
}

/// `shoal image import|ls`.
#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Store a Wasm component in the node's image store as NAME:TAG.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Push a Wasm component to an OCI registry as a wasm artifact (loopback registries over
    /// plain HTTP).
    Push {
        file: PathBuf,
        /// Where to: REGISTRY/REPOSITORY:TAG.
        image: String,
    },
    /// List the node's images.
    Ls {
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

pub async fn run_image(cmd: ImageCommand, default_dir: PathBuf) -> anyhow::Result<()> {
    let open = |d: Option<PathBuf>| {
        let dir = d
            .unwrap_or_else(|| default_dir.clone())
            .join("kubelet/images");
        ImageStore::open(&dir)
            .with_context(|| format!("cannot open the image store {}", dir.display()))
    };
    match cmd {
        ImageCommand::Import {
            file,
            name,
            data_dir,
        } => {
            let store = open(data_dir)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let img = store.import(&name, &bytes)?;
            println!("imported {} as {}", img.digest, img.names.join(", "));
        }
        ImageCommand::Push { file, image } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            shoal_runtime_wasm::images::check_wasm(&bytes)
                .with_context(|| format!("{} is not Wasm", file.display()))?;
            let url = shoal_wasm::oci::push(&image, bytes)
                .await
                .with_context(|| format!("cannot push {image}"))?;
            println!("pushed {image} ({url})");
        }
        ImageCommand::Ls { data_dir } => {
            let store = open(data_dir)?;
            println!("{:<50} {:<20} {:>10}", "IMAGE", "DIGEST", "SIZE");
            for img in store.list()? {
                let short: String = img
                    .digest
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect();
                for n in &img.names {
                    println!("{n:<50} sha256:{short:<13} {:>10}", img.size);
                }
            }
        }
    }
    Ok(())
}
