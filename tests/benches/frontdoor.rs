//! The serverless front door, on a real `shoal up` (release build), every packet on loopback:
//!
//! - requests/s and p50/p99 for the same `http-echo` component (a) through the ingress,
//!   (b) on its pod IP, (c) under `wasmtime serve` (wasmtime-cli, the same wasmtime version,
//!   built into `target/bench-tools` on first use), (d) a native hyper echo, and (b') on the
//!   pod IP of a pod that opted in to instance reuse — alternating rounds in one run, medians
//!   reported, with the ratios the issue sets targets for;
//! - the cold path: time to the first byte of a request through the ingress to a Deployment
//!   at zero replicas, p50/p99: held while it scales to one, and answered by a standby
//!   instance while it does (`shoal.dev/answer-while-waking`);
//! - the memory of idle scaled-to-zero Deployments (each with its Service and Ingress), per
//!   Deployment, from the `shoal` process's resident memory.
//!
//! Run with `cargo xtask bench` (or `cargo build --release -p shoal && cargo bench -p
//! shoal-e2e --bench frontdoor`). Sizes: SHOAL_BENCH_HTTP_SECS (3 per round),
//! SHOAL_BENCH_ROUNDS (3), SHOAL_BENCH_COLD (100 tries), SHOAL_BENCH_IDLE (100 Deployments).

use http_body_util::Empty;
use shoal_testkit::bench::{Load, http_load, percentile, rss_kib_of};
use shoal_testkit::{Cluster, eventually, guest, workspace_root};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WASMTIME_VERSION: &str = "48.0.8";
const CONNECTIONS: usize = 16;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A Deployment of http-echo at `replicas` (64 MiB memory limit, so its instances come from
/// the pool) with its Service and an Ingress for `<name>.bench`, with `annotations` (a YAML
/// flow map) on the Deployment and `pod_annotations` on its pods.
fn app(name: &str, replicas: u32, annotations: &str, pod_annotations: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, annotations: {annotations}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}, annotations: {pod_annotations}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: echo
        image: shoal.local/http-echo:latest
        ports: [{{name: http, containerPort: 8080}}]
        resources: {{limits: {{memory: 64Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  rules:
  - host: {name}.bench
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}
"#
    )
}

/// `wasmtime` of the workspace's wasmtime version, built once into `target/bench-tools`.
fn wasmtime_cli() -> anyhow::Result<std::path::PathBuf> {
    let root = workspace_root().join("target/bench-tools");
    let bin = root.join("bin/wasmtime");
    let current = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(WASMTIME_VERSION));
    if !current {
        eprintln!(
            "building wasmtime-cli {WASMTIME_VERSION} into {} (once)",
            root.display()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "wasmtime-cli", "--locked", "--version"])
            .arg(format!("={WASMTIME_VERSION}"))
            .args([
                "--no-default-features",
                "--features",
                "run,serve,cranelift,pooling-allocator,component-model,component-model-async,wasi-http,parallel-compilation,clap/default",
                "--root",
            ])
            .arg(&root)
            .arg("--target-dir")
            .arg(root.join("build"))
            .status()?;
        anyhow::ensure!(status.success(), "cannot build wasmtime-cli");
    }
    Ok(bin)
}

/// `wasmtime serve` of http-echo on a free loopback port, killed on drop.
struct WasmtimeServe(Child, String);

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wasmtime_serve() -> anyhow::Result<WasmtimeServe> {
    let bin = wasmtime_cli()?;
    let port = shoal_testkit::free_port("127.0.0.1");
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["serve", "-S", "cli=y", "--addr", &addr])
        .arg(guest("http-echo"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let serve = WasmtimeServe(child, addr.clone());
    eventually("wasmtime serve listens", || {
        std::net::TcpStream::connect(&addr)?;
        Ok(())
    });
    Ok(serve)
}

/// A native hyper echo of the request line on its own two-thread runtime (as a separate
/// server process would be); returns its address.
fn native_echo() -> anyhow::Result<std::net::SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("a listener");
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let body = format!("{} {} HTTP/1.1\n", req.method(), req.uri());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time to the response head of one GET on a new connection.
async fn first_byte(url: &str, host: &str) -> anyhow::Result<Duration> {
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::get(url)
        .header(http::header::HOST, host)
        .body(Empty::new())?;
    let t = Instant::now();
    let resp = client.request(req).await?;
    let took = t.elapsed();
    anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status());
    Ok(took)
}

/// The steps of a wake from zero, in order.
const STEPS: [&str; 6] = [
    "deployment scaled",
    "replicaset scaled",
    "pod created",
    "pod bound",
    "pod running",
    "endpoint ready",
];

/// When each step was seen by a watch.
type Seen = Arc<Mutex<Vec<(Instant, &'static str)>>>;

fn lock(seen: &Seen) -> std::sync::MutexGuard<'_, Vec<(Instant, &'static str)>> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

