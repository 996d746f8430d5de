//! Wasm admission policies and scheduler plugins configured with kubectl against `shoal up`:
//! denial, mutation, monitor mode, hot reload, a broken module, hostile modules, and a
//! scheduler plugin steering pods.

use shoal_testkit::{Cluster, eventually, policy};
use std::time::Duration;

fn policy_field(c: &Cluster, kind: &str, name: &str, expr: &str) -> String {
    let jp = format!("jsonpath={expr}");
    let out = c.kubectl(&["get", kind, name, "-o", &jp]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_phase(c: &Cluster, kind: &str, name: &str, phase: &str) {
    eventually(&format!("{kind} {name} {phase}"), || {
        let got = policy_field(c, kind, name, "{.status.phase} {.status.message}");
        anyhow::ensure!(got.starts_with(phase), "is {got:?}");
        Ok(())
    });
}

/// `kubectl apply -f -`: (success, stdout + stderr).
fn apply(c: &Cluster, yaml: &str) -> (bool, String) {
    let out = c.kubectl_with(&["apply", "-f", "-"], Some(yaml), &[]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn pod(name: &str, privileged: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: shoal.local/hello:latest\n    securityContext: {{privileged: {privileged}}}\n"
    )
}

/// Puts `file` into the ConfigMap kube-system/modules under `policy.wasm`.
fn set_module(c: &Cluster, file: &std::path::Path) {
    put_module(c, "kube-system", "modules", file);
}

/// Puts `file` into the ConfigMap `ns/name` under `policy.wasm`.
fn put_module(c: &Cluster, ns: &str, name: &str, file: &std::path::Path) {
    let from = format!("--from-file=policy.wasm={}", file.display());
    let out = c.ok(&[
        "create",
        "configmap",
        name,
        "-n",
        ns,
        &from,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let (ok, msg) = apply(c, &out);
    assert!(ok, "{msg}");
}

#[test]
fn admission_policies_deny_mutate_warn_and_reload_without_a_restart() {
    let c = Cluster::start().unwrap();

    // A module from a ConfigMap, allowing everything at first.
    set_module(&c, &policy("hostile"));
    c.apply(
        "apiVersion: policy.shoal.dev/v1\nkind: ClusterAdmissionPolicy\nmetadata: {name: pods-policy}\nspec:\n  module: configmap://kube-system/modules/policy.wasm\n  settings: {behaviour: allow}\n  rules: [{operations: [CREATE, UPDATE], apiGroups: [\"\"], resources: [pods]}]\n",
    );
    wait_phase(&c, "clusteradmissionpolicy", "pods-policy", "Active");
    let (ok, msg) = apply(&c, &pod("p1", true));
    assert!(ok, "{msg}");

    // A new module in the ConfigMap changes behaviour within seconds, without a restart.
    set_module(&c, &policy("deny-privileged"));
    // A new name each try: a pod the old module let in would make a retry a no-op.
    let mut attempt = 0;
    eventually("the new module denies privileged pods", || {
        attempt += 1;
        let (ok, msg) = apply(&c, &pod(&format!("probe-{attempt}"), true));
        anyhow::ensure!(!ok, "allowed: {msg}");
        Ok(msg)
    });
    let (_, msg) = apply(&c, &pod("p2", true));
    assert!(
        msg.contains("Error from server (Forbidden)")
            && msg.contains("admission policy \"pods-policy\" denied the request: privileged pods are not allowed: container c is privileged"),
        "{msg}"
    );
    // Fixed, the same pod goes in.
    let (ok, msg) = apply(&c, &pod("p2", false));
    assert!(ok, "{msg}");

    // A broken module: the status says so and the last good one keeps serving.
    let garbage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(garbage.path(), b"\0asm but not really").unwrap();
    set_module(&c, garbage.path());
    wait_phase(&c, "cap", "pods-policy", "Failed");
    let message = policy_field(&c, "cap", "pods-policy", "{.status.message}");
    assert!(
        message.contains("not a valid plugin component") && message.contains("keeps serving"),
        "{message}"
    );
    let (ok, msg) = apply(&c, &pod("p3", true));
    assert!(
        !ok && msg.contains("privileged pods are not allowed"),
        "{msg}"
    );
    let table = c.ok(&["get", "clusteradmissionpolicies"]);
    assert!(
        table.contains("pods-policy") && table.contains("Failed"),
        "{table}"
    );

    // A mutating policy: its change is in the stored object, with its warning.
    let limits = policy("default-limits");
    c.apply(&format!(
        "apiVersion: policy.shoal.dev/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: limits}}\nspec:\n  module: file://{}\n  mutating: true\n  settings: {{cpu: 250m, memory: 64Mi}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], resources: [pods]}}]\n",
        limits.display()
    ));
    wait_phase(&c, "cap", "limits", "Active");
    let (ok, msg) = apply(&c, &pod("p4", false));
    assert!(ok, "{msg}");
    assert!(
        msg.contains(
            "Warning: default resource limits added (c: limits.cpu=250m, c: limits.memory=64Mi)"
        ),
        "{msg}"
    );
    assert_eq!(
        c.pod_field("p4", "{.spec.containers[0].resources.limits.memory}")
            .unwrap(),
        "64Mi"
    );

    // Monitor mode lets the object in with a warning; protect mode then denies it.
    // A namespaced policy takes its module from a ConfigMap of its own namespace.
    put_module(&c, "default", "team-modules", &policy("require-labels"));
    let monitor = |mode: &str| {
        format!(
            "apiVersion: policy.shoal.dev/v1\nkind: AdmissionPolicy\nmetadata: {{name: needs-team, namespace: default}}\nspec:\n  module: configmap://team-modules/policy.wasm\n  mode: {mode}\n  settings: {{labels: [team]}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], resources: [configmaps]}}]\n"
        )
    };
    c.apply(&monitor("monitor"));
    wait_phase(&c, "admissionpolicy", "needs-team", "Active");
    let out = c.kubectl(&["create", "configmap", "c1", "--from-literal=a=b"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: policy default/needs-team (monitor mode) would deny the request: ConfigMap c1 is missing required label(s): team"),
        "{stderr}"
    );
    // ... and records it as an Event on the policy.
    eventually("the monitor-mode verdict is an event on the policy", || {
        let d = c.ok(&["describe", "admissionpolicy", "needs-team"]);
        anyhow::ensure!(
            d.contains("PolicyViolation")
                && d.contains("would deny CREATE of configmaps default/c1: ConfigMap c1 is missing required label(s): team"),
            "{d}"
        );
        Ok(())
    });
    c.apply(&monitor("protect"));
    let mut attempt = 0;
    eventually("protect mode denies", || {
        attempt += 1;
        let name = format!("c2-{attempt}");
        let out = c.kubectl(&["create", "configmap", &name, "--from-literal=a=b"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            !out.status.success() && stderr.contains("is missing required label(s): team"),
            "still allowed: {stderr}"
        );
        Ok(())
    });
    // Other namespaces are not the namespaced policy's business.
    c.ok(&[
        "create",
        "configmap",
        "c3",
        "-n",
        "kube-public",
        "--from-literal=a=b",
    ]);

    // Bad policy objects get field errors.
    let (ok, msg) = apply(
        &c,
        "apiVersion: policy.shoal.dev/v1\nkind: ClusterAdmissionPolicy\nmetadata: {name: bad}\nspec:\n  module: ftp://x/y.wasm\n  mode: audit\n  rules: []\n",
    );
    assert!(!ok);
    assert!(
        msg.contains("spec.module: Invalid value")
            && msg.contains("spec.mode: Unsupported value: \"audit\"")
            && msg.contains("spec.rules: Required value"),
        "{msg}"
    );
}

#[test]
fn hostile_policies_fail_within_their_deadline_and_the_api_keeps_serving() {
    let c = Cluster::start().unwrap();
    let hostile = policy("hostile");
    let cap = |name: &str, behaviour: &str, resource: &str, failure: &str| {
        format!(
            "apiVersion: policy.shoal.dev/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: {name}}}\nspec:\n  module: {}\n  timeoutSeconds: 3\n  failurePolicy: {failure}\n  settings: {{behaviour: {behaviour}}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], resources: [{resource}]}}]\n",
            hostile.display()
        )
    };
    c.apply(&cap("loops", "loop", "services", "Fail"));
    c.apply(&cap("hoards", "allocate", "serviceaccounts", "Fail"));
    c.apply(&cap("traps", "trap", "endpoints", "Ignore"));
    for n in ["loops", "hoards", "traps"] {
        wait_phase(&c, "cap", n, "Active");
    }

    // While a request is stuck in the looping policy, other requests are served.
    let kubeconfig = c.kubeconfig();
    let looping = std::thread::spawn(move || {
        std::process::Command::new("kubectl")
            .args(["create", "service", "clusterip", "s1", "--tcp=80:80"])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        c.ok(&["get", "namespace", "default"]);
    }
    assert!(
        !looping.is_finished(),
        "reads waited for the looping policy"
    );
    let out = looping.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "Internal error occurred: failed calling admission policy \"loops\": plugin timed out after 3s"
        ),
        "{stderr}"
    );

    let msg = c.fails(&["create", "serviceaccount", "sa1"]);
    assert!(
        msg.contains(
            "failed calling admission policy \"hoards\": plugin exceeded its memory limit"
        ),
        "{msg}"
    );
    // failurePolicy: Ignore lets the write through a trapping policy.
    c.apply("apiVersion: v1\nkind: Endpoints\nmetadata: {name: e1}\n");
    // Failures are counted in the status, and recorded as events.
    let d = c.ok(&["describe", "cap", "loops"]);
    assert!(
        d.contains("PolicyFailed") && d.contains("plugin timed out after 3s"),
        "{d}"
    );
    for n in ["loops", "hoards", "traps"] {
        eventually(&format!("{n} counts its failure"), || {
            let got = policy_field(&c, "cap", n, "{.status.failures}");
            anyhow::ensure!(got == "1", "is {got:?}");
            Ok(())
        });
    }
    // Deleting the policy lifts it.
    c.ok(&["delete", "cap", "loops"]);
    eventually("services can be created again", || {
        let out = c.kubectl(&["create", "service", "clusterip", "s2", "--tcp=80:80"]);
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    });
}

#[test]
fn scheduler_plugins_steer_pods_by_node_labels() {
    let c = Cluster::start().unwrap();
    let _sim = shoal_testkit::SimulatedNodes::start(&c, 3).unwrap();
    let names = c.ok(&[
        "get",
        "nodes",
        "-l",
        "shoal.dev/simulated=true",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut names: Vec<&str> = names.split(' ').collect();
    names.sort();
    let [low, avoided, best] = names[..] else {
        panic!("{names:?}");
    };
    c.ok(&["label", "node", low, "tier=1"]);
    c.ok(&["label", "node", avoided, "tier=9", "maintenance=yes"]);
    c.ok(&["label", "node", best, "tier=5"]);

    let plugin = |name: &str, file: &str, points: &str, settings: &str| {
        format!(
            "apiVersion: policy.shoal.dev/v1\nkind: SchedulerPlugin\nmetadata: {{name: {name}}}\nspec:\n  module: {}\n  extensionPoints: [{points}]\n  weight: 100\n  settings: {settings}\n",
            policy(file).display()
        )
    };
    c.apply(&plugin(
        "avoid",
        "avoid-nodes",
        "Filter",
        "{label: maintenance}",
    ));
    c.apply(&plugin("prefer", "prefer-nodes", "Score", "{label: tier}"));
    wait_phase(&c, "schedulerplugin", "avoid", "Active");
    wait_phase(&c, "schedulerplugin", "prefer", "Active");
    let table = c.ok(&["get", "schedulerplugins"]);
    assert!(
        table.contains("EXTENSION POINTS") && table.contains("Filter"),
        "{table}"
    );

    // The scheduler picks the plugins up without a restart; every replica lands on the
    // best-scored node the filter allows.
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: steered}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: steered}}\n  template:\n    metadata: {labels: {app: steered}}\n    spec:\n      nodeSelector: {shoal.dev/simulated: 'true'}\n      containers: [{name: c, image: shoal.local/http-echo:latest}]\n",
    );
    c.ok(&["rollout", "status", "deployment/steered", "--timeout=60s"]);
    let placed = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=steered",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert!(
        placed.split(' ').all(|n| n == best),
        "{placed} (best is {best})"
    );

    // The filter's reason shows in a pod that can only go to the avoided node.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: stuck}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {avoided}}}\n  containers: [{{name: c, image: shoal.local/hello:latest}}]\n"
    ));
    eventually("the pod is unschedulable with the plugin's reason", || {
        let msg = c.pod_field(
            "stuck",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )?;
        anyhow::ensure!(msg.contains("1 node(s) had label maintenance"), "{msg}");
        Ok(())
    });
    // Removing the filter lets it in.
    c.ok(&["delete", "schedulerplugin", "avoid"]);
    c.wait_pod("stuck", "{.spec.nodeName}", avoided);
}

#[test]
fn policies_are_pulled_from_an_oci_registry_and_checked_by_digest() {
    let registry = shoal_testkit::registry::Registry::start().unwrap();
    let module = policy("deny-privileged");
    let image = format!("{}/policies/deny-privileged:v1", registry.host);
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .args(["image", "push"])
        .arg(&module)
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sum = std::process::Command::new("sha256sum")
        .arg(&module)
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    // The registry listens on loopback, which module sources may use only when allowed.
    let c = Cluster::start_with(&["--allow-loopback-plugin-sources"]).unwrap();
    let cap = |name: &str, digest: &str| {
        format!(
            "apiVersion: policy.shoal.dev/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: {name}}}\nspec:\n  module: registry://{image}\n  moduleDigest: sha256:{digest}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], resources: [pods]}}]\n"
        )
    };
    c.apply(&cap("pulled", &hex));
    wait_phase(&c, "cap", "pulled", "Active");
    assert_eq!(
        policy_field(&c, "cap", "pulled", "{.status.digest}"),
        format!("sha256:{hex}")
    );
    let (ok, msg) = apply(&c, &pod("p1", true));
    assert!(
        !ok && msg.contains("privileged pods are not allowed"),
        "{msg}"
    );

    // Selectors: a policy for Secrets labelled checked=yes in namespaces labelled policy=on.
    let labels = policy("require-labels");
    c.apply(&format!(
        "apiVersion: policy.shoal.dev/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: scoped}}\nspec:\n  module: {}\n  settings: {{labels: [team]}}\n  namespaceSelector: {{matchLabels: {{policy: 'on'}}}}\n  objectSelector: {{matchLabels: {{checked: 'yes'}}}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], resources: [secrets]}}]\n",
        labels.display()
    ));
    wait_phase(&c, "cap", "scoped", "Active");
    c.ok(&["create", "namespace", "strict"]);
    c.ok(&["label", "namespace", "strict", "policy=on"]);
    let secret = |ns: &str, name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nstringData: {{a: b}}\n"
        )
    };
    let (ok, msg) = apply(&c, &secret("strict", "s1", "checked: 'yes'"));
    assert!(
        !ok && msg.contains("Secret s1 is missing required label(s): team"),
        "{msg}"
    );
    let (ok, msg) = apply(&c, &secret("strict", "s2", "checked: 'yes', team: a"));
    assert!(ok, "{msg}");
    let (ok, msg) = apply(&c, &secret("strict", "s3", "other: x"));
    assert!(ok, "object selector: {msg}");
    let (ok, msg) = apply(&c, &secret("default", "s4", "checked: 'yes'"));
    assert!(ok, "namespace selector: {msg}");

    // A module whose digest is not the one the policy names never serves.
    let zeros = "0".repeat(64);
    c.apply(&cap("wrong", &zeros));
    wait_phase(&c, "cap", "wrong", "Failed");
    let message = policy_field(&c, "cap", "wrong", "{.status.message}");
    assert!(
        message.contains(&format!(
            "module digest is sha256:{hex}, expected sha256:{zeros}"
        )),
        "{message}"
    );
}

