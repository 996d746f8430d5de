//! The scheduler inside `shoal up`: pods without a node are placed and run; a pod that fits
//! nowhere stays Pending with Kubernetes' message until a node fits.

use shoal_testkit::{Cluster, NODE, eventually};

#[test]
fn pods_without_a_node_are_scheduled_or_explained() {
    let c = Cluster::start().unwrap();
    eventually("node is Ready", || {
        let out = c.ok(&["get", "nodes"]);
        anyhow::ensure!(out.contains(" Ready "), "{out}");
        Ok(())
    });
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: placed}\nspec:\n  restartPolicy: Never\n  containers: [{name: a, image: shoal.local/hello:latest, resources: {requests: {cpu: 100m, memory: 16Mi}}}]\n",
    );
    c.wait_pod("placed", "{.status.phase}", "Succeeded");
    assert_eq!(c.pod_field("placed", "{.spec.nodeName}").unwrap(), NODE);
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=placed",
    ]);
    assert!(
        events.contains("Successfully assigned default/placed to node-1"),
        "{events}"
    );

    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: picky}\nspec:\n  restartPolicy: Never\n  nodeSelector: {disk: ssd}\n  containers: [{name: a, image: shoal.local/hello:latest}]\n",
    );
    c.wait_pod(
        "picky",
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
    );
    assert_eq!(c.pod_field("picky", "{.status.phase}").unwrap(), "Pending");
    let describe = c.ok(&["describe", "pod", "picky"]);
    assert!(describe.contains("FailedScheduling"), "{describe}");

    // Once a node fits, the pod is placed without waiting out its back-off.
    c.ok(&["label", "node", NODE, "disk=ssd"]);
    c.wait_pod("picky", "{.status.phase}", "Succeeded");
}

#[test]
fn a_replicaset_keeps_its_pods_running_and_scales() {
    let c = Cluster::start().unwrap();
    c.apply(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: echo, image: shoal.local/http-echo:latest, ports: [{containerPort: 8080}]}\n",
    );
    let running = |n: usize| {
        eventually(&format!("{n} web pods Running"), || {
            let out = c.ok(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "--field-selector",
                "status.phase=Running",
                "-o",
                "name",
            ]);
            let count = out.lines().count();
            anyhow::ensure!(count == n, "{count} running:\n{out}");
            Ok(())
        })
    };
    running(3);
    eventually("status counts ready replicas", || {
        let ready = c.ok(&["get", "rs", "web", "-o", "jsonpath={.status.readyReplicas}"]);
        anyhow::ensure!(ready == "3", "readyReplicas {ready:?}");
        Ok(())
    });
    let owner = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.ownerReferences[0].kind}",
    ]);
    assert_eq!(owner, "ReplicaSet");

    // A deleted pod is replaced; scaling down removes pods.
    let one = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    c.ok(&["delete", "pod", &one]);
    running(3);
    c.ok(&["scale", "rs", "web", "--replicas=1"]);
    eventually("scaled down to 1", || {
        let out = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
        anyhow::ensure!(out.lines().count() == 1, "{out}");
        Ok(())
    });

    // Deleting the ReplicaSet deletes its pods (background propagation)...
    c.ok(&["delete", "rs", "web"]);
    eventually("the garbage collector deletes the pods", || {
        let out = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
        anyhow::ensure!(out.trim().is_empty(), "{out}");
        Ok(())
    });
    // ...while --cascade=orphan leaves them, without the owner reference.
    c.apply(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: keep}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: keep}}\n  template:\n    metadata: {labels: {app: keep}}\n    spec:\n      containers:\n      - {name: s, image: shoal.local/exerciser:latest}\n",
    );
    eventually("the keep pod exists", || {
        let out = c.ok(&["get", "pods", "-l", "app=keep", "-o", "name"]);
        anyhow::ensure!(out.lines().count() == 1, "{out}");
        Ok(())
    });
    c.ok(&["delete", "rs", "keep", "--cascade=orphan"]);
    eventually("the replicaset is gone and its pod orphaned", || {
        let rs = c.kubectl(&["get", "rs", "keep"]);
        anyhow::ensure!(!rs.status.success(), "replicaset still there");
        let refs = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=keep",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ]);
        anyhow::ensure!(refs.is_empty() || refs == "[]", "owner references {refs}");
        Ok(())
    });
    assert_eq!(
        c.ok(&["get", "pods", "-l", "app=keep", "-o", "name"])
            .lines()
            .count(),
        1
    );
}

