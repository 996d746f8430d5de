//! Kubelet benchmark, end to end through a real API server and the wasmtime runtime:
//!
//! - create-to-Running latency: API create → `Running` seen on a watch, for pods created one
//!   after another (p50/p99);
//! - a burst of pods created at once, until all are Running on the watch;
//! - density: resident memory the process gains per idle HTTP pod with all of them running;
//! - requests/s through one pod's HTTP front end (fresh instance per request);
//! - the node memory budget's bookkeeping: per growth and per instance (ns), and a command
//!   pod's start-to-exit through the runtime with the budget enforced against none set,
//!   alternating rounds in the same run.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p shoal-kubelet --bench pods`). Sizes:
//! SHOAL_BENCH_SEQUENTIAL (100), SHOAL_BENCH_BURST (1000), SHOAL_BENCH_HTTP_SECS (3).

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use shoal_kubelet::{Config, Kubelet};
use shoal_testkit::bench::{percentile, rss_kib};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, oneshot};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODE: &str = "bench-node";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn echo_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"nodeName": NODE, "automountServiceAccountToken": false, "containers": [{
            "name": "echo", "image": "shoal.local/http-echo:latest",
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080}],
        }]}
    }))
    .expect("static pod")
}

/// Pods waiting to be seen Running, by name.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

fn spawn_watch(pods: Api<Pod>, waiters: Waiters) {
    tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Some(e) = stream.next().await {
            let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = e else {
                continue;
            };
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if running
                && let Some(name) = p.metadata.name
                && let Some(tx) = waiters.lock().await.remove(&name)
            {
                let _ = tx.send(Instant::now());
            }
        }
    });
}

