//! Pods as OCI containers (containerd, runc, CNI bridge) and as Wasm components on the same
//! real `shoal up` (release build), in one run:
//!
//! - pod create → Running (as a watch sees `status.phase`), p50/p99, for the same trivial
//!   workload (sleep for an hour): `busybox` as a container, the exerciser as a Wasm
//!   component; pods created one after another, kept running;
//! - memory per running pod: for Wasm pods, the growth of the `shoal` process's proportional
//!   set size (PSS) over SHOAL_BENCH_MEMORY_PODS more of them (100: a few pods' growth is lost
//!   in the allocator's noise); for containers, the PSS of every process containerd's shims
//!   run (shim, sandbox, container) plus containerd's own growth.
//!
//! Needs root and the packages `cargo xtask test` installs (it says so and stops otherwise).
//! Run with `cargo xtask bench` (or `cargo build --release -p shoal && cargo bench -p
//! shoal-e2e --bench containers`). Size: SHOAL_BENCH_PODS (20 of each kind).

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use shoal_runtime_cri::{containerd, oci};
use shoal_testkit::bench::{percentile, pss_kib};
use shoal_testkit::{Cluster, registry::Registry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// PSS of the containerd of `data_dir` and, separately, of its shims and everything they run.
fn containerd_pss(data_dir: &std::path::Path) -> (u64, u64) {
    let socket = data_dir
        .join("kubelet/containerd/containerd.sock")
        .display()
        .to_string();
    let config = data_dir
        .join("kubelet/containerd/config.toml")
        .display()
        .to_string();
    let (mut daemon, mut pods) = (0, 0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = cmdline(pid);
        if cmd.starts_with("containerd ") && cmd.contains(&config) {
            daemon += pss_kib(pid);
        } else if cmd.contains("containerd-shim") && cmd.contains(&socket) {
            let mut stack = vec![pid];
            while let Some(p) = stack.pop() {
                pods += pss_kib(p);
                stack.extend(containerd::children(p));
            }
        }
    }
    (daemon, pods)
}

fn pod(name: &str, image: &str, args: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "start"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            // Present after the warm-up: the start is measured, not the registry.
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                "args": serde_json::from_str::<serde_json::Value>(args).unwrap()}],
        },
    }))
    .unwrap()
}

/// When each pod was first seen Running.
type Running = Arc<Mutex<HashMap<String, Instant>>>;

fn main() -> anyhow::Result<()> {
    if let Err(e) = containerd::check() {
        println!("containers benchmark skipped: {e}");
        return Ok(());
    }
    let n = env("SHOAL_BENCH_PODS", 20);
    let registry = Registry::start()?;
    let rt = tokio::runtime::Runtime::new()?;
    let busybox = oci::Image::busybox(std::path::Path::new(containerd::BUSYBOX))?
        .cmd(&["sh"])
        .build();
    rt.block_on(shoal_wasm::oci::push_layer(
        &format!("{}/library/busybox:latest", registry.host),
        (busybox.layer.bytes, oci::LAYER),
        (busybox.config.bytes, oci::CONFIG),
    ))?;
    let c = Cluster::start_with(&[
        "--containers",
        "on",
        "--registry-mirror",
        &format!("docker.io=http://{}", registry.host),
        "--container-pod-cidr",
        &format!("198.18.{}.0/24", std::process::id() % 200 + 20),
        "--max-pods",
        "1000",
        "--memory-capacity",
        "16Gi",
    ])?;
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(c.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        anyhow::Ok(kube::Client::try_from(config)?)
    })?;
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "default");
    let running: Running = Arc::default();
    let watch = {
        let (api, running) = (api.clone(), running.clone());
        rt.spawn(async move {
            let stream = watcher(api, watcher::Config::default().labels("bench=start"));
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(p)) = ev
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                {
                    let name = p.metadata.name.unwrap_or_default();
                    let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
                    r.entry(name).or_insert_with(Instant::now);
                }
            }
        })
    };
    let shoal = c.pid().expect("shoal runs");
    let kinds = [
        (
            "wasm",
            "shoal.local/exerciser:latest",
            r#"["sleep", "3600"]"#,
        ),
        ("container", "busybox", r#"["sleep", "3600"]"#),
    ];
    // Warm up: the image pulled and each path taken once.
    for (kind, image, args) in kinds {
        let name = format!("warm-{kind}");
        start(&rt, &api, &running, &pod(&name, image, args))?;
    }
    let before_shoal = pss_kib(shoal);
    let (before_daemon, before_pods) = containerd_pss(&c.data_dir);
    let mut times: HashMap<&str, Vec<Duration>> = HashMap::new();
    let mut mem = HashMap::new();
    for (kind, image, args) in kinds {
        for i in 0..n {
            let took = start(
                &rt,
                &api,
                &running,
                &pod(&format!("{kind}-{i}"), image, args),
            )?;
            times.entry(kind).or_default().push(took);
        }
        // Let the sampling settle before reading memory.
        std::thread::sleep(Duration::from_secs(2));
        match kind {
            "wasm" => {
                let more = env("SHOAL_BENCH_MEMORY_PODS", 100);
                for i in 0..more {
                    start(
                        &rt,
                        &api,
                        &running,
                        &pod(&format!("wasm-mem-{i}"), image, args),
                    )?;
                }
                std::thread::sleep(Duration::from_secs(2));
                let pods = (n + more) as u64;
                mem.insert(kind, pss_kib(shoal).saturating_sub(before_shoal) / pods);
            }
            _ => {
                let (daemon, pods) = containerd_pss(&c.data_dir);
                let grown = daemon.saturating_sub(before_daemon) + pods.saturating_sub(before_pods);
                mem.insert(kind, grown / n as u64);
            }
        }
    }
    println!("pod create → Running, {n} pods of each kind one after another, the same run:");
    let mut p50 = HashMap::new();
    for (kind, _, _) in kinds {
        let t = times.get_mut(kind).expect("measured");
        t.sort();
        let (a, b) = (percentile(t, 0.5), percentile(t, 0.99));
        p50.insert(kind, a);
        println!(
            "  {kind:>9}: p50 {:.1} ms, p99 {:.1} ms; memory per running pod {} KiB",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            mem[kind]
        );
    }
    println!(
        "  container/wasm p50 ratio: {:.0}x",
        p50["container"].as_secs_f64() / p50["wasm"].as_secs_f64()
    );
    rt.block_on(async {
        let _ = api
            .delete_collection(
                &Default::default(),
                &kube::api::ListParams::default().labels("bench=start"),
            )
            .await;
    });
    watch.abort();
    drop(rt);
    drop(c);
    Ok(())
}

/// Creates `pod` and waits until the watch has seen it Running; the time that took.
fn start(
    rt: &tokio::runtime::Runtime,
    api: &kube::Api<Pod>,
    running: &Running,
    pod: &Pod,
) -> anyhow::Result<Duration> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let t = Instant::now();
    rt.block_on(api.create(&Default::default(), pod))?;
    let deadline = t + Duration::from_secs(60);
    loop {
        if let Some(at) = running.lock().unwrap_or_else(|p| p.into_inner()).get(&name) {
            return Ok(at.duration_since(t));
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} not Running within 60 s");
        std::thread::sleep(Duration::from_micros(200));
    }
}
