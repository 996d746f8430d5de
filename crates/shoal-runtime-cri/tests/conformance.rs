//! The runtime conformance suite against a real containerd (Debian's containerd 1.6 with runc
//! and the CNI bridge), started privately for this test process, with the exerciser built
//! natively into a busybox image and pulled from a real registry on loopback. Needs root and
//! the packages `cargo xtask test` installs.

use shoal_runtime::conformance::Harness;
use shoal_runtime::{ContainerConfig, PodRuntime, SandboxConfig};
use shoal_runtime_cri::containerd::{self, Containerd};
use shoal_runtime_cri::{CriRuntime, oci};
use shoal_testkit::registry::Registry;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The containerd, registry and images every test of this process shares.
struct Node {
    containerd: Arc<Containerd>,
    /// `127.0.0.1:PORT` of the registry the images are pulled from.
    registry: String,
    dir: PathBuf,
}

/// The test network: a bridge and subnet of its own (198.18.0.0/15 is the range set aside for
/// testing networks), reused by each run so that no stale bridge claims the same subnet.
const POD_CIDR: &str = "198.18.250.0/24";
const BRIDGE: &str = "shoal-test0";
const EXERCISER: &str = "shoal.local/exerciser:latest";
const SPARE: &str = "shoal.local/spare:latest";

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        if let Err(e) = containerd::check() {
            panic!("the containerd runtime's tests need it: {e} (cargo xtask test installs the packages)");
        }
        reap_earlier_runs();
        // Kept by a thread that lives as long as this process, so that it dies with it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let registry = Registry::start_tied().expect("registry");
            tx.send(registry.host.clone()).unwrap();
            loop {
                std::thread::park();
            }
        });
        let registry_host: String = rx.recv().expect("the registry starts");
        let dir = std::env::temp_dir().join(format!("shoal-cri-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let containerd = Containerd::start(containerd::Config {
            dir: dir.join("containerd"),
            pod_cidr: POD_CIDR.into(),
            bridge: BRIDGE.into(),
            // `shoal.local/...` and `busybox` resolve to the test's registry, unchanged.
            mirrors: ["shoal.local", "docker.io"]
                .iter()
                .map(|r| (r.to_string(), format!("http://{registry_host}")))
                .collect(),
            wasm_pods: None,
        })
        .expect("starting containerd");
        let exerciser = oci::Image::busybox(std::path::Path::new(containerd::BUSYBOX))
            .unwrap()
            .program("bin/exerciser", &shoal_testkit::native_guest("exerciser"))
            .unwrap()
            .entrypoint(&["/bin/exerciser"]);
        let busybox = oci::Image::busybox(std::path::Path::new(containerd::BUSYBOX))
            .unwrap()
            .cmd(&["sh"]);
        let spare = oci::Image::busybox(std::path::Path::new(containerd::BUSYBOX))
            .unwrap()
            .cmd(&["true"]);
        let host = registry_host.clone();
        // The push runs on a runtime of its own: this one belongs to the first test only.
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                for (image, name) in [
                    (exerciser, "exerciser:latest"),
                    (busybox, "library/busybox:latest"),
                    (spare, "spare:latest"),
                ] {
                    let built = image.build();
                    shoal_wasm::oci::push_layer(
                        &format!("{host}/{name}"),
                        (built.layer.bytes, oci::LAYER),
                        (built.config.bytes, oci::CONFIG),
                    )
                    .await
                    .expect("pushing a test image");
                }
            })
        })
        .join()
        .unwrap();
        Node {
            containerd,
            registry: registry_host,
            dir,
        }
    })
}

