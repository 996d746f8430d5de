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
//! - the same with required pod anti-affinity (hostname), algorithm only and end to end;
//! - Wasm plugins: a filter (`policies/scheduler/avoid-nodes`) and a scorer
//!   (`prefer-nodes`) against the same logic built in, algorithm only (alternating runs,
//!   medians, ratio), then end to end: a scheduler with the logic built in against one
//!   loading the Wasm plugins from SchedulerPlugin objects.
//!
//! Run with `cargo xtask bench` or `cargo bench -p shoal-scheduler --bench scheduling`. Sizes:
//! SHOAL_BENCH_NODES (5000), SHOAL_BENCH_PODS (10000), SHOAL_BENCH_ANTI_PODS (1000);
//! SHOAL_BENCH_ALGORITHM_ONLY=1 stops after the in-process figures.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use shoal_kubelet::sim::{self, SimConfig};
use shoal_plugin_host::scheduler::SchedulerModule;
use shoal_scheduler::Scheduler;
use shoal_scheduler::framework::{CycleState, Framework, NodeInfo, Plugin};
use shoal_scheduler::plugins;
use shoal_scheduler::wasm::WasmPlugin;
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
    algorithm_with(nodes, n, anti, plugins::defaults())
}

/// Schedules `n` pods over `nodes` with `plugins`, in process.
fn algorithm_with(nodes: &[Node], n: usize, anti: bool, plugins: Vec<Box<dyn Plugin>>) -> f64 {
    let fw = Framework::new(plugins);
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
    let (addr, stop) = shoal_apiserver::serve_loopback(store, Default::default()).await?;
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

    let wasm_pods = env("SHOAL_BENCH_WASM_PODS", 2000);
    let (native, wasm) = wasm_versus_native(&nodes, wasm_pods).await;
    println!(
        "algorithm only, filter+score plugin: {wasm_pods} pods: built in {native:.0} pods/s, Wasm {wasm:.0} pods/s (median of 3): Wasm at {:.2}x the built-in time (target within 2x)",
        native / wasm
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
    tokio::spawn(
        Scheduler::new(client.clone(), plugins::defaults(), Default::default())
            .run(sched_stop.clone()),
    );
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
    delete_all(&pods, &bound).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    bound.count.store(0, Ordering::SeqCst);

    // End to end with the filter and scorer: built in first (a scheduler with the native
    // plugins), then as Wasm (a scheduler with the defaults, loading SchedulerPlugins).
    label_nodes(&client, node_count).await;
    sched_stop.cancel();
    let with_native = |client: &kube::Client| {
        let mut p = plugins::defaults();
        p.push(Box::new(NativeAvoid) as Box<dyn Plugin>);
        p.push(Box::new(NativePrefer));
        Scheduler::new(client.clone(), p, Default::default())
    };
    let native_stop = CancellationToken::new();
    tokio::spawn(with_native(&client).run(native_stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    create_all(&pods, "native", pod_count, false).await;
    wait_bound(&bound, pod_count).await;
    let e2e_native = pod_count as f64 / t.elapsed().as_secs_f64();
    println!(
        "end to end with the filter+score logic built in: {pod_count} pods bound in {:.2}s: {e2e_native:.0} pods/s",
        t.elapsed().as_secs_f64()
    );
    native_stop.cancel();
    delete_all(&pods, &bound).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    bound.count.store(0, Ordering::SeqCst);

    let sched_stop = CancellationToken::new();
    let config = shoal_scheduler::Config {
        plugins: Some(shoal_scheduler::wasm::PluginConfig {
            host: shoal_plugin_host::Host::new(shoal_plugin_host::DEFAULT_MEMORY_LIMIT)?,
            sources: shoal_plugin_host::source::SourcePolicy {
                plugin_dirs: vec![shoal_testkit::guests_dir()],
                allow_loopback: false,
            },
        }),
        supervisor: Default::default(),
    };
    tokio::spawn(
        Scheduler::new(client.clone(), plugins::defaults(), config).run(sched_stop.clone()),
    );
    // The scheduler loads the plugins (and reports them Active) before the pods come.
    install_wasm_plugins(&client).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    create_all(&pods, "wasm", pod_count, false).await;
    wait_bound(&bound, pod_count).await;
    let e2e_wasm = pod_count as f64 / t.elapsed().as_secs_f64();
    let on_avoided = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
        .filter_map(|n| n.strip_prefix("sim-")?.parse::<usize>().ok())
        .filter(|i| i % 10 == 3)
        .count();
    assert_eq!(on_avoided, 0, "the Wasm filter was not in force");
    println!(
        "end to end with the filter+score logic as Wasm plugins: {pod_count} pods bound in {:.2}s: {e2e_wasm:.0} pods/s: Wasm at {:.2}x the built-in time (target within 2x; none on avoided nodes)",
        t.elapsed().as_secs_f64(),
        e2e_native / e2e_wasm
    );
    sched_stop.cancel();
    stop.cancel();
    Ok(())
}

/// The label the avoid filter reads, and the one the scorer reads.
const AVOID: &str = "shoal.dev/avoid";
const PREFER: &str = "shoal.dev/preference";

/// Every 10th node avoided, preferences 0-9.
fn label(i: usize) -> [(&'static str, String); 2] {
    [
        (AVOID, if i % 10 == 3 { "true" } else { "" }.to_owned()),
        (PREFER, ((i * 7) % 10).to_string()),
    ]
}

/// The avoid-nodes plugin's logic, built in.
struct NativeAvoid;
impl Plugin for NativeAvoid {
    fn name(&self) -> &str {
        "native-avoid"
    }
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        let labels = node.node.metadata.labels.as_ref();
        if labels.and_then(|l| l.get(AVOID)).is_none() {
            return Ok(());
        }
        let tolerated = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&format!("{AVOID}-tolerated")))
            .is_some_and(|v| v == "true");
        if tolerated {
            Ok(())
        } else {
            Err(format!("node(s) had label {AVOID}"))
        }
    }
}

/// The prefer-nodes plugin's logic, built in.
struct NativePrefer;
impl Plugin for NativePrefer {
    fn name(&self) -> &str {
        "native-prefer"
    }
    fn score(&self, _: &CycleState, _: &Pod, node: &NodeInfo) -> Option<i64> {
        let v = node.node.metadata.labels.as_ref()?.get(PREFER)?;
        Some(v.parse::<i64>().unwrap_or(0).max(0))
    }
    fn normalize(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) {
        shoal_scheduler::framework::normalize_scores(scores, false);
    }
}

fn wasm_spec(settings: serde_json::Value, point: &str) -> shoal_api::policy::SchedulerPluginSpec {
    shoal_api::policy::SchedulerPluginSpec {
        module: String::new(),
        settings: Some(settings),
        extension_points: vec![point.to_owned()],
        ..Default::default()
    }
}

/// Time spent inside the Wasm plugins' extension points, in nanoseconds.
static IN_WASM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The same, per extension point: pre-filter (instance), filter, score, normalize.
static BY_POINT: [std::sync::atomic::AtomicU64; 4] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 4];

