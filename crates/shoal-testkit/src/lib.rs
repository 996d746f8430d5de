//! Dev-only helpers for end-to-end tests: start the real `shoal` binary on a free loopback port,
//! run the real kubectl against it, and wait with [`eventually`].
//!
//! Everything started here is stopped when its handle drops.

pub mod crd;
pub mod etcd;
pub mod netns;
pub mod python;
pub mod registry;

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the workspace's binaries are built (`target/debug` next to the test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target directory")
}

/// The `shoal` binary, which must have been built (`cargo build -p shoal`).
pub fn shoal_bin() -> PathBuf {
    let p = bin_dir().join("shoal");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p shoal` first (cargo xtask test does)",
        p.display()
    );
    p
}

/// How long `eventually` waits; `SHOAL_TEST_PATIENCE_SECS` raises it on slow machines.
pub fn patience() -> Duration {
    Duration::from_secs(
        std::env::var("SHOAL_TEST_PATIENCE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    )
}

/// Retries `f` until it returns `Ok` or patience runs out.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> anyhow::Result<T>) -> T {
    let deadline = Instant::now() + patience();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: still failing after {:?}: {e:#}", patience())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The node name of the kubelet in a test cluster's `shoal up`.
pub const NODE: &str = "node-1";

/// A slot of the loopback range no other cluster or node of this machine is likely to use.
fn net_slot() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::process::id()
        .wrapping_mul(2654435761)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 97)
}

/// A node's loopback network: its pod CIDR (a /24 in 127.64.0.0/10) and its address (the
/// CIDR's first host, which pods never get), so nodes and clusters run side by side.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub pod_cidr: String,
    pub node_ip: String,
}

impl NodeNet {
    pub fn new() -> Self {
        let n = net_slot();
        let (a, b) = (64 + (n >> 8) % 64, n % 256);
        NodeNet {
            pod_cidr: format!("127.{a}.{b}.0/24"),
            node_ip: format!("127.{a}.{b}.1"),
        }
    }
}

impl Default for NodeNet {
    fn default() -> Self {
        Self::new()
    }
}

/// A pod CIDR of its own for a test node.
pub fn pod_cidr() -> String {
    NodeNet::new().pod_cidr
}

/// A Service range of its own for a test cluster (a /24 in 127.128.0.0/10), so each
/// cluster's ClusterIPs, `kubernetes` and `kube-dns` addresses are its own.
pub fn service_cidr() -> String {
    let n = net_slot();
    format!("127.{}.{}.0/24", 128 + (n >> 8) % 64, n % 256)
}

/// The `kube-dns` address of a Service range `cidr` (its tenth address).
pub fn dns_ip(cidr: &str) -> String {
    let base = cidr.split('/').next().unwrap_or_default();
    let mut parts: Vec<&str> = base.split('.').collect();
    parts.pop();
    format!("{}.10", parts.join("."))
}

/// A running `shoal up` on a temporary data directory.
pub struct Cluster {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub server: String,
    /// Everything the process wrote to stderr (its log), also echoed to the test's stderr.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
    kube_cache: tempfile::TempDir,
    /// The etcd the cluster stores into, if any; stopped after the cluster.
    etcd: Option<etcd::Etcd>,
    /// The cluster's Service range and its node's network.
    pub service_cidr: String,
    pub node: NodeNet,
    /// The node's ingress ports (HTTP, HTTPS) on `node.node_ip`, with `shoal up`.
    pub ingress_ports: (u16, u16),
    /// The node runs containers: it is stopped with SIGTERM (it stops them) before SIGKILL.
    containers: bool,
    /// The network namespace it runs in (and kubectl with it), if not this one.
    pub netns: Option<String>,
}

/// The value of flag `name` in `args`.
fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1])
}

/// A port free on `ip` now (the test's own loopback address, so nobody else takes it).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on the node's loopback address")
}

impl Cluster {
    /// Starts `shoal up` on a fresh data directory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts `shoal up ARGS` on a fresh data directory.
    pub fn start_with(args: &[&str]) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut c = Self::start_in(&dir, &[&["up"], args].concat())?;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// Starts `shoal up --store etcd` on a fresh data directory and a fresh one-member etcd.
    pub fn start_on_etcd() -> anyhow::Result<Self> {
        let etcd = etcd::Etcd::start()?;
        let tmp = tempfile::tempdir()?;
        let eps = etcd.endpoints_arg();
        let mut c = Self::start_in(
            tmp.path(),
            &["up", "--store", "etcd", "--etcd-endpoints", &eps],
        )?;
        c._tmp = Some(tmp);
        c.etcd = Some(etcd);
        Ok(c)
    }

    /// Starts `shoal up ARGS` on a fresh data directory in network namespace `netns` (the
    /// test's "machine"), with kubectl run there too. ARGS should say `--listen` and
    /// `--node-ip` (an address of the namespace); the ingress ports are any free ones.
    pub fn start_in_netns(netns: &netns::NetNs, args: &[&str]) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut c = Self::start_inner(tmp.path(), &[&["up"], args].concat(), Some(&netns.name))?;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// Starts `shoal <args>` on `dir` (kept by the caller, e.g. for a restart).
    pub fn start_in(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(dir, args, None)
    }

    fn start_inner(dir: &Path, args: &[&str], netns: Option<&str>) -> anyhow::Result<Self> {
        let mut cmd = netns::command_in(netns, shoal_bin());
        cmd.args(args).arg("--data-dir").arg(dir);
        if flag(args, "--listen").is_none() {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let service_cidr = flag(args, "--service-cluster-ip-range")
            .map(str::to_owned)
            .unwrap_or_else(service_cidr);
        if !args.contains(&"--service-cluster-ip-range") {
            cmd.args(["--service-cluster-ip-range", &service_cidr]);
        }
        let mut node = NodeNet::new();
        let mut ingress_ports = (0, 0);
        if args.first() == Some(&"up") {
            if netns.is_none() {
                ingress_ports = (free_port(&node.node_ip), free_port(&node.node_ip));
            }
            cmd.args(["--ingress-http-port", &ingress_ports.0.to_string()])
                .args(["--ingress-https-port", &ingress_ports.1.to_string()]);
            match flag(args, "--node-ip") {
                Some(ip) => node.node_ip = ip.to_owned(),
                None => {
                    cmd.args(["--node-ip", &node.node_ip]);
                }
            }
            // The node: a name tests can rely on, a free kubelet port, a pod network of its
            // own (clusters run side by side), and a short crash-loop back-off.
            guest("hello");
            cmd.args(["--node-name", NODE, "--kubelet-port", "0"])
                .args(["--pod-cidr", &node.pod_cidr])
                .args(["--restart-backoff", "1"])
                .args(NODE_TIMING)
                // The sample plugins may be loaded from where they are built.
                .arg("--plugin-dir")
                .arg(guests_dir());
            if !args.contains(&"--eviction-hard") {
                // No disk signal: a test machine's disk may be fuller than a node's should be.
                cmd.args(["--eviction-hard", "memory.available<100Mi"]);
            }
            // Containers (a private containerd) only for the tests that ask for them.
            if !args.contains(&"--containers") {
                cmd.args(["--containers", "off"]);
            }
        }
        let containers = args
            .windows(2)
            .any(|w| w[0] == "--containers" && w[1] != "off");
        let mut child = cmd
            // Plugins' output is logged at info.
            .env("RUST_LOG", "warn,shoal_plugin_host=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning shoal")?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().context("shoal stderr")?;
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut log = kept.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().context("shoal stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let server = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        break rest.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    bail!("shoal exited before it was listening");
                }
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Cluster {
            child: Some(child),
            data_dir: dir.to_owned(),
            server,
            log,
            _tmp: None,
            kube_cache: tempfile::tempdir()?,
            etcd: None,
            service_cidr,
            node,
            ingress_ports,
            containers,
            netns: netns.map(str::to_owned),
        })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The `shoal` process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the process has logged so far (its stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs kubectl with this cluster's kubeconfig and a private discovery cache.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(args, None, &[])
    }

    /// A kubectl command for this cluster (its kubeconfig and private discovery cache), all
    /// three standard streams piped: for commands that keep running (`port-forward`, `attach`).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = netns::command_in(self.netns.as_deref(), "kubectl");
        // Global flags first: after `--` they would be the command's own arguments.
        cmd.arg("--cache-dir")
            .arg(self.kube_cache.path())
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs kubectl with stdin and extra environment variables.
    pub fn kubectl_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut cmd = netns::command_in(self.netns.as_deref(), "kubectl");
        // Global flags first: after `--` they would be the command's own arguments.
        cmd.arg("--cache-dir")
            .arg(self.kube_cache.path())
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("kubectl is installed at /usr/bin/kubectl");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input.as_bytes())
                .expect("write kubectl stdin");
        }
        child.wait_with_output().expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr if it did not succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl apply -f -` with `yaml`, failing the test if it does not succeed.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_with(&["apply", "-f", "-"], Some(yaml), &[]);
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get pod NAME -o jsonpath=EXPR`, or an error if kubectl fails.
    pub fn pod_field(&self, pod: &str, expr: &str) -> anyhow::Result<String> {
        let jp = format!("jsonpath={expr}");
        let out = self.kubectl(&["get", "pod", pod, "-o", &jp]);
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until `kubectl get pod NAME -o jsonpath=EXPR` prints `want`.
    pub fn wait_pod(&self, pod: &str, expr: &str, want: &str) {
        eventually(&format!("pod {pod} {expr} == {want:?}"), || {
            let got = self.pod_field(pod, expr)?;
            anyhow::ensure!(got == want, "is {got:?}");
            Ok(())
        })
    }

    /// Waits until Deployment `name` reports `n` ready replicas.
    pub fn wait_ready_replicas(&self, name: &str, n: u32) {
        eventually(&format!("deployment {name} has {n} ready"), || {
            let ready = self.ok(&[
                "get",
                "deployment",
                name,
                "-o",
                "jsonpath={.status.readyReplicas}",
            ]);
            anyhow::ensure!(ready == n.to_string(), "ready {ready:?}");
            Ok(())
        })
    }

    /// SIGKILLs the process (no clean shutdown), after a SIGTERM and up to 20 s to stop its
    /// containers if it runs any.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.containers {
                terminate(&mut c, Duration::from_secs(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGTERM to `child` and waits up to `grace` for it to exit.
fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace root (where `wasm-workloads/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/shoal-testkit is two levels below the workspace root")
        .to_path_buf()
}

