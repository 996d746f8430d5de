//! The controller-manager inside `shoal up`, driven with kubectl: Deployments (scale, rolling
//! update within maxUnavailable, rollout status, undo, cascading delete), Jobs, CronJobs,
//! DaemonSets and StatefulSets across two nodes, namespace deletion, and a lost node whose
//! pods are recreated elsewhere.

use shoal_testkit::{Cluster, NODE, Node, eventually};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 0}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: shoal.local/http-echo:latest
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
";

fn count_running(c: &Cluster, selector: &str) -> usize {
    c.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ])
    .lines()
    .count()
}

/// Pods of `selector` that are Ready and not being deleted.
fn count_ready(c: &Cluster, selector: &str) -> usize {
    let out = c.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.deletionTimestamp}|{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    ]);
    out.lines().filter(|l| *l == "|True").count()
}

#[test]
fn a_deployment_scales_rolls_out_within_max_unavailable_undoes_and_deletes() {
    let c = Cluster::start().unwrap();
    c.apply(DEPLOYMENT);
    c.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/echo",
        "--timeout=60s",
    ]);
    c.ok(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    assert_eq!(count_running(&c, "app=echo"), 3);
    let rs = c.ok(&["get", "rs", "-l", "app=echo", "-o", "name"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
    assert!(
        c.ok(&["get", "pods", "-l", "app=echo", "--show-labels"])
            .contains("pod-template-hash="),
    );

    c.ok(&["scale", "deployment/echo", "--replicas=5"]);
    c.ok(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    eventually("5 running", || {
        let n = count_running(&c, "app=echo");
        anyhow::ensure!(n == 5, "{n}");
        Ok(())
    });
    c.ok(&["scale", "deployment/echo", "--replicas=3"]);
    c.ok(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    eventually("3 ready", || {
        let n = count_ready(&c, "app=echo");
        anyhow::ensure!(n == 3, "{n}");
        Ok(())
    });

    // A new image (the same component under another name): the rollout never leaves fewer
    // than replicas - maxUnavailable = 2 pods ready.
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .args(["image", "import"])
        .arg(shoal_testkit::guest("http-echo"))
        .args(["--name", "shoal.local/echo:v2", "--data-dir"])
        .arg(&c.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    c.ok(&[
        "annotate",
        "deployment/echo",
        "kubernetes.io/change-cause=echo v2",
    ]);
    let done = Arc::new(AtomicBool::new(false));
    let mut lowest = usize::MAX;
    std::thread::scope(|s| {
        let watcher = {
            let done = done.clone();
            let c = &c;
            s.spawn(move || {
                let out = c.ok(&["rollout", "status", "deployment/echo", "--timeout=90s"]);
                done.store(true, Ordering::SeqCst);
                out
            })
        };
        c.ok(&[
            "set",
            "image",
            "deployment/echo",
            "echo=shoal.local/echo:v2",
        ]);
        while !done.load(Ordering::SeqCst) {
            lowest = lowest.min(count_ready(&c, "app=echo"));
        }
        let out = watcher.join().unwrap();
        assert!(out.contains("successfully rolled out"), "{out}");
    });
    assert!(
        lowest >= 2,
        "only {lowest} pods were ready during the rollout"
    );
    let images = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=echo",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    eventually("all pods run v2", || {
        let images = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=echo",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ]);
        anyhow::ensure!(
            images.split(' ').count() == 3 && !images.contains("http-echo"),
            "{images}"
        );
        Ok(())
    });
    drop(images);
    let history = c.ok(&["rollout", "history", "deployment/echo"]);
    assert!(history.contains("echo v2"), "{history}");
    assert_eq!(
        c.ok(&["get", "rs", "-l", "app=echo", "-o", "name"])
            .lines()
            .count(),
        2
    );

    // Undo restores the first template, as revision 3.
    c.ok(&["rollout", "undo", "deployment/echo"]);
    c.ok(&["rollout", "status", "deployment/echo", "--timeout=90s"]);
    let image = c.ok(&[
        "get",
        "deployment/echo",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "shoal.local/http-echo:latest");
    let revision = c.ok(&[
        "get",
        "deployment/echo",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(revision, "3");

    // Pause: a template change waits; resume rolls it out.
    c.ok(&["rollout", "pause", "deployment/echo"]);
    c.ok(&["set", "env", "deployment/echo", "MODE=paused"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        c.ok(&["get", "rs", "-l", "app=echo", "-o", "name"])
            .lines()
            .count(),
        2
    );
    c.ok(&["rollout", "resume", "deployment/echo"]);
    c.ok(&["rollout", "status", "deployment/echo", "--timeout=90s"]);
    assert_eq!(
        c.ok(&["get", "rs", "-l", "app=echo", "-o", "name"])
            .lines()
            .count(),
        3
    );

    // kubectl describe shows the controllers' events.
    let described = c.ok(&["describe", "deployment", "echo"]);
    assert!(
        described.contains("ScalingReplicaSet")
            && described.contains("Scaled up replica set echo-"),
        "{described}"
    );
    let rs = c.ok(&["get", "rs", "-l", "app=echo", "-o", "name"]);
    let first = rs.lines().next().unwrap();
    let described = c.ok(&["describe", first]);
    assert!(described.contains("Created pod: echo-"), "{described}");

    // Deleting the Deployment deletes its ReplicaSets and their pods.
    c.ok(&["delete", "deployment/echo"]);
    eventually("ReplicaSets and pods gone", || {
        let left = c.ok(&["get", "rs,pods", "-l", "app=echo", "-o", "name"]);
        anyhow::ensure!(left.is_empty(), "{left}");
        Ok(())
    });
}

#[test]
fn jobs_complete_and_cronjobs_create_jobs() {
    let c = Cluster::start().unwrap();
    c.apply(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '*/1 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: hello, image: shoal.local/hello:latest}]\n",
    );
    c.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: three}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: hello, image: shoal.local/hello:latest}]\n",
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/three",
        "--timeout=60s",
    ]);
    let jobs = c.ok(&["get", "job", "three"]);
    assert!(jobs.contains("3/3"), "{jobs}");
    let pods = c.ok(&["get", "pods", "-l", "job-name=three", "-o", "name"]);
    assert_eq!(pods.lines().count(), 3, "{pods}");
    eventually("the job's events", || {
        let described = c.ok(&["describe", "job", "three"]);
        anyhow::ensure!(
            described.contains("SuccessfulCreate") && described.contains("Job completed"),
            "{described}"
        );
        Ok(())
    });

    // A Job whose pod always fails stops after backoffLimit.
    c.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: doomed}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: shoal.local/exerciser:latest, args: [exit, '3']}]\n",
    );
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout=60s",
    ]);
    let reason = c.ok(&[
        "get",
        "job/doomed",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(reason, "BackoffLimitExceeded");

    // The CronJob made a Job within a minute; it runs to completion.
    // (The schedule comes due within a minute: wait longer than `eventually` does.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let job = loop {
        let out = c.ok(&["get", "jobs", "-o", "name"]);
        if let Some(j) = out.lines().find(|l| l.starts_with("job.batch/tick-")) {
            break j.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job from the cronjob after 90 s: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    c.ok(&["wait", "--for=condition=complete", &job, "--timeout=60s"]);
    let owner = c.ok(&[
        "get",
        &job,
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, "CronJob/tick");

    // A schedule that can never fire is accepted, with Kubernetes' warning.
    c.apply(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: never}\nspec:\n  schedule: '59 23 31 2 *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: hello, image: shoal.local/hello:latest}]\n",
    );
    eventually("an InvalidSchedule warning", || {
        let events = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=never",
        ]);
        anyhow::ensure!(
            events.contains("Warning   InvalidSchedule")
                && events.contains("invalid schedule: 59 23 31 2 * : time difference between two schedules is less than 1 second"),
            "{events}"
        );
        Ok(())
    });
    let last = c.ok(&[
        "get",
        "cronjob/tick",
        "-o",
        "jsonpath={.status.lastScheduleTime}",
    ]);
    assert!(!last.is_empty());
}

