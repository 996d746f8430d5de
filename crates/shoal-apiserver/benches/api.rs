//! API benchmark on the embedded store, in one run: durable creates/s and latency with 200
//! concurrent clients, GET/s from the watch cache, large LISTs under load (200 concurrent full
//! LISTs of the 20,000 pods: the memory they add to the process and a single-object GET's
//! latency meanwhile), watch fan-out to 1,000 watchers, and the custom resource path (creates
//! of an operator-sized custom resource against same-size ConfigMaps, and the schema's cost
//! per object).
//!
//! Run with `cargo xtask bench` (or `cargo bench -p shoal-apiserver --bench api`). Sizes can be
//! changed with SHOAL_BENCH_CREATES, SHOAL_BENCH_CLIENTS, SHOAL_BENCH_WATCHERS,
//! SHOAL_BENCH_LISTS, SHOAL_BENCH_CRS; SHOAL_BENCH_ONLY=lists runs the creates and the LIST
//! phase only, SHOAL_BENCH_ONLY=crd the custom resource phase only, SHOAL_BENCH_ONLY=auth the
//! cost of authentication, RBAC and flow control (GETs and creates as a user bound by RBAC
//! against the same requests by `system:masters`, which skips both).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shoal_apiserver::{ApiServer, router};
use shoal_testkit::bench::{percentile, rss_kib};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// mimalloc: the API server allocates many small JSON values per request; glibc malloc
/// showed up as ~17% of CPU in the create benchmark.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A pod of about 2 KiB, like the ones Kubernetes' density tests create.
fn pod(i: usize) -> Vec<u8> {
    let env: Vec<_> = (0..20)
        .map(|e| serde_json::json!({"name": format!("VAR_{e}"), "value": "x".repeat(40)}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench", "shard": (i % 16).to_string()}},
        "spec": {"containers": [{"name": "main", "image": "registry.local/bench:1.0", "env": env,
            "resources": {"limits": {"memory": "64Mi", "cpu": "100m"}}}]}
    }))
    .expect("static JSON")
}

async fn request(client: &HttpClient, method: &str, url: &str, body: Vec<u8>) -> (u16, Bytes) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    let resp = client.request(req).await.expect("request sent");
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body read")
        .to_bytes();
    (status, body)
}