/// Delegates to a plugin, adding the time its calls take to [`IN_WASM`].
struct Timed(Box<dyn Plugin>);

fn timed<R>(point: usize, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    let ns = t.elapsed().as_nanos() as u64;
    IN_WASM.fetch_add(ns, Ordering::Relaxed);
    BY_POINT[point].fetch_add(ns, Ordering::Relaxed);
    r
}

impl Plugin for Timed {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn batched(&self) -> bool {
        self.0.batched()
    }
    fn pre_filter(&self, s: &mut CycleState, p: &Pod, n: &[NodeInfo]) -> Result<(), String> {
        timed(0, || self.0.pre_filter(s, p, n))
    }
    fn filter_many(&self, s: &CycleState, p: &Pod, n: &[&NodeInfo]) -> Vec<Result<(), String>> {
        timed(1, || self.0.filter_many(s, p, n))
    }
    fn score_many(&self, s: &CycleState, p: &Pod, n: &[&NodeInfo]) -> Vec<Option<i64>> {
        timed(2, || self.0.score_many(s, p, n))
    }
    fn normalize(&self, s: &CycleState, p: &Pod, scores: &mut [i64]) {
        timed(3, || self.0.normalize(s, p, scores))
    }
    fn weight(&self) -> i64 {
        self.0.weight()
    }
}

/// The Wasm filter (`avoid-nodes`) and scorer (`prefer-nodes`), loaded once.
async fn wasm_modules(
    host: &shoal_plugin_host::Host,
) -> Vec<(
    &'static str,
    shoal_api::policy::SchedulerPluginSpec,
    SchedulerModule,
)> {
    let mut out = Vec::new();
    for (name, settings, point) in [
        ("avoid-nodes", serde_json::json!({"label": AVOID}), "Filter"),
        (
            "prefer-nodes",
            serde_json::json!({"label": PREFER}),
            "Score",
        ),
    ] {
        let bytes = std::fs::read(shoal_testkit::policy(name)).expect("plugin built");
        let spec = wasm_spec(settings, point);
        let settings = spec
            .settings
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let module = SchedulerModule::load(host, &bytes, None, &settings)
            .await
            .expect("plugin loads");
        out.push((name, spec, module));
    }
    out
}

