//! The wasmtime [`PodRuntime`] backend.
//!
//! One `Engine` per node with epoch interruption; components compiled once per digest and cached
//! on disk (`shoal_wasm::cache::ComponentCache`); images from the node-local [`images::ImageStore`]. A
//! container is a component: a `wasi:cli` command runs `run` and exits with its code, a
//! `wasi:http` component is served on the pod IP with a fresh instance per request. Guests run on
//! their own tokio runtime, yield at every epoch tick, and can reach only what the spec grants:
//! argv, env, mounted directories, their memory cap and CPU share, and binding their pod IP.

pub mod engine;
mod guest;
mod http;
pub mod images;
pub mod net;

use engine::{Compiled, Kind};
use guest::{Capture, CpuBudget, Guest, LogWriter, Shares, Stdio};
use images::ImageStore;
use shoal_runtime::local_http::{self, Standby};
use shoal_runtime::logs::{LogFile, Stream};
use shoal_runtime::memory::{Accounts, ContainerMemory, MemoryBudget, Owner};
use shoal_runtime::*;
use shoal_wasm::cache::ComponentCache;
use shoal_wasm::oci as registry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Bytes a guest may have in flight to a log or capture stream before it waits.
const STDIO_BUDGET: usize = 64 * 1024;

/// Exit code reported for a container killed for its memory (as the OOM killer's SIGKILL).
const OOM_EXIT: i32 = 137;
/// Exit code reported for a container stopped before it finished (as SIGTERM).
const STOPPED_EXIT: i32 = 143;
/// Exit code reported for a trap (as SIGABRT).
const TRAP_EXIT: i32 = 134;

#[derive(Clone)]
enum Pre {
    Command(CommandPre<Guest>),
    /// On demand, and from the smallest pool whose slots fit the container.
    Http(ProxyPre<Guest>, Option<http::Ready>),
}

/// A pooling engine of HTTP instances (one slot size), its compiled components and linker.
struct Pooled {
    /// The largest linear memory of its slots.
    slot: u64,
    cache: ComponentCache,
    linker: Linker<Guest>,
}

/// A linker with everything a guest may import.
fn new_linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Guest>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    net::add_to_linker(&mut linker)?;
    Ok(linker)
}

struct Container {
    sandbox: SandboxId,
    ip: IpAddr,
    config: Arc<ContainerConfig>,
    argv0: String,
    pre: Pre,
    shares: Shares,
    status: StatusCell,
    stop: CancellationToken,
    grace: Arc<Mutex<Duration>>,
    task: Option<tokio::task::AbortHandle>,
    attach: Arc<Attach>,
    /// HTTP instances serve several requests in turn ([`shoal_runtime::INSTANCE_REUSE`]).
    reuse: bool,
}

/// What `kubectl attach` connects to: the running container's output, and the writing end of
/// its stdin (with `stdin: true`; taken away at the first detach with `stdinOnce`).
struct Attach {
    output: guest::Tee,
    stdin: tokio::sync::Mutex<Option<tokio::io::DuplexStream>>,
}

/// Bytes of attached input the container has not read yet.
const STDIN_BUFFER: usize = 64 * 1024;

#[derive(Default)]
struct State {
    /// Sandboxes, the uid of their pod and its network.
    /// Each sandbox with its pod's uid, network and whether it reuses HTTP instances.
    sandboxes: HashMap<SandboxId, (Sandbox, String, Arc<net::PodNet>, bool)>,
    containers: HashMap<ContainerId, Container>,
    next: u64,
}

/// See the crate documentation.
pub struct WasmRuntime {
    images: ImageStore,
    cache: ComponentCache,
    linker: Linker<Guest>,
    pool: IpPool,
    budget: Arc<MemoryBudget>,
    accounts: Accounts,
    /// The node's pod network (Services, names, policies); without it pods reach nothing.
    network: std::sync::RwLock<Option<Arc<dyn network::PodNetwork>>>,
    net_counters: Arc<net::Counters>,
    /// Whom pods' outgoing `https` requests trust (the cluster CA, see [`Self::trust_ca`]).
    egress_tls: std::sync::RwLock<Option<Arc<rustls::ClientConfig>>>,
    /// Registry mirrors pulls go through.
    mirrors: std::sync::RwLock<Vec<(String, String)>>,
    guests: Option<tokio::runtime::Runtime>,
    /// The node toolbox, compiled the first time an exec needs it (by digest).
    toolbox: Mutex<Option<(String, CommandPre<Guest>)>>,
    /// HTTP containers' handlers, for the node's ingress to call in process.
    local_http: shoal_runtime::local_http::LocalHttp,
    /// The pooling allocator's engine for HTTP instances, if the node could reserve it.
    pooled: Vec<Pooled>,
    http_counts: Arc<http::Counts>,
    /// Standby handlers made so far, by template ([`Self::standby_handler`]).
    standbys: Mutex<HashMap<Standby, local_http::Handler>>,
    state: Mutex<State>,
}

