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

/// Credentials for a registry: the user name and password of an image pull secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ImageAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for ImageAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
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
    /// The pod's annotations (as CRI passes them), e.g. [`INSTANCE_REUSE`].
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The runtime handler that runs the pod (its RuntimeClass's `handler`); empty: the
    /// node's default.
    pub runtime_handler: String,
}

/// A pod annotation: `"true"` lets a runtime serve several requests in turn with one
/// instance of an HTTP container (faster, but state one request leaves is seen by the next),
/// where the default is a fresh instance per request.
pub const INSTANCE_REUSE: &str = "shoal.dev/instance-reuse";

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
    /// The spec's `command`: an OCI image runs it instead of its entrypoint.
    pub command: Vec<String>,
    /// The spec's `args`: an OCI image runs them instead of its default arguments.
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
    /// `stdin: true`: the container reads what attached clients send.
    pub stdin: bool,
    /// `stdinOnce: true`: its stdin ends when the first attached client detaches.
    pub stdin_once: bool,
    /// `tty: true`.
    pub tty: bool,
}

impl ContainerConfig {
    /// `command` then `args`: what a component runs with, without a program name.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
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

/// The program name an image's component runs as (its `argv[0]`): the image's last path
/// component without tag or digest (`exerciser` for `shoal.local/exerciser:latest`).
pub fn program_name(image: &str) -> &str {
    image
        .rsplit('/')
        .next()
        .and_then(|n| n.split([':', '@']).next())
        .filter(|n| !n.is_empty())
        .unwrap_or("main")
}

/// The node toolbox's commands (`wasm-workloads/toolbox`): an exec or exec probe whose first
/// word is one of them runs the toolbox in the pod's sandbox, unless the first word is the
/// image's own program name. `kubectl cp` needs `tar` and `test`.
pub const TOOLBOX_TOOLS: &[&str] = &[
    "ls", "cat", "echo", "env", "tar", "sleep", "test", "[", "mkdir", "rm", "touch", "pwd", "true",
    "false", "head", "wc",
];

/// What an exec of `cmd` in a container of `image` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecTarget<'a> {
    /// The container's own component, with these arguments after its program name.
    Image(&'a [String]),
    /// The node's toolbox, with `cmd` as its whole argv (the tool first).
    Toolbox,
}

/// Which component an exec of `cmd` runs: `IMAGE-PROGRAM ARGS...` is the image with ARGS; a
/// toolbox command is the toolbox when the node has one; anything else is the image with the
/// whole command as its arguments.
pub fn exec_target<'a>(image: &str, cmd: &'a [String], toolbox: bool) -> ExecTarget<'a> {
    match cmd.split_first() {
        Some((first, rest)) if first == program_name(image) => ExecTarget::Image(rest),
        Some((first, _)) if toolbox && TOOLBOX_TOOLS.contains(&first.as_str()) => {
            ExecTarget::Toolbox
        }
        _ => ExecTarget::Image(cmd),
    }
}

/// Where a streamed exec or attach reads and writes (CRI's `Exec`/`Attach` as the kubelet's
/// streaming server drives them). Dropping the writer behind `stdin` is end of input.
pub struct ExecIo {
    /// The command's input; `None` reads as empty.
    pub stdin: Option<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>>,
    pub stdout: Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>,
    /// `None` discards it (under `tty` the caller passes a writer into its one output).
    pub stderr: Option<Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>>,
    /// The caller holds a terminal: stderr goes to stdout.
    pub tty: bool,
}

impl fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecIo")
            .field("stdin", &self.stdin.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.tty)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_picks_the_image_or_the_toolbox() {
        let cmd = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let img = "shoal.local/exerciser:latest";
        assert_eq!(program_name(img), "exerciser");
        assert_eq!(program_name("ghcr.io/a/b@sha256:00"), "b");
        let env = cmd(&["env", "WHO"]);
        assert_eq!(exec_target(img, &env, true), ExecTarget::Toolbox);
        assert_eq!(exec_target(img, &env, false), ExecTarget::Image(&env));
        let own = cmd(&["exerciser", "env", "WHO"]);
        assert_eq!(exec_target(img, &own, true), ExecTarget::Image(&own[1..]));
        let step = cmd(&["exit", "3"]);
        assert_eq!(exec_target(img, &step, true), ExecTarget::Image(&step));
        assert_eq!(exec_target(img, &[], true), ExecTarget::Image(&[]));
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
/// `PodSandboxStats`: memory, and CPU time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStats {
    pub id: SandboxId,
    /// The pod's uid (from its [`SandboxConfig`]).
    pub uid: String,
    /// Memory of all the sandbox's containers, in bytes.
    pub memory_bytes: u64,
    /// Per container (by name, the latest run of each).
    pub containers: Vec<ContainerStats>,
}

/// What one container uses now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStats {
    pub name: String,
    pub memory_bytes: u64,
    /// CPU time its current run has used, in nanoseconds (cumulative).
    pub cpu_nanos: u64,
}

/// The memory a runtime lets all pods of the node use together, and how much they use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    /// The budget: growth past it fails in the guest.
    pub limit_bytes: u64,
    pub used_bytes: u64,
}