async fn request_as(
    client: &HttpClient,
    token: &str,
    method: &str,
    url: &str,
    body: Vec<u8>,
) -> u16 {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    let resp = client.request(req).await.expect("request sent");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// `clients` clients sending `what(i)` as `token` for `run_for` (GETs) or `n` times (creates):
/// the latencies and the elapsed time.
async fn as_user(
    client: &HttpClient,
    token: &str,
    clients: usize,
    requests: usize,
    what: impl Fn(usize) -> (&'static str, String, Vec<u8>) + Send + Sync + Clone + 'static,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, token, next, what) =
                (client.clone(), token.to_owned(), next.clone(), what.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return lat;
                    }
                    let (method, url, body) = what(i);
                    let t = Instant::now();
                    let status = request_as(&client, &token, method, &url, body).await;
                    assert!(status < 300, "{method} {url}: {status}");
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    (start.elapsed(), lat)
}

/// What authentication, RBAC, flow control and quota admission cost a request: GETs and creates
/// by `alice` (a static token; `edit` through a RoleBinding, among 100 other bindings), by the
/// ServiceAccount `robot` (a JWT), and by `robot` in a namespace with a ResourceQuota (every
/// create charged to it by a compare-and-swap), against the same by the admin
/// (`system:masters`: no RBAC evaluation, no seat), on the memory store so the store's own
/// cost does not hide it.
async fn auth_cost(client: &HttpClient) {
    let alice = shoal_apiserver::auth::UserInfo {
        username: "alice".into(),
        uid: "1001".into(),
        groups: vec!["dev".into(), "system:authenticated".into()],
        ..Default::default()
    };
    // A kubelet: the Node authorizer decides its Secret reads from the pods bound to it.
    let node_user = shoal_apiserver::auth::UserInfo {
        username: "system:node:n1".into(),
        uid: String::new(),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
        ..Default::default()
    };
    let server = ApiServer::start(
        Arc::new(shoal_store::memory::MemoryStore::new()),
        shoal_apiserver::Options {
            token: Some("admin-token".into()),
            tokens: vec![
                ("alice-token".into(), alice),
                ("node-token".into(), node_user),
            ],
            ..Default::default()
        },
    )
    .await
    .expect("API server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let stop = CancellationToken::new();
    tokio::spawn(shoal_apiserver::tls::serve(
        listener,
        router(server),
        None,
        stop.clone(),
    ));
    let admin = "admin-token";
    let post = |url: String, v: serde_json::Value| async move {
        let status = request_as(client, admin, "POST", &url, v.to_string().into_bytes()).await;
        assert!(status < 300, "{url}: {status}");
    };
    post(
        format!("{base}/api/v1/namespaces"),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .await;
    let rbac = format!("{base}/apis/rbac.authorization.k8s.io/v1");
    for i in 0..50 {
        post(format!("{rbac}/namespaces/bench/rolebindings"), serde_json::json!({
            "metadata": {"name": format!("other-{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": format!("user-{i}")}]})).await;
        post(format!("{rbac}/clusterrolebindings"), serde_json::json!({
            "metadata": {"name": format!("other-{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": format!("user-{i}")}]})).await;
    }
    // A second namespace where a ResourceQuota charges every create (built-in admission on).
    post(
        format!("{base}/api/v1/namespaces"),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "quota"}}),
    )
    .await;
    post(
        format!("{base}/api/v1/namespaces/quota/resourcequotas"),
        serde_json::json!({"metadata": {"name": "q"}, "spec": {"hard": {"configmaps": "100000"}}}),
    )
    .await;
    for ns in ["bench", "quota"] {
        post(
            format!("{rbac}/namespaces/{ns}/rolebindings"),
            serde_json::json!({
            "metadata": {"name": "alice-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "User", "name": "alice"},
                {"kind": "ServiceAccount", "name": "robot", "namespace": "bench"}]}),
        )
        .await;
    }
    // A ServiceAccount and a token of the TokenRequest API: a JWT to verify on every request.
    post(
        format!("{base}/api/v1/namespaces/bench/serviceaccounts"),
        serde_json::json!({"metadata": {"name": "robot"}}),
    )
    .await;
    let robot = {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!(
                "{base}/api/v1/namespaces/bench/serviceaccounts/robot/token"
            ))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {admin}"))
            .body(Full::new(Bytes::from_static(b"{\"spec\": {}}")))
            .expect("valid request");
        let resp = client.request(req).await.expect("request sent");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a TokenRequest");
        v.pointer("/status/token")
            .and_then(serde_json::Value::as_str)
            .expect("a token")
            .to_owned()
    };
    let cm = |name: String| {
        serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"a": "x".repeat(512)}}))
        .expect("static JSON")
    };
    let (gets, creates, clients) = (20_000, 5_000, 16);
    println!(
        "authentication + RBAC + flow control (+ quota admission): alice (static token, edit via RoleBinding), robot (ServiceAccount JWT, edit) vs the admin (system:masters)"
    );
    // Each twice, interleaved, so a drift of the machine shows.
    let runs = [
        ("admin", "admin-token", "bench"),
        ("alice", "alice-token", "bench"),
        ("robot", robot.as_str(), "bench"),
        ("robot+quota", robot.as_str(), "quota"),
    ];
    for (round, (who, token, ns)) in runs.iter().chain(runs.iter()).enumerate() {
        let cms = format!("{base}/api/v1/namespaces/{ns}/configmaps");
        let prefix = format!("{who}-{round}").replace('+', "-");
        let (url, p) = (cms.clone(), prefix.clone());
        let (elapsed, lat) = as_user(client, token, clients, creates, move |i| {
            ("POST", url.clone(), cm(format!("{p}-{i}")))
        })
        .await;
        report(
            &format!("create as {who} ({clients} clients)"),
            lat.len(),
            elapsed,
            lat,
        );
        let url = cms.clone();
        let (elapsed, lat) = as_user(client, token, clients, gets, move |i| {
            ("GET", format!("{url}/{prefix}-{}", i % creates), Vec::new())
        })
        .await;
        report(
            &format!("GET as {who} ({clients} clients)"),
            lat.len(),
            elapsed,
            lat,
        );
    }
    // The Node authorizer: a node reads the Secret of one of its pods, among `pods` pods of
    // the namespace bound to it (each looked at per request), against the admin reading it.
    let pods = 1_000;
    post(
        format!("{base}/api/v1/namespaces/bench/secrets"),
        serde_json::json!({"metadata": {"name": "mine"}, "data": {"k": "dg=="}}),
    )
    .await;
    for i in 0..pods {
        let secret = if i == pods - 1 { "mine" } else { "other" };
        post(
            format!("{base}/api/v1/namespaces/bench/pods"),
            serde_json::json!({"metadata": {"name": format!("p{i}")}, "spec": {
                "nodeName": "n1", "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "shoal.local/hello:latest"}],
                "volumes": [{"name": "s", "secret": {"secretName": secret}}]}}),
        )
        .await;
    }
    println!("the Node authorizer: GET of a Secret its pod uses, {pods} pods on the node");
    let url = format!("{base}/api/v1/namespaces/bench/secrets/mine");
    for round in 0..2 {
        for (who, token) in [("admin", "admin-token"), ("node", "node-token")] {
            let u = url.clone();
            let (elapsed, lat) = as_user(client, token, clients, gets / 4, move |_| {
                ("GET", u.clone(), Vec::new())
            })
            .await;
            report(
                &format!("GET secret as {who} #{round}"),
                lat.len(),
                elapsed,
                lat,
            );
        }
    }
    stop.cancel();
}