/// Templates whose standby handlers are kept; past it the oldest are made again when needed.
const MAX_STANDBYS: usize = 64;

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.guests.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Images(#[from] images::ImageError),
    #[error("pod network")]
    Network(#[from] IpPoolError),
    #[error("wasmtime: {0:#}")]
    Wasmtime(wasmtime::Error),
    #[error("i/o")]
    Io(#[from] std::io::Error),
}

/// The registry name of images that only exist in node image stores.
pub const LOCAL_REGISTRY: &str = "shoal.local/";
/// The node toolbox (`wasm-workloads/toolbox`, imported with the samples): see
/// [`shoal_runtime::exec_target`].
pub const TOOLBOX_IMAGE: &str = "shoal.local/toolbox:latest";

impl WasmRuntime {
    /// A runtime keeping images and compiled components under `data_dir`, giving pods
    /// addresses from `pod_cidr`.
    pub fn new(data_dir: &Path, pod_cidr: &str) -> Result<Self, SetupError> {
        Self::with_pool(data_dir, pod_cidr, engine::POOL_INSTANCES)
    }

    /// [`Self::new`] with room for `instances` pooled HTTP instances at once.
    pub fn with_pool(data_dir: &Path, pod_cidr: &str, instances: u32) -> Result<Self, SetupError> {
        let engine = engine::engine().map_err(SetupError::Wasmtime)?;
        engine::start_ticker(&engine);
        let linker = new_linker(&engine).map_err(SetupError::Wasmtime)?;
        let compiled = data_dir.join("compiled");
        // One pool per slot size; without the address space for one, its containers' instances
        // are made on demand.
        let mut pooled = Vec::new();
        for (slot, count) in engine::pool_classes(instances) {
            match engine::pooled_engine(slot, count) {
                Ok(e) => {
                    engine::start_ticker(&e);
                    pooled.push(Pooled {
                        slot,
                        cache: ComponentCache::new(&e, Some(&compiled), usize::MAX)?,
                        linker: new_linker(&e).map_err(SetupError::Wasmtime)?,
                    });
                }
                Err(e) => {
                    tracing::warn!(slot_mib = slot >> 20, error = %format!("{e:#}"), "no pooling allocator for HTTP instances of this size; instantiating them on demand");
                }
            }
        }
        let guests = tokio::runtime::Builder::new_multi_thread()
            .thread_name("shoal-guest")
            .enable_all()
            .build()?;
        let local_http = shoal_runtime::local_http::LocalHttp::default();
        local_http.set_home(guests.handle().clone());
        Ok(WasmRuntime {
            images: ImageStore::open(&data_dir.join("images"))?,
            cache: ComponentCache::new(&engine, Some(&compiled), usize::MAX)?,
            pooled,
            http_counts: Arc::default(),
            linker,
            pool: IpPool::new(pod_cidr)?,
            budget: MemoryBudget::new(None),
            accounts: Accounts::default(),
            network: std::sync::RwLock::new(None),
            net_counters: Arc::default(),
            egress_tls: std::sync::RwLock::new(None),
            mirrors: Default::default(),
            guests: Some(guests),
            toolbox: Mutex::new(None),
            local_http,
            standbys: Mutex::default(),
            state: Mutex::new(State::default()),
        })
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// HTTP instances made so far: `(from the pool, on demand)`.
    pub fn http_instances(&self) -> (u64, u64) {
        self.http_counts.get()
    }

    /// Pool slots in use now (instances alive, including those finishing after their
    /// response was sent).
    pub fn pooled_in_use(&self) -> u64 {
        self.pooled
            .iter()
            .filter_map(|p| p.cache.engine().pooling_allocator_metrics())
            .map(|m| m.component_instances())
            .sum()
    }

    /// A handler running `template`'s HTTP component with no pod (see
    /// [`shoal_runtime::local_http`]): a fresh instance per request, from the pool when the
    /// limit fits a slot, charged to the node's memory budget like a pod, with no volumes, no
    /// network and its output discarded. `None` when the image is not on the node (nothing is
    /// pulled) or is no HTTP component.
    pub fn standby_handler(&self, template: &Standby) -> Option<local_http::Handler> {
        if let Some(h) = self
            .standbys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(template)
        {
            return Some(h.clone());
        }
        let image = self.resolve(&template.image).ok()??;
        let blob = self.images.blob_path(&image.digest);
        let Compiled { component, kind } = tokio::task::block_in_place(|| {
            let component = self.cache.get(&image.digest, || std::fs::read(&blob))?;
            engine::compiled(self.cache.engine(), component)
        })
        .ok()?;
        if kind != Kind::Http {
            return None;
        }
        let pre = ProxyPre::new(self.linker.instantiate_pre(&component).ok()?).ok()?;
        let pooled = self.pooled_pre(&image.digest, &blob, template.memory_limit);
        let ip = IpAddr::from([0, 0, 0, 0]);
        let shares = Shares {
            memory: ContainerMemory::new(template.memory_limit, self.budget.clone()),
            cpu: None,
            // No node network: connects and outgoing requests are refused.
            net: Arc::new(net::PodNet {
                ip,
                dns: Default::default(),
                network: None,
                counters: self.net_counters.clone(),
                routed: Default::default(),
                tls: None,
            }),
        };
        // No mounts, no ports, no log: what a standby has of a container.
        let cfg = ContainerConfig {
            name: "standby".into(),
            image: template.image.clone(),
            command: template.command.clone(),
            args: template.args.clone(),
            env: template.env.clone(),
            working_dir: template.working_dir.clone(),
            memory_limit: template.memory_limit,
            ..Default::default()
        };
        let argv0 = program_name(&template.image).to_owned();
        let factory: http::StoreFactory = Arc::new(move |engine: &wasmtime::Engine| {
            let discard = || AsyncStdoutStream::new(STDIO_BUDGET, tokio::io::sink());
            let stdio = Stdio {
                stdin: None,
                stdout: discard(),
                stderr: discard(),
            };
            guest::new_store(engine, &cfg, &argv0, &cfg.argv(), ip, stdio, shares.clone())
        });
        let server = http::Server::new(
            http::Ready {
                engine: self.cache.engine().clone(),
                pre,
            },
            pooled,
            factory,
            self.http_counts.clone(),
            false,
        );
        let handler = http::local_handler(server, self.guests_handle());
        let mut standbys = self.standbys.lock().unwrap_or_else(|p| p.into_inner());
        if standbys.len() >= MAX_STANDBYS {
            standbys.clear();
        }
        standbys.insert(template.clone(), handler.clone());
        Some(handler)
    }

    /// The HTTP containers' in-process handlers, by pod address and port.
    pub fn local_http(&self) -> shoal_runtime::local_http::LocalHttp {
        self.local_http.clone()
    }

    /// Connects pods started from now on to the node's pod network.
    /// Where `image` is pulled from: its mirror's copy, if its registry has a mirror.
    fn source(&self, image: &str) -> Result<String, registry::RegistryError> {
        let mirrors = self.mirrors.read().unwrap_or_else(|p| p.into_inner());
        registry::mirrored(image, &mirrors)
    }

    /// Pulls from a registry of `mirrors` go to its mirror (`(registry, url)`); images keep
    /// their names; a mirror with an `http://` URL is spoken to over plain HTTP.
    pub fn set_mirrors(&self, mirrors: Vec<(String, String)>) {
        registry::use_mirrors(&mirrors);
        *self.mirrors.write().unwrap_or_else(|p| p.into_inner()) = mirrors;
    }

    pub fn set_network(&self, network: Arc<dyn network::PodNetwork>) {
        *self.network.write().unwrap_or_else(|p| p.into_inner()) = Some(network);
    }

    /// Lets pods started from now on make `https` requests to servers whose certificates
    /// chain to one of the PEM certificates in `pem` (the cluster CA, which every pod also
    /// finds in its `kube-root-ca.crt`), as a container trusting that file would.
    pub fn trust_ca(&self, pem: &str) -> std::result::Result<(), String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the cluster CA: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the cluster CA: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the cluster CA holds no certificate".into());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        *self.egress_tls.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(config));
        Ok(())
    }

    /// Connections refused (by reason) and routed to an endpoint in the runtime.
    pub fn net_counters(&self) -> &Arc<net::Counters> {
        &self.net_counters
    }

    /// The node's memory for pods: every instance's memories, tables and host-side state are
    /// charged to it (the kubelet sets its limit from the node's reservations).
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("wasm runtime lock is never poisoned")
    }

    /// The component ready to instantiate from the pool of the smallest slots that fit an
    /// HTTP container's memory limit (one without a limit may grow past any slot, and one
    /// larger than every slot is served on demand).
    fn pooled_pre(
        &self,
        digest: &str,
        blob: &Path,
        memory_limit: Option<u64>,
    ) -> Option<http::Ready> {
        let limit = memory_limit?;
        let pooled = self.pooled.iter().find(|p| p.slot >= limit)?;
        let ready = tokio::task::block_in_place(|| {
            let component = pooled
                .cache
                .get(digest, || std::fs::read(blob))
                .map_err(|e| e.to_string())?;
            let pre = pooled
                .linker
                .instantiate_pre(&component)
                .map_err(|e| format!("{e:#}"))?;
            ProxyPre::new(pre).map_err(|e| format!("{e:#}"))
        });
        match ready {
            Ok(pre) => Some(http::Ready {
                engine: pooled.cache.engine().clone(),
                pre,
            }),
            Err(e) => {
                // Too many memories or tables for a slot, say: served on demand.
                tracing::debug!(digest, error = %e, "component not pooled");
                None
            }
        }
    }

    fn guests_handle(&self) -> tokio::runtime::Handle {
        self.guests
            .as_ref()
            .expect("the guest runtime lives as long as the WasmRuntime")
            .handle()
            .clone()
    }

    fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.guests
            .as_ref()
            .expect("the guest runtime lives as long as the WasmRuntime")
            .spawn(fut)
    }

    fn resolve(&self, image: &str) -> Result<Option<ImageRef>> {
        self.images
            .resolve(image)
            .map_err(|e| RuntimeError::InvalidImage {
                image: image.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The node toolbox ([`TOOLBOX_IMAGE`]) ready to instantiate, if the node has it.
    fn toolbox(&self) -> Result<Option<CommandPre<Guest>>> {
        let Some(image) = self.resolve(TOOLBOX_IMAGE)? else {
            return Ok(None);
        };
        let mut cached = self.toolbox.lock().expect("toolbox lock is never poisoned");
        if let Some((digest, pre)) = &*cached
            && *digest == image.digest
        {
            return Ok(Some(pre.clone()));
        }
        let invalid = |reason: String| RuntimeError::InvalidImage {
            image: TOOLBOX_IMAGE.into(),
            reason,
        };
        let blob = self.images.blob_path(&image.digest);
        let cache = &self.cache;
        let Compiled { component, kind } = tokio::task::block_in_place(|| {
            let component = cache.get(&image.digest, || std::fs::read(&blob))?;
            engine::compiled(cache.engine(), component)
        })
        .map_err(|e| invalid(e.to_string()))?;
        if kind != Kind::Command {
            return Err(invalid("the toolbox must be a wasi:cli command".into()));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(CommandPre::new)
            .map_err(|e| invalid(format!("{e:#}")))?;
        *cached = Some((image.digest, pre.clone()));
        Ok(Some(pre))
    }

    fn watcher(&self, id: &ContainerId) -> Result<watch::Receiver<ContainerStatus>> {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.status.subscribe())
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))
    }
}

fn log_streams(log: &LogFile, tee: &guest::Tee) -> Stdio {
    let w = |stream| {
        AsyncStdoutStream::new(
            STDIO_BUDGET,
            LogWriter {
                log: log.clone(),
                stream,
                tee: Some(tee.clone()),
            },
        )
    };
    Stdio {
        stdin: None,
        stdout: w(Stream::Stdout),
        stderr: w(Stream::Stderr),
    }
}

/// Aborts a guest's task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a command component to completion: (exit code, reason, message).
async fn run_command(
    pre: CommandPre<Guest>,
    mut store: wasmtime::Store<Guest>,
) -> (i32, &'static str, String) {
    let result = async {
        metrics::counter!("shoal_wasm_instantiations_total", "kind" => "command").increment(1);
        let cmd = pre.instantiate_async(&mut store).await?;
        cmd.wasi_cli_run().call_run(&mut store).await
    }
    .await;
    match result {
        Ok(Ok(())) => (0, reason::COMPLETED, String::new()),
        Ok(Err(())) => (1, reason::ERROR, String::new()),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                let code = exit.0;
                let why = if code == 0 {
                    reason::COMPLETED
                } else {
                    reason::ERROR
                };
                (code, why, String::new())
            } else if let Some(why) = store.data().memory.exhausted {
                (OOM_EXIT, reason::OOM_KILLED, why.message().into())
            } else {
                let msg = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(trap) => format!("wasm trap: {trap}"),
                    None => format!("{e:#}"),
                };
                (TRAP_EXIT, reason::ERROR, msg)
            }
        }
    }
}

