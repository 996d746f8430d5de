//! Admission latency added by one Wasm policy: ConfigMap creates through the API server (memory
//! store, plain HTTP on loopback, one client), alternating between objects the policy's
//! objectSelector matches and objects it does not, so both are measured in the same run. The
//! policy is `policies/admission/require-labels` (fresh instance per call).
//!
//! Run with `cargo bench -p shoal-apiserver --bench admission` (also in `cargo xtask bench`).
//! SHOAL_BENCH_ADMISSIONS sets how many creates of each kind (default 3000).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    body: &Value,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid request");
    let resp = client.request(req).await.expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("SHOAL_BENCH_ADMISSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let store = std::sync::Arc::new(shoal_store::memory::MemoryStore::new());
    let options = shoal_apiserver::Options {
        plugins: Some(shoal_apiserver::PluginOptions {
            host: shoal_plugin_host::Host::new(shoal_plugin_host::DEFAULT_MEMORY_LIMIT)?,
            sources: shoal_plugin_host::source::SourcePolicy {
                plugin_dirs: vec![shoal_testkit::guests_dir()],
                allow_loopback: false,
            },
        }),
        ..Default::default()
    };
    let (addr, stop) = shoal_apiserver::serve_loopback(store, options).await?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{addr}");

    let policy = json!({"apiVersion": "policy.shoal.dev/v1", "kind": "ClusterAdmissionPolicy",
        "metadata": {"name": "needs-team"},
        "spec": {"module": format!("file://{}", shoal_testkit::policy("require-labels").display()),
            "settings": {"labels": ["team"]},
            "objectSelector": {"matchLabels": {"bench": "policy"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "resources": ["configmaps"]}]}});
    let url = format!("{base}/apis/policy.shoal.dev/v1/clusteradmissionpolicies");
    let (code, body) = send(&client, "POST", &url, &policy).await;
    anyhow::ensure!(code == 201, "policy not created: {body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, p) = send(&client, "GET", &format!("{url}/needs-team"), &Value::Null).await;
        if p.pointer("/status/phase").and_then(Value::as_str) == Some("Active") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "policy never became Active: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cms = format!("{base}/api/v1/namespaces/default/configmaps");
    let create = |i: usize, with_policy: bool| {
        let mut labels = json!({"team": "a"});
        if with_policy {
            labels["bench"] = json!("policy");
        }
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "labels": labels}, "data": {"k": "v"}})
    };
    for i in 0..400 {
        let (code, _) = send(&client, "POST", &cms, &create(i, i % 2 == 1)).await;
        anyhow::ensure!(code == 201, "warm-up create failed");
    }
    // A denial proves the policy is in force.
    let mut denied = create(0, true);
    denied["metadata"]["labels"] = json!({"bench": "policy"});
    denied["metadata"]["name"] = json!("denied");
    let (code, _) = send(&client, "POST", &cms, &denied).await;
    anyhow::ensure!(code == 403, "the policy did not deny (HTTP {code})");

    let (mut with, mut without) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..2 * n {
        let with_policy = i % 2 == 1;
        let body = create(1000 + i, with_policy);
        let t = Instant::now();
        let (code, _) = send(&client, "POST", &cms, &body).await;
        let took = t.elapsed();
        anyhow::ensure!(code == 201, "create failed (HTTP {code})");
        if with_policy {
            with.push(took)
        } else {
            without.push(took)
        }
    }
    with.sort();
    without.sort();
    println!(
        "ConfigMap create without a policy: p50 {:.0} µs, p99 {:.0} µs; with one Wasm policy: p50 {:.0} µs, p99 {:.0} µs",
        pct(&without, 0.5),
        pct(&without, 0.99),
        pct(&with, 0.5),
        pct(&with, 0.99)
    );
    println!(
        "admission latency added by one Wasm policy ({n} creates each, alternating): p50 {:.0} µs, p99 {:.0} µs (target p99 <= 200 µs)",
        pct(&with, 0.5) - pct(&without, 0.5),
        pct(&with, 0.99) - pct(&without, 0.99)
    );
    stop.cancel();
    Ok(())
}
