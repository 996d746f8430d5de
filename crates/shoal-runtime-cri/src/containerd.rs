//! The node's private containerd: its configuration, root, state, socket, CNI configuration
//! and registry hosts all under one directory of the node's; started, watched and restarted by
//! the node, stopped with it.
//!
//! The configuration is the one `shared/reference/cri-recipe.md` verified for containerd 1.6
//! on Debian 12: no systemd cgroups, `restrict_oom_score_adj` (a sandbox without
//! CAP_SYS_RESOURCE refuses the pause container's -998), network namespaces under the state
//! directory, a sandbox image the node builds itself, registry hosts from `certs.d`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The sandbox ("pause") image every node imports into its containerd: Debian's static busybox
/// sleeping for ever, so that no sandbox image is ever pulled.
pub const SANDBOX_IMAGE: &str = "shoal.local/pause:1.0";

/// Where Debian's `busybox-static` puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Where Debian's `containernetworking-plugins` puts the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// How the node's containerd is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Everything containerd keeps and its socket live under this directory.
    pub dir: PathBuf,
    /// The pod CIDR container pods take addresses from (the CNI bridge's subnet).
    pub pod_cidr: String,
    /// The name of the node's CNI bridge (at most 15 bytes).
    pub bridge: String,
    /// Registry mirrors: pulls from `registry` (`docker.io`, `127.0.0.1:5000`) go to
    /// `url` (`http://127.0.0.1:5000`) instead.
    pub mirrors: Vec<(String, String)>,
    /// A part of `pod_cidr` kept for the node's Wasm pods, with the last address the CNI may
    /// hand to containers (the range before it): the range is made local to the node (a
    /// `local` route on `lo`, so the node process binds any address in it and answers for
    /// them on the bridge) for as long as containerd runs.
    pub wasm_pods: Option<(String, String)>,
}

/// Why containers cannot run on this node.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Whether this machine can run a private containerd: root, and Debian's `containerd`, `runc`,
/// `containernetworking-plugins` and `busybox-static` installed.
pub fn check() -> Result<(), Unavailable> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Err(Unavailable(
            "containers need root (containerd and runc make namespaces and cgroups); this node runs Wasm pods only".into(),
        ));
    }
    let needs = [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("ctr", "containerd"),
        ("setpriv", "util-linux"),
        // NetworkPolicy for container pods is an nftables table in each pod's namespace.
        ("nft", "nftables"),
    ];
    for (program, package) in needs {
        if which(program).is_none() {
            return Err(Unavailable(format!(
                "{program} is not installed (Debian package {package}); this node runs Wasm pods only"
            )));
        }
    }
    for (file, package) in [
        (
            format!("{CNI_BIN_DIR}/bridge"),
            "containernetworking-plugins",
        ),
        (BUSYBOX.to_owned(), "busybox-static"),
    ] {
        if !Path::new(&file).exists() {
            return Err(Unavailable(format!(
                "{file} is missing (Debian package {package}); this node runs Wasm pods only"
            )));
        }
    }
    // Debian's dynamic `busybox` installs the same path; an image has no libc for it.
    if has_interpreter(&std::fs::read(BUSYBOX).unwrap_or_default()) {
        return Err(Unavailable(format!(
            "{BUSYBOX} is dynamically linked: the sandbox image needs Debian's busybox-static; this node runs Wasm pods only"
        )));
    }
    Ok(())
}

/// Whether an ELF64 executable names a program interpreter (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let num = |at: usize, len: usize| -> Option<u64> {
        let b = elf.get(at..at + len)?;
        Some(b.iter().rev().fold(0u64, |n, &x| n << 8 | u64::from(x)))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (num(0x20, 8), num(0x36, 2), num(0x38, 2))
    else {
        return false;
    };
    (0..phnum).any(|i| num((phoff + i * phentsize) as usize, 4) == Some(PT_INTERP.into()))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        .to_str()
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

impl Config {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Writes containerd's configuration, the CNI network and the registry hosts.
    fn write(&self) -> io::Result<()> {
        let d = self.dir.display();
        for sub in ["net.d", "certs.d", "root", "state"] {
            std::fs::create_dir_all(self.dir.join(sub))?;
        }
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#
        );
        std::fs::write(self.config_file(), config)?;
        let cni = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "shoal",
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[match &self.wasm_pods {
                        Some((_, end)) => serde_json::json!({"subnet": self.pod_cidr, "rangeEnd": end}),
                        None => serde_json::json!({"subnet": self.pod_cidr}),
                    }]],
                    // The node's loopback network (Wasm pods, ClusterIPs, the cluster DNS) is
                    // reached through the node, once the sandbox's own 127/8 is narrowed to
                    // 127.0.0.1 (`CriRuntime::route_loopback_to_node`); everything else too
                    // (other nodes' pods, routed by the node; no masquerade: pod addresses
                    // cross nodes unchanged).
                    "routes": [{"dst": "127.0.0.0/8"}, {"dst": "0.0.0.0/0"}],
                    "dataDir": self.dir.join("ipam"),
                },
            }, {"type": "portmap", "capabilities": {"portMappings": true}}],
        });
        std::fs::write(
            self.dir.join("net.d/10-shoal.conflist"),
            serde_json::to_vec_pretty(&cni)?,
        )?;
        for (registry, url) in &self.mirrors {
            let dir = self.dir.join("certs.d").join(registry);
            std::fs::create_dir_all(&dir)?;
            // A server line alone is ignored by containerd 1.6: the host table is needed.
            let hosts = format!(
                "server = \"{url}\"\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
            );
            std::fs::write(dir.join("hosts.toml"), hosts)?;
        }
        Ok(())
    }
}