#[test]
fn simulated_nodes_take_pods_and_replicas_spread_over_them() {
    let c = Cluster::start().unwrap();
    let _sim = shoal_testkit::SimulatedNodes::start(&c, 20).unwrap();
    let ready = c.ok(&["get", "nodes", "-l", "shoal.dev/simulated=true"]);
    assert_eq!(ready.matches(" Ready ").count(), 20, "{ready}");

    // Required anti-affinity: one replica per simulated node; Running without executing.
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: fleet}\nspec:\n  replicas: 10\n  selector: {matchLabels: {app: fleet}}\n  template:\n    metadata: {labels: {app: fleet}}\n    spec:\n      nodeSelector: {shoal.dev/simulated: 'true'}\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - {labelSelector: {matchLabels: {app: fleet}}, topologyKey: kubernetes.io/hostname}\n      containers: [{name: c, image: shoal.local/http-echo:latest}]\n",
    );
    c.ok(&["rollout", "status", "deployment/fleet", "--timeout=60s"]);
    let nodes = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=fleet",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    let mut nodes: Vec<&str> = nodes.split(' ').collect();
    assert_eq!(nodes.len(), 10);
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 10, "two replicas share a node: {nodes:?}");
    assert!(nodes.iter().all(|n| n.starts_with("sim-")), "{nodes:?}");

    // More replicas than nodes: the rest wait with the anti-affinity reason.
    c.ok(&["scale", "deployment/fleet", "--replicas=21"]);
    eventually("a replica is unschedulable", || {
        let out = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=fleet",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        anyhow::ensure!(
            out.contains("0/21 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 20 node(s) didn't satisfy existing pods anti-affinity rules."),
            "{out}"
        );
        Ok(())
    });
}

#[test]
fn a_high_priority_pod_preempts_lower_priority_ones_on_a_full_node() {
    let c = Cluster::start_with(&["--max-pods", "2"]).unwrap();
    let pod = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  {class}containers: [{{name: c, image: shoal.local/exerciser:latest}}]\n"
        )
    };
    c.apply(&pod("low-1", ""));
    c.apply(&pod("low-2", ""));
    c.wait_pod("low-1", "{.status.phase}", "Running");
    c.wait_pod("low-2", "{.status.phase}", "Running");
    c.apply(
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: urgent}\nvalue: 1000\n",
    );
    c.apply(&pod("urgent", "priorityClassName: urgent\n  "));
    c.wait_pod("urgent", "{.status.phase}", "Running");
    assert_eq!(c.pod_field("urgent", "{.spec.priority}").unwrap(), "1000");
    // Exactly one low-priority pod made room, with Kubernetes' event.
    let left = c.ok(&["get", "pods", "-o", "name"]);
    assert_eq!(
        left.lines().filter(|l| l.starts_with("pod/low-")).count(),
        1,
        "{left}"
    );
    let events = c.ok(&["get", "events", "--field-selector", "reason=Preempted"]);
    let uid = c.pod_field("urgent", "{.metadata.uid}").unwrap();
    assert!(
        events.contains(&format!("Preempted by pod {uid} on node {NODE}")),
        "{events}"
    );
}

/// The scheduler and controller-manager of `shoal up` hold their Leases; a second scheduler
/// started against the cluster waits as a standby (it never takes the Lease while the first
/// renews it) and stops cleanly.
#[test]
fn components_hold_leases_and_a_second_scheduler_stands_by() {
    let c = Cluster::start().unwrap();
    let holder = |name: &str| {
        c.ok(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            name,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    };
    let scheduler = eventually("the scheduler leads", || {
        let h = holder("kube-scheduler");
        anyhow::ensure!(!h.is_empty(), "no holder");
        Ok(h)
    });
    eventually("the controller-manager leads", || {
        let h = holder("kube-controller-manager");
        anyhow::ensure!(!h.is_empty(), "no holder");
        Ok(())
    });
    let events = c.ok(&["get", "events", "-n", "kube-system"]);
    assert!(events.contains("became leader"), "{events}");
    let mut standby = std::process::Command::new(shoal_testkit::shoal_bin())
        .args(["scheduler", "--kubeconfig"])
        .arg(c.kubeconfig())
        .args([
            "--leader-elect-lease-duration=2s",
            "--leader-elect-retry-period=200ms",
            "--metrics-bind-address=127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // It says where its metrics are, and serves them (and /healthz) while standing by.
    let mut out = std::io::BufReader::new(standby.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    // The rest of its output is drained, so its writes never meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let at = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {first:?}"))
        .to_owned();
    let metrics = crate::day2::http_get(&at, "/metrics").unwrap();
    let (head, body) = metrics.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    crate::day2::families(body);
    let health = crate::day2::http_get(&at, "/healthz").unwrap();
    assert!(health.ends_with("ok"), "{health}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(holder("kube-scheduler"), scheduler);
    assert!(standby.try_wait().unwrap().is_none(), "the standby exited");
    // It still schedules (the leader does).
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: led}\nspec:\n  restartPolicy: Never\n  containers: [{name: a, image: shoal.local/hello:latest}]\n",
    );
    c.wait_pod("led", "{.status.phase}", "Succeeded");
    let _ = standby.kill();
    let _ = standby.wait();
}
