//! Streaming benchmark, end to end through a real API server, the kubelet's HTTPS API and the
//! wasmtime runtime, all in this process on loopback:
//!
//! - exec round trip: a WebSocket `v5.channel.k8s.io` exec of a command that prints one line,
//!   from the upgrade request to the closing `Status` (p50/p99), beside the same command run by
//!   the runtime directly (`exec_sync`: the instantiation and the guest, no streaming);
//! - port-forward with the real `kubectl port-forward` (SPDY tunnelled in WebSocket, and SPDY):
//!   throughput downloading a large body and the rate of requests on fresh connections, against
//!   the same pod's IP directly in the same run.
//!
//! - the cost of metrics collection with SHOAL_BENCH_METRICS_PODS (1,000) idle pods on the node:
//!   the kubelet's Summary API, `metrics.k8s.io`'s pod list through the API server (each call
//!   past its cache, so every kubelet summary is fetched again), the Prometheus `/metrics`
//!   rendering, and the kubelet's CPU sampler (its CPU time per sample).
//!
//! Run with `cargo xtask bench` (or `cargo bench -p shoal-kubelet --bench streaming`). Sizes:
//! SHOAL_BENCH_EXECS (300), SHOAL_BENCH_PF_MIB (256), SHOAL_BENCH_PF_REQUESTS (500),
//! SHOAL_BENCH_METRICS_PODS (1000).

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use shoal_kubelet::{Config, Kubelet};
use shoal_runtime::PodRuntime;
use shoal_testkit::bench::percentile;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODE: &str = "bench-node";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(name: &str, image: &str, port: Option<u16>) -> Pod {
    let mut c = serde_json::json!({"name": "main", "image": image});
    if let Some(p) = port {
        c["ports"] = serde_json::json!([{"containerPort": p}]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": NODE, "automountServiceAccountToken": false, "containers": [c]}
    }))
    .expect("static pod")
}

/// One exec over WebSocket: returns what came on stdout once the Status has been read.
async fn ws_exec(api: SocketAddr) -> anyhow::Result<String> {
    let url = format!(
        "ws://{api}/api/v1/namespaces/default/pods/ex/exec?command=print&command=one-line&stdout=true&stderr=true"
    );
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut out = String::new();
    while let Some(m) = ws.next().await {
        match m? {
            Message::Binary(b) if b.first() == Some(&1) => {
                out.push_str(&String::from_utf8_lossy(&b[1..]))
            }
            Message::Binary(b) if b.first() == Some(&3) => {
                anyhow::ensure!(
                    String::from_utf8_lossy(&b[1..]).contains("Success"),
                    "exec failed"
                );
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(out)
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label}: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

/// GET http://addr/path on a fresh connection (`Connection: close`); the bytes after the head
/// (the body, with its chunk framing if chunked).
fn get(addr: &str, path: &str) -> std::io::Result<usize> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(got);
        }
        got += n;
    }
}

