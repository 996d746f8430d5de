//! The one conformance suite every [`PodRuntime`] backend passes.
//!
//! A backend's test file provides a [`Harness`] (the runtime and the name of an image that runs the
//! *exerciser* step language: `print TEXT`, `env NAME`, `read PATH`, `alloc MIB`, `sleep SECONDS`,
//! `crash`, `exit CODE`, nothing = run forever) and expands [`crate::runtime_conformance!`], which
//! makes one named test per case.

use crate::*;
use std::sync::Arc;
use std::time::Duration;

/// What a backend gives the suite.
pub struct Harness {
    pub runtime: Arc<dyn PodRuntime>,
    /// An image that runs the exerciser step language.
    pub exerciser: String,
    /// Another image, which no case but the removal case uses (it is removed), not sharing
    /// the exerciser's digest.
    pub spare: String,
    /// Where the case may put logs and volumes; removed by the caller.
    pub dir: std::path::PathBuf,
    /// The runtime's node memory budget (cases set and reset its limit), if it keeps one:
    /// the suite's budget cases run only for runtimes that do (see [`crate::runtime_conformance!`]).
    pub budget: Option<Arc<crate::memory::MemoryBudget>>,
    /// The range sandboxes take their addresses from.
    pub pod_cidr: String,
    /// Keeps the harness's temporary state alive.
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per conformance case, each calling `$harness().await`.
/// `runtime_conformance!(harness)` is every case; `runtime_conformance!(harness, without
/// node_budget)` leaves out the cases of a node-wide memory budget, for a runtime whose pods'
/// memory the kernel limits per container only (containerd).
#[macro_export]
macro_rules! runtime_conformance {
    ($harness:path) => {
        $crate::runtime_conformance!($harness, without node_budget);
        $crate::runtime_conformance!(@cases $harness;
            the_node_memory_budget_is_a_hard_cap_and_memory_is_given_back,
        );
    };
    ($harness:path, without node_budget) => {
        $crate::runtime_conformance!(@cases $harness;
            pulls_present_images_and_rejects_unknown_ones,
            removed_images_are_gone_and_others_stay,
            a_command_runs_and_exits_with_its_code,
            exit_zero_is_completed,
            output_goes_to_the_cri_log_file,
            environment_is_what_the_spec_grants,
            mounts_are_visible_to_the_container,
            memory_limit_is_a_hard_cap,
            a_crash_is_an_error_not_a_runtime_failure,
            stop_ends_a_running_container,
            exec_runs_in_the_sandbox,
            sandboxes_get_distinct_addresses,
            unknown_ids_are_not_found,
            stop_and_remove_are_idempotent,
        );
    };
    (@cases $harness:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let h = $harness().await;
                $crate::conformance::$case(&h).await;
            }
        )*
    };
}

async fn sandbox(h: &Harness, name: &str) -> Sandbox {
    h.runtime
        .run_pod_sandbox(&SandboxConfig {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            log_directory: h.dir.join(name),
            ..Default::default()
        })
        .await
        .expect("run_pod_sandbox")
}

fn config(h: &Harness, name: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: h.exerciser.clone(),
        args: args.iter().map(|s| s.to_string()).collect(),
        log_path: h.dir.join(name).join("0.log"),
        ..Default::default()
    }
}

/// Creates, starts and waits for a container; returns its final status and log text.
async fn run_to_exit(h: &Harness, name: &str, cfg: ContainerConfig) -> (ContainerStatus, String) {
    let rt = &h.runtime;
    rt.pull_image(&cfg.image).await.expect("pull_image");
    let sb = sandbox(h, name).await;
    let log = cfg.log_path.clone();
    let id = rt.create_container(&sb.id, cfg).await.expect("create");
    assert_eq!(
        rt.container_status(&id).await.unwrap().state,
        ContainerState::Created
    );
    rt.start_container(&id).await.expect("start");
    let st = tokio::time::timeout(Duration::from_secs(60), rt.wait_container(&id))
        .await
        .expect("the container exits within 60 s")
        .expect("wait_container");
    assert!(st.exited());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    rt.remove_container(&id).await.expect("remove");
    rt.stop_pod_sandbox(&sb.id).await.expect("stop sandbox");
    rt.remove_pod_sandbox(&sb.id).await.expect("remove sandbox");
    (st, text)
}

fn contents(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(crate::logs::parse_record)
        .map(|r| r.content.to_owned())
        .collect()
}

pub async fn pulls_present_images_and_rejects_unknown_ones(h: &Harness) {
    let img = h.runtime.pull_image(&h.exerciser).await.unwrap();
    assert!(img.digest.starts_with("sha256:"), "{img:?}");
    assert!(
        h.runtime
            .list_images()
            .await
            .unwrap()
            .iter()
            .any(|i| i.digest == img.digest)
    );
    assert_eq!(
        h.runtime.image_status(&h.exerciser).await.unwrap(),
        Some(img)
    );
    let missing = "shoal.local/no-such-image:v1";
    assert!(h.runtime.image_status(missing).await.unwrap().is_none());
    assert!(h.runtime.pull_image(missing).await.is_err());
}

