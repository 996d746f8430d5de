//! The CRI-shaped seam between the kubelet and whatever runs containers.
//!
//! [`PodRuntime`] mirrors CRI v1's RuntimeService and ImageService closely enough that containerd's
//! CRI plugin fits behind it unchanged: pod sandboxes, containers, images, `exec_sync`. What a pod
//! *means* (restart policy, back-off, probes, status) lives in the kubelet, not here: a backend only
//! runs what it is told and reports what happened.
//!
//! Backends: [`fake::FakeRuntime`] (here, for kubelet tests) and the wasmtime backend in
//! `shoal-runtime-wasm`. [`conformance`] is the one suite every backend passes.

pub mod conformance;
pub mod fake;
mod ip;
pub mod local_http;
pub mod logs;
pub mod memory;
pub mod multi;
pub mod network;
mod status;
mod types;

pub use ip::{IpPool, IpPoolError};
pub use status::{StatusCell, wait_exited};
pub use types::*;

use async_trait::async_trait;
use std::time::Duration;

/// Errors a runtime reports. Variants carry what the kubelet needs to pick a container reason
/// (`ErrImagePull`, `ErrImageNeverPull`, `CreateContainerError`...).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image:?} is not present on this node")]
    ImageNotPresent { image: String },
    #[error("cannot pull image {image:?}: {reason}")]
    ImagePull { image: String, reason: String },
    #[error("image {image:?} is not a runnable component: {reason}")]
    InvalidImage { image: String, reason: String },
    /// An OCI container image, for a runtime of Wasm components.
    #[error("image {image:?} is an OCI container image, not a Wasm component{also}")]
    ContainerImage { image: String, also: String },
    /// A pod asks for a runtime handler the node does not have.
    #[error("no runtime handler {handler:?} on this node{why}")]
    NoHandler { handler: String, why: String },
    #[error("no pod sandbox {0}")]
    SandboxNotFound(SandboxId),
    #[error("no container {0}")]
    ContainerNotFound(ContainerId),
    #[error("container {id} is {state:?}, not {wanted}")]
    WrongState {
        id: ContainerId,
        state: ContainerState,
        wanted: &'static str,
    },
    #[error("cannot create container {name:?}: {reason}")]
    CreateContainer { name: String, reason: String },
    #[error("no free address in pod network {0}")]
    Network(#[from] IpPoolError),
    #[error("exec timed out after {0:?}")]
    ExecTimeout(Duration),
    /// What this runtime cannot do (yet).
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("runtime i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// A container runtime, shaped like CRI v1.
///
/// Every method is idempotent where CRI's is: stopping a stopped container or removing a removed
/// one succeeds.
#[async_trait]
pub trait PodRuntime: Send + Sync + 'static {
    /// Name and version, as reported in `nodeInfo.containerRuntimeVersion` (`name://version`).
    fn version(&self) -> RuntimeVersion;

    /// Makes `image` present on the node and returns what it resolved to, pulling with
    /// `auth` when given (a pod's image pull secret for the image's registry).
    async fn pull_image_as(&self, image: &str, auth: Option<&ImageAuth>) -> Result<ImageRef>;
    /// [`Self::pull_image_as`] without credentials.
    async fn pull_image(&self, image: &str) -> Result<ImageRef> {
        self.pull_image_as(image, None).await
    }
    /// The image if it is present, without pulling.
    async fn image_status(&self, image: &str) -> Result<Option<ImageRef>>;
    /// Every image present on the node.
    async fn list_images(&self) -> Result<Vec<ImageRef>>;
    /// Removes `image` (a name or digest) from the node with every name of it, as CRI's
    /// `RemoveImage`; an image that is not there is no error.
    async fn remove_image(&self, image: &str) -> Result<()>;

    /// Creates a pod sandbox (its network address and shared state) and returns its id and IP.
    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox>;
    /// Stops every container of the sandbox at once and releases its network.
    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()>;
    /// Forgets the sandbox; its containers must have been removed.
    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()>;

    /// Prepares a container in a sandbox; the image must have been pulled.
    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: ContainerConfig,
    ) -> Result<ContainerId>;
    /// Starts a created container.
    async fn start_container(&self, id: &ContainerId) -> Result<()>;
    /// Stops a running container, giving it up to `timeout` to finish what it is doing.
    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()>;
    /// Forgets an exited container.
    async fn remove_container(&self, id: &ContainerId) -> Result<()>;
    /// The container's current status.
    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus>;
    /// Waits until the container has exited and returns its final status.
    async fn wait_container(&self, id: &ContainerId) -> Result<ContainerStatus>;
    /// Runs `cmd` inside the running container's sandbox and collects its output.
    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult>;

    /// Runs `cmd` in the running container's sandbox with streamed stdio and returns its exit
    /// code once it has finished and its output has been written.
    async fn exec(&self, id: &ContainerId, cmd: &[String], io: ExecIo) -> Result<i32>;

    /// Connects `io` to the running container's own standard streams (`kubectl attach`): its
    /// output from now on, and its input when the container has `stdin`. Returns when the
    /// container has exited.
    async fn attach(&self, id: &ContainerId, io: ExecIo) -> Result<()>;

    /// A TCP connection to `port` of the pod of running container `id`, as CRI's
    /// `PortForward` makes it (`kubectl port-forward`): inside the pod's own network, `ip`
    /// being the pod's address. By default, to that address.
    async fn port_forward(
        &self,
        _id: &ContainerId,
        ip: std::net::IpAddr,
        port: u16,
    ) -> std::io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::connect((ip, port)).await
    }

    /// What every live sandbox uses now (CRI's `ListPodSandboxStats`).
    async fn list_pod_sandbox_stats(&self) -> Result<Vec<SandboxStats>>;
    /// The node-wide memory budget the runtime enforces for all pods together, if it has one
    /// (the kubelet's memory eviction signal is read from it).
    fn node_memory(&self) -> Option<NodeMemory> {
        None
    }

    /// The runtime handlers (RuntimeClass `handler`s) this runtime serves, the default first
    /// (CRI's `StatusResponse.runtime_handlers`).
    fn runtime_handlers(&self) -> Vec<String>;

    /// The handler that runs `image`, where the image itself decides (a Wasm component or an
    /// OCI container image), from what the node has or the image's manifest. A runtime of one
    /// handler answers that.
    async fn image_handler(&self, _image: &str, _auth: Option<&ImageAuth>) -> Result<String> {
        Ok(self.runtime_handlers().swap_remove(0))
    }

    /// Whether `image` is of the kind this runtime runs, from its manifest alone (nothing is
    /// pulled): a Wasm runtime says no to an OCI container image. When it cannot tell (the
    /// registry does not answer), yes: the pull then says what is wrong.
    async fn runs_image(&self, _image: &str, _auth: Option<&ImageAuth>) -> bool {
        true
    }
}

/// The handler of Wasm components (RuntimeClass `wasmtime`).
pub const WASMTIME: &str = "wasmtime";
/// The handler of OCI containers through containerd and runc (RuntimeClass `runc`).
pub const RUNC: &str = "runc";
