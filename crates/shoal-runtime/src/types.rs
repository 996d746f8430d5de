//! CRI-shaped value types.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

macro_rules! id_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// A pod sandbox, as the runtime names it.
    SandboxId
);
id_newtype!(
    /// A container, as the runtime names it.
    ContainerId
);

/// `name://version`, as `nodeInfo.containerRuntimeVersion` shows it.
#[derive(Debug, Clone)]
pub struct RuntimeVersion {
    pub name: String,
    pub version: String,
}

impl fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.name, self.version)
    }
}

/// An image present on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The names it is known by (`shoal.local/hello:latest`).
    pub names: Vec<String>,
    /// Content digest, `sha256:<hex>`: what `imageID` reports.
    pub digest: String,
    pub size: u64,
}

/// What a sandbox is created from.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// Where the pod's container logs go (`<dir>/<container>/<restart>.log`).
    pub log_directory: PathBuf,
    /// How the pod resolves names.
    pub dns: crate::network::PodDns,
    /// The pod's labels (its identity for NetworkPolicy).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A running sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: SandboxId,
    pub ip: IpAddr,
}

/// A directory made visible to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
}

/// What a container is created from: the pod spec, already resolved by the kubelet.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    pub name: String,
    /// The image as pulled (a name the runtime resolves, or its digest).
    pub image: String,
    /// `command` + `args`, without a program name.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    /// Container ports; an HTTP component is served on the first (8080 if none).
    pub ports: Vec<u16>,
    /// Hard cap on the container's memory, bytes.
    pub memory_limit: Option<u64>,
    /// CPU share in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// The CRI-format log file for this run of the container.
    pub log_path: PathBuf,
}

/// CRI's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

/// A container's status; times are Unix nanoseconds (0 = not yet).
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub name: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// `Completed`, `Error` or `OOMKilled` once exited.
    pub reason: String,
    pub message: String,
    pub image_digest: String,
}

impl ContainerStatus {
    pub fn exited(&self) -> bool {
        self.state == ContainerState::Exited
    }
}

/// The outcome of `exec_sync`.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Exit reasons as the kubelet reports them in `state.terminated.reason`.
pub mod reason {
    pub const COMPLETED: &str = "Completed";
    pub const ERROR: &str = "Error";
    pub const OOM_KILLED: &str = "OOMKilled";
}

/// Unix time in nanoseconds.
pub fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// What one sandbox's containers use now, as the runtime measures it (CRI's
/// `PodSandboxStats`, memory only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStats {
    pub id: SandboxId,
    /// The pod's uid (from its [`SandboxConfig`]).
    pub uid: String,
    /// Memory of all the sandbox's containers, in bytes.
    pub memory_bytes: u64,
    /// Per container (by name, the latest run of each): memory in bytes.
    pub containers: Vec<(String, u64)>,
}

/// The memory a runtime lets all pods of the node use together, and how much they use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    /// The budget: growth past it fails in the guest.
    pub limit_bytes: u64,
    pub used_bytes: u64,
}
