//! `shoal store snapshot|restore|migrate`: a user's backup and the path to etcd keep every
//! object and its uid.

use shoal_testkit::etcd::Etcd;
use shoal_testkit::{Cluster, shoal_bin};
use std::process::Command;

fn shoal(args: &[&str]) -> String {
    let out = Command::new(shoal_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "shoal {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn uid(c: &Cluster) -> String {
    c.ok(&["get", "configmap", "kept", "-o", "jsonpath={.metadata.uid}"])
}

#[test]
fn snapshot_restore_and_migrate_to_etcd_keep_objects_and_uids() {
    let first = tempfile::tempdir().unwrap();
    let mut c = Cluster::start_in(first.path(), &["up"]).unwrap();
    c.ok(&["create", "configmap", "kept", "--from-literal=k=v"]);
    let original = uid(&c);
    assert!(!original.is_empty());
    // While Shoal runs, the store is in use and a snapshot says so.
    let file = first.path().join("backup.redb");
    let busy = Command::new(shoal_bin())
        .args(["store", "snapshot"])
        .arg(&file)
        .arg("--data-dir")
        .arg(first.path())
        .output()
        .unwrap();
    assert!(!busy.status.success());
    c.kill();

    let dir = first.path().to_str().unwrap();
    let backup = file.to_str().unwrap();
    shoal(&["store", "snapshot", backup, "--data-dir", dir]);

    let second = tempfile::tempdir().unwrap();
    let dir2 = second.path().to_str().unwrap();
    shoal(&["store", "restore", backup, "--data-dir", dir2]);
    let restored = Cluster::start_in(second.path(), &["up"]).unwrap();
    assert_eq!(uid(&restored), original);
    drop(restored);

    let etcd = Etcd::start().unwrap();
    let eps = etcd.endpoints_arg();
    let out = shoal(&[
        "store",
        "migrate",
        "--to",
        "etcd",
        "--etcd-endpoints",
        &eps,
        "--data-dir",
        dir2,
    ]);
    assert!(out.contains("copied"), "{out}");
    let third = tempfile::tempdir().unwrap();
    let on_etcd = Cluster::start_in(
        third.path(),
        &["apiserver", "--store", "etcd", "--etcd-endpoints", &eps],
    )
    .unwrap();
    assert_eq!(uid(&on_etcd), original);
}