pub async fn removed_images_are_gone_and_others_stay(h: &Harness) {
    h.runtime.pull_image(&h.exerciser).await.unwrap();
    let img = h.runtime.pull_image(&h.spare).await.unwrap();
    h.runtime.remove_image(&h.spare).await.unwrap();
    assert_eq!(h.runtime.image_status(&h.spare).await.unwrap(), None);
    let listed = h.runtime.list_images().await.unwrap();
    assert!(!listed.iter().any(|i| i.digest == img.digest), "{listed:?}");
    // Other images stay; removing what is gone is no error.
    assert!(
        h.runtime
            .image_status(&h.exerciser)
            .await
            .unwrap()
            .is_some()
    );
    h.runtime.remove_image(&h.spare).await.unwrap();
    h.runtime.remove_image(&img.digest).await.unwrap();
}

pub async fn a_command_runs_and_exits_with_its_code(h: &Harness) {
    let (st, _) = run_to_exit(h, "exit3", config(h, "exit3", &["exit", "3"])).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, reason::ERROR);
    assert!(
        st.started_at > 0 && st.finished_at >= st.started_at,
        "{st:?}"
    );
}

pub async fn exit_zero_is_completed(h: &Harness) {
    let (st, _) = run_to_exit(h, "ok", config(h, "ok", &["print", "done"])).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(st.reason, reason::COMPLETED);
}

pub async fn output_goes_to_the_cri_log_file(h: &Harness) {
    let (_, log) = run_to_exit(
        h,
        "logs",
        config(h, "logs", &["print", "first line", "print", "second"]),
    )
    .await;
    assert_eq!(contents(&log), ["first line", "second"]);
    assert!(log.lines().all(|l| l.contains(" stdout F ")), "{log}");
}

pub async fn environment_is_what_the_spec_grants(h: &Harness) {
    // Cargo sets this for the test process; nothing of the host's environment leaks in.
    let host_only = "CARGO_MANIFEST_DIR";
    assert!(std::env::var_os(host_only).is_some());
    let mut cfg = config(h, "env", &["env", "GREETING", "env", host_only]);
    cfg.env = vec![("GREETING".into(), "hi there".into())];
    let (st, log) = run_to_exit(h, "env", cfg).await;
    assert_eq!(st.exit_code, 0, "{log}");
    assert_eq!(
        contents(&log),
        ["GREETING=hi there", &format!("{host_only} is not set")]
    );
}

pub async fn mounts_are_visible_to_the_container(h: &Harness) {
    let vol = h.dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("greeting"), "from the host\n").unwrap();
    let mut cfg = config(h, "mount", &["read", "/data/greeting"]);
    cfg.mounts = vec![Mount {
        host_path: vol,
        container_path: "/data".into(),
        readonly: true,
    }];
    let (st, log) = run_to_exit(h, "mount", cfg).await;
    assert_eq!(st.exit_code, 0, "{log}");
    assert_eq!(contents(&log), ["from the host"]);
    // Nothing else of the host is there: not even the volume's own host path.
    let host_path = h.dir.join("vol/greeting").display().to_string();
    let (st, _) = run_to_exit(h, "nomount", config(h, "nomount", &["read", &host_path])).await;
    assert_ne!(st.exit_code, 0);
}

pub async fn memory_limit_is_a_hard_cap(h: &Harness) {
    let mut cfg = config(h, "hog", &["alloc", "64", "print", "survived"]);
    cfg.memory_limit = Some(16 << 20);
    let (st, log) = run_to_exit(h, "hog", cfg).await;
    assert_eq!(st.reason, reason::OOM_KILLED, "{st:?}");
    assert_eq!(st.exit_code, 137);
    assert!(!log.contains("survived"));
    let mut cfg = config(h, "fits", &["alloc", "4", "print", "fits"]);
    cfg.memory_limit = Some(32 << 20);
    let (st, _) = run_to_exit(h, "fits", cfg).await;
    assert_eq!(st.reason, reason::COMPLETED, "{st:?}");
}

/// Polls `f` every 50 ms for up to 10 s.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

const MIB: u64 = 1 << 20;

/// Every container's memory is charged to the node's budget while it runs (and reported per
/// sandbox); a growth past the budget is `OOMKilled`, and an ended container gives its memory
/// back.
pub async fn the_node_memory_budget_is_a_hard_cap_and_memory_is_given_back(h: &Harness) {
    let rt = &h.runtime;
    rt.pull_image(&h.exerciser).await.expect("pull_image");
    let sb = sandbox(h, "hog").await;
    let id = rt
        .create_container(&sb.id, config(h, "hog", &["alloc", "64", "sleep", "60"]))
        .await
        .expect("create_container");
    rt.start_container(&id).await.expect("start_container");
    let held = eventually("the hog's memory is charged", async || {
        let stats = rt.list_pod_sandbox_stats().await.ok()?;
        let s = stats.into_iter().find(|s| s.id == sb.id)?;
        (s.memory_bytes >= 64 * MIB).then_some(s)
    })
    .await;
    assert_eq!(held.uid, "uid-hog");
    assert_eq!(held.containers.len(), 1);
    assert_eq!(held.containers[0].name, "hog");
    let node = rt.node_memory().expect("the runtime keeps a node budget");
    let budget = h
        .budget
        .as_ref()
        .expect("the harness gives the node budget");
    assert!(node.used_bytes >= 64 * MIB, "{node:?}");

    // 32 MiB left for pods: a container wanting 64 more is killed for it.
    budget.set_limit(Some(node.used_bytes + 32 * MIB));
    let (st, _) = run_to_exit(h, "greedy", config(h, "greedy", &["alloc", "64"])).await;
    budget.set_limit(None);
    assert_eq!(st.reason, reason::OOM_KILLED, "{st:?}");
    assert_eq!(st.exit_code, 137);
    assert!(st.message.contains("node"), "{st:?}");

    rt.stop_container(&id, Duration::ZERO)
        .await
        .expect("stop_container");
    eventually("the hog's memory is given back", async || {
        let used = rt.node_memory()?.used_bytes;
        (used + 60 * MIB <= node.used_bytes).then_some(())
    })
    .await;
}