#[async_trait::async_trait]
impl PodRuntime for WasmRuntime {
    fn version(&self) -> RuntimeVersion {
        RuntimeVersion {
            name: "wasmtime".into(),
            version: "48.0.8".into(),
        }
    }

    async fn pull_image_as(
        &self,
        image: &str,
        auth: Option<&shoal_runtime::ImageAuth>,
    ) -> Result<ImageRef> {
        let pull_error = |reason: String| RuntimeError::ImagePull {
            image: image.to_owned(),
            reason,
        };
        // `shoal.local/...` names exist only in node image stores (`shoal image import`).
        if image.starts_with(LOCAL_REGISTRY) {
            return self.resolve(image)?.ok_or_else(|| {
                pull_error(format!(
                    "{LOCAL_REGISTRY} images come from the node's image store, and this node has none by that name (import it with `shoal image import`)"
                ))
            });
        }
        let name = images::normalize(image).map_err(|e| RuntimeError::InvalidImage {
            image: image.to_owned(),
            reason: e.to_string(),
        })?;
        let source = self.source(&name).map_err(|e| pull_error(e.to_string()))?;
        let credentials = auth.map(|a| (a.username.clone(), a.password.clone()));
        let bytes =
            registry::pull_limited_as(&source, registry::MAX_IMAGE_BYTES, credentials.as_ref())
                .await
                .map_err(|e| match e {
                    registry::RegistryError::ContainerImage(_) => RuntimeError::ContainerImage {
                        image: image.to_owned(),
                        also: String::new(),
                    },
                    e => pull_error(e.to_string()),
                })?;
        self.images
            .import(&name, &bytes)
            .map_err(|e| RuntimeError::InvalidImage {
                image: image.to_owned(),
                reason: e.to_string(),
            })
    }

