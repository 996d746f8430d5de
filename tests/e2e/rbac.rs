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

    // Every namespace gets its `default` ServiceAccount, again if it is deleted; new pods run
    // as it.
    let default_sa = |what: &str| {
        eventually(what, || {
            let out = c.kubectl(&[
                "get",
                "serviceaccount",
                "default",
                "-n",
                "dev",
                "-o",
                "name",
            ]);
            anyhow::ensure!(out.status.success(), "no default account yet");
            Ok(())
        })
    };
    default_sa("dev's default ServiceAccount");
    c.ok(&["delete", "serviceaccount", "default", "-n", "dev"]);
    default_sa("dev's default ServiceAccount, again");
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: dev}\nspec:\n  containers: [{name: c, image: x.local/y:1}]\n");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "p",
            "-n",
            "dev",
            "-o",
            "jsonpath={.spec.serviceAccountName}"
        ]),
        "default"
    );

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

async fn client_as(c: &Cluster, token: Option<&str>) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    if let Some(t) = token {
        config.auth_info.token = Some(t.to_owned().into());
    }
    kube::Client::try_from(config).unwrap()
}

/// A flood of 2,000 concurrent lists from one user gets 429s with `Retry-After`, while another
/// user's requests and the node's lease renewals keep succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_user_gets_429_while_others_go_on() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    let dir = tempfile_dir();
    let tokens = write(
        dir.path(),
        "tokens.csv",
        "alice-token-0123456789,alice,1001\nbob-token-0123456789,bob,1002\n",
    );
    // A level of two seats: Alice may hold one and queue 16, which a flood outruns at once
    // (with the default 400 this machine answers 2,000 lists faster than curl connects).
    let c = Cluster::start_with(&["--token-auth-file", &tokens, "--max-requests-inflight", "2"])
        .unwrap();
    c.ok(&[
        "create",
        "clusterrolebinding",
        "readers",
        "--clusterrole=view",
        "--user=alice",
        "--user=bob",
    ]);
    let admin = client_as(&c, None).await;
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(admin.clone(), "default");
    // Lists big enough to take a while to write.
    let big = "x".repeat(4096);
    futures::future::join_all((0..200).map(|i| {
        let cms = cms.clone();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("cm-{i}")}, "data": {"v": big}}))
        .unwrap();
        async move { cms.create(&Default::default(), &cm).await.unwrap() }
    }))
    .await;
    let leases: kube::Api<Lease> = kube::Api::namespaced(admin, "kube-node-lease");
    let renewed = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let node = c.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    // The node registers before it creates its lease: wait for the lease.
    let first_lease = async {
        loop {
            if let Ok(lease) = leases.get(&node).await {
                return lease;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let before = renewed(
        &tokio::time::timeout(std::time::Duration::from_secs(30), first_lease)
            .await
            .expect("the node creates its lease"),
    );

    // One curl process with 2,000 transfers in flight at once, as a flooding client would.
    let kubeconfig = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    let mut config = String::new();
    for _ in 0..2000 {
        config.push_str(&format!(
            "url = \"{server}/api/v1/namespaces/default/configmaps\"\noutput = \"/dev/null\"\n"
        ));
    }
    let curl_config = write(dir.path(), "flood.curl", &config);
    let flood = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "--parallel",
                "--parallel-immediate",
                "--parallel-max",
                "2000",
            ])
            .args(["-H", "Authorization: Bearer alice-token-0123456789"])
            .args([
                "-w",
                "%{http_code} %header{retry-after}\n",
                "-K",
                &curl_config,
            ])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let (code, retry) = l.split_once(' ').unwrap_or((l, ""));
                (code.parse::<u16>().unwrap_or(0), !retry.trim().is_empty())
            })
            .collect::<Vec<_>>()
    });
    let bob = client_as(&c, Some("bob-token-0123456789")).await;
    let bobs: kube::Api<ConfigMap> = kube::Api::namespaced(bob, "default");
    let others = async {
        let mut ok = 0;
        for i in 0..20 {
            if bobs.get(&format!("cm-{i}")).await.is_ok() {
                ok += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ok
    };
    let (answers, bob_ok) = futures::join!(flood, others);
    let answers = answers.unwrap();
    let refused = answers.iter().filter(|(code, _)| *code == 429).count();
    let served = answers.iter().filter(|(code, _)| *code == 200).count();
    let mut codes = std::collections::BTreeMap::new();
    for (c, _) in &answers {
        *codes.entry(*c).or_insert(0) += 1;
    }
    assert!(
        refused > 0,
        "no 429 among {} answers: {codes:?}",
        answers.len()
    );
    assert!(
        answers
            .iter()
            .filter(|(c, _)| *c == 429)
            .all(|(_, retry)| *retry)
    );
    assert_eq!(
        refused + served,
        answers.len(),
        "other answers: {:?}",
        answers
            .iter()
            .filter(|(c, _)| *c != 429 && *c != 200)
            .take(3)
            .collect::<Vec<_>>()
    );
    assert_eq!(bob_ok, 20, "bob's requests failed during the flood");
    // The node's lease went on being renewed (every 10 s) through the flood and after it.
    let lease_renewed = async {
        loop {
            if renewed(&leases.get(&node).await.unwrap()) != before {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), lease_renewed)
        .await
        .expect("the node lease is renewed");
    eprintln!("flood: {served} served, {refused} refused with 429");
}