fn wasm_plugins(
    modules: &[(
        &'static str,
        shoal_api::policy::SchedulerPluginSpec,
        SchedulerModule,
    )],
) -> Vec<Box<dyn Plugin>> {
    modules
        .iter()
        .map(|(name, spec, module)| {
            Box::new(Timed(Box::new(WasmPlugin::new(name, spec, module.clone()))))
                as Box<dyn Plugin>
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Wasm filter+score against the same logic built in, in process: alternating runs, medians.
/// Plugin calls block, so the runs are made where blocking is allowed.
async fn wasm_versus_native(nodes: &[Node], n: usize) -> (f64, f64) {
    let mut labelled = nodes.to_vec();
    for (i, node) in labelled.iter_mut().enumerate() {
        let labels = node.metadata.labels.get_or_insert_default();
        for (k, v) in label(i) {
            if !v.is_empty() {
                labels.insert(k.to_owned(), v);
            }
        }
    }
    let host = shoal_plugin_host::Host::new(shoal_plugin_host::DEFAULT_MEMORY_LIMIT)
        .expect("plugin engine");
    let modules = wasm_modules(&host).await;
    let (mut native, mut wasm) = (Vec::new(), Vec::new());
    tokio::task::block_in_place(|| {
        for _ in 0..3 {
            let mut with_native = plugins::defaults();
            with_native.push(Box::new(NativeAvoid));
            with_native.push(Box::new(NativePrefer));
            native.push(algorithm_with(&labelled, n, false, with_native));
            let mut with_wasm = plugins::defaults();
            with_wasm.extend(wasm_plugins(&modules));
            wasm.push(algorithm_with(&labelled, n, false, with_wasm));
        }
    });
    let in_wasm = IN_WASM.load(Ordering::Relaxed) as f64 / 1e3 / (3 * n) as f64;
    let per = |i: usize| BY_POINT[i].load(Ordering::Relaxed) as f64 / 1e3 / (3 * n) as f64;
    println!(
        "(of which inside the Wasm plugins: {in_wasm:.0} µs per pod: instance {:.0}, filter {:.0}, score {:.0}, normalize {:.0})",
        per(0),
        per(1),
        per(2),
        per(3)
    );
    // What the circuit breaker adds: each plugin's cycle is one call on its health (admit,
    // then record the outcome), measured alone.
    let health = modules[0].2.health().clone();
    let calls = 2_000_000;
    let t = Instant::now();
    for _ in 0..calls {
        drop(std::hint::black_box(health.begin().expect("not benched")));
    }
    let breaker_ns = t.elapsed().as_nanos() as f64 / calls as f64;
    println!(
        "circuit breaker bookkeeping: {breaker_ns:.1} ns per plugin per cycle, {:.1} ns per pod for the two plugins ({:.4}% of the {in_wasm:.0} µs inside them)",
        breaker_ns * 2.0,
        breaker_ns * 2.0 / (in_wasm * 1e3) * 100.0
    );
    (median(native), median(wasm))
}

/// Labels the registered nodes as [`label`] does, through the API.
async fn label_nodes(client: &kube::Client, count: usize) {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..count)
        .for_each_concurrent(64, |i| {
            let api = api.clone();
            async move {
                let mut labels = serde_json::Map::new();
                for (k, v) in label(i) {
                    if !v.is_empty() {
                        labels.insert(k.into(), v.into());
                    }
                }
                let patch = serde_json::json!({"metadata": {"labels": labels}});
                api.patch(
                    &format!("sim-{i}"),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .expect("node labelled");
            }
        })
        .await;
}

/// Creates the two SchedulerPlugins and waits until both are Active.
async fn install_wasm_plugins(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<shoal_api::policy::SchedulerPlugin> = Api::all(client.clone());
    for (name, settings, point) in [
        ("avoid-nodes", serde_json::json!({"label": AVOID}), "Filter"),
        (
            "prefer-nodes",
            serde_json::json!({"label": PREFER}),
            "Score",
        ),
    ] {
        let mut spec = wasm_spec(settings, point);
        spec.module = format!("file://{}", shoal_testkit::policy(name).display());
        let obj = shoal_api::policy::SchedulerPlugin {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec,
            ..Default::default()
        };
        api.create(&PostParams::default(), &obj).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = api.list(&ListParams::default()).await?;
        let active = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Active"))
            .count();
        if active == 2 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "SchedulerPlugins never became Active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