fn report(name: &str, count: usize, elapsed: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name:<28} {count:>8} ops in {:>6.2}s = {:>9.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

async fn creates(client: &HttpClient, base: &str, n: usize, clients: usize) {
    let url = format!("{base}/api/v1/namespaces/default/pods");
    let label = format!("durable creates ({clients} clients)");
    creates_of(client, &url, n, clients, &label, Arc::new(pod)).await;
}

/// `n` creates of `body(i)` at `url` by `clients` concurrent clients; returns creates/s.
async fn creates_of(
    client: &HttpClient,
    url: &str,
    n: usize,
    clients: usize,
    label: &str,
    body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, next, url, body) =
                (client.clone(), next.clone(), url.to_owned(), body.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return lat;
                    }
                    let t = Instant::now();
                    let (status, answer) = request(&client, "POST", &url, body(i)).await;
                    assert_eq!(status, 201, "create {i}: {answer:?}");
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    report(label, n, elapsed, lat);
    n as f64 / elapsed.as_secs_f64()
}

/// The custom resource path: creates of an operator-sized custom resource (a definition with
/// the whole pod template in its schema) against ConfigMaps of the same size, in the same run,
/// and the schema's cost per object (prune, default, validate) measured alone.
async fn custom_resources(client: &HttpClient, base: &str, n: usize, clients: usize) {
    let (_, core) = request(client, "GET", &format!("{base}/openapi/v3/api/v1"), vec![]).await;
    let core: serde_json::Value = serde_json::from_slice(&core).expect("OpenAPI JSON");
    let crd = shoal_testkit::crd::operator_crd(&core);
    let schema_lines = serde_json::to_string_pretty(&crd)
        .expect("JSON")
        .lines()
        .count();
    let (status, answer) = request(
        client,
        "POST",
        &format!("{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
        serde_json::to_vec(&crd).expect("JSON"),
    )
    .await;
    assert_eq!(status, 201, "{answer:?}");
    let object = |i: usize| shoal_testkit::crd::operator_object(&format!("app-{i}"), 4);
    let size = serde_json::to_vec(&object(0)).expect("JSON").len();
    // A ConfigMap whose JSON is as long as the custom resource's.
    let configmap = move |i: usize| {
        let mut cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "labels": {"app": "bench"}}, "data": {"payload": ""}});
        let pad = size.saturating_sub(serde_json::to_vec(&cm).expect("JSON").len());
        cm["data"]["payload"] = serde_json::json!("x".repeat(pad));
        serde_json::to_vec(&cm).expect("JSON")
    };
    println!(
        "custom resources: a definition of {schema_lines} lines (pretty JSON), objects of {size} bytes"
    );
    let cm_rate = creates_of(
        client,
        &format!("{base}/api/v1/namespaces/default/configmaps"),
        n,
        clients,
        "ConfigMap creates (same size)",
        Arc::new(configmap),
    )
    .await;
    // The built-in kind holding the same pod template (a PodTemplate): what nesting alone costs.
    let template = move |i: usize| {
        let o = shoal_testkit::crd::operator_object(&format!("t-{i}"), 4);
        serde_json::to_vec(
            &serde_json::json!({"apiVersion": "v1", "kind": "PodTemplate",
            "metadata": {"name": format!("t-{i}"), "labels": {"app": "bench"}},
            "template": o["spec"]["podTemplate"]}),
        )
        .expect("JSON")
    };
    let pt_rate = creates_of(
        client,
        &format!("{base}/api/v1/namespaces/default/podtemplates"),
        n,
        clients,
        "PodTemplate creates (same pods)",
        Arc::new(template),
    )
    .await;
    let cr_rate = creates_of(
        client,
        &format!("{base}/apis/operator.example.com/v1/namespaces/default/appservers"),
        n,
        clients,
        "custom resource creates",
        Arc::new(move |i| serde_json::to_vec(&object(i)).expect("JSON")),
    )
    .await;
    println!(
        "custom resource create rate / ConfigMap: {:.2}, / PodTemplate: {:.2}",
        cr_rate / cm_rate,
        cr_rate / pt_rate
    );
    // The schema alone: prune, default and validate one object, many times.
    let mut errors = Vec::new();
    let schema = shoal_apiserver::crd::schema::Schema::compile(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        "",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let one = object(0);
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(one.clone());
    }
    let cloning = start.elapsed();
    let start = Instant::now();
    for _ in 0..rounds {
        let mut o = one.clone();
        let mut pruned = Vec::new();
        schema.prune(&mut o, &mut pruned);
        schema.apply_defaults(&mut o);
        let mut causes = Vec::new();
        schema.validate(&o, &mut causes);
        assert!(causes.is_empty() && pruned.is_empty());
        std::hint::black_box(o);
    }
    let per = (start.elapsed().saturating_sub(cloning)).as_secs_f64() / rounds as f64;
    println!(
        "schema cost per object (prune + default + validate): {:.1} µs",
        per * 1e6
    );
}

