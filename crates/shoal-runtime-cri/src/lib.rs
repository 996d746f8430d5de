//! The CRI [`PodRuntime`] backend: OCI containers through containerd's CRI plugin (CRI v1 over
//! gRPC on a unix socket), beside the wasmtime backend on the same node.
//!
//! The kubelet's pod logic is the same for both: this backend maps the runtime seam onto CRI
//! calls one to one (sandboxes, containers, images, status, `ExecSync`), keeps the pod's logs
//! in the CRI log files the kubelet already reads (containerd writes them), limits memory and
//! CPU through the CRI's Linux resources (cgroups), and mounts the pod's volumes as binds of the
//! same host directories the Wasm runtime preopens. [`containerd`] starts the node's private
//! containerd; [`oci`] writes the images the node (its sandbox image) and tests need.

pub mod containerd;
pub mod oci;
mod stream;

pub use k8s_cri::v1 as cri;

use async_trait::async_trait;
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use shoal_runtime::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::Channel;

/// How often a container is looked at while waiting for it to exit (containerd 1.6 has no
/// container events stream).
const WAIT_POLL: Duration = Duration::from_millis(50);
/// How long after a kill (exit 137) a container's status waits for containerd to say it was an
/// OOM kill (its OOM event may follow the exit).
const OOM_SETTLE: Duration = Duration::from_millis(500);

/// What is remembered of a sandbox: CRI wants the sandbox's config again with each container.
#[derive(Clone)]
struct SandboxInfo {
    config: cri::PodSandboxConfig,
    uid: String,
    log_directory: PathBuf,
}

/// A [`PodRuntime`] over a CRI v1 socket.
pub struct CriRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    version: RuntimeVersion,
    sandboxes: Mutex<HashMap<String, SandboxInfo>>,
    /// Container id -> (sandbox id, container name).
    containers: Mutex<HashMap<String, (String, String)>>,
    /// The node's CNI bridge, when pods' loopback traffic beyond 127.0.0.1 goes to the node
    /// (see [`CriRuntime::route_loopback_to_node`]).
    loopback_bridge: Option<String>,
}

/// Why the CRI endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the CRI socket {0}: {1}")]
    Connect(PathBuf, tonic::transport::Error),
    #[error("the CRI endpoint {0} does not answer Version: {1}")]
    Version(PathBuf, tonic::Status),
}

/// A gRPC channel to a unix socket.
async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    // The URI is required by the API and ignored by the connector.
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// A CRI error as the runtime seam's.
fn status_error(what: &str, s: tonic::Status) -> RuntimeError {
    RuntimeError::Io(std::io::Error::other(format!(
        "CRI {what}: {}",
        s.message()
    )))
}

fn not_found(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::NotFound || s.message().contains("not found")
}

/// A CRI error about container `id`: not found, or the call's failure.
fn container_error(
    id: &ContainerId,
    what: &'static str,
) -> impl FnOnce(tonic::Status) -> RuntimeError {
    let id = id.clone();
    move |s| {
        if not_found(&s) {
            RuntimeError::ContainerNotFound(id)
        } else {
            status_error(what, s)
        }
    }
}

/// Stopping or removing what is already gone succeeds, as CRI's calls do.
fn unless_gone<T>(what: &str, r: Result<T, tonic::Status>) -> Result<()> {
    match r {
        Err(s) if !not_found(&s) => Err(status_error(what, s)),
        _ => Ok(()),
    }
}