/// Throughput (MiB/s) of one download of `mib` MiB, and requests/s and p50/p99 of `n` small
/// requests each on a fresh connection.
fn http_figures(label: &str, addr: &str, mib: usize, n: usize) {
    let t = Instant::now();
    let got = get(addr, &format!("/bytes/{}", mib << 20)).expect("download");
    assert!(got >= mib << 20, "{label}: short download ({got} bytes)");
    let mibs = mib as f64 / t.elapsed().as_secs_f64();
    let mut samples = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let one = Instant::now();
        get(addr, "/small").expect("request");
        samples.push(one.elapsed());
    }
    let rps = n as f64 / t.elapsed().as_secs_f64();
    samples.sort();
    println!(
        "{label}: {mibs:.0} MiB/s, {rps:.0} requests/s (fresh connections), p50 {:.2} ms, p99 {:.2} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

/// Starts `kubectl port-forward` to the web pod and returns it with its local address.
fn port_forward(kubeconfig: &std::path::Path, websockets: bool) -> (std::process::Child, String) {
    let mut child = std::process::Command::new("kubectl")
        .args(["port-forward", "pod/web", ":8080", "--address=127.0.0.1"])
        .env("KUBECONFIG", kubeconfig)
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl is installed");
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("Forwarding from 127.0.0.1:") {
                let _ = tx.send(line.split_whitespace().nth(2).unwrap_or("").to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("kubectl port-forward starts");
    (child, addr)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let execs = env("SHOAL_BENCH_EXECS", 300);
    let mib = env("SHOAL_BENCH_PF_MIB", 256);
    let requests = env("SHOAL_BENCH_PF_REQUESTS", 500);

    let tmp = tempfile::tempdir()?;
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let (api, stop) = shoal_apiserver::serve_loopback(store, Default::default()).await?;
    let client = kube::Client::try_from(kube::Config::new(format!("http://{api}").parse()?))?;
    let runtime = Arc::new(shoal_runtime_wasm::WasmRuntime::new(
        &tmp.path().join("kubelet"),
        "127.97.0.0/16",
    )?);
    for name in ["http-echo", "exerciser", "toolbox"] {
        let bytes = std::fs::read(shoal_testkit::guest(name))?;
        runtime
            .images()
            .import(&format!("shoal.local/{name}:latest"), &bytes)?;
    }
    let mut config = Config::new(NODE, &tmp.path().join("kubelet"));
    config.pod_cidr = "127.97.0.0/16".into();
    config.max_pods = 1200;
    let listener = tokio::net::TcpListener::bind((config.address, 0)).await?;
    config.port = listener.local_addr()?.port();
    let tls = shoal_kubelet::server::self_signed_tls(&[config.address.to_string()])?;
    let kubelet = Kubelet::new(config, client.clone(), runtime.clone(), Default::default());
    let app = shoal_kubelet::server::router(kubelet.clone(), shoal_kubelet::server::Auth::Open);
    tokio::spawn(shoal_net::serve(listener, app, Some(tls), stop.clone()));
    tokio::spawn(kubelet.clone().run(stop.clone()));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("ex", "shoal.local/exerciser:latest", None),
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &pod("web", "shoal.local/http-echo:latest", Some(8080)),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ip, ex_id) = loop {
        let web = pods.get("web").await?;
        let ex = pods.get("ex").await?;
        let running =
            |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if running(&web) && running(&ex) {
            let ip = web.status.and_then(|s| s.pod_ip).expect("a pod IP");
            let id = ex
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next())
                .and_then(|c| c.container_id)
                .expect("a container id");
            break (ip, id);
        }
        anyhow::ensure!(Instant::now() < deadline, "pods did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Exec round trip, against the runtime's own exec in the same run.
    assert_eq!(ws_exec(api).await?, "one-line\n");
    let id = shoal_runtime::ContainerId(ex_id.rsplit("://").next().unwrap_or(&ex_id).to_owned());
    let cmd: Vec<String> = vec!["print".into(), "one-line".into()];
    let mut direct = Vec::with_capacity(execs);
    let mut streamed = Vec::with_capacity(execs);
    for _ in 0..execs {
        let t = Instant::now();
        let r = runtime
            .exec_sync(&id, &cmd, Duration::from_secs(10))
            .await?;
        direct.push(t.elapsed());
        assert_eq!(r.stdout, b"one-line\n");
        let t = Instant::now();
        ws_exec(api).await?;
        streamed.push(t.elapsed());
    }
    report(
        "exec round trip, WebSocket through the API server",
        streamed,
    );
    report("exec in the runtime directly (baseline)", direct);

    // Port-forward with the real kubectl, against the pod IP directly.
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://{api}'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )?;
    let direct = format!("{ip}:8080");
    let d = direct.clone();
    tokio::task::spawn_blocking(move || http_figures("pod IP directly", &d, mib, requests)).await?;
    for websockets in [true, false] {
        let (mut child, addr) = port_forward(&kubeconfig, websockets);
        let label = if websockets {
            "kubectl port-forward (SPDY in WebSocket)"
        } else {
            "kubectl port-forward (SPDY)"
        };
        tokio::task::spawn_blocking(move || http_figures(label, &addr, mib, requests)).await?;
        let _ = child.kill();
        let _ = child.wait();
    }
    metrics_cost(&pods, api, &runtime, env("SHOAL_BENCH_METRICS_PODS", 1000)).await?;
    stop.cancel();
    Ok(())
}

/// GET http://addr/path (`Connection: close`); the body as text.
async fn http_get_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        text.lines().next().unwrap_or("")
    );
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

async fn metrics_cost(
    pods: &Api<Pod>,
    api: SocketAddr,
    runtime: &Arc<shoal_runtime_wasm::WasmRuntime>,
    n: usize,
) -> anyhow::Result<()> {
    for i in 0..n {
        pods.create(
            &PostParams::default(),
            &pod(
                &format!("idle-{i}"),
                "shoal.local/http-echo:latest",
                Some(8080),
            ),
        )
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sandboxes = runtime.list_pod_sandbox_stats().await?.len();
        if sandboxes >= n + 2 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {sandboxes} pods started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut summary = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let body = http_get_body(api, &format!("/api/v1/nodes/{NODE}/proxy/stats/summary")).await?;
        summary.push(t.elapsed());
        size = body.len();
    }
    report(
        &format!(
            "kubelet Summary API with {n} pods ({} KiB, through the node proxy)",
            size / 1024
        ),
        summary,
    );
    let mut top = Vec::new();
    for _ in 0..10 {
        // Past the API server's 2 s cache of summaries.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let t = Instant::now();
        let body = http_get_body(api, "/apis/metrics.k8s.io/v1beta1/pods").await?;
        top.push(t.elapsed());
        anyhow::ensure!(body.contains("PodMetricsList"), "not a PodMetricsList");
    }
    report(
        &format!("metrics.k8s.io pod list with {n} pods, summaries fetched anew"),
        top,
    );
    let mut render = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        http_get_body(api, "/metrics").await?;
        render.push(t.elapsed());
    }
    report("API server /metrics (the whole process's metrics)", render);
    // What the kubelet's CPU sampler reads every 5 s.
    let mut sample = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let stats = runtime.list_pod_sandbox_stats().await?;
        std::hint::black_box(stats.iter().map(|s| s.containers.len()).sum::<usize>());
        sample.push(t.elapsed());
    }
    report(
        &format!("the CPU sampler's read of {n} pods' accounts (every 5 s)"),
        sample,
    );
    Ok(())
}
