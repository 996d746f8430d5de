//! RBAC with kubectl, as a cluster's users meet it: Kubernetes' default roles, bindings
//! granting them per namespace, Kubernetes' refusals, `kubectl auth can-i` (and `--list`,
//! `--as`) agreeing with what the server enforces, impersonation, escalation prevention, and
//! ClusterRole aggregation.

use crate::kubectl::{tempfile_dir, write};
use shoal_testkit::{Cluster, eventually};

const ALICE: &str = "--token=alice-token-0123456789";

#[test]
fn a_user_may_do_what_her_roles_grant_and_nothing_more() {
    let dir = tempfile_dir();
    let tokens = write(
        dir.path(),
        "tokens.csv",
        "alice-token-0123456789,alice,1001,dev\nbob-token-0123456789,bob,1002\n",
    );
    let c = Cluster::start_with(&["--token-auth-file", &tokens]).unwrap();
    c.ok(&["create", "namespace", "dev"]);
    c.ok(&["create", "namespace", "team"]);
    c.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "dev",
        "--from-literal=a=1",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "-n",
        "dev",
        "--from-literal=p=x",
    ]);

    // Kubernetes' default roles exist.
    let roles = c.ok(&["get", "clusterroles"]);
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
    ] {
        assert!(
            roles.lines().any(|l| l.starts_with(&format!("{r} "))),
            "{r}: {roles}"
        );
    }

    // Nothing granted yet: refused with Kubernetes' words.
    let err = c.fails(&["get", "pods", "-n", "dev", ALICE]);
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "dev""#),
        "{err}"
    );
    let err = c.fails(&["get", "nodes", ALICE]);
    assert!(
        err.contains(r#"nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{err}"
    );

    // view in dev: reads there, nowhere else, and no Secrets.
    c.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
        "-n",
        "dev",
    ]);
    assert!(
        c.ok(&["get", "configmaps", "-n", "dev", ALICE])
            .contains("cfg")
    );
    let err = c.fails(&[
        "get",
        "configmap",
        "cfg",
        "-n",
        "dev",
        "-o",
        "name",
        "--token=bob-token-0123456789",
    ]);
    assert!(
        err.contains(
            r#"configmaps "cfg" is forbidden: User "bob" cannot get resource "configmaps""#
        ),
        "{err}"
    );
    for args in [
        &["get", "configmaps", "-n", "default", ALICE][..],
        &["get", "secrets", "-n", "dev", ALICE],
        &["create", "configmap", "x", "-n", "dev", ALICE],
        &["delete", "configmap", "cfg", "-n", "dev", ALICE],
    ] {
        let err = c.fails(args);
        assert!(
            err.contains(r#"is forbidden: User "alice" cannot"#),
            "{args:?}: {err}"
        );
    }

    // can-i agrees with what the server enforces, for her and for the admin asking as her.
    assert_eq!(
        c.ok(&["auth", "can-i", "list", "pods", "-n", "dev", ALICE])
            .trim(),
        "yes"
    );
    let no = c.kubectl(&["auth", "can-i", "delete", "pods", "-n", "dev", ALICE]);
    assert!(!no.status.success());
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    let no = c.kubectl(&[
        "auth",
        "can-i",
        "get",
        "secrets",
        "-n",
        "dev",
        "--as",
        "alice",
        "--as-group",
        "dev",
    ]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    let list = c.ok(&["auth", "can-i", "--list", "-n", "dev", "--as", "alice"]);
    let pods = list
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(pods.contains("[get list watch]"), "{pods}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");
    let list = c.ok(&["auth", "can-i", "--list", "-n", "default", "--as", "alice"]);
    assert!(!list.lines().any(|l| l.starts_with("pods ")), "{list}");

    // Impersonation needs the impersonate verb.
    let err = c.fails(&["get", "pods", "-n", "dev", ALICE, "--as", "bob"]);
    assert!(
        err.contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );

    // admin in team: she may grant there what she holds, and nothing more.
    c.ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "team",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "team",
        ALICE,
    ]);
    let err = c.fails(&[
        "create",
        "rolebinding",
        "bob-root",
        "--clusterrole=cluster-admin",
        "--user=bob",
        "-n",
        "team",
        ALICE,
    ]);
    assert!(
        err.contains(r#"rolebindings.rbac.authorization.k8s.io "bob-root" is forbidden: user "alice" (groups=["dev" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{err}"
    );
    c.ok(&[
        "create",
        "role",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
        "-n",
        "team",
        ALICE,
    ]);
    let err = c.fails(&[
        "create",
        "role",
        "node-reader",
        "--verb=get",
        "--resource=nodes",
        "-n",
        "team",
        ALICE,
    ]);
    assert!(
        err.contains(r#"{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}"#),
        "{err}"
    );
    assert_eq!(
        c.ok(&[
            "auth",
            "can-i",
            "get",
            "configmaps",
            "-n",
            "team",
            "--token=bob-token-0123456789"
        ])
        .trim(),
        "yes"
    );

    // A role labelled to aggregate into view extends view, edit and admin.
    c.apply(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widget-viewer
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [example.com]
  resources: [widgets]
  verbs: [get, list, watch]
"#,
    );
    eventually("view and admin aggregate widgets", || {
        for role in ["view", "admin"] {
            let r = c.ok(&["get", "clusterrole", role, "-o", "json"]);
            anyhow::ensure!(r.contains("widgets"), "{role} does not hold widgets yet");
        }
        Ok(())
    });
    eventually("alice may list widgets in dev", || {
        let out = c.kubectl(&[
            "auth",
            "can-i",
            "list",
            "widgets.example.com",
            "-n",
            "dev",
            ALICE,
        ]);
        let said = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            said.trim() == "yes",
            "{said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    });
}

/// `shoal kubeconfig --user` hands out a client certificate signed by the cluster CA: kubectl
/// with it is that user in those groups, and may do what RBAC grants them.
#[test]
fn client_certificates_name_their_user_and_groups() {
    let c = Cluster::start().unwrap();
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .args([
            "kubeconfig",
            "--user",
            "carol",
            "--group",
            "devs",
            "--group",
            "ops",
            "--data-dir",
        ])
        .arg(&c.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile_dir();
    let cfg = write(dir.path(), "carol", &String::from_utf8_lossy(&out.stdout));
    let carol = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", &cfg]);
        std::process::Command::new("kubectl")
            .args(&all)
            .output()
            .unwrap()
    };
    let me = carol(&["auth", "whoami"]);
    let me = String::from_utf8_lossy(&me.stdout);
    assert!(
        me.contains("carol") && me.contains("[devs ops system:authenticated]"),
        "{me}"
    );
    let denied = carol(&["get", "pods"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr)
            .contains(r#"pods is forbidden: User "carol" cannot list resource "pods""#),
        "{denied:?}"
    );
    c.ok(&[
        "create",
        "clusterrolebinding",
        "ops-view",
        "--clusterrole=view",
        "--group=ops",
    ]);
    let allowed = carol(&["get", "pods", "-A"]);
    assert!(allowed.status.success(), "{allowed:?}");
    // Three groups do not fit the certificate library's subject: refused, not truncated.
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .args([
            "kubeconfig",
            "--user",
            "x",
            "--group",
            "a",
            "--group",
            "b",
            "--group",
            "c",
            "--data-dir",
        ])
        .arg(&c.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most two groups"));
}