impl CriRuntime {
    /// Connects to the CRI endpoint at `socket` and asks its version.
    pub async fn connect(socket: &Path) -> Result<CriRuntime, ConnectError> {
        let ch = channel(socket)
            .await
            .map_err(|e| ConnectError::Connect(socket.to_owned(), e))?;
        let mut runtime = RuntimeServiceClient::new(ch.clone());
        let v = runtime
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|e| ConnectError::Version(socket.to_owned(), e))?
            .into_inner();
        Ok(CriRuntime {
            runtime,
            images: ImageServiceClient::new(ch),
            version: RuntimeVersion {
                name: v.runtime_name,
                version: v.runtime_version,
            },
            sandboxes: Mutex::default(),
            containers: Mutex::default(),
            loopback_bridge: None,
        })
    }

    /// Lets container pods on `bridge` reach the node's loopback network — Wasm pods,
    /// ClusterIPs and the cluster DNS all have loopback addresses there: in each sandbox's
    /// network namespace only 127.0.0.1 stays local (the rest of 127.0.0.0/8 goes by the
    /// default route to the bridge's gateway, the node), and both ends accept loopback
    /// addresses on the wire (`route_localnet`, as kube-proxy sets it for localhost node ports).
    pub fn route_loopback_to_node(mut self, bridge: &str) -> CriRuntime {
        self.loopback_bridge = Some(bridge.to_owned());
        self
    }

    /// Applies [`Self::route_loopback_to_node`] to sandbox `id`.
    async fn route_loopback(&self, id: &str, bridge: &str) -> Result<()> {
        let fail = |what: String| RuntimeError::Io(std::io::Error::other(what));
        let netns = self.netns_of(id).await?;
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            "1",
        )
        .map_err(|e| fail(format!("route_localnet on {bridge}: {e}")))?;
        let net = format!("--net={netns}");
        for (args, gone_ok) in [
            (
                &[
                    "ip",
                    "route",
                    "del",
                    "local",
                    "127.0.0.0/8",
                    "dev",
                    "lo",
                    "table",
                    "local",
                ][..],
                true,
            ),
            (
                &["sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1"][..],
                false,
            ),
        ] {
            let out = tokio::process::Command::new("nsenter")
                .arg(&net)
                .args(args)
                .output()
                .await?;
            if !out.status.success() && !gone_ok {
                return Err(fail(format!(
                    "sandbox {id}: {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    /// The address and network namespace of each ready sandbox, by sandbox id (`known`
    /// gives those already asked about, which are not asked again).
    pub async fn pod_networks(
        &self,
        known: &HashMap<String, (std::net::IpAddr, String)>,
    ) -> Result<HashMap<String, (std::net::IpAddr, String)>> {
        let list = self
            .rt()
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    state: Some(cri::PodSandboxStateValue {
                        state: cri::PodSandboxState::SandboxReady as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| status_error("ListPodSandbox", s))?
            .into_inner();
        let mut out = HashMap::new();
        for sb in list.items {
            if let Some(net) = known.get(&sb.id) {
                out.insert(sb.id, net.clone());
                continue;
            }
            let Ok(status) = self
                .rt()
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: sb.id.clone(),
                    verbose: true,
                })
                .await
            else {
                continue;
            };
            let status = status.into_inner();
            let ip = status
                .status
                .and_then(|s| s.network)
                .and_then(|n| n.ip.parse().ok());
            if let (Some(ip), Some(netns)) = (ip, netns_path(&status.info)) {
                out.insert(sb.id, (ip, netns));
            }
        }
        Ok(out)
    }

    /// The network namespace of sandbox `id`, from its verbose status.
    async fn netns_of(&self, id: &str) -> Result<String> {
        let status = self
            .rt()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            })
            .await
            .map_err(|s| status_error("PodSandboxStatus", s))?
            .into_inner();
        netns_path(&status.info).ok_or_else(|| {
            RuntimeError::Io(std::io::Error::other(format!(
                "sandbox {id}: no network namespace in its status"
            )))
        })
    }

    fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn sandbox(&self, id: &str) -> Option<SandboxInfo> {
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Stops and removes every pod sandbox of the runtime (the node is shutting down).
    pub async fn stop_all(&self) {
        let Ok(list) = self
            .rt()
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
        else {
            return;
        };
        for sb in list.into_inner().items {
            let id = SandboxId(sb.id);
            let _ = self.stop_pod_sandbox(&id).await;
            let _ = self.remove_pod_sandbox(&id).await;
        }
    }

    async fn status(&self, id: &ContainerId) -> Result<cri::ContainerStatus> {
        let resp = self
            .rt()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.0.clone(),
                verbose: false,
            })
            .await
            .map_err(container_error(id, "ContainerStatus"))?;
        resp.into_inner()
            .status
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))
    }
}