#[test]
fn daemonsets_statefulsets_and_a_lost_node() {
    let c = Cluster::start().unwrap();
    let second = Node::join(&c, "node-2").unwrap();
    eventually("two Ready nodes", || {
        let out = c.ok(&["get", "nodes"]);
        anyhow::ensure!(out.matches(" Ready ").count() == 2, "{out}");
        Ok(())
    });

    // One daemon pod per node.
    c.apply(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: echo, image: shoal.local/http-echo:latest}]\n",
    );
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let nodes = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    let mut nodes: Vec<&str> = nodes.split(' ').collect();
    nodes.sort();
    assert_eq!(nodes, vec![NODE, "node-2"]);

    // web-0 first, web-1 once web-0 is ready.
    c.apply(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  replicas: 2\n  serviceName: web\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: echo\n        image: shoal.local/http-echo:latest\n        readinessProbe: {httpGet: {path: /, port: 8080}, initialDelaySeconds: 2, periodSeconds: 1}\n",
    );
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    // Each pod is ready 2 s after it starts at the earliest, so web-1, made only once web-0
    // is ready, is created at least 2 s after web-0.
    let created = |pod: &str| -> jiff::Timestamp {
        c.pod_field(pod, "{.metadata.creationTimestamp}")
            .unwrap()
            .parse()
            .unwrap()
    };
    let gap = created("web-1").duration_since(created("web-0"));
    assert!(gap.as_secs() >= 2, "web-1 created {gap:?} after web-0");
    assert_eq!(c.pod_field("web-1", "{.spec.hostname}").unwrap(), "web-1");

    // A Deployment over both nodes, tolerating an unreachable node for 2 s only.
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: spread}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: spread}}\n  template:\n    metadata: {labels: {app: spread}}\n    spec:\n      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]\n      containers: [{name: echo, image: shoal.local/http-echo:latest}]\n",
    );
    c.ok(&["rollout", "status", "deployment/spread", "--timeout=60s"]);
    let on_second = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=spread",
        "--field-selector",
        "spec.nodeName=node-2",
        "-o",
        "name",
    ]);
    assert!(
        !on_second.is_empty(),
        "the scheduler spreads pods over both nodes"
    );

    // The second kubelet stops: its node goes NotReady and its pods come back on node-1.
    drop(second);
    eventually("node-2 NotReady", || {
        let out = c.ok(&["get", "node", "node-2"]);
        anyhow::ensure!(out.contains("NotReady"), "{out}");
        Ok(())
    });
    let taints = c.ok(&[
        "get",
        "node",
        "node-2",
        "-o",
        "jsonpath={.spec.taints[*].key}",
    ]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    eventually("4 spread pods running on node-1", || {
        let out = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=spread",
            "--field-selector",
            &format!("spec.nodeName={NODE},status.phase=Running"),
            "-o",
            "name",
        ]);
        anyhow::ensure!(out.lines().count() == 4, "{out}");
        Ok(())
    });
    c.ok(&["rollout", "status", "deployment/spread", "--timeout=60s"]);
}