/// Starts processes from a thread that never ends: containerd is started with a parent-death
/// signal (it must not outlive the node), which the kernel sends when the *thread* that
/// started it ends.
struct Spawner(
    Mutex<std::sync::mpsc::Sender<(Command, std::sync::mpsc::Sender<io::Result<Child>>)>>,
);

impl Spawner {
    fn get() -> &'static Spawner {
        static SPAWNER: std::sync::OnceLock<Spawner> = std::sync::OnceLock::new();
        SPAWNER.get_or_init(|| {
            let (tx, rx) =
                std::sync::mpsc::channel::<(Command, std::sync::mpsc::Sender<io::Result<Child>>)>();
            std::thread::Builder::new()
                .name("shoal-containerd-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                    // The senders live in a static: never reached while the process lives.
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawning a thread");
            Spawner(Mutex::new(tx))
        })
    }

    fn spawn(&self, cmd: Command) -> io::Result<Child> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((cmd, tx))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        rx.recv()
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }
}

/// A running private containerd. Dropping it kills containerd (its pods' processes are
/// stopped through CRI first by whoever owns the runtime: see [`crate::CriRuntime::stop_all`]).
pub struct Containerd {
    config: Config,
    child: Mutex<Option<Child>>,
    restarts: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("dir", &self.config.dir)
            .finish()
    }
}

/// How long containerd gets to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Containerd {
    /// Writes the configuration, starts containerd and waits until its socket answers, then
    /// imports the sandbox image.
    pub fn start(config: Config) -> io::Result<Arc<Containerd>> {
        config.write()?;
        if let Some((range, _)) = &config.wasm_pods {
            let out = Command::new("ip")
                .args(["route", "replace", "local", range, "dev", "lo"])
                .output()?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "ip route replace local {range} dev lo: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let c = Arc::new(Containerd {
            config,
            child: Mutex::new(None),
            restarts: Default::default(),
        });
        c.spawn()?;
        c.import(&sandbox_image()?.archive(SANDBOX_IMAGE))?;
        Ok(c)
    }

    pub fn socket(&self) -> PathBuf {
        self.config.socket()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Times containerd was restarted after it died.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn spawn(&self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.dir.join("containerd.log"))?;
        let _ = std::fs::remove_file(self.socket());
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "containerd", "--config"])
            .arg(self.config.config_file())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = Spawner::get().spawn(cmd)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "containerd exited at start ({status}); see {}",
                    self.config.dir.join("containerd.log").display()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "containerd did not open {} within {START_TIMEOUT:?}",
                    self.socket().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        Ok(())
    }

    /// Restarts containerd if it has died; `Ok(true)` when it did.
    pub fn revive(&self) -> io::Result<bool> {
        let dead = match self
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            Some(child) => child.try_wait()?.is_some(),
            None => true,
        };
        if dead {
            tracing::warn!("containerd died; restarting it");
            self.spawn()?;
            self.restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(dead)
    }

    /// Watches containerd until `stop`, restarting it when it dies.
    pub async fn supervise(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.revive()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot restart containerd"),
                Err(e) => tracing::error!(error = %e, "containerd supervision failed"),
            }
        }
    }

    /// Imports an OCI archive into the `k8s.io` namespace CRI uses.
    pub fn import(&self, archive: &[u8]) -> io::Result<()> {
        let file = tempfile::NamedTempFile::new_in(&self.config.dir)?;
        std::fs::write(file.path(), archive)?;
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(file.path())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ctr images import: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Kills containerd, unmounts what it left mounted under its directory and removes the
    /// node's CNI bridge (its pods are gone; a stale bridge would claim their subnet).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount_under(&self.config.dir);
        let _ = Command::new("ip")
            .args(["link", "delete", &self.config.bridge])
            .stderr(Stdio::null())
            .status();
        if let Some((range, _)) = &self.config.wasm_pods {
            let _ = Command::new("ip")
                .args(["route", "delete", "local", range, "dev", "lo"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The node's sandbox image.
pub fn sandbox_image() -> io::Result<crate::oci::Image> {
    Ok(crate::oci::Image::busybox(Path::new(BUSYBOX))?.entrypoint(&["/bin/sleep", "2147483647"]))
}

/// Cleans up after a containerd that ran under `dir` and is gone (its node was killed):
/// [`reap_processes`], then removes `dir`.
pub fn reap(dir: &Path) {
    reap_processes(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Kills the shims a containerd under `dir` left and their containers' processes, and
/// unmounts what is still mounted under `dir`.
pub fn reap_processes(dir: &Path) {
    let socket = dir.join("containerd.sock");
    let socket = socket.to_string_lossy();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim") && cmdline.contains(&*socket) {
            kill_tree(pid);
        }
    }
    unmount_under(dir);
}

/// The child processes of `pid` (from every thread's `children`).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// SIGKILLs `pid` and every descendant.
fn kill_tree(pid: u32) {
    let children = children(pid);
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
    for c in children {
        kill_tree(c);
    }
}

/// Unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(p)
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_executables_are_told_from_static_ones() {
        // This test's own binary is dynamically linked (std on glibc).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"not an ELF file"));
        if let Ok(busybox) = std::fs::read(BUSYBOX) {
            assert!(!has_interpreter(&busybox), "Debian's busybox-static");
        }
    }
}
