//! Two `shoal apiserver` processes on a three-member etcd cluster behave as one cluster, and
//! keep serving when an etcd member and then an API server die.

use shoal_testkit::etcd::Etcd;
use shoal_testkit::{Cluster, eventually};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn apiserver(dir: &std::path::Path, etcd: &Etcd) -> Cluster {
    let eps = etcd.endpoints_arg();
    Cluster::start_in(
        dir,
        &["apiserver", "--store", "etcd", "--etcd-endpoints", &eps],
    )
    .unwrap()
}

/// Creates config maps `prefix-0..n` through `c`, retrying refusals; returns those acknowledged.
fn create_many(c: &Cluster, prefix: &str, n: usize) -> Vec<String> {
    let mut acked = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let out = c.kubectl(&["create", "configmap", &name, "--from-literal=k=v"]);
        if out.status.success() {
            acked.push(name);
        }
    }
    acked
}

#[test]
fn two_api_servers_on_one_etcd_cluster_act_as_one_and_survive_failures() {
    let mut etcd = Etcd::start_cluster(3).unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = apiserver(da.path(), &etcd);
    let b = apiserver(db.path(), &etcd);

    // A write through one is read through the other.
    a.ok(&["create", "configmap", "one", "--from-literal=k=v"]);
    assert_eq!(
        b.ok(&["get", "configmap", "one", "-o", "name"]).trim(),
        "configmap/one"
    );

    // A watch through B sees a write through A.
    let mut watch = Command::new("kubectl")
        .args(["get", "configmaps", "-w", "-o", "name"])
        .env("KUBECONFIG", b.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The watch lists first; wait for that before writing.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        "configmap/one"
    );
    a.ok(&["create", "configmap", "two", "--from-literal=k=v"]);
    let seen = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(seen, "configmap/two");
    let _ = watch.kill();
    let _ = watch.wait();

    // A stale update through A after a write through B is a 409 Conflict.
    let stale = a.ok(&["get", "configmap", "one", "-o", "json"]);
    b.ok(&["label", "configmap", "one", "changed=yes"]);
    let stale = stale.replace("\"k\": \"v\"", "\"k\": \"stale\"");
    let out = a.kubectl_with(&["replace", "-f", "-"], Some(&stale), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the object has been modified"),
        "stale replace through A: {err}"
    );

    // One etcd member dies: both API servers keep serving reads and writes.
    etcd.kill(0);
    eventually("A writes with a member down", || {
        let out = a.kubectl(&["create", "configmap", "after-member", "--from-literal=k=v"]);
        if out.status.success() || String::from_utf8_lossy(&out.stderr).contains("AlreadyExists") {
            Ok(())
        } else {
            anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr))
        }
    });
    let mut acked = create_many(&a, "via-a", 20);
    acked.extend(create_many(&b, "via-b", 20));
    assert_eq!(
        acked.len(),
        40,
        "every write succeeds with one member down: {acked:?}"
    );

    // Then API server A dies: B keeps serving and has every acknowledged write.
    a.kill();
    let after = create_many(&b, "after-a", 10);
    assert_eq!(after.len(), 10, "B serves writes alone: {after:?}");
    acked.extend(after);
    let names = b.ok(&["get", "configmaps", "-o", "name"]);
    for name in &acked {
        assert!(
            names.lines().any(|l| l == format!("configmap/{name}")),
            "{name} was acknowledged but is missing"
        );
    }
    assert!(names.contains("configmap/after-a-9"));
}