/// Connects to `127.0.0.1:port` inside the network namespace at `netns`, from a thread of its
/// own (a thread that entered a namespace is never reused).
async fn connect_in(netns: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let ns = std::fs::File::open(netns)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let connected = rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(std::io::Error::from)
            .and_then(|()| {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(10),
                )
            });
            let _ = tx.send(connected);
        })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("port-forward thread ended"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// The network namespace of a sandbox, from the verbose `info` of its status (containerd puts
/// the OCI runtime spec there: the `network` namespace's path; or the sandbox's pid).
fn netns_path(info: &HashMap<String, String>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let from_spec = v
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    from_spec.or_else(|| {
        v["pid"]
            .as_u64()
            .filter(|p| *p > 0)
            .map(|pid| format!("/proc/{pid}/ns/net"))
    })
}

fn image_ref(image: cri::Image) -> ImageRef {
    ImageRef {
        names: image.repo_tags,
        digest: image.id,
        size: image.size,
    }
}

fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

/// `NamespaceMode`: one network per pod, a process namespace per container.
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The container's run number, from its log file's name (`<dir>/<name>/<restart>.log`): CRI
/// refuses two containers of one name and attempt in a sandbox.
fn attempt(log_path: &Path) -> u32 {
    log_path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// CPU limit in millicores as a CFS quota per 100 ms period.
fn cpu_quota(millis: u64) -> (i64, i64) {
    const PERIOD: i64 = 100_000;
    (PERIOD, (millis as i64 * PERIOD / 1000).max(1000))
}

#[async_trait]
impl PodRuntime for CriRuntime {
    fn version(&self) -> RuntimeVersion {
        self.version.clone()
    }

    /// Always asks containerd to pull (the kubelet calls this only when the pull policy
    /// wants a pull): an image it has is resolved again at the registry, with the pod's
    /// credentials, and only missing layers are fetched.
    async fn pull_image_as(&self, image: &str, auth: Option<&ImageAuth>) -> Result<ImageRef> {
        self.images
            .clone()
            .pull_image(cri::PullImageRequest {
                image: Some(spec(image)),
                auth: auth.map(|a| cri::AuthConfig {
                    username: a.username.clone(),
                    password: a.password.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map_err(|s| RuntimeError::ImagePull {
                image: image.to_owned(),
                reason: s.message().to_owned(),
            })?;
        self.image_status(image)
            .await?
            .ok_or_else(|| RuntimeError::ImagePull {
                image: image.to_owned(),
                reason: "pulled, but containerd does not show it".into(),
            })
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        match self
            .images
            .clone()
            .remove_image(cri::RemoveImageRequest {
                image: Some(spec(image)),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(status_error("RemoveImage", s)),
        }
    }

    async fn image_status(&self, image: &str) -> Result<Option<ImageRef>> {
        let resp = self
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(spec(image)),
                verbose: false,
            })
            .await
            .map_err(|s| status_error("ImageStatus", s))?;
        Ok(resp.into_inner().image.map(image_ref))
    }

    async fn list_images(&self) -> Result<Vec<ImageRef>> {
        let resp = self
            .images
            .clone()
            .list_images(cri::ListImagesRequest::default())
            .await
            .map_err(|s| status_error("ListImages", s))?;
        Ok(resp
            .into_inner()
            .images
            .into_iter()
            .map(image_ref)
            .collect())
    }

    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox> {
        std::fs::create_dir_all(&config.log_directory)?;
        let hostname: String = config.name.chars().take(63).collect();
        let sb = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: config.name.clone(),
                uid: config.uid.clone(),
                namespace: config.namespace.clone(),
                attempt: 0,
            }),
            hostname,
            log_directory: config.log_directory.display().to_string(),
            dns_config: (!config.dns.nameservers.is_empty()).then(|| cri::DnsConfig {
                servers: config
                    .dns
                    .nameservers
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect(),
                searches: config.dns.search.clone(),
                options: vec![format!("ndots:{}", config.dns.ndots)],
            }),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(sb.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| status_error("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        let status = self
            .rt()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .map_err(|s| status_error("PodSandboxStatus", s))?
            .into_inner();
        let ip = status
            .status
            .and_then(|s| s.network)
            .and_then(|n| n.ip.parse().ok())
            .ok_or_else(|| {
                RuntimeError::Io(std::io::Error::other(format!(
                    "sandbox {id} has no pod address (is the CNI network configured?)"
                )))
            })?;
        if let Some(bridge) = &self.loopback_bridge
            && let Err(e) = self.route_loopback(&id, bridge).await
        {
            let sb = SandboxId(id);
            let _ = self.stop_pod_sandbox(&sb).await;
            let _ = self.remove_pod_sandbox(&sb).await;
            return Err(e);
        }
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                SandboxInfo {
                    config: sb,
                    uid: config.uid.clone(),
                    log_directory: config.log_directory.clone(),
                },
            );
        Ok(Sandbox {
            id: SandboxId(id),
            ip,
        })
    }

    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        unless_gone(
            "StopPodSandbox",
            self.rt()
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.0.clone(),
                })
                .await,
        )
    }

    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        unless_gone(
            "RemovePodSandbox",
            self.rt()
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.0.clone(),
                })
                .await,
        )?;
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id.0);
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (sb, _)| *sb != id.0);
        Ok(())
    }

    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: ContainerConfig,
    ) -> Result<ContainerId> {
        let info = self
            .sandbox(&sandbox.0)
            .ok_or_else(|| RuntimeError::SandboxNotFound(sandbox.clone()))?;
        let create_error = |reason: String| RuntimeError::CreateContainer {
            name: config.name.clone(),
            reason,
        };
        // CRI's log path is relative to the sandbox's log directory.
        let log_path = config
            .log_path
            .strip_prefix(&info.log_directory)
            .map_err(|_| {
                create_error(format!(
                    "log path {} is not under the pod's log directory {}",
                    config.log_path.display(),
                    info.log_directory.display()
                ))
            })?
            .display()
            .to_string();
        let (cpu_period, cpu_quota) = config.cpu_limit_millis.map(cpu_quota).unwrap_or((0, 0));
        let c = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: config.name.clone(),
                attempt: attempt(&config.log_path),
            }),
            image: Some(spec(&config.image)),
            command: config.command.clone(),
            args: config.args.clone(),
            working_dir: config.working_dir.clone().unwrap_or_default(),
            envs: config
                .env
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: config
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.display().to_string(),
                    readonly: m.readonly,
                    ..Default::default()
                })
                .collect(),
            log_path,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: config.memory_limit.unwrap_or(0) as i64,
                    cpu_period,
                    cpu_quota,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let id = self
            .rt()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.0.clone(),
                config: Some(c),
                sandbox_config: Some(info.config),
            })
            .await
            .map_err(|s| create_error(s.message().to_owned()))?
            .into_inner()
            .container_id;
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), (sandbox.0.clone(), config.name));
        Ok(ContainerId(id))
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        self.rt()
            .start_container(cri::StartContainerRequest {
                container_id: id.0.clone(),
            })
            .await
            .map_err(container_error(id, "StartContainer"))?;
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        unless_gone(
            "StopContainer",
            self.rt()
                .stop_container(cri::StopContainerRequest {
                    container_id: id.0.clone(),
                    timeout: timeout.as_secs_f64().ceil() as i64,
                })
                .await,
        )
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        unless_gone(
            "RemoveContainer",
            self.rt()
                .remove_container(cri::RemoveContainerRequest {
                    container_id: id.0.clone(),
                })
                .await,
        )?;
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id.0);
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        let mut s = self.status(id).await?;
        // containerd learns of an OOM kill from an event of its own, which may come just after
        // the exit: a process killed (137) moments ago without a reason yet gets a moment more.
        let killed_just_now = |s: &cri::ContainerStatus| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            s.exit_code == 137
                && matches!(s.reason.as_str(), "" | "Error")
                && s.finished_at > 0
                && now.saturating_sub(s.finished_at) < OOM_SETTLE.as_nanos() as i64
        };
        let settle_until = tokio::time::Instant::now() + OOM_SETTLE;
        while killed_just_now(&s) && tokio::time::Instant::now() < settle_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s = self.status(id).await?;
        }
        let state = match cri::ContainerState::try_from(s.state) {
            Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
            _ => ContainerState::Exited,
        };
        // containerd reports OOMKilled, Completed and Error as Kubernetes does.
        let reason = match (state, s.reason.as_str()) {
            (ContainerState::Exited, "") if s.exit_code == 0 => reason::COMPLETED.to_owned(),
            (ContainerState::Exited, "") => reason::ERROR.to_owned(),
            (_, r) => r.to_owned(),
        };
        // containerd takes the start time after the task has started: a process that exits at
        // once is "started" after it finished. It started no later than that.
        let started_at = match s.finished_at {
            0 => s.started_at,
            finished => s.started_at.min(finished),
        };
        Ok(ContainerStatus {
            id: id.clone(),
            name: s.metadata.map(|m| m.name).unwrap_or_default(),
            state,
            created_at: s.created_at,
            started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            reason,
            message: s.message,
            image_digest: s.image_ref,
        })
    }

    async fn wait_container(&self, id: &ContainerId) -> Result<ContainerStatus> {
        loop {
            let st = self.container_status(id).await?;
            if st.exited() {
                return Ok(st);
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        // CRI's timeout is in whole seconds; the caller's is kept here.
        let mut rt = self.rt();
        let call = rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.0.clone(),
            cmd: cmd.to_vec(),
            timeout: timeout.as_secs_f64().ceil() as i64,
        });
        let resp = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| RuntimeError::ExecTimeout(timeout))?
            .map_err(|s| {
                if not_found(&s) {
                    RuntimeError::ContainerNotFound(id.clone())
                } else if s.code() == tonic::Code::DeadlineExceeded
                    || s.message().contains("timeout")
                {
                    RuntimeError::ExecTimeout(timeout)
                } else {
                    status_error("ExecSync", s)
                }
            })?
            .into_inner();
        Ok(ExecResult {
            exit_code: resp.exit_code,
            stdout: resp.stdout,
            stderr: resp.stderr,
        })
    }

    fn runtime_handlers(&self) -> Vec<String> {
        vec![RUNC.into()]
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String], io: ExecIo) -> Result<i32> {
        let url = self
            .rt()
            .exec(cri::ExecRequest {
                container_id: id.0.clone(),
                cmd: cmd.to_vec(),
                tty: io.tty,
                stdin: io.stdin.is_some(),
                stdout: true,
                stderr: !io.tty,
            })
            .await
            .map_err(container_error(id, "Exec"))?
            .into_inner()
            .url;
        Ok(stream::stream(&url, io).await?.unwrap_or(0))
    }

    async fn attach(&self, id: &ContainerId, io: ExecIo) -> Result<()> {
        let url = self
            .rt()
            .attach(cri::AttachRequest {
                container_id: id.0.clone(),
                tty: io.tty,
                stdin: io.stdin.is_some(),
                stdout: true,
                stderr: !io.tty,
            })
            .await
            .map_err(container_error(id, "Attach"))?
            .into_inner()
            .url;
        stream::stream(&url, io).await.map(|_| ())
    }

    /// Inside the sandbox's network namespace, on its localhost, as containerd's
    /// `PortForward` connects (a port bound to 127.0.0.1 in the pod is reachable).
    async fn port_forward(
        &self,
        id: &ContainerId,
        _ip: std::net::IpAddr,
        port: u16,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let sandbox = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id.0)
            .map(|(sandbox, _)| sandbox.clone())
            .ok_or_else(|| std::io::Error::other(format!("container {id} is not running")))?;
        let netns = self
            .netns_of(&sandbox)
            .await
            .map_err(std::io::Error::other)?;
        connect_in(&netns, port).await
    }

    async fn list_pod_sandbox_stats(&self) -> Result<Vec<SandboxStats>> {
        let stats = self
            .rt()
            .list_container_stats(cri::ListContainerStatsRequest::default())
            .await
            .map_err(|s| status_error("ListContainerStats", s))?
            .into_inner()
            .stats;
        let containers = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut by_sandbox: HashMap<String, SandboxStats> = HashMap::new();
        for s in stats {
            let Some(id) = s.attributes.as_ref().map(|a| a.id.clone()) else {
                continue;
            };
            let Some((sandbox, name)) = containers.get(&id).cloned() else {
                continue;
            };
            let Some(info) = self.sandbox(&sandbox) else {
                continue;
            };
            let memory = s
                .memory
                .and_then(|m| m.working_set_bytes)
                .map_or(0, |v| v.value);
            let cpu = s
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .map_or(0, |v| v.value);
            let entry = by_sandbox
                .entry(sandbox.clone())
                .or_insert_with(|| SandboxStats {
                    id: SandboxId(sandbox),
                    uid: info.uid.clone(),
                    memory_bytes: 0,
                    containers: Vec::new(),
                });
            entry.memory_bytes += memory;
            entry.containers.push(ContainerStats {
                name,
                memory_bytes: memory,
                cpu_nanos: cpu,
            });
        }
        Ok(by_sandbox.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_namespace_comes_from_the_sandboxs_spec_or_pid() {
        let info = |json: &str| HashMap::from([("info".to_owned(), json.to_owned())]);
        let spec = r#"{"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/cni-1"}]}}}"#;
        assert_eq!(netns_path(&info(spec)).as_deref(), Some("/run/netns/cni-1"));
        assert_eq!(
            netns_path(&info(r#"{"pid": 7}"#)).as_deref(),
            Some("/proc/7/ns/net")
        );
        assert_eq!(netns_path(&HashMap::new()), None);
    }

    #[test]
    fn attempts_come_from_the_log_file_name() {
        assert_eq!(attempt(Path::new("/logs/pod/c/0.log")), 0);
        assert_eq!(attempt(Path::new("/logs/pod/c/3.log")), 3);
        assert_eq!(attempt(Path::new("/logs/pod/c/x.log")), 0);
    }

    #[test]
    fn cpu_limits_are_a_quota_per_period() {
        assert_eq!(cpu_quota(500), (100_000, 50_000));
        assert_eq!(cpu_quota(2000), (100_000, 200_000));
        // The kernel's minimum quota is 1 ms.
        assert_eq!(cpu_quota(1), (100_000, 1000));
    }
}