async fn gets(client: &HttpClient, base: &str, n: usize, clients: usize) {
    let done = Arc::new(AtomicUsize::new(0));
    let run_for = Duration::from_secs(5);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, base) = (client.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = c;
                while start.elapsed() < run_for {
                    let url = format!("{base}/api/v1/namespaces/default/pods/pod-{}", i % n);
                    let t = Instant::now();
                    let (status, _) = request(&client, "GET", &url, vec![]).await;
                    assert_eq!(status, 200);
                    lat.push(t.elapsed());
                    i += clients;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    done.store(lat.len(), Ordering::Relaxed);
    report(
        &format!("GET from cache ({clients} clients)"),
        lat.len(),
        start.elapsed(),
        lat,
    );
}

/// `lists` concurrent full LISTs of every pod (JSON), each read as it arrives and dropped, as a
/// careless script or an informer fleet would; meanwhile one client GETs single pods. Reports
/// the process's RSS before and at its peak (sampled every 5 ms), the LISTs' latency and the
/// GETs' latency during them.
async fn large_lists(client: &HttpClient, base: &str, n: usize, lists: usize) {
    use std::sync::atomic::AtomicBool;
    let before = rss_kib();
    let done = Arc::new(AtomicBool::new(false));
    let peak = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    let getter = {
        let (client, base, done) = (client.clone(), base.to_owned(), done.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let url = format!("{base}/api/v1/namespaces/default/pods/pod-{}", i % n);
                let t = Instant::now();
                let (status, _) = request(&client, "GET", &url, vec![]).await;
                assert_eq!(status, 200);
                lat.push(t.elapsed());
                i += 7;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            lat
        })
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..lists)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}/api/v1/pods"));
            tokio::spawn(async move {
                let t = Instant::now();
                let req = http::Request::get(url)
                    .body(Full::new(Bytes::new()))
                    .expect("valid request");
                let resp = client.request(req).await.expect("list request");
                assert_eq!(resp.status(), 200);
                let mut body = resp.into_body();
                let mut bytes = 0;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("list body").into_data() {
                        bytes += data.len();
                    }
                }
                (t.elapsed(), bytes)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut size = 0;
    for t in tasks {
        let (l, bytes) = t.await.expect("list task");
        lat.push(l);
        size = bytes;
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak = peak.await.expect("sampler");
    let get_lat = getter.await.expect("getter");
    report(
        &format!(
            "full LISTs ({lists} at once, {:.1} MB each)",
            size as f64 / 1e6
        ),
        lists,
        elapsed,
        lat,
    );
    report("  single GETs meanwhile", get_lat.len(), elapsed, get_lat);
    println!(
        "  RSS {:.0} MiB before, {:.0} MiB at peak: +{:.0} MiB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
}

/// 1,000 watchers on configmaps; a writer creates 200 objects/s stamped with their send time;
/// every watcher measures commit-to-delivery for every event.
async fn fan_out(client: &HttpClient, base: &str, watchers: usize) {
    let t0 = Instant::now();
    let (status, body) = request(
        client,
        "GET",
        &format!("{base}/api/v1/namespaces/default/configmaps"),
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).expect("list JSON");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let writes = 1000usize;
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(writes * watchers)));
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let (client, lat, ready) = (client.clone(), lat.clone(), ready.clone());
        let url =
            format!("{base}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}");
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .expect("valid request");
            let mut body = client
                .request(req)
                .await
                .expect("watch request")
                .into_body();
            ready.fetch_add(1, Ordering::Relaxed);
            let mut seen = 0;
            let mut mine = Vec::with_capacity(writes);
            let mut buf = Vec::new();
            while seen < writes {
                let Some(Ok(frame)) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = t0.elapsed();
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line);
                    if let Some(rest) = text.split("\"sent-ns\":\"").nth(1)
                        && let Some(ns) = rest.split('"').next().and_then(|n| n.parse::<u64>().ok())
                    {
                        mine.push(now.saturating_sub(Duration::from_nanos(ns)));
                        seen += 1;
                    }
                }
            }
            lat.lock().expect("latency lock").extend(mine);
        }));
    }
    while ready.load(Ordering::Relaxed) < watchers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let url = format!("{base}/api/v1/namespaces/default/configmaps");
    for i in 0..writes {
        tick.tick().await;
        let sent = t0.elapsed().as_nanos().to_string();
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("fan-{i}"), "annotations": {"sent-ns": sent}}, "data": {"k": "v"}});
        let (status, _) =
            request(client, "POST", &url, serde_json::to_vec(&cm).expect("JSON")).await;
        assert_eq!(status, 201);
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
    let lat = std::mem::take(&mut *lat.lock().expect("latency lock"));
    report(
        &format!("watch deliveries ({watchers} watchers, 200 writes/s)"),
        lat.len(),
        start.elapsed(),
        lat,
    );
}