/// Where the sample workloads are built (`cargo xtask guests`).
pub fn guests_dir() -> PathBuf {
    workspace_root().join("target/guests/wasm32-wasip2/release")
}

/// The commands that build the sample workloads (`wasm-workloads/`) and the sample plugins
/// (`policies/`) into [`guests_dir`] (`cargo xtask guests` runs them too).
pub fn build_guests(cargo: &str) -> Vec<Command> {
    let root = workspace_root();
    let mut cmds: Vec<Command> = ["wasm-workloads", "policies/admission", "policies/scheduler"]
        .iter()
        .map(|dir| {
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
                .arg("--manifest-path")
                .arg(root.join(dir).join("Cargo.toml"))
                .arg("--target-dir")
                .arg(root.join("target/guests"))
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR");
            cmd
        })
        .collect();
    // The exerciser natively too, static: the program of the containerd tests' image.
    let mut native = Command::new(cargo);
    native
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "exerciser",
            "--target",
        ])
        .arg(native_target())
        .arg("--manifest-path")
        .arg(root.join("wasm-workloads/Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target/guests"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_TARGET_DIR");
    cmds.push(native);
    cmds
}

/// The host's target, for sample workloads built natively.
fn native_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// A sample workload built natively and statically (only `exerciser`), for container images.
pub fn native_guest(name: &str) -> PathBuf {
    ensure_guests_built();
    let p = workspace_root()
        .join("target/guests")
        .join(native_target())
        .join("release")
        .join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

fn ensure_guests_built() {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        for mut cmd in build_guests(&cargo) {
            let out = cmd.output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        }
        Ok(())
    });
    if let Err(e) = built {
        panic!(
            "building the sample workloads and plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{e}"
        );
    }
}

