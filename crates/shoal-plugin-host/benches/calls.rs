//! Costs of the plugin host's calls, in process: an admission review with a fresh instance
//! (p50/p99), and for a scheduler plugin the per-cycle instance and the per-node filter and
//! score calls.
//!
//! Run with `cargo bench -p shoal-plugin-host --bench calls` (also in `cargo xtask bench`).

use serde_json::json;
use shoal_plugin_host::admission::{self, AdmissionModule, GroupVersionKind};
use shoal_plugin_host::scheduler::{Amounts, NodeView, PodView, SchedulerModule};
use shoal_plugin_host::{DEFAULT_MEMORY_LIMIT, Host};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e9 / n as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let host = Host::new(DEFAULT_MEMORY_LIMIT)?;

    let settings = r#"{"labels": ["team"]}"#;
    let bytes = std::fs::read(shoal_testkit::policy("require-labels"))?;
    let module = AdmissionModule::load(&host, &bytes, None, settings).await?;
    let mut req = admission::request(
        "CREATE",
        GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
        },
        settings,
    );
    req.object = Some(
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "labels": {"team": "a"}},
            "data": {"k": "v"}})
        .to_string(),
    );
    let timeout = Duration::from_secs(2);
    for _ in 0..500 {
        module.review(&req, false, timeout).await?;
    }
    let mut lat = Vec::new();
    for _ in 0..5000 {
        let t = Instant::now();
        let v = module.review(&req, false, timeout).await?;
        lat.push(t.elapsed());
        assert!(v.allowed);
    }
    lat.sort();
    println!(
        "admission review, require-labels, fresh instance per call: p50 {:.1} µs, p99 {:.1} µs (target p99 <= 200 µs)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    let s = r#"{"label": "shoal.dev/avoid"}"#;
    let bytes = std::fs::read(shoal_testkit::policy("avoid-nodes"))?;
    let avoid = SchedulerModule::load(&host, &bytes, None, s).await?;
    // 5,000 distinct nodes with the labels simulated nodes carry, read round-robin as the
    // scheduler does (so the host's reads are not all cache hits).
    let nodes: Vec<Arc<k8s_openapi::api::core::v1::Node>> = (0..5000)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": format!("sim-{i}"), "labels": {
                    "kubernetes.io/hostname": format!("sim-{i}"), "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "wasm32", "shoal.dev/simulated": "true",
                    "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
                    "shoal.dev/preference": "7"}}}))
                .expect("node"),
            )
        })
        .collect();
    let next = std::cell::Cell::new(0usize);
    let pod: Arc<k8s_openapi::api::core::v1::Pod> =
        Arc::new(serde_json::from_value(json!({"metadata": {"name": "p"}}))?);
    let view = || NodeView {
        node: {
            let i = next.get();
            next.set((i + 1) % nodes.len());
            nodes[i].clone()
        },
        allocatable: Amounts::default(),
        requested: Amounts::default(),
    };
    let cycle_ns = per_call(5000, || {
        let mut c = avoid.cycle(s, timeout).expect("cycle");
        c.set_pod(PodView {
            pod: pod.clone(),
            requests: Amounts::default(),
        });
    });
    let mut c = avoid.cycle(s, timeout)?;
    c.set_pod(PodView {
        pod: pod.clone(),
        requests: Amounts::default(),
    });
    const BATCH: usize = 64;
    let filter_ns = per_call(5_000, || {
        let v = c.filter((0..BATCH).map(|_| view())).expect("filter");
        assert_eq!(v.len(), BATCH);
    }) / BATCH as f64;
    let s2 = r#"{"label": "shoal.dev/preference"}"#;
    let bytes = std::fs::read(shoal_testkit::policy("prefer-nodes"))?;
    let prefer = SchedulerModule::load(&host, &bytes, None, s2).await?;
    let mut c = prefer.cycle(s2, timeout)?;
    c.set_pod(PodView {
        pod: pod.clone(),
        requests: Amounts::default(),
    });
    let score_ns = per_call(5_000, || {
        assert_eq!(c.score((0..BATCH).map(|_| view())).expect("score")[0], 7);
    }) / BATCH as f64;
    println!(
        "scheduler plugin: instance + init per cycle {:.1} µs; filter {:.0} ns per node, score {:.0} ns per node (batches of 64; each reads one label)",
        cycle_ns / 1e3,
        filter_ns,
        score_ns
    );
    Ok(())
}
