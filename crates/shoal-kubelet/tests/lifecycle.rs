//! The kubelet's pod lifecycle in process: a real API server on the memory store, a kubelet
//! on the fake runtime (containers interpret a small step language, see
//! `shoal_runtime::fake`), and the kube client. What wasmtime does is the runtime's
//! conformance suite's business; these tests are about what the kubelet reports and when.

use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use serde_json::json;
use shoal_kubelet::{Config, Kubelet};
use shoal_runtime::fake::FakeRuntime;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const NODE: &str = "fake-node";
const WAIT: Duration = Duration::from_secs(30);

struct Node1 {
    client: kube::Client,
    kubelet: Arc<Kubelet>,
    stop: Vec<CancellationToken>,
    _dir: tempfile::TempDir,
}

impl Drop for Node1 {
    fn drop(&mut self) {
        for s in &self.stop {
            s.cancel();
        }
    }
}

async fn start() -> Node1 {
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let (addr, api_stop) = shoal_apiserver::serve_loopback(store, Default::default())
        .await
        .unwrap();
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    // What the root-ca-cert-publisher and the ServiceAccount controller would have written:
    // pods mount the CA with a token of their account.
    let ca: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "a CA"}}))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &ca)
        .await
        .unwrap();
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    Api::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime::new("127.97.0.0/16", &["shoal.local/steps:latest"]).unwrap();
    let mut config = Config::new(NODE, dir.path());
    config.pod_cidr = "127.97.0.0/16".into();
    config.backoff_initial = Duration::from_millis(200);
    config.backoff_max = Duration::from_millis(800);
    let kubelet = Kubelet::new(
        config,
        client.clone(),
        Arc::new(runtime),
        Default::default(),
    );
    let stop = CancellationToken::new();
    tokio::spawn(kubelet.clone().run(stop.clone()));
    Node1 {
        client,
        kubelet,
        stop: vec![stop, api_stop],
        _dir: dir,
    }
}

fn pod(name: &str, restart: &str, args: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE, "restartPolicy": restart, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "shoal.local/steps:latest",
                "imagePullPolicy": "IfNotPresent", "args": args}]}
    }))
    .unwrap()
}

async fn wait_for(pods: &Api<Pod>, name: &str, what: &str, cond: impl Condition<Pod>) -> Pod {
    match tokio::time::timeout(WAIT, await_condition(pods.clone(), name, cond)).await {
        Ok(Ok(Some(p))) => p,
        other => {
            let now = pods.get_opt(name).await.ok().flatten();
            panic!("{name} never became {what}: {other:?}; now {now:?}")
        }
    }
}

fn phase(p: Option<&Pod>) -> Option<&str> {
    p?.status.as_ref()?.phase.as_deref()
}

fn main_status(p: &Pod) -> &k8s_openapi::api::core::v1::ContainerStatus {
    &p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
}

/// The container's log through the kubelet's server, as `kubectl logs` gets it.
async fn logs(n: &Node1, pod: &str) -> String {
    let uri = format!("/containerLogs/default/{pod}/main");
    let req = http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = shoal_kubelet::server::router(n.kubelet.clone(), shoal_kubelet::server::Auth::Open)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn the_node_registers_ready_with_its_pod_cidr() {
    let n = start().await;
    let nodes: Api<Node> = Api::all(n.client.clone());
    let node = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Some(node)) = nodes.get_opt(NODE).await
                && shoal_api::node::NodeExt::is_ready(&node)
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("node registers and turns Ready");
    let spec = node.spec.unwrap();
    assert_eq!(spec.pod_cidr.as_deref(), Some("127.97.0.0/16"));
}

#[tokio::test]
async fn a_pod_that_exits_zero_succeeds_with_its_output_in_the_log() {
    let n = start().await;
    let pods: Api<Pod> = Api::namespaced(n.client.clone(), "default");
    let args = ["print", "hello from the fake", "sleep", "0.3", "exit", "0"];
    pods.create(&PostParams::default(), &pod("once", "Never", &args))
        .await
        .unwrap();
    let running = wait_for(&pods, "once", "Running", |p: Option<&Pod>| {
        phase(p) == Some("Running")
    })
    .await;
    let ip = running.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(
        ip.starts_with("127.97."),
        "pod IP {ip} from the node's CIDR"
    );
    let done = wait_for(&pods, "once", "Succeeded", |p: Option<&Pod>| {
        phase(p) == Some("Succeeded")
    })
    .await;
    let term = main_status(&done)
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert!(logs(&n, "once").await.contains("hello from the fake"));
}

#[tokio::test]
async fn a_crashing_container_is_restarted_and_a_never_pod_fails() {
    let n = start().await;
    let pods: Api<Pod> = Api::namespaced(n.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("loop", "Always", &["exit", "3"]),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("fail", "Never", &["exit", "3"]),
    )
    .await
    .unwrap();
    let looping = wait_for(&pods, "loop", "restarted twice", |p: Option<&Pod>| {
        p.is_some_and(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c[0].restart_count >= 2)
        })
    })
    .await;
    let last = main_status(&looping).last_state.as_ref().unwrap();
    assert_eq!(last.terminated.as_ref().unwrap().exit_code, 3);
    assert_eq!(phase(Some(&looping)), Some("Running"));
    let failed = wait_for(&pods, "fail", "Failed", |p: Option<&Pod>| {
        phase(p) == Some("Failed")
    })
    .await;
    assert_eq!(main_status(&failed).restart_count, 0);
}

#[tokio::test]
async fn environment_from_a_config_map_reaches_the_container() {
    let n = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(n.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"}, "data": {"colour": "teal"}}))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut p = pod("env", "Never", &["env", "COLOUR"]);
    p.spec.as_mut().unwrap().containers[0].env = Some(
        serde_json::from_value(json!([{"name": "COLOUR", "valueFrom": {
            "configMapKeyRef": {"name": "settings", "key": "colour"}}}]))
        .unwrap(),
    );
    let pods: Api<Pod> = Api::namespaced(n.client.clone(), "default");
    pods.create(&PostParams::default(), &p).await.unwrap();
    wait_for(&pods, "env", "Succeeded", |p: Option<&Pod>| {
        phase(p) == Some("Succeeded")
    })
    .await;
    assert!(logs(&n, "env").await.contains("COLOUR=teal"));
}

#[tokio::test]
async fn a_deleted_pod_is_stopped_and_removed_within_its_grace_period() {
    let n = start().await;
    let pods: Api<Pod> = Api::namespaced(n.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("idle", "Always", &[]))
        .await
        .unwrap();
    wait_for(&pods, "idle", "Running", |p: Option<&Pod>| {
        phase(p) == Some("Running")
    })
    .await;
    let mut events = kube::runtime::watcher(pods.clone(), Default::default()).boxed();
    while !matches!(
        events.next().await,
        Some(Ok(kube::runtime::watcher::Event::InitDone))
    ) {}
    let deleting = pods.delete("idle", &DeleteParams::default()).await.unwrap();
    let marked = deleting
        .left()
        .expect("a pod on a node is deleted gracefully");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let gone = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Ok(kube::runtime::watcher::Event::Delete(_)) = e {
                return;
            }
        }
    })
    .await;
    let left = pods.get_opt("idle").await.unwrap();
    assert!(
        gone.is_ok(),
        "the kubelet removes the pod once it stopped: {left:?}"
    );
    assert!(pods.get_opt("idle").await.unwrap().is_none());
}