async fn kube_client(c: &Cluster) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Watches of the `cold` Deployment's chain, noting each step in `seen`; they stop when
/// the returned tasks are dropped with the runtime.
fn watch_chain(client: &kube::Client, seen: &Seen) -> Vec<tokio::task::JoinHandle<()>> {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::watcher;
    fn spawn<K>(
        api: kube::Api<K>,
        labels: &str,
        seen: Seen,
        steps: fn(&K) -> Vec<&'static str>,
    ) -> tokio::task::JoinHandle<()>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        use kube::runtime::WatchStreamExt;
        let stream = watcher(api, watcher::Config::default().labels(labels)).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(o)) = ev {
                    let now = Instant::now();
                    lock(&seen).extend(steps(&o).into_iter().map(|s| (now, s)));
                }
            }
        })
    }
    vec![
        spawn(
            kube::Api::<Deployment>::namespaced(client.clone(), "default"),
            "",
            seen.clone(),
            |d| {
                let one = d.metadata.name.as_deref() == Some("cold")
                    && d.spec.as_ref().and_then(|s| s.replicas) == Some(1);
                if one {
                    vec!["deployment scaled"]
                } else {
                    vec![]
                }
            },
        ),
        spawn(
            kube::Api::<ReplicaSet>::namespaced(client.clone(), "default"),
            "app=cold",
            seen.clone(),
            |r| {
                if r.spec.as_ref().and_then(|s| s.replicas) == Some(1) {
                    vec!["replicaset scaled"]
                } else {
                    vec![]
                }
            },
        ),
        spawn(
            kube::Api::<Pod>::namespaced(client.clone(), "default"),
            "app=cold",
            seen.clone(),
            |p| {
                let mut out = vec!["pod created"];
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    out.push("pod bound");
                }
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    out.push("pod running");
                }
                out
            },
        ),
        spawn(
            kube::Api::<EndpointSlice>::namespaced(client.clone(), "default"),
            "kubernetes.io/service-name=cold",
            seen.clone(),
            |s| {
                let ready = s
                    .endpoints
                    .iter()
                    .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true));
                if ready {
                    vec!["endpoint ready"]
                } else {
                    vec![]
                }
            },
        ),
    ]
}

/// `p50 …, p99 …, max …` of `samples`.
fn spread(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    )
}

