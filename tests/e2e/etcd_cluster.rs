//! Two `shoal apiserver` processes on a three-member etcd cluster behave as one cluster, and
//! keep serving when an etcd member and then an API server die.

use shoal_testkit::etcd::Etcd;
use shoal_testkit::{Cluster, eventually};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// An API server on `etcd` with the Service range every API server of the test shares.
fn apiserver(dir: &std::path::Path, etcd: &Etcd, range: &str) -> Cluster {
    let eps = etcd.endpoints_arg();
    Cluster::start_in(
        dir,
        &[
            "apiserver",
            "--store",
            "etcd",
            "--etcd-endpoints",
            &eps,
            "--service-cluster-ip-range",
            range,
        ],
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
    let range = shoal_testkit::service_cidr();
    let mut a = apiserver(da.path(), &etcd, &range);
    let b = apiserver(db.path(), &etcd, &range);

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

#[test]
fn two_api_servers_never_hand_out_one_cluster_ip_twice() {
    let etcd = Etcd::start().unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A /27: 29 addresses for Services besides `kubernetes`, so clashes are likely.
    let range = shoal_testkit::service_cidr().replace(".0/24", ".0/27");
    let a = apiserver(da.path(), &etcd, &range);
    let b = apiserver(db.path(), &etcd, &range);
    let create = |c: &Cluster, prefix: &str, n: usize| {
        let mut made = 0;
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            if c.kubectl(&["create", "service", "clusterip", &name, "--tcp=80"])
                .status
                .success()
            {
                made += 1;
            }
        }
        made
    };
    let (made_a, made_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| create(&a, "a", 15));
        let tb = s.spawn(|| create(&b, "b", 14));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!((made_a, made_b), (15, 14));
    let ips = a.ok(&[
        "get",
        "services",
        "-o",
        "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}",
    ]);
    let mut ips: Vec<&str> = ips.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(ips.len(), 30, "kubernetes and 29 others: {ips:?}");
    ips.sort();
    let before = ips.len();
    ips.dedup();
    assert_eq!(ips.len(), before, "a ClusterIP was handed out twice");
    // The range is now full: one more is refused with Kubernetes' words, through either.
    let full = b.fails(&["create", "service", "clusterip", "one-more", "--tcp=80"]);
    assert!(full.contains("failed to allocate a serviceIP"), "{full}");
    // A requested address another Service holds is refused as Kubernetes refuses it.
    let taken = ips[5];
    let clash = a.fails(&[
        "create",
        "service",
        "clusterip",
        "clash",
        "--tcp=80",
        &format!("--clusterip={taken}"),
    ]);
    assert!(
        clash.contains("provided IP is already allocated"),
        "{clash}"
    );
    // Deleting a Service gives its address back.
    a.ok(&["delete", "service", "a-0"]);
    b.ok(&["create", "service", "clusterip", "again", "--tcp=80"]);
}
