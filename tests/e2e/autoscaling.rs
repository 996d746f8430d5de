//! HorizontalPodAutoscalers with the real kubectl: `kubectl autoscale`, a Deployment of CPU
//! spinners scaled up on their measured CPU and back down when they go idle (sync period and
//! scale-down window shortened), the v1 and v2 views of one object, validation.

use shoal_testkit::Cluster;
use std::time::{Duration, Instant};

/// Pods spin for 30 s after they start, then idle: the load rises, then goes away.
const SPINNERS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spin}
spec:
  replicas: 1
  selector: {matchLabels: {app: spin}}
  template:
    metadata: {labels: {app: spin}}
    spec:
      containers:
      - name: spin
        image: shoal.local/exerciser:latest
        args: [spin, "30", sleep, "100000"]
        resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}
"#;

/// Retries `f` for up to `limit` (longer than the usual patience: autoscaling waits for
/// measurements and windows).
fn within<T>(what: &str, limit: Duration, mut f: impl FnMut() -> anyhow::Result<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: still failing after {limit:?}: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn replicas(c: &Cluster) -> String {
    c.ok(&["get", "deploy", "spin", "-o", "jsonpath={.spec.replicas}"])
}

#[test]
fn hpa_scales_spinners_up_and_back_down() {
    let c = Cluster::start_with(&["--horizontal-pod-autoscaler-sync-period", "2s"]).unwrap();
    c.apply(SPINNERS);
    let made = c.ok(&[
        "autoscale",
        "deployment",
        "spin",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    assert!(
        made.contains("horizontalpodautoscaler.autoscaling/spin autoscaled"),
        "{made}"
    );
    // The scale-down window shortened from five minutes to none.
    c.ok(&[
        "patch",
        "hpa",
        "spin",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
    ]);
    // Defaults filled in where behavior is given.
    let policies = c.ok(&[
        "get",
        "hpa",
        "spin",
        "-o",
        "jsonpath={.spec.behavior.scaleUp.policies[*].type} {.spec.behavior.scaleDown.selectPolicy}",
    ]);
    assert_eq!(policies, "Pods Percent Max");

    // One spinner at its 200m limit is 200% of its 100m request against a 50% target: up to
    // the maximum.
    within("the autoscaler scales up", Duration::from_secs(90), || {
        let n = replicas(&c);
        anyhow::ensure!(n == "3", "replicas {n}");
        Ok(())
    });
    let row = c.ok(&["get", "hpa", "spin", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    // NAME REFERENCE TARGETS(2 words) MINPODS MAXPODS REPLICAS AGE
    assert_eq!(&cols[..2], ["spin", "Deployment/spin"], "{row}");
    assert_eq!(cols[2], "cpu:", "{row}");
    let (current, target) = cols[3].split_once('/').unwrap();
    assert_eq!(target, "50%", "{row}");
    let pct: u32 = current.trim_end_matches('%').parse().unwrap_or(0);
    assert!(pct > 100, "measured {current}: {row}");
    assert_eq!(&cols[4..6], ["1", "3"], "{row}");
    let described = c.ok(&["describe", "hpa", "spin"]);
    assert!(
        described.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{described}"
    );
    assert!(described.contains("ValidMetricFound"), "{described}");

    // The spinners stop after 30 s: down to the minimum once their usage is measured idle.
    within(
        "the autoscaler scales back down",
        Duration::from_secs(120),
        || {
            let n = replicas(&c);
            anyhow::ensure!(n == "1", "replicas {n}");
            Ok(())
        },
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("reason: All metrics below target"),
        "{events}"
    );
    // The next sync sees the new size.
    within(
        "the status shows one replica",
        Duration::from_secs(30),
        || {
            let status = c.ok(&[
            "get",
            "hpa",
            "spin",
            "-o",
            "jsonpath={.status.currentReplicas} {.status.desiredReplicas} {.status.conditions[?(@.type==\"AbleToScale\")].status}",
        ]);
            anyhow::ensure!(status == "1 1 True", "{status}");
            Ok(())
        },
    );
}

/// A StatefulSet and a ReplicaSet, of idle pods.
const IDLERS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: shoal.local/exerciser:latest, args: [sleep, "100000"]}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 1
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: c, image: shoal.local/exerciser:latest, args: [sleep, "100000"]}]
"#;

#[test]
fn statefulsets_and_replicasets_are_held_within_the_bounds() {
    let c = Cluster::start_with(&["--horizontal-pod-autoscaler-sync-period", "2s"]).unwrap();
    c.apply(IDLERS);
    c.ok(&["autoscale", "statefulset", "db", "--min=1", "--max=2"]);
    c.ok(&["autoscale", "replicaset", "rs", "--min=2", "--max=3"]);
    // Through each kind's scale subresource, before any metric is known.
    for (kind, name, want, reason) in [
        (
            "statefulset",
            "db",
            "2",
            "Current number of replicas above Spec.MaxReplicas",
        ),
        (
            "replicaset",
            "rs",
            "2",
            "Current number of replicas below Spec.MinReplicas",
        ),
    ] {
        within(
            "the autoscaler applies its bounds",
            Duration::from_secs(60),
            || {
                let n = c.ok(&["get", kind, name, "-o", "jsonpath={.spec.replicas}"]);
                anyhow::ensure!(n == want, "{kind} {name}: {n} replicas");
                Ok(())
            },
        );
        let described = c.ok(&["describe", "hpa", name]);
        assert!(
            described.contains(&format!("New size: {want}; reason: {reason}")),
            "{described}"
        );
    }
}

#[test]
fn v1_and_v2_are_views_of_one_object() {
    let c = Cluster::start().unwrap();
    c.apply(SPINNERS);
    // Written through autoscaling/v1 ...
    let out = c.kubectl_with(
        &["create", "-f", "-"],
        Some("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: spin}\n  maxReplicas: 5\n  targetCPUUtilizationPercentage: 70\n"),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... read through v2: a CPU metric, and v2's defaults.
    let v2 = c.ok(&[
        "get",
        "hpa.v2.autoscaling",
        "web",
        "-o",
        "jsonpath={.apiVersion} {.spec.minReplicas} {.spec.metrics[0].resource.name} {.spec.metrics[0].resource.target.averageUtilization}",
    ]);
    assert_eq!(v2, "autoscaling/v2 1 cpu 70");
    // A v2-only metric and behavior are kept in v1's annotations.
    c.ok(&[
        "patch",
        "hpa",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":70}}},{"type":"Resource","resource":{"name":"memory","target":{"type":"AverageValue","averageValue":"64Mi"}}}],"behavior":{"scaleDown":{"stabilizationWindowSeconds":60}}}}"#,
    ]);
    let raw = c.ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web",
    ]);
    let v1: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
    let ann = &v1["metadata"]["annotations"];
    assert!(
        ann["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .is_some_and(|m| m.contains("\"targetAverageValue\":\"64Mi\"")),
        "{v1}"
    );
    assert!(
        ann["autoscaling.alpha.kubernetes.io/behavior"]
            .as_str()
            .is_some_and(|b| b.contains("\"stabilizationWindowSeconds\":60")),
        "{v1}"
    );
    // A v1 client's read-modify-write keeps them.
    let mut edited = v1.clone();
    edited["spec"]["maxReplicas"] = serde_json::json!(6);
    let out = c.kubectl_with(&["replace", "-f", "-"], Some(&edited.to_string()), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = c.ok(&[
        "get",
        "hpa",
        "web",
        "-o",
        "jsonpath={.spec.maxReplicas} {.spec.metrics[1].resource.name} {.spec.behavior.scaleDown.stabilizationWindowSeconds} {.metadata.annotations}",
    ]);
    assert_eq!(after, "6 memory 60 ", "{after}");
    // Listed in both versions, and printed with kubectl's columns.
    let names = c.ok(&["get", "hpa.v1.autoscaling", "-o", "name"]);
    assert_eq!(names.trim(), "horizontalpodautoscaler.autoscaling/web");
    let table = c.ok(&["get", "hpa"]);
    assert!(
        table.starts_with("NAME")
            && table.contains("REFERENCE")
            && table.contains("TARGETS")
            && table.contains("MINPODS")
            && table.contains("cpu: <unknown>/70%, memory: <unknown>/64Mi"),
        "{table}"
    );

    // Bad input names the field, in either version.
    let out = c.kubectl_with(
        &["create", "-f", "-"],
        Some("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: spin}\n  minReplicas: 3\n  maxReplicas: 2\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization}}\n"),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        ),
        "{err}"
    );
    let out = c.kubectl_with(
        &["create", "-f", "-"],
        Some("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: spin}\n  maxReplicas: 0\n"),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.maxReplicas: Invalid value: 0: must be greater than 0"),
        "{err}"
    );
    let out = c.kubectl_with(
        &["create", "-f", "-"],
        Some("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad}\nspec:\n  scaleTargetRef: {kind: Deployment, name: spin}\n  maxReplicas: \"many\"\n"),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("maxReplicas"),
        "{err}"
    );
}