/// Serves an API server on `store` over plain HTTP on a loopback port; returns its base URL.
async fn serve(store: Arc<dyn shoal_store::Store>, stop: &CancellationToken) -> String {
    let server = ApiServer::start(store, Default::default())
        .await
        .expect("API server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(shoal_apiserver::tls::serve(
        listener,
        router(server),
        None,
        stop.clone(),
    ));
    base
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        shoal_store::embedded::EmbeddedStore::open(&dir.path().join("store.redb"))
            .expect("open store"),
    );
    let stop = CancellationToken::new();
    let base = serve(store, &stop).await;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(2048)
        .build(connector);

    let n = env("SHOAL_BENCH_CREATES", 20_000);
    let clients = env("SHOAL_BENCH_CLIENTS", 200);
    println!(
        "embedded store on {}, plain HTTP on loopback, clients in the same process",
        dir.path().display()
    );
    if std::env::var("SHOAL_BENCH_ONLY").as_deref() == Ok("auth") {
        auth_cost(&client).await;
        return;
    }
    if std::env::var("SHOAL_BENCH_ONLY").as_deref() == Ok("crd") {
        custom_resources(&client, &base, env("SHOAL_BENCH_CRS", 5_000), clients).await;
        return;
    }
    creates(&client, &base, n, clients).await;
    if std::env::var("SHOAL_BENCH_ONLY").as_deref() == Ok("lists") {
        large_lists(&client, &base, n, env("SHOAL_BENCH_LISTS", 200)).await;
        return;
    }
    gets(&client, &base, n, clients).await;
    large_lists(&client, &base, n, env("SHOAL_BENCH_LISTS", 200)).await;
    fan_out(&client, &base, env("SHOAL_BENCH_WATCHERS", 1000)).await;
    custom_resources(&client, &base, env("SHOAL_BENCH_CRS", 5_000), clients).await;
    stop.cancel();

    // The same creates on a one-member etcd on this machine (its own fsync per commit batch).
    let etcd = tokio::task::spawn_blocking(shoal_testkit::etcd::Etcd::start)
        .await
        .expect("join")
        .expect("etcd starts (cargo xtask bench installs it)");
    let store = shoal_store::etcd::EtcdStore::connect(&shoal_store::etcd::EtcdOptions {
        endpoints: etcd.endpoints(),
        ..Default::default()
    })
    .await
    .expect("connect to etcd");
    let stop = CancellationToken::new();
    let base = serve(Arc::new(store), &stop).await;
    println!("etcd store (one member, same machine), same clients");
    creates(&client, &base, n, clients).await;
    stop.cancel();
    drop(etcd);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}