async fn create_and_wait(pods: &Api<Pod>, waiters: &Waiters, name: String) -> Duration {
    let (tx, rx) = oneshot::channel();
    waiters.lock().await.insert(name.clone(), tx);
    let t = Instant::now();
    pods.create(&PostParams::default(), &echo_pod(&name))
        .await
        .expect("pod created");
    let seen = rx.await.expect("watch keeps running");
    seen - t
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sequential = env("SHOAL_BENCH_SEQUENTIAL", 100);
    let burst = env("SHOAL_BENCH_BURST", 1000);
    let http_secs = env("SHOAL_BENCH_HTTP_SECS", 3) as u64;

    let tmp = tempfile::tempdir()?;
    // First, while the process is small, so freed memory does not hide what pods take.
    runtime_density(tmp.path(), burst).await?;
    budget_costs(tmp.path()).await?;
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let (addr, stop) = shoal_apiserver::serve_loopback(store, Default::default()).await?;
    let client = kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse()?))?;

    let runtime =
        shoal_runtime_wasm::WasmRuntime::new(&tmp.path().join("kubelet"), "127.96.0.0/16")?;
    for name in ["http-echo", "hello"] {
        let bytes = std::fs::read(shoal_testkit::guest(name))?;
        runtime
            .images()
            .import(&format!("shoal.local/{name}:latest"), &bytes)?;
    }
    let mut config = Config::new(NODE, &tmp.path().join("kubelet"));
    config.pod_cidr = "127.96.0.0/16".into();
    config.max_pods = (sequential + burst + 10) as u32;
    let kubelet = Kubelet::new(
        config,
        client.clone(),
        Arc::new(runtime),
        Default::default(),
    );
    tokio::spawn(kubelet.clone().run(stop.clone()));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let waiters: Waiters = Arc::default();
    spawn_watch(pods.clone(), waiters.clone());

    // Warm-up: the first pod compiles the component (cached on disk afterwards).
    let warm = create_and_wait(&pods, &waiters, "warm".into()).await;
    println!("first pod (compiles the component): {warm:?}");
    let rss_before = rss_kib();

    let mut lat = Vec::with_capacity(sequential);
    for i in 0..sequential {
        lat.push(create_and_wait(&pods, &waiters, format!("seq-{i}")).await);
    }
    lat.sort();
    println!(
        "create-to-Running, {sequential} sequential pods: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );

    let t = Instant::now();
    let mut all = Vec::with_capacity(burst);
    for i in 0..burst {
        let pods = pods.clone();
        let waiters = waiters.clone();
        all.push(tokio::spawn(async move {
            create_and_wait(&pods, &waiters, format!("burst-{i}")).await
        }));
    }
    let mut burst_lat = Vec::with_capacity(burst);
    for h in all {
        burst_lat.push(h.await?);
    }
    let burst_time = t.elapsed();
    burst_lat.sort();
    println!(
        "burst of {burst} pods: all Running after {burst_time:?} (per pod p50 {:?}, p99 {:?})",
        percentile(&burst_lat, 0.5),
        percentile(&burst_lat, 0.99)
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = 1 + sequential + burst;
    let rss_after = rss_kib();
    println!(
        "density: {running} idle HTTP pods running; process RSS {} MiB; {} KiB per pod (RSS gained / pods)",
        rss_after / 1024,
        (rss_after.saturating_sub(rss_before)) / (sequential + burst).max(1) as u64
    );

    // Requests/s through one pod's HTTP front end, against a native echo in the same run.
    let ip = pods
        .get("warm")
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .expect("warm pod has an IP");
    let native = native_echo().await?;
    let wasm_rate = load(
        &format!("http://{ip}:8080/bench"),
        http_secs,
        "one Wasm pod",
    )
    .await?;
    let native_rate = load(
        &format!("http://{native}/bench"),
        http_secs,
        "native hyper echo (baseline)",
    )
    .await?;
    println!(
        "Wasm pod / native: {:.2} of the native rate (fresh instance per request)",
        wasm_rate / native_rate
    );
    stop.cancel();
    Ok(())
}

/// The runtime alone: `n` idle HTTP pods started straight through `PodRuntime`, and the
/// resident memory they add, per pod (no API server or kubelet objects in the figure).
async fn runtime_density(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    use shoal_runtime::{ContainerConfig, PodRuntime, SandboxConfig};
    let rt = shoal_runtime_wasm::WasmRuntime::new(&dir.join("density"), "127.97.0.0/16")?;
    let bytes = std::fs::read(shoal_testkit::guest("http-echo"))?;
    rt.images().import("shoal.local/http-echo:latest", &bytes)?;
    let start = |i: usize| {
        let rt = &rt;
        async move {
            let pod_dir = dir.join(format!("density/pods/d-{i}"));
            let sb = rt
                .run_pod_sandbox(&SandboxConfig {
                    name: format!("d-{i}"),
                    namespace: "default".into(),
                    uid: format!("d-{i}"),
                    log_directory: pod_dir.clone(),
                    ..Default::default()
                })
                .await?;
            let id = rt
                .create_container(
                    &sb.id,
                    ContainerConfig {
                        name: "echo".into(),
                        image: "shoal.local/http-echo:latest".into(),
                        ports: vec![8080],
                        log_path: pod_dir.join("echo/0.log"),
                        ..Default::default()
                    },
                )
                .await?;
            rt.start_container(&id).await?;
            anyhow::Ok(())
        }
    };
    start(0).await?; // compiles the component once
    let before = rss_kib();
    for i in 1..=n {
        start(i).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib();
    println!(
        "runtime density: {n} more idle HTTP pods through PodRuntime alone: {} KiB per pod",
        after.saturating_sub(before) / n.max(1) as u64
    );
    Ok(())
}

/// What the node memory budget costs: the accounting per `memory.grow` and per instance, in
/// process; and a command pod's start to exit through the runtime with a budget enforced and
/// with none (alternating rounds).
async fn budget_costs(dir: &std::path::Path) -> anyhow::Result<()> {
    use shoal_runtime::memory::{ContainerMemory, MemoryBudget};
    use shoal_runtime::{ContainerConfig, PodRuntime, SandboxConfig};
    const N: u64 = 2_000_000;
    let node = MemoryBudget::new(Some(1 << 40));
    let container = ContainerMemory::new(None, node.clone());
    let t = Instant::now();
    for _ in 0..N {
        container
            .grow(std::hint::black_box(64 << 10))
            .expect("fits");
        container.release(std::hint::black_box(64 << 10));
    }
    let grow_ns = t.elapsed().as_nanos() as f64 / N as f64;
    let t = Instant::now();
    for _ in 0..N {
        container.charge(std::hint::black_box(32 << 10));
        container.release(std::hint::black_box(32 << 10));
    }
    let instance_ns = t.elapsed().as_nanos() as f64 / N as f64;
    println!(
        "memory budget bookkeeping: {grow_ns:.1} ns per memory.grow (charged and later released, to the container and the node), {instance_ns:.1} ns per instance made and dropped"
    );

    let rt = shoal_runtime_wasm::WasmRuntime::new(&dir.join("budget"), "127.98.0.0/16")?;
    let bytes = std::fs::read(shoal_testkit::guest("hello"))?;
    rt.images().import("shoal.local/hello:latest", &bytes)?;
    let run = |i: usize| {
        let rt = &rt;
        async move {
            let pod_dir = dir.join(format!("budget/pods/b-{i}"));
            let t = Instant::now();
            let sb = rt
                .run_pod_sandbox(&SandboxConfig {
                    name: format!("b-{i}"),
                    namespace: "default".into(),
                    uid: format!("b-{i}"),
                    log_directory: pod_dir.clone(),
                    ..Default::default()
                })
                .await?;
            let id = rt
                .create_container(
                    &sb.id,
                    ContainerConfig {
                        name: "hello".into(),
                        image: "shoal.local/hello:latest".into(),
                        log_path: pod_dir.join("hello/0.log"),
                        ..Default::default()
                    },
                )
                .await?;
            rt.start_container(&id).await?;
            rt.wait_container(&id).await?;
            let took = t.elapsed();
            rt.remove_pod_sandbox(&sb.id).await?;
            anyhow::Ok(took)
        }
    };
    run(0).await?; // compiles the component once
    let (mut enforced, mut unset) = (Vec::new(), Vec::new());
    for round in 0..10 {
        for (limit, out) in [(Some(16u64 << 30), &mut enforced), (None, &mut unset)] {
            rt.memory_budget().set_limit(limit);
            for i in 0..50 {
                out.push(run(1 + round * 100 + i + if limit.is_some() { 0 } else { 50 }).await?);
            }
        }
    }
    enforced.sort();
    unset.sort();
    println!(
        "command pod start to exit through the runtime (hello, 500 each, alternating): budget enforced p50 {:?} p99 {:?}; no budget p50 {:?} p99 {:?}",
        percentile(&enforced, 0.5),
        percentile(&enforced, 0.99),
        percentile(&unset, 0.5),
        percentile(&unset, 0.99)
    );
    Ok(())
}

/// A native HTTP/1.1 echo of the request line, the baseline for the Wasm front end.
async fn native_echo() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{} {} HTTP/1.1\n", req.method(), req.uri());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Requests/s against `url` from 16 keep-alive connections for `secs` seconds.
async fn load(url: &str, secs: u64, what: &str) -> anyhow::Result<f64> {
    let l = shoal_testkit::bench::http_load(url, None, 16, secs as f64).await;
    println!(
        "HTTP, {what}: {:.0} req/s over {secs}s with 16 connections (p50 {:?}, p99 {:?})",
        l.rate, l.p50, l.p99
    );
    Ok(l.rate)
}