/// What a test process that died left: its containers, mounts and directory.
fn reap_earlier_runs() {
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("shoal-cri-test-") else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            containerd::reap(&entry.path().join("containerd"));
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

static CASE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn harness() -> Harness {
    let node = node();
    let rt = CriRuntime::connect(&node.containerd.socket())
        .await
        .expect("connecting to containerd");
    let dir = node.dir.join(format!(
        "case-{}",
        CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    Harness {
        runtime: Arc::new(rt),
        exerciser: EXERCISER.into(),
        spare: SPARE.into(),
        dir,
        budget: None,
        pod_cidr: POD_CIDR.into(),
        guard: Box::new(()),
    }
}

shoal_runtime::runtime_conformance!(harness, without node_budget);

/// A busybox pod `name` running `command`, started: its runtime, sandbox, container and log.
async fn busybox(
    name: &str,
    command: &[&str],
) -> (
    CriRuntime,
    shoal_runtime::Sandbox,
    shoal_runtime::ContainerId,
    PathBuf,
) {
    let node = node();
    let rt = CriRuntime::connect(&node.containerd.socket())
        .await
        .unwrap();
    rt.pull_image("busybox").await.unwrap();
    let dir = node.dir.join(name);
    let sb = sandbox(&rt, &dir, name).await;
    let log = dir.join(name).join("c/0.log");
    let id = rt
        .create_container(
            &sb.id,
            ContainerConfig {
                name: "c".into(),
                image: "busybox".into(),
                command: command.iter().map(|s| s.to_string()).collect(),
                log_path: log.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    (rt, sb, id, log)
}

async fn sandbox(rt: &CriRuntime, dir: &std::path::Path, name: &str) -> shoal_runtime::Sandbox {
    rt.run_pod_sandbox(&SandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}"),
        log_directory: dir.join(name),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_naming_busybox_runs_the_mirrors_image_with_its_command() {
    let (rt, sb, id, log) = busybox("bb", &["sh", "-c", "echo hi from $(hostname); exit 7"]).await;
    assert_eq!(rt.version().name, "containerd");
    let img = rt.image_status("busybox").await.unwrap().unwrap();
    assert!(
        img.names
            .iter()
            .any(|n| n == "docker.io/library/busybox:latest"),
        "{img:?}"
    );
    let st = tokio::time::timeout(Duration::from_secs(30), rt.wait_container(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.exit_code, 7);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F hi from bb"), "{text}");
    rt.stop_pod_sandbox(&sb.id).await.unwrap();
    rt.remove_pod_sandbox(&sb.id).await.unwrap();
    assert!(node().registry.starts_with("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_pod_answers_on_its_address_from_the_node() {
    let (rt, sb, _, _) = busybox(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello > /www/index.html && httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    let addr = std::net::SocketAddr::new(sb.ip, 8080);
    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
            s.read_to_string(&mut answer).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
    assert!(answer.ends_with("hello\n"), "{answer:?}");
    rt.stop_pod_sandbox(&sb.id).await.unwrap();
    rt.remove_pod_sandbox(&sb.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_exec_carries_stdin_stdout_stderr_and_the_exit_code() {
    use tokio::io::AsyncReadExt;
    let (rt, sb, id, _) = busybox("ex", &["sleep", "3600"]).await;
    let (out, mut out_r) = tokio::io::duplex(1 << 16);
    let (err, mut err_r) = tokio::io::duplex(1 << 16);
    let stdin: &'static [u8] = b"from stdin\n";
    let cmd: Vec<String> = ["sh", "-c", "head -n 1; echo out; echo err >&2; exit 5"]
        .map(String::from)
        .to_vec();
    let code = tokio::time::timeout(
        Duration::from_secs(30),
        rt.exec(
            &id,
            &cmd,
            shoal_runtime::ExecIo {
                stdin: Some(Box::new(stdin)),
                stdout: Box::new(out),
                stderr: Some(Box::new(err)),
                tty: false,
            },
        ),
    )
    .await
    .expect("exec ends")
    .unwrap();
    assert_eq!(code, 5);
    let (mut o, mut e) = (String::new(), String::new());
    out_r.read_to_string(&mut o).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), err_r.read_to_string(&mut e))
        .await
        .ok();
    assert_eq!(o, "from stdin\nout\n");
    assert_eq!(e, "err\n");
    rt.stop_pod_sandbox(&sb.id).await.unwrap();
    rt.remove_pod_sandbox(&sb.id).await.unwrap();
}