    async fn image_status(&self, image: &str) -> Result<Option<ImageRef>> {
        self.resolve(image)
    }

    async fn list_images(&self) -> Result<Vec<ImageRef>> {
        self.images.list().map_err(|e| RuntimeError::InvalidImage {
            image: String::new(),
            reason: e.to_string(),
        })
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        self.images
            .remove(image)
            .map(|_| ())
            .map_err(|e| RuntimeError::InvalidImage {
                image: image.to_owned(),
                reason: e.to_string(),
            })
    }

    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox> {
        std::fs::create_dir_all(&config.log_directory)?;
        let ip = self.pool.allocate()?;
        let mut s = self.lock();
        s.next += 1;
        let id = SandboxId(format!("{}-{}", config.uid, s.next));
        let sb = Sandbox { id: id.clone(), ip };
        let network = self
            .network
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(n) = &network {
            n.attach(ip, &config.namespace, &config.labels);
        }
        let pod_net = Arc::new(net::PodNet {
            ip,
            dns: config.dns.clone(),
            network,
            counters: self.net_counters.clone(),
            routed: Default::default(),
            tls: self
                .egress_tls
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        });
        let reuse = config
            .annotations
            .get(shoal_runtime::INSTANCE_REUSE)
            .is_some_and(|v| v == "true");
        s.sandboxes
            .insert(id, (sb.clone(), config.uid.clone(), pod_net, reuse));
        Ok(sb)
    }

    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        let ids: Vec<ContainerId> = self
            .lock()
            .containers
            .iter()
            .filter(|(_, c)| c.sandbox == *id)
            .map(|(k, _)| k.clone())
            .collect();
        for c in ids {
            self.stop_container(&c, Duration::ZERO).await?;
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.stop_pod_sandbox(id).await?;
        let mut s = self.lock();
        s.containers.retain(|_, c| c.sandbox != *id);
        self.accounts.close_sandbox(id);
        if let Some((sb, _, pod_net, _)) = s.sandboxes.remove(id) {
            if let Some(n) = &pod_net.network {
                n.detach(sb.ip);
            }
            self.pool.release(sb.ip);
        }
        Ok(())
    }

    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: ContainerConfig,
    ) -> Result<ContainerId> {
        let (ip, uid, pod_net, reuse) = self
            .lock()
            .sandboxes
            .get(sandbox)
            .map(|(s, uid, net, reuse)| (s.ip, uid.clone(), net.clone(), *reuse))
            .ok_or_else(|| RuntimeError::SandboxNotFound(sandbox.clone()))?;
        let image = self
            .resolve(&config.image)?
            .ok_or_else(|| RuntimeError::ImageNotPresent {
                image: config.image.clone(),
            })?;
        let create_err = |reason: String| RuntimeError::CreateContainer {
            name: config.name.clone(),
            reason,
        };
        let blob = self.images.blob_path(&image.digest);
        let cache = &self.cache;
        let digest = image.digest.clone();
        // Compiling takes tens of milliseconds of CPU: keep it off the async threads.
        let Compiled { component, kind } = tokio::task::block_in_place(|| {
            let component = cache.get(&digest, || std::fs::read(&blob))?;
            engine::compiled(cache.engine(), component)
        })
        .map_err(|e| create_err(e.to_string()))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| create_err(format!("{e:#}")))?;
        let pre = match kind {
            Kind::Command => {
                Pre::Command(CommandPre::new(pre).map_err(|e| create_err(format!("{e:#}")))?)
            }
            Kind::Http => Pre::Http(
                ProxyPre::new(pre).map_err(|e| create_err(format!("{e:#}")))?,
                self.pooled_pre(&digest, &blob, config.memory_limit),
            ),
        };
        for m in &config.mounts {
            if !m.host_path.is_dir() {
                return Err(create_err(format!(
                    "mount {}: {} is not a directory",
                    m.container_path,
                    m.host_path.display()
                )));
            }
        }
        let argv0 = program_name(&config.image).to_owned();
        let memory = ContainerMemory::new(config.memory_limit, self.budget.clone());
        self.accounts.open(
            Owner {
                sandbox: sandbox.clone(),
                uid,
                container: config.name.clone(),
            },
            memory.clone(),
        );
        let mut s = self.lock();
        s.next += 1;
        let id = ContainerId(format!("{}-{}-{}", sandbox, config.name, s.next));
        let status = StatusCell::created(&id, &config.name, image.digest);
        s.containers.insert(
            id.clone(),
            Container {
                sandbox: sandbox.clone(),
                ip,
                shares: Shares {
                    memory,
                    cpu: config.cpu_limit_millis.map(CpuBudget::new),
                    net: pod_net,
                },
                config: Arc::new(config),
                argv0,
                pre,
                status,
                stop: CancellationToken::new(),
                grace: Arc::new(Mutex::new(Duration::ZERO)),
                task: None,
                attach: Arc::new(Attach {
                    output: tokio::sync::broadcast::channel(256).0,
                    stdin: tokio::sync::Mutex::new(None),
                }),
                reuse,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let (cfg, argv0, ip, pre, shares, status, stop, grace, attach, reuse) = {
            let s = self.lock();
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))?;
            c.status.ensure_created()?;
            (
                c.config.clone(),
                c.argv0.clone(),
                c.ip,
                c.pre.clone(),
                c.shares.clone(),
                c.status.clone(),
                c.stop.clone(),
                c.grace.clone(),
                c.attach.clone(),
                c.reuse,
            )
        };
        let log = LogFile::create(&cfg.log_path)?;
        let tee = attach.output.clone();
        let engine = self.cache.engine().clone();
        let task = match pre {
            Pre::Command(pre) => {
                let mut stdio = log_streams(&log, &tee);
                if cfg.stdin {
                    let (theirs, ours) = tokio::io::duplex(STDIN_BUFFER);
                    stdio.stdin = Some(AsyncStdinStream::new(theirs));
                    *attach.stdin.lock().await = Some(ours);
                }
                let store = guest::new_store(&engine, &cfg, &argv0, &cfg.argv(), ip, stdio, shares)
                    .map_err(|e| RuntimeError::CreateContainer {
                        name: cfg.name.clone(),
                        reason: e.to_string(),
                    })?;
                let status = status.clone();
                // Running before the guest can finish, so its exit is never overwritten.
                status.mark_running();
                self.spawn(async move {
                    let (code, why, msg) = run_command(pre, store).await;
                    let _ = log.flush();
                    status.finish(code, why, msg);
                })
            }
            Pre::Http(pre, pooled_pre) => {
                let port = cfg.ports.first().copied().unwrap_or(8080);
                let addr = SocketAddr::new(ip, port);
                let listener = match self.spawn(tokio::net::TcpListener::bind(addr)).await {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => {
                        return Err(RuntimeError::CreateContainer {
                            name: cfg.name.clone(),
                            reason: format!("cannot listen on {addr}: {e}"),
                        });
                    }
                    Err(e) => return Err(RuntimeError::Io(std::io::Error::other(e))),
                };
                let factory: http::StoreFactory = {
                    let log = log.clone();
                    let cfg = cfg.clone();
                    let argv = cfg.argv();
                    Arc::new(move |engine: &wasmtime::Engine| {
                        guest::new_store(
                            engine,
                            &cfg,
                            &argv0,
                            &argv,
                            ip,
                            log_streams(&log, &tee),
                            shares.clone(),
                        )
                    })
                };
                let pooled = pooled_pre;
                let server = http::Server::new(
                    http::Ready { engine, pre },
                    pooled,
                    factory,
                    self.http_counts.clone(),
                    reuse,
                );
                let registration = self.local_http.register(
                    addr,
                    http::local_handler(server.clone(), self.guests_handle()),
                );
                let status = status.clone();
                // Running before the guest can finish, so its exit is never overwritten.
                status.mark_running();
                self.spawn(async move {
                    let grace_now = move || *grace.lock().expect("grace lock is never poisoned");
                    http::serve(listener, server, Some(registration), stop, grace_now).await;
                    let _ = log.flush();
                    status.finish(0, reason::COMPLETED, String::new());
                })
            }
        };
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.task = Some(task.abort_handle());
        }
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        let (task, stop, grace, status, http) = {
            let s = self.lock();
            let Some(c) = s.containers.get(id) else {
                return Ok(());
            };
            (
                c.task.clone(),
                c.stop.clone(),
                c.grace.clone(),
                c.status.clone(),
                matches!(c.pre, Pre::Http(..)),
            )
        };
        if status.get().exited() {
            return Ok(());
        }
        if http && task.is_some() {
            // A server stops accepting and drains its requests for up to `timeout`.
            *grace.lock().expect("grace lock is never poisoned") = timeout;
            stop.cancel();
            let mut rx = status.subscribe();
            let drained = tokio::time::timeout(
                timeout + Duration::from_millis(100),
                rx.wait_for(ContainerStatus::exited),
            )
            .await;
            if drained.is_ok() {
                return Ok(());
            }
        }
        // A command has no signal to handle: it is stopped at its next epoch tick.
        if let Some(t) = task {
            t.abort();
        }
        status.finish(STOPPED_EXIT, reason::ERROR, "stopped by the kubelet".into());
        Ok(())
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        if let Some(c) = self.lock().containers.remove(id) {
            self.accounts.close(&c.shares.memory);
            if let Some(t) = c.task {
                t.abort();
            }
        }
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        Ok(self.watcher(id)?.borrow().clone())
    }

    async fn wait_container(&self, id: &ContainerId) -> Result<ContainerStatus> {
        wait_exited(self.watcher(id)?, id).await
    }

    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        let (out, err) = (Capture::default(), Capture::default());
        let io = ExecIo {
            stdin: None,
            stdout: Box::new(out.clone()),
            stderr: Some(Box::new(err.clone())),
            tty: false,
        };
        let exit_code = tokio::time::timeout(timeout, self.exec(id, cmd, io))
            .await
            .map_err(|_| RuntimeError::ExecTimeout(timeout))??;
        let take = |c: Capture| std::mem::take(&mut *c.0.lock().expect("capture lock"));
        Ok(ExecResult {
            exit_code,
            stdout: take(out),
            stderr: take(err),
        })
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String], io: ExecIo) -> Result<i32> {
        let (cfg, argv0, ip, pre, shares, stop) = {
            let s = self.lock();
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))?;
            (
                c.config.clone(),
                c.argv0.clone(),
                c.ip,
                c.pre.clone(),
                c.shares.clone(),
                c.stop.clone(),
            )
        };
        let toolbox = self.toolbox()?;
        let ExecIo {
            stdin,
            stdout,
            stderr,
            tty: _,
        } = io;
        let mut stderr: Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin> =
            stderr.unwrap_or_else(|| Box::new(tokio::io::sink()));
        let (pre, argv0, args) = match exec_target(&cfg.image, cmd, toolbox.is_some()) {
            ExecTarget::Toolbox => (
                toolbox.expect("a toolbox target only when the node has one"),
                cmd[0].clone(),
                &cmd[1..],
            ),
            ExecTarget::Image(args) => match pre {
                Pre::Command(pre) => (pre, argv0, args),
                Pre::Http(..) => {
                    use tokio::io::AsyncWriteExt;
                    let tools = TOOLBOX_TOOLS.join(", ");
                    let why = if toolbox.is_some() {
                        format!(
                            "exec: the container's component is a wasi:http server, which cannot run a command; the node toolbox runs {tools}\n"
                        )
                    } else {
                        "exec: the container's component is a wasi:http server, which cannot run a command (and this node has no toolbox)\n".to_owned()
                    };
                    stderr.write_all(why.as_bytes()).await?;
                    return Ok(126);
                }
            },
        };
        let stdio = Stdio {
            stdin: stdin.map(AsyncStdinStream::new),
            stdout: AsyncStdoutStream::new(STDIO_BUDGET, stdout),
            stderr: AsyncStdoutStream::new(STDIO_BUDGET, stderr),
        };
        let store = guest::new_store(self.cache.engine(), &cfg, &argv0, args, ip, stdio, shares)?;
        let task = self.spawn(run_command(pre, store));
        // An exec ends with its container, and when its caller gives up on it.
        let _abort = AbortOnDrop(task.abort_handle());
        let (code, _, msg) = tokio::select! {
            r = task => r.map_err(|e| RuntimeError::Io(std::io::Error::other(e)))?,
            _ = stop.cancelled() => (STOPPED_EXIT, reason::ERROR, String::new()),
        };
        if !msg.is_empty() {
            tracing::debug!(container = %id, message = %msg, "exec ended abnormally");
        }
        Ok(code)
    }

    async fn attach(&self, id: &ContainerId, io: ExecIo) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (attach, status, stdin_once) = {
            let s = self.lock();
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))?;
            (c.attach.clone(), c.status.clone(), c.config.stdin_once)
        };
        let ExecIo {
            stdin,
            mut stdout,
            mut stderr,
            tty: _,
        } = io;
        let mut output = attach.output.subscribe();
        let mut exited = status.subscribe();
        let input = async {
            let Some(mut stdin) = stdin else {
                return std::future::pending::<()>().await;
            };
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stdin.read(&mut buf).await.unwrap_or(0);
                let mut pipe = attach.stdin.lock().await;
                let Some(w) = pipe.as_mut() else { break };
                if n == 0 {
                    if stdin_once {
                        // The first client's end of input is the container's.
                        *pipe = None;
                    }
                    break;
                }
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            std::future::pending::<()>().await
        };
        let forward = async {
            let mut done = false;
            loop {
                // After the exit, what was written before it is passed on, then the attach ends.
                if done && output.is_empty() {
                    break;
                }
                let item = tokio::select! {
                    m = output.recv() => m,
                    _ = exited.wait_for(ContainerStatus::exited), if !done => {
                        done = true;
                        continue;
                    }
                };
                let (stream, bytes) = match item {
                    Ok(x) => x,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let w: &mut (dyn tokio::io::AsyncWrite + Send + Sync + Unpin) = match stream {
                    Stream::Stdout => &mut *stdout,
                    Stream::Stderr => match stderr.as_mut() {
                        Some(e) => &mut **e,
                        None => continue,
                    },
                };
                if w.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = forward => {}
            () = input => {}
        }
        Ok(())
    }

    async fn list_pod_sandbox_stats(&self) -> Result<Vec<SandboxStats>> {
        Ok(self.accounts.stats())
    }

    fn node_memory(&self) -> Option<NodeMemory> {
        Some(self.budget.stats())
    }

    fn runtime_handlers(&self) -> Vec<String> {
        vec![shoal_runtime::WASMTIME.into()]
    }

    async fn runs_image(&self, image: &str, auth: Option<&shoal_runtime::ImageAuth>) -> bool {
        if image.starts_with(LOCAL_REGISTRY) || matches!(self.resolve(image), Ok(Some(_))) {
            return true;
        }
        let Ok(name) = images::normalize(image) else {
            return true;
        };
        let source = self.source(&name).unwrap_or(name);
        let credentials = auth.map(|a| (a.username.clone(), a.password.clone()));
        !matches!(
            registry::inspect(&source, credentials.as_ref()).await,
            Err(registry::RegistryError::ContainerImage(_))
        )
    }
}
