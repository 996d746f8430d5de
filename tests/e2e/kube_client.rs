//! kube-rs (the `kube` crate) lists, watches and patches against Shoal.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use shoal_testkit::Cluster;

async fn client(c: &Cluster) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_lists_watches_and_patches() {
    let c = Cluster::start().unwrap();
    let client = client(&c).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("one"))
        .await
        .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());

    let stream = watcher(api.clone(), watcher::Config::default()).applied_objects();
    let mut stream = Box::pin(stream);
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("one"));

    let patch = serde_json::json!({"data": {"k": "patched"}});
    api.patch("one", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two"}, "data": {"x": "y"}});
    api.patch("two", &PatchParams::apply("e2e"), &Patch::Apply(&applied))
        .await
        .unwrap();

    let mut seen = Vec::new();
    while !(seen.contains(&"one=patched".to_owned()) && seen.iter().any(|s| s.starts_with("two"))) {
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .expect("watch event in time");
        let obj = next.unwrap().unwrap();
        let data = obj.data.unwrap_or_default();
        seen.push(format!(
            "{}={}",
            obj.metadata.name.unwrap_or_default(),
            data.get("k").cloned().unwrap_or_default()
        ));
    }
    let stored = api.get("one").await.unwrap();
    assert_eq!(stored.data.unwrap()["k"], "patched");
}