#[test]
fn deleting_a_namespace_deletes_everything_in_it() {
    let c = Cluster::start().unwrap();
    c.ok(&["create", "namespace", "scratch"]);
    c.ok(&[
        "-n",
        "scratch",
        "create",
        "deployment",
        "d",
        "--image=shoal.local/http-echo:latest",
        "--replicas=2",
    ]);
    c.ok(&[
        "-n",
        "scratch",
        "create",
        "configmap",
        "cm",
        "--from-literal=a=b",
    ]);
    eventually("2 pods running", || {
        let out = c.ok(&[
            "-n",
            "scratch",
            "get",
            "pods",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ]);
        anyhow::ensure!(out.lines().count() == 2, "{out}");
        Ok(())
    });
    c.ok(&["delete", "namespace", "scratch", "--timeout=60s"]);
    let err = c.fails(&["get", "namespace", "scratch"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    let left = c.ok(&["get", "pods", "-A", "-o", "name"]);
    assert!(!left.contains("/d-"), "{left}");
}

#[test]
fn drain_evicts_pods_while_honouring_a_pod_disruption_budget() {
    let c = Cluster::start().unwrap();
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: guarded}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: guarded}}\n  template:\n    metadata: {labels: {app: guarded}}\n    spec:\n      containers: [{name: c, image: shoal.local/exerciser:latest}]\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: guarded}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: guarded}}\n",
    );
    eventually("the budget sees two healthy pods", || {
        let pdb = c.ok(&["get", "pdb", "guarded"]);
        anyhow::ensure!(pdb.contains("N/A             1                 1"), "{pdb}");
        Ok(())
    });
    // One pod may go; the second eviction is refused while its replacement cannot run (the
    // node is cordoned), so the drain gives up at its timeout.
    let out = c.kubectl(&[
        "drain",
        NODE,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=12s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("evicted").count(), 1, "{stdout}");
    let node = c.ok(&["get", "node", NODE]);
    assert!(node.contains("SchedulingDisabled"), "{node}");
    // Without the budget the drain completes.
    c.ok(&["delete", "pdb", "guarded"]);
    let out = c.ok(&[
        "drain",
        NODE,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    assert!(out.contains(&format!("node/{} drained", NODE)), "{out}");
}

#[test]
fn a_replication_controller_keeps_its_pods_scales_and_deletes_them() {
    let c = Cluster::start().unwrap();
    // No selector: it defaults to the template's labels, as on Kubernetes.
    c.apply(
        "apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers:
      - name: echo
        image: shoal.local/http-echo:latest
",
    );
    eventually("2 running", || {
        let n = count_running(&c, "app=legacy");
        anyhow::ensure!(n == 2, "{n}");
        Ok(())
    });
    assert_eq!(
        c.ok(&["get", "rc", "legacy", "-o", "jsonpath={.spec.selector.app}"]),
        "legacy"
    );
    assert!(
        c.ok(&["scale", "rc", "legacy", "--replicas=3"])
            .contains("replicationcontroller/legacy scaled")
    );
    eventually("3 running and counted", || {
        let n = count_running(&c, "app=legacy");
        let table = c.ok(&["get", "rc", "legacy"]);
        let row: Vec<String> = table
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        anyhow::ensure!(
            n == 3 && row.get(1..3) == Some(&["3".into(), "3".into()]),
            "{n} {table}"
        );
        Ok(())
    });
    assert!(
        c.ok(&["get", "all"])
            .contains("replicationcontroller/legacy")
    );
    // A pod deleted by hand is replaced.
    let pod = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=legacy",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    c.ok(&["delete", "pod", &pod, "--wait=false"]);
    eventually("replaced", || {
        let n = count_running(&c, "app=legacy");
        let names = c.ok(&["get", "pods", "-l", "app=legacy", "-o", "name"]);
        anyhow::ensure!(n == 3 && !names.contains(&pod), "{n} {names}");
        Ok(())
    });
    c.ok(&["delete", "rc", "legacy"]);
    eventually("pods gone", || {
        let out = c.ok(&["get", "pods", "-l", "app=legacy", "-o", "name"]);
        anyhow::ensure!(out.trim().is_empty(), "{out}");
        Ok(())
    });
}

/// `kubectl rollout history|undo` for DaemonSets and StatefulSets, from their
/// ControllerRevisions.
#[test]
fn daemonsets_and_statefulsets_keep_rollout_history_and_undo() {
    let c = Cluster::start().unwrap();
    c.apply(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: echo, image: shoal.local/http-echo:latest}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  replicas: 1\n  serviceName: web\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: echo, image: shoal.local/http-echo:latest}]\n",
    );
    for kind in ["daemonset/agent", "statefulset/web"] {
        c.ok(&["rollout", "status", kind, "--timeout=60s"]);
        c.ok(&["set", "env", kind, "COLOUR=blue"]);
        c.ok(&["rollout", "status", kind, "--timeout=60s"]);
        let history = eventually("two revisions", || {
            let h = c.ok(&["rollout", "history", kind]);
            anyhow::ensure!(h.lines().any(|l| l.starts_with("2 ")), "{h}");
            Ok(h)
        });
        assert!(history.lines().any(|l| l.starts_with("1 ")), "{history}");
        let second = c.ok(&["rollout", "history", kind, "--revision=2"]);
        assert!(second.contains("COLOUR:\tblue"), "{second}");
        let undone = c.ok(&["rollout", "undo", kind]);
        assert!(undone.contains("rolled back"), "{undone}");
        eventually("the first template is back as revision 3", || {
            let env = c.ok(&[
                "get",
                kind,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].env}",
            ]);
            let h = c.ok(&["rollout", "history", kind]);
            anyhow::ensure!(
                env.is_empty() && h.lines().any(|l| l.starts_with("3 ")),
                "{env} {h}"
            );
            anyhow::ensure!(!h.lines().any(|l| l.starts_with("1 ")), "{h}");
            Ok(())
        });
        c.ok(&["rollout", "status", kind, "--timeout=60s"]);
    }
    let revisions = c.ok(&["get", "controllerrevisions", "-o", "name"]);
    assert_eq!(revisions.lines().count(), 4, "{revisions}");
}

