//! Scheduler benchmark in the spirit of kube-scheduler's scheduler_perf
//! (SchedulingBasic / SchedulingPodAntiAffinity): simulated nodes registered on a real API
//! server (in process, memory store, HTTP on loopback), pods created through it, the real
//! scheduler binding them through `pods/binding`.
//!
//! Figures:
//! - algorithm only: `Framework::schedule` over the node infos, no API, pods/s;
//! - end to end: pods created by 32 concurrent clients while the scheduler runs, pods/s from
//!   the first create to the last binding seen on a watch;
//! - drain: the scheduler started on pods already created (the scheduling and binding rate
//!   alone, what scheduler_perf samples);
//! - the same with required pod anti-affinity (hostname), algorithm only and end to end.
//!
//! Run with `cargo xtask bench` or `cargo bench -p shoal-scheduler --bench scheduling`. Sizes:
//! SHOAL_BENCH_NODES (5000), SHOAL_BENCH_PODS (10000), SHOAL_BENCH_ANTI_PODS (1000);
//! SHOAL_BENCH_ALGORITHM_ONLY=1 stops after the in-process figures.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use shoal_kubelet::sim::{self, SimConfig};
use shoal_scheduler::Scheduler;
use shoal_scheduler::framework::{Framework, NodeInfo};
use shoal_scheduler::plugins;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(name: &str, anti: bool) -> Pod {
    let mut spec = serde_json::json!({"containers": [{
        "name": "c", "image": "shoal.local/hello:latest",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
    }]});
    let mut labels = serde_json::json!({"app": "bench"});
    if anti {
        labels = serde_json::json!({"color": "green"});
        spec["affinity"] = serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"color": "green"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec,
    }))
    .expect("static pod")
}

/// Counts pods seen bound on a watch; `target` reached wakes `done`.
struct Bound {
    count: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
}

fn watch_bound(pods: Api<Pod>, bound: Arc<Bound>) {
    tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Some(e) = stream.next().await {
            let p = match e {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(watcher::Event::Init) => {
                    seen.clear();
                    continue;
                }
                _ => continue,
            };
            let on_node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if on_node && seen.insert(p.metadata.uid.clone().unwrap_or_default()) {
                let n = bound.count.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= bound.target.load(Ordering::SeqCst) {
                    bound.done.notify_one();
                }
            }
        }
    });
}

async fn wait_bound(bound: &Bound, target: usize) {
    bound.target.store(target, Ordering::SeqCst);
    let give_up = Instant::now() + Duration::from_secs(120);
    while bound.count.load(Ordering::SeqCst) < target {
        let _ = tokio::time::timeout(Duration::from_millis(200), bound.done.notified()).await;
        if Instant::now() > give_up {
            eprintln!(
                "only {} of {target} pods were bound after 120 s",
                bound.count.load(Ordering::SeqCst)
            );
            std::process::exit(1);
        }
    }
}

async fn create_all(pods: &Api<Pod>, prefix: &str, n: usize, anti: bool) {
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let pods = pods.clone();
            async move {
                let p = pod(&format!("{prefix}-{i}"), anti);
                pods.create(&PostParams::default(), &p)
                    .await
                    .expect("pod created");
            }
        })
        .await;
}

async fn delete_all(pods: &Api<Pod>, bound: &Bound) {
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    bound.count.store(0, Ordering::SeqCst);
}

fn node_infos(nodes: &[Node]) -> Vec<NodeInfo> {
    nodes.iter().map(|n| NodeInfo::new(n.clone())).collect()
}

/// Schedules `n` pods over `nodes` with the default plugins, in process.
fn algorithm_only(nodes: &[Node], n: usize, anti: bool) -> f64 {
    let fw = Framework::new(plugins::defaults());
    let mut infos = node_infos(nodes);
    let t = Instant::now();
    for i in 0..n {
        let mut p = pod(&format!("algo-{i}"), anti);
        match fw.schedule(&p, &infos) {
            Ok(d) => {
                if let Some(s) = p.spec.as_mut() {
                    s.node_name = Some(infos[d.node].name().to_owned());
                }
                infos[d.node].add(p);
            }
            Err(e) => panic!("pod {i} unschedulable: {e}"),
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let node_count = env("SHOAL_BENCH_NODES", 5000);
    let pod_count = env("SHOAL_BENCH_PODS", 10_000);
    let anti_count = env("SHOAL_BENCH_ANTI_PODS", 1000).min(node_count);

    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let (addr, stop) = shoal_apiserver::serve_loopback(store).await?;
    let client = kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse()?))?;

    let sim = SimConfig {
        count: node_count,
        run_pods: false,
        parallel: 64,
        ..SimConfig::default()
    };
    let t = Instant::now();
    sim::register(&client, &sim).await?;
    println!(
        "{node_count} simulated nodes registered in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let nodes: Vec<Node> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;

    let rate = algorithm_only(&nodes, pod_count, false);
    println!("algorithm only: {pod_count} pods over {node_count} nodes: {rate:.0} pods/s");
    let anti_rate = algorithm_only(&nodes, anti_count, true);
    println!(
        "algorithm only, required pod anti-affinity: {anti_count} pods: {anti_rate:.0} pods/s"
    );

    if std::env::var_os("SHOAL_BENCH_ALGORITHM_ONLY").is_some() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bound = Arc::new(Bound {
        count: AtomicUsize::new(0),
        target: AtomicUsize::new(usize::MAX),
        done: Notify::new(),
    });
    watch_bound(pods.clone(), bound.clone());

    // Drain: pods exist first, then the scheduler starts.
    let t = Instant::now();
    create_all(&pods, "drain", pod_count, false).await;
    println!(
        "(creating {pod_count} pods alone: {:.0} pods/s)",
        pod_count as f64 / t.elapsed().as_secs_f64()
    );
    let sched_stop = CancellationToken::new();
    let t = Instant::now();
    tokio::spawn(Scheduler::new(client.clone(), plugins::defaults()).run(sched_stop.clone()));
    wait_bound(&bound, pod_count).await;
    let drain = pod_count as f64 / t.elapsed().as_secs_f64();
    println!(
        "drain: {pod_count} pending pods scheduled and bound in {:.2}s: {drain:.0} pods/s",
        t.elapsed().as_secs_f64()
    );
    delete_all(&pods, &bound).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    bound.count.store(0, Ordering::SeqCst);

    // End to end: created while the scheduler runs.
    let t = Instant::now();
    create_all(&pods, "e2e", pod_count, false).await;
    let created = t.elapsed();
    wait_bound(&bound, pod_count).await;
    let e2e = pod_count as f64 / t.elapsed().as_secs_f64();
    println!(
        "end to end: {pod_count} pods created ({:.2}s) and bound in {:.2}s: {e2e:.0} pods/s (target 1500; kube-scheduler CI floor 680)",
        created.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    delete_all(&pods, &bound).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    bound.count.store(0, Ordering::SeqCst);

    let t = Instant::now();
    create_all(&pods, "anti", anti_count, true).await;
    wait_bound(&bound, anti_count).await;
    let anti_e2e = anti_count as f64 / t.elapsed().as_secs_f64();
    println!(
        "end to end, required pod anti-affinity: {anti_count} pods bound in {:.2}s: {anti_e2e:.0} pods/s",
        t.elapsed().as_secs_f64()
    );
    sched_stop.cancel();
    stop.cancel();
    Ok(())
}
