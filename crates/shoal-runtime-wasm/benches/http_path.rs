//! Where one `wasi:http` request's time goes, on the wasmtime runtime alone (no cluster, no
//! API server): the same `http-echo` component (64 MiB limit, so pooled instances) answers one
//! request at a time, SHOAL_BENCH_REQUESTS times (2,000) per path, after a warm-up:
//!
//! - over its pod socket: a keep-alive hyper client → the pod's hyper server → an instance;
//! - in process, as the node's ingress hands requests over: no socket, no hyper;
//! - each of those with a fresh instance per request (the default) and with instance reuse
//!   (the pod opted in): the difference is making and starting an instance;
//! - in process with reuse, answering 64 KiB instead of a few hundred bytes: copying bodies.
//!
//! The breakdown it prints is made of differences of medians: socket and hyper = socket −
//! in process; an instance = fresh − reuse (in process); the guest and the host glue = in
//! process with reuse. Run with `cargo bench -p shoal-runtime-wasm --bench http_path`.

use http_body_util::{BodyExt, Empty};
use shoal_runtime::local_http::{Body, Handler};
use shoal_runtime::{ContainerConfig, INSTANCE_REUSE, PodRuntime, SandboxConfig};
use shoal_runtime_wasm::WasmRuntime;
use shoal_testkit::bench::percentile;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn requests() -> usize {
    std::env::var("SHOAL_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Starts an http-echo pod `name`, reusing instances if `reuse`; its address.
async fn start(rt: &WasmRuntime, dir: &std::path::Path, name: &str, reuse: bool) -> SocketAddr {
    let mut cfg = SandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: name.into(),
        log_directory: dir.join(name),
        ..Default::default()
    };
    if reuse {
        cfg.annotations.insert(INSTANCE_REUSE.into(), "true".into());
    }
    let sb = rt.run_pod_sandbox(&cfg).await.expect("a sandbox");
    let id = rt
        .create_container(
            &sb.id,
            ContainerConfig {
                name: "echo".into(),
                image: "shoal.local/http-echo".into(),
                ports: vec![8080],
                memory_limit: Some(64 << 20),
                log_path: dir.join(format!("{name}/0.log")),
                ..Default::default()
            },
        )
        .await
        .expect("a container");
    rt.start_container(&id).await.expect("started");
    SocketAddr::new(sb.ip, 8080)
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// One request's latency through `handler`, body read to its end.
async fn in_process(handler: &Handler, path: &str) -> Duration {
    let t = Instant::now();
    let mut req = http::Request::new(empty());
    *req.uri_mut() = path.parse().expect("a path");
    req.headers_mut()
        .insert(http::header::HOST, http::HeaderValue::from_static("bench"));
    let resp = handler(req).await;
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.expect("a body");
    t.elapsed()
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<bytes::Bytes>,
>;

/// One request's latency over the socket, body read to its end.
async fn over_socket(client: &Client, addr: SocketAddr, path: &str) -> Duration {
    let t = Instant::now();
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("a URL");
    let resp = client.get(uri).await.expect("an answer");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.expect("a body");
    t.elapsed()
}

struct Figure {
    what: &'static str,
    p50: Duration,
    p99: Duration,
}

fn figure(what: &'static str, mut samples: Vec<Duration>) -> Figure {
    samples.sort();
    Figure {
        what,
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
    }
}

fn main() -> anyhow::Result<()> {
    let n = requests();
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let wasm = WasmRuntime::new(tmp.path(), "127.72.0.0/24")?;
        let bytes = std::fs::read(shoal_testkit::guest("http-echo"))?;
        wasm.images().import("shoal.local/http-echo", &bytes)?;
        let fresh = start(&wasm, tmp.path(), "fresh", false).await;
        let reuse = start(&wasm, tmp.path(), "reuse", true).await;
        let local = wasm.local_http();
        let handler = |addr| local.get(&addr).expect("registered in process");
        let (fresh_h, reuse_h) = (handler(fresh), handler(reuse));
        let client: Client = hyper_util::client::legacy::Client::builder(
            hyper_util::rt::TokioExecutor::new(),
        )
        .build_http();
        let big = "/bytes/65536";
        // Alternating, one request of each path per turn, so drift hits all alike.
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); 5];
        for i in 0..(n + n / 10) {
            let s = [
                over_socket(&client, fresh, "/bench").await,
                in_process(&fresh_h, "/bench").await,
                over_socket(&client, reuse, "/bench").await,
                in_process(&reuse_h, "/bench").await,
                in_process(&reuse_h, big).await,
            ];
            // The first tenth warms up.
            if i >= n / 10 {
                for (v, d) in samples.iter_mut().zip(s) {
                    v.push(d);
                }
            }
        }
        let names = [
            "socket, fresh instance",
            "in process, fresh instance",
            "socket, instance reuse",
            "in process, instance reuse",
            "in process, reuse, 64 KiB answer",
        ];
        let f: Vec<Figure> = names
            .into_iter()
            .zip(samples)
            .map(|(what, s)| figure(what, s))
            .collect();
        for x in &f {
            println!(
                "wasi:http {}: p50 {:?}, p99 {:?} ({n} requests, one at a time)",
                x.what, x.p50, x.p99
            );
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "per request (differences of p50s): socket and hyper {:.0} µs, making and starting an instance {:.0} µs, the guest and host glue {:.0} µs, 64 KiB more of body {:.0} µs",
            us(f[0].p50) - us(f[1].p50),
            us(f[1].p50) - us(f[3].p50),
            us(f[3].p50),
            us(f[4].p50) - us(f[3].p50),
        );
        anyhow::Ok(())
    })
}