/// A StatefulSet's `volumeClaimTemplates` get claims bound to `local-path` volumes on the
/// node; what a pod writes there survives the pod.
#[test]
fn statefulset_claims_are_provisioned_and_outlive_their_pods() {
    let c = Cluster::start().unwrap();
    let sts = |args: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  replicas: 1\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers:\n      - name: c\n        image: shoal.local/exerciser:latest\n        args: [{args}]\n        volumeMounts: [{{name: data, mountPath: /data}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {{requests: {{storage: 1Gi}}}}\n"
        )
    };
    c.apply(&sts(
        "write, /data/kept, written-by-the-first-pod, sleep, '600'",
    ));
    c.wait_pod("db-0", "{.status.phase}", "Running");
    let claim = c.ok(&[
        "get",
        "pvc",
        "data-db-0",
        "-o",
        "jsonpath={.status.phase} {.spec.storageClassName} {.spec.volumeName}",
    ]);
    let parts: Vec<&str> = claim.split(' ').collect();
    assert_eq!(parts[..2], ["Bound", "local-path"], "{claim}");
    let volume = parts[2].to_owned();
    let path = c.ok(&["get", "pv", &volume, "-o", "jsonpath={.spec.local.path}"]);
    eventually("the pod wrote into its volume", || {
        let body = std::fs::read_to_string(std::path::Path::new(&path).join("kept"))?;
        anyhow::ensure!(body == "written-by-the-first-pod", "{body}");
        Ok(())
    });
    let pvs = c.ok(&["get", "pv"]);
    assert!(
        pvs.contains("default/data-db-0") && pvs.contains("Bound"),
        "{pvs}"
    );
    assert!(c.ok(&["get", "sc"]).contains("local-path (default)"));
    // A new template reads the file: the new pod (db-0 deleted and made again) mounts the same
    // claim and volume.
    c.apply(&sts("read, /data/kept, sleep, '600'"));
    c.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    eventually("the new pod reads what the old one wrote", || {
        let logs = c.ok(&["logs", "db-0"]);
        anyhow::ensure!(logs.contains("written-by-the-first-pod"), "{logs}");
        Ok(())
    });
    c.ok(&["delete", "pod", "db-0"]);
    c.wait_pod("db-0", "{.status.phase}", "Running");
    eventually("and so does the next", || {
        let logs = c.ok(&["logs", "db-0"]);
        anyhow::ensure!(logs.contains("written-by-the-first-pod"), "{logs}");
        Ok(())
    });
    assert_eq!(
        c.ok(&[
            "get",
            "pvc",
            "data-db-0",
            "-o",
            "jsonpath={.spec.volumeName}"
        ]),
        volume
    );
    // Deleting the set keeps the claim (Retain); deleting the claim deletes the volume and its
    // directory (the class reclaims with Delete).
    c.ok(&["delete", "statefulset", "db"]);
    c.ok(&["delete", "pvc", "data-db-0"]);
    eventually("the volume is gone", || {
        let pvs = c.ok(&["get", "pv", "-o", "name"]);
        anyhow::ensure!(
            pvs.trim().is_empty() && !std::path::Path::new(&path).exists(),
            "{pvs}"
        );
        Ok(())
    });
    // A volume made by hand is Available, and a claim of its class binds to it at once.
    let dir = std::env::temp_dir().join(format!("shoal-e2e-pv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    c.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: manual}}\nspec:\n  capacity: {{storage: 2Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  hostPath: {{path: {}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: mine}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  resources: {{requests: {{storage: 1Gi}}}}\n",
        dir.display()
    ));
    eventually("bound to the hand-made volume", || {
        let out = c.ok(&[
            "get",
            "pvc",
            "mine",
            "-o",
            "jsonpath={.status.phase} {.spec.volumeName} {.status.capacity.storage}",
        ]);
        anyhow::ensure!(out == "Bound manual 2Gi", "{out}");
        Ok(())
    });
    c.ok(&["delete", "pvc", "mine"]);
    eventually("released, kept (Retain)", || {
        let out = c.ok(&["get", "pv", "manual", "-o", "jsonpath={.status.phase}"]);
        anyhow::ensure!(out == "Released", "{out}");
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}
