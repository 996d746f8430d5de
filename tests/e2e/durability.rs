//! `kill -9` during a burst of writes loses nothing that was acknowledged.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use shoal_testkit::Cluster;
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_the_revision_continues() {
    let dir = tempfile_dir();
    let mut c = Cluster::start_in(&dir, &["up"]).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");

    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let api = api.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0..10_000 {
                    let name = format!("w{w}-{i}");
                    let cm: ConfigMap =
                        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                            .unwrap();
                    match api.create(&PostParams::default(), &cm).await {
                        Ok(o) => {
                            let rv = o.metadata.resource_version.unwrap().parse().unwrap();
                            acked.lock().unwrap().push((name, rv));
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Let the burst run, then kill the server in the middle of it.
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    c.kill();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    let max_rv = acked.iter().map(|(_, rv)| *rv).max().unwrap();

    let c = Cluster::start_in(&dir, &["up"]).unwrap();
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let names: std::collections::HashSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    let lost: Vec<_> = acked.iter().filter(|(n, _)| !names.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let next = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "after"}})).unwrap(),
        )
        .await
        .unwrap();
    let rv: i64 = next.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv > max_rv, "revision continues: {rv} > {max_rv}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("shoal-durability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `shoal up` encrypts Secrets at rest with a key it generates: nothing under the data
/// directory (the store file and the audit log included) holds a Secret's value in clear or in
/// base64, and kubectl reads it back. The audit log records requests as its policy says.
#[test]
fn secrets_are_encrypted_at_rest_by_default() {
    let c = shoal_testkit::Cluster::start().unwrap();
    c.ok(&[
        "create",
        "secret",
        "generic",
        "vault",
        "--from-literal=password=unguessable-zebra-42",
    ]);
    assert_eq!(
        c.ok(&["get", "secret", "vault", "-o", "jsonpath={.data.password}"]),
        "dW5ndWVzc2FibGUtemVicmEtNDI="
    );
    // The audit log has the create of the Secret at Metadata level (no body) and a
    // Deployment's create with its body.
    c.ok(&[
        "create",
        "deployment",
        "audited",
        "--image=shoal.local/hello:latest",
    ]);
    let events: Vec<serde_json::Value> = shoal_testkit::eventually("audit events", || {
        let log = std::fs::read_to_string(c.data_dir.join("audit.log"))?;
        let events: Vec<serde_json::Value> = log
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(
            events
                .iter()
                .any(|e| e["objectRef"]["resource"] == "deployments"),
            "{log}"
        );
        Ok(events)
    });
    let secret = events
        .iter()
        .find(|e| e["objectRef"]["resource"] == "secrets" && e["verb"] == "create")
        .expect("the Secret's create is audited");
    assert_eq!(secret["level"], "Metadata");
    assert_eq!(secret["stage"], "ResponseComplete");
    assert_eq!(secret["responseStatus"]["code"], 201);
    assert_eq!(secret["user"]["username"], "shoal-admin");
    assert!(secret.get("requestObject").is_none());
    let deployment = events
        .iter()
        .find(|e| e["objectRef"]["resource"] == "deployments" && e["verb"] == "create")
        .unwrap();
    assert_eq!(deployment["level"], "Request");
    assert_eq!(deployment["requestObject"]["metadata"]["name"], "audited");
    assert!(!events.iter().any(|e| e["requestURI"] == "/readyz"));
    let config = std::fs::read_to_string(c.data_dir.join("encryption-config.yaml")).unwrap();
    assert!(config.contains("aescbc"), "{config}");
    let mut files = vec![c.data_dir.clone()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        seen += 1;
        for needle in [
            &b"unguessable-zebra"[..],
            &b"dW5ndWVzc2FibGUtemVicmEtNDI"[..],
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds the Secret's value",
                p.display()
            );
        }
    }
    assert!(seen > 3, "looked at {seen} files");
}