fn main() -> anyhow::Result<()> {
    let secs = env("SHOAL_BENCH_HTTP_SECS", 3) as f64;
    let rounds = env("SHOAL_BENCH_ROUNDS", 3);
    let cold_tries = env("SHOAL_BENCH_COLD", 100);
    let idle = env("SHOAL_BENCH_IDLE", 100);
    let rt = tokio::runtime::Runtime::new()?;
    let c = Cluster::start()?;
    let ip = c.node.node_ip.clone();
    let ingress = format!("http://{ip}:{}", c.ingress_ports.0);
    c.apply(&app("echo", 1, "{}", "{}"));
    c.apply(&app(
        "reuse",
        1,
        "{}",
        "{shoal.dev/instance-reuse: \"true\"}",
    ));
    for host in ["echo.bench", "reuse.bench"] {
        eventually(&format!("{host} answers through the ingress"), || {
            rt.block_on(first_byte(&format!("{ingress}/"), host))
        });
    }
    let pod_ip = |app: &str| {
        c.ok(&[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])
    };
    let (pod_ip, reuse_ip) = (pod_ip("echo"), pod_ip("reuse"));
    let serve = wasmtime_serve()?;
    let native = native_echo()?;
    let targets: [(&str, String, Option<&str>); 5] = [
        (
            "(a) through the ingress",
            format!("{ingress}/bench"),
            Some("echo.bench"),
        ),
        (
            "(b) on the pod IP",
            format!("http://{pod_ip}:8080/bench"),
            None,
        ),
        (
            "(c) wasmtime serve",
            format!("http://{}/bench", serve.1),
            None,
        ),
        (
            "(d) native hyper echo",
            format!("http://{native}/bench"),
            None,
        ),
        (
            "(b') on the pod IP, instance reuse opted in",
            format!("http://{reuse_ip}:8080/bench"),
            None,
        ),
    ];
    // Warm every path once, then alternate rounds so drift hits all alike.
    for (_, url, host) in &targets {
        rt.block_on(http_load(url, *host, CONNECTIONS, 0.5));
    }
    let mut results: Vec<Vec<Load>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (i, (_, url, host)) in targets.iter().enumerate() {
            results[i].push(rt.block_on(http_load(url, *host, CONNECTIONS, secs)));
        }
    }
    let rate = |i: usize| median(results[i].iter().map(|l| l.rate).collect());
    for (i, (what, _, _)) in targets.iter().enumerate() {
        println!(
            "HTTP {what}: {:.0} req/s, p50 {:?}, p99 {:?} (medians of {rounds} rounds of {secs}s, {CONNECTIONS} connections)",
            rate(i),
            median_duration(results[i].iter().map(|l| l.p50).collect()),
            median_duration(results[i].iter().map(|l| l.p99).collect()),
        );
    }
    println!(
        "ratios: pod IP / wasmtime serve {:.2} (target >= 0.5); ingress / pod IP {:.2} (target >= 0.8); pod IP / native {:.2}",
        rate(1) / rate(2),
        rate(0) / rate(1),
        rate(1) / rate(3)
    );
    drop(serve);

    // The cold path: a Deployment at zero, woken by the request being timed. Watches note
    // when each step of the chain is seen, for where the time goes.
    c.apply(&app("cold", 0, "{shoal.dev/scale-to-zero-after: 1h}", "{}"));
    let client = rt.block_on(kube_client(&c))?;
    let seen: Seen = Arc::default();
    let watches = rt.block_on(async { watch_chain(&client, &seen) });
    // One try: `name` at zero with no endpoint, then the time to the first byte of a request
    // that wakes it.
    let at_zero_then_first_byte = |name: &str| -> anyhow::Result<(Instant, Duration)> {
        c.ok(&["scale", "deployment", name, "--replicas=0"]);
        eventually(&format!("{name} is at zero with no endpoint"), || {
            let pods = c.ok(&["get", "pods", "-l", &format!("app={name}"), "-o", "name"]);
            let eps = c.ok(&[
                "get",
                "endpointslices",
                "-l",
                &format!("kubernetes.io/service-name={name}"),
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[*]}",
            ]);
            anyhow::ensure!(
                pods.trim().is_empty() && eps.trim().is_empty(),
                "{pods} {eps}"
            );
            Ok(())
        });
        // The ingress sees the empty endpoints a moment after the API server has them.
        std::thread::sleep(Duration::from_millis(100));
        lock(&seen).clear();
        let t0 = Instant::now();
        let ttfb = rt.block_on(first_byte(&format!("{ingress}/"), &format!("{name}.bench")))?;
        Ok((t0, ttfb))
    };
    let mut cold = Vec::with_capacity(cold_tries);
    let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
    for _ in 0..cold_tries {
        let (t0, ttfb) = at_zero_then_first_byte("cold")?;
        cold.push(ttfb);
        std::thread::sleep(Duration::from_millis(50));
        let seen = lock(&seen);
        for (i, step) in STEPS.iter().enumerate() {
            if let Some((at, _)) = seen.iter().find(|(at, s)| s == step && *at >= t0) {
                steps[i].push(at.duration_since(t0));
            }
        }
    }
    println!(
        "cold path through the ingress (zero replicas → first byte), {cold_tries} tries: {}",
        spread(cold)
    );
    let chain: Vec<String> = STEPS
        .iter()
        .zip(steps)
        .filter(|(_, v)| !v.is_empty())
        .map(|(step, v)| format!("{step} {:?}", median_duration(v)))
        .collect();
    println!(
        "  where it goes (medians, from the request's start, as watches see them): {}",
        chain.join(", ")
    );
    for w in watches {
        w.abort();
    }
    // The same with a standby answering while the Deployment wakes (opted in).
    c.apply(&app(
        "eager",
        0,
        "{shoal.dev/scale-to-zero-after: 1h, shoal.dev/answer-while-waking: \"true\"}",
        "{}",
    ));
    let mut standby = Vec::with_capacity(cold_tries);
    for _ in 0..cold_tries {
        standby.push(at_zero_then_first_byte("eager")?.1);
        // Let the woken pod come up before it is scaled away again.
        c.wait_ready_replicas("eager", 1);
    }
    println!(
        "cold path with a standby answering (shoal.dev/answer-while-waking), {cold_tries} tries: {} (target p99 <= 10 ms)",
        spread(standby)
    );

    // Memory of idle Deployments scaled to zero, each with its Service and Ingress.
    let pid = c.pid().expect("the cluster runs");
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib_of(pid);
    let all: String = (0..idle)
        .map(|i| {
            app(
                &format!("idle-{i}"),
                0,
                "{shoal.dev/scale-to-zero-after: 30s}",
                "{}",
            ) + "---\n"
        })
        .collect();
    c.apply(&all);
    std::thread::sleep(Duration::from_secs(5));
    let after = rss_kib_of(pid);
    println!(
        "idle scaled-to-zero Deployments (with Service and Ingress): {idle} add {} KiB to the shoal process, {} KiB each",
        after.saturating_sub(before),
        after.saturating_sub(before) / idle.max(1) as u64
    );
    Ok(())
}