pub async fn a_crash_is_an_error_not_a_runtime_failure(h: &Harness) {
    let (st, log) = run_to_exit(
        h,
        "crash",
        config(h, "crash", &["print", "before", "crash"]),
    )
    .await;
    assert_eq!(st.reason, reason::ERROR);
    assert_ne!(st.exit_code, 0);
    assert_eq!(contents(&log), ["before"]);
    // The runtime still works.
    let (st, _) = run_to_exit(h, "after", config(h, "after", &["exit", "0"])).await;
    assert_eq!(st.exit_code, 0);
}

pub async fn stop_ends_a_running_container(h: &Harness) {
    let rt = &h.runtime;
    rt.pull_image(&h.exerciser).await.unwrap();
    let sb = sandbox(h, "forever").await;
    let id = rt
        .create_container(&sb.id, config(h, "forever", &[]))
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rt.container_status(&id).await.unwrap().state,
        ContainerState::Running
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        rt.stop_container(&id, Duration::from_secs(2)),
    )
    .await
    .expect("stop returns within its timeout")
    .unwrap();
    let st = rt.container_status(&id).await.unwrap();
    assert!(st.exited());
    assert_ne!(st.exit_code, 0);
    rt.remove_container(&id).await.unwrap();
    rt.remove_pod_sandbox(&sb.id).await.unwrap();
}

pub async fn exec_runs_in_the_sandbox(h: &Harness) {
    let rt = &h.runtime;
    rt.pull_image(&h.exerciser).await.unwrap();
    let sb = sandbox(h, "exec").await;
    let mut cfg = config(h, "exec", &[]);
    cfg.env = vec![("WHO".into(), "exec".into())];
    let id = rt.create_container(&sb.id, cfg).await.unwrap();
    rt.start_container(&id).await.unwrap();
    // Named by its program, the image's own `env` step runs (not the node toolbox's `env`).
    let cmd: Vec<String> = ["exerciser", "env", "WHO", "exit", "4"]
        .map(String::from)
        .to_vec();
    let out = rt
        .exec_sync(&id, &cmd, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 4);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "WHO=exec\n");
    let spin: Vec<String> = ["exerciser", "spin", "30"].map(String::from).to_vec();
    assert!(matches!(
        rt.exec_sync(&id, &spin, Duration::from_millis(200)).await,
        Err(RuntimeError::ExecTimeout(_))
    ));
    rt.stop_pod_sandbox(&sb.id).await.unwrap();
    assert!(rt.container_status(&id).await.unwrap().exited());
    rt.remove_container(&id).await.unwrap();
    rt.remove_pod_sandbox(&sb.id).await.unwrap();
}

pub async fn sandboxes_get_distinct_addresses(h: &Harness) {
    let a = sandbox(h, "a").await;
    let b = sandbox(h, "b").await;
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.id, b.id);
    let pool = IpPool::new(&h.pod_cidr).expect("the harness's pod CIDR");
    for ip in [a.ip, b.ip] {
        assert!(
            pool.contains(ip),
            "{ip} is outside the pod CIDR {}",
            h.pod_cidr
        );
    }
    for sb in [a, b] {
        h.runtime.stop_pod_sandbox(&sb.id).await.unwrap();
        h.runtime.remove_pod_sandbox(&sb.id).await.unwrap();
    }
}

pub async fn unknown_ids_are_not_found(h: &Harness) {
    let id = ContainerId("no-such-container".into());
    assert!(matches!(
        h.runtime.container_status(&id).await,
        Err(RuntimeError::ContainerNotFound(_))
    ));
    assert!(matches!(
        h.runtime
            .create_container(&SandboxId("nope".into()), config(h, "x", &[]))
            .await,
        Err(RuntimeError::SandboxNotFound(_))
    ));
}

pub async fn stop_and_remove_are_idempotent(h: &Harness) {
    let rt = &h.runtime;
    let (st, _) = run_to_exit(h, "twice", config(h, "twice", &["exit", "0"])).await;
    rt.stop_container(&st.id, Duration::ZERO).await.unwrap();
    rt.remove_container(&st.id).await.unwrap();
}