/// `shoal policy test|bench` run a policy offline against YAML files.
#[test]
fn policies_are_tested_and_benchmarked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let pod_file = dir.path().join("pod.yaml");
    std::fs::write(&pod_file, pod("p", true)).unwrap();
    let review = dir.path().join("review.yaml");
    std::fs::write(
        &review,
        format!(
            "apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest:\n  uid: u1\n  operation: CREATE\n  kind: {{group: '', version: v1, kind: Pod}}\n  resource: {{group: '', version: v1, resource: pods}}\n  namespace: default\n  name: p\n  object:\n{}",
            pod("p", false)
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    let shoal = |args: &[&str]| {
        std::process::Command::new(shoal_testkit::shoal_bin())
            .args(["policy"])
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let deny = policy("deny-privileged");
    let deny = deny.to_str().unwrap();
    let obj = pod_file.to_str().unwrap();

    let out = shoal(&["test", deny, "--object", obj]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.contains("allowed: false")
            && stdout.contains("code: 403")
            && stdout.contains("container c is privileged"),
        "{stdout}"
    );
    let out = shoal(&["test", deny, "--request", review.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("allowed: true"));

    // A mutation prints its patch and the patched object.
    let limits = policy("default-limits");
    let out = shoal(&[
        "test",
        limits.to_str().unwrap(),
        "--mutating",
        "--settings",
        "{memory: 32Mi}",
        "--object",
        obj,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("patchedObject:") && stdout.contains("memory: 32Mi"),
        "{stdout}"
    );
    // Settings the policy rejects are an error naming them.
    let labels = policy("require-labels");
    let out = shoal(&["test", labels.to_str().unwrap(), "--object", obj]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("settings.labels: at least one label is required")
    );

    let out = shoal(&["bench", deny, "--object", obj, "--iterations", "50"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("50 reviews (fresh instance each)") && stdout.contains("latency µs: p50"),
        "{stdout}"
    );
}