/// The sample workload `name` (`hello`, `http-echo`, `exerciser`), built for `wasm32-wasip2` on
/// first use in this process (cargo makes the rebuild a no-op when nothing changed).
pub fn guest(name: &str) -> PathBuf {
    ensure_guests_built();
    let p = guests_dir().join(format!("{name}.wasm"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// The sample plugin `name` from `policies/` (`deny-privileged`, `avoid-nodes`, `hostile`, ...).
pub fn policy(name: &str) -> PathBuf {
    ensure_guests_built();
    let p = guests_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Node heartbeats every second and a node NotReady after 8 s without one, so tests of a
/// node going away do not wait Kubernetes' 40 s.
const NODE_TIMING: [&str; 4] = [
    "--node-lease-duration-seconds",
    "4",
    "--node-monitor-grace-period",
    "8",
];

/// `shoal simulate-nodes` against a cluster; killed when dropped.
pub struct SimulatedNodes(Child);

impl SimulatedNodes {
    /// Starts `count` simulated nodes and waits until they are registered.
    pub fn start(cluster: &Cluster, count: usize) -> anyhow::Result<Self> {
        use std::io::{BufRead, BufReader};
        let mut sim = Command::new(shoal_bin())
            .args(["simulate-nodes", "--count", &count.to_string()])
            .args(["--node-lease-duration-seconds", "4"])
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = sim.stdout.take().expect("stdout is piped");
        let sim = SimulatedNodes(sim);
        let mut lines = BufReader::new(stdout).lines();
        let want = format!("simulating {count} nodes");
        anyhow::ensure!(
            lines.any(|l| l.is_ok_and(|l| l.contains(&want))),
            "simulate-nodes did not start"
        );
        std::thread::spawn(move || for _ in lines {});
        Ok(sim)
    }
}

impl Drop for SimulatedNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A second node: `shoal kubelet` joining a cluster as a kubelet does, with a bootstrap token
/// (`shoal bootstrap-kubeconfig`) through a CertificateSigningRequest; it then works as
/// `system:node:NAME`.
pub struct Node {
    child: Child,
    pub name: String,
    pub net: NodeNet,
    /// It runs containers: stopped with SIGTERM (it stops them) before SIGKILL.
    containers: bool,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts `shoal kubelet` named `name` for `cluster`, returning once it runs.
    pub fn join(cluster: &Cluster, name: &str) -> anyhow::Result<Self> {
        Self::join_with(cluster, name, &[])
    }

    /// As [`Node::join`], with extra `shoal kubelet` arguments.
    pub fn join_with(cluster: &Cluster, name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::join_inner(cluster, name, extra, None)
    }

    /// As [`Node::join_with`], the kubelet running in network namespace `netns` (another
    /// "machine"); `extra` should say `--node-ip`, an address of the namespace.
    pub fn join_in_netns(
        cluster: &Cluster,
        name: &str,
        netns: &netns::NetNs,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::join_inner(cluster, name, extra, Some(&netns.name))
    }

    fn join_inner(
        cluster: &Cluster,
        name: &str,
        extra: &[&str],
        netns: Option<&str>,
    ) -> anyhow::Result<Self> {
        guest("hello");
        let dir = tempfile::tempdir()?;
        let mut net = NodeNet::new();
        let bootstrap = netns::command_in(cluster.netns.as_deref(), shoal_bin())
            .arg("bootstrap-kubeconfig")
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["--ttl", "1h"])
            .output()
            .context("running shoal bootstrap-kubeconfig")?;
        anyhow::ensure!(
            bootstrap.status.success(),
            "shoal bootstrap-kubeconfig failed: {}",
            String::from_utf8_lossy(&bootstrap.stderr)
        );
        std::fs::write(dir.path().join("bootstrap.conf"), &bootstrap.stdout)?;
        let node_ip = flag(extra, "--node-ip");
        if let Some(ip) = node_ip {
            net.node_ip = ip.to_owned();
        }
        let mut child = netns::command_in(netns, shoal_bin())
            .arg("kubelet")
            .arg("--bootstrap-kubeconfig")
            .arg(dir.path().join("bootstrap.conf"))
            .arg("--kubeconfig")
            .arg(dir.path().join("kubelet.conf"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--node-name", name, "--kubelet-port", "0"])
            .args(["--pod-cidr", &net.pod_cidr])
            .args(if node_ip.is_none() {
                vec!["--node-ip", &net.node_ip]
            } else {
                vec![]
            })
            .args(["--cluster-dns", &dns_ip(&cluster.service_cidr)])
            .args(["--restart-backoff", "1"])
            .args(&NODE_TIMING[..2])
            .args(extra)
            .args(if extra.contains(&"--containers") {
                &[][..]
            } else {
                &["--containers", "off"][..]
            })
            .args(if extra.contains(&"--eviction-hard") {
                &[][..]
            } else {
                &["--eviction-hard", "memory.available<100Mi"][..]
            })
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning shoal kubelet")?;
        let stdout = child.stdout.take().context("kubelet stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("kubelet running node") => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    bail!("shoal kubelet exited before it ran");
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Node {
            child,
            name: name.to_owned(),
            net,
            containers: flag(extra, "--containers").is_some_and(|v| v != "off"),
            _dir: dir,
        })
    }
}

impl Node {
    /// The node's own kubeconfig (its client certificate), written when it joined.
    pub fn kubeconfig(&self) -> PathBuf {
        self._dir.path().join("kubelet.conf")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.containers {
            terminate(&mut self.child, Duration::from_secs(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the benchmarks share.
pub mod bench {
    use std::time::Duration;

    /// The `p` quantile (0..=1) of sorted samples, zero if there are none.
    pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }

    /// What a closed-loop HTTP load measured.
    #[derive(Debug, Clone, Copy)]
    pub struct Load {
        pub rate: f64,
        pub p50: Duration,
        pub p99: Duration,
    }

    /// Requests/s and latency of GET `url` (with `host` as the Host header, if given) from
    /// `conns` keep-alive HTTP/1.1 connections, each sending its next request when the last
    /// response has been read, for `secs` seconds.
    pub async fn http_load(url: &str, host: Option<&str>, conns: usize, secs: f64) -> Load {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::client::legacy::Client;
        let url: http::Uri = url.parse().expect("a URL");
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let deadline = std::time::Instant::now() + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (client, url) = (client.clone(), url.clone());
            let host = host.map(str::to_owned);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while std::time::Instant::now() < deadline {
                    let mut req = http::Request::get(url.clone());
                    if let Some(h) = &host {
                        req = req.header(http::header::HOST, h);
                    }
                    let req = req.body(Empty::new()).expect("a request");
                    let t = std::time::Instant::now();
                    let resp = client.request(req).await.expect("the server answers");
                    assert!(
                        resp.status().is_success(),
                        "the server said {}",
                        resp.status()
                    );
                    let _ = resp.into_body().collect().await;
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("a load task"));
        }
        lat.sort();
        Load {
            rate: lat.len() as f64 / secs,
            p50: percentile(&lat, 0.5),
            p99: percentile(&lat, 0.99),
        }
    }

    /// The `KEY:  N kB` line of a `/proc` file, in KiB; zero if it cannot be read.
    fn proc_kib(file: &str, key: &str) -> u64 {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The resident memory in KiB (`VmRSS`) of process `pid`, zero if it cannot be read.
    pub fn rss_kib_of(pid: u32) -> u64 {
        proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
    }

    /// The proportional set size in KiB (`Pss`: shared pages divided among their sharers) of
    /// process `pid`, zero if it cannot be read.
    pub fn pss_kib(pid: u32) -> u64 {
        proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
    }

    /// This process's resident memory in KiB (`VmRSS`), zero if it cannot be read.
    pub fn rss_kib() -> u64 {
        rss_kib_of(std::process::id())
    }
}
