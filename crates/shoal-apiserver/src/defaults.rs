//! Server-side defaulting of the built-in kinds: the values Kubernetes fills in, so that
//! `kubectl describe` and `get -o yaml` show what users expect (`protocol: TCP`, strategies...).

use serde_json::{Map, Value, json};

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Value {
    let e = m.entry(key.to_owned()).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e
}

fn each(v: Option<&mut Value>, mut f: impl FnMut(&mut Map<String, Value>)) {
    if let Some(Value::Array(items)) = v {
        for it in items {
            if let Some(m) = it.as_object_mut() {
                f(m);
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let last = image.rsplit('/').next().unwrap_or("");
    let pull = if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(pull));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    each(c.get_mut("ports"), |p| {
        set_default(p, "protocol", json!("TCP"))
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(obj) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(obj) {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
    each(c.get_mut("env"), |e| {
        if let Some(f) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(obj)
        {
            set_default(f, "apiVersion", json!("v1"));
        }
    });
}

/// Defaults a pod spec (for pods and every pod template).
pub fn pod_spec(spec: &mut Value) {
    let Some(s) = obj(spec) else { return };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        each(s.get_mut(key), container);
    }
    each(s.get_mut("volumes"), |v| {
        for (src, mode_key) in [
            ("configMap", "defaultMode"),
            ("secret", "defaultMode"),
            ("downwardAPI", "defaultMode"),
            ("projected", "defaultMode"),
        ] {
            if let Some(x) = v.get_mut(src).and_then(obj) {
                set_default(x, mode_key, json!(420));
            }
        }
        if let Some(h) = v.get_mut("hostPath").and_then(obj) {
            set_default(h, "type", json!(""));
        }
    });
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(obj) {
        let tspec = child(t, "spec");
        pod_spec(tspec);
    }
}

fn rolling(kind: &str) -> Value {
    match kind {
        "Deployment" => {
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        }
        "DaemonSet" => {
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        }
        _ => json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
    }
}

/// Applies Kubernetes' defaults for `group`/`kind` to `o`.
pub fn apply(group: &str, kind: &str, o: &mut Value) {
    let Some(root) = obj(o) else { return };
    match (group, kind) {
        ("", "Pod") => {
            let spec = child(root, "spec");
            pod_spec(spec);
            if let Some(s) = obj(spec) {
                set_default(s, "serviceAccountName", json!("default"));
                set_default(s, "enableServiceLinks", json!(true));
                set_default(s, "priority", json!(0));
                set_default(s, "preemptionPolicy", json!("PreemptLowerPriority"));
                // DefaultTolerationSeconds: 300 s on a not-ready or unreachable node, unless
                // the pod says otherwise for that taint.
                let tols = s.entry("tolerations").or_insert_with(|| json!([]));
                if let Some(list) = tols.as_array_mut() {
                    for key in [
                        "node.kubernetes.io/not-ready",
                        "node.kubernetes.io/unreachable",
                    ] {
                        let covered = list.iter().any(|t| {
                            t.get("key").and_then(Value::as_str) == Some(key)
                                || (t.get("key").is_none_or(|k| k == "")
                                    && t.get("operator").and_then(Value::as_str) == Some("Exists"))
                        });
                        if !covered {
                            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                        }
                    }
                }
            }
        }
        ("", "Service") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "type", json!("ClusterIP"));
                set_default(s, "sessionAffinity", json!("None"));
                let ty = s
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_owned();
                if ty != "ExternalName" {
                    set_default(s, "internalTrafficPolicy", json!("Cluster"));
                    set_default(s, "ipFamilyPolicy", json!("SingleStack"));
                    set_default(s, "ipFamilies", json!(["IPv4"]));
                }
                each(s.get_mut("ports"), |p| {
                    set_default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_default(p, "targetPort", port);
                    }
                });
            }
        }
        ("", "Namespace") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "finalizers", json!(["kubernetes"]));
            }
        }
        ("", "Secret") => set_default(root, "type", json!("Opaque")),
        ("apps", "Deployment") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "replicas", json!(1));
                set_default(s, "strategy", rolling("Deployment"));
                set_default(s, "revisionHistoryLimit", json!(10));
                set_default(s, "progressDeadlineSeconds", json!(600));
                template(s);
            }
        }
        ("apps", "ReplicaSet") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "replicas", json!(1));
                template(s);
            }
        }
        ("apps", "StatefulSet") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "replicas", json!(1));
                set_default(s, "podManagementPolicy", json!("OrderedReady"));
                set_default(s, "updateStrategy", rolling("StatefulSet"));
                set_default(s, "revisionHistoryLimit", json!(10));
                set_default(
                    s,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                template(s);
            }
        }
        ("apps", "DaemonSet") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "updateStrategy", rolling("DaemonSet"));
                set_default(s, "revisionHistoryLimit", json!(10));
                template(s);
            }
        }
        ("batch", "Job") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                job_spec(s);
            }
        }
        ("batch", "CronJob") => {
            let spec = child(root, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "concurrencyPolicy", json!("Allow"));
                set_default(s, "suspend", json!(false));
                set_default(s, "successfulJobsHistoryLimit", json!(3));
                set_default(s, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = s.get_mut("jobTemplate").and_then(obj) {
                    let js = child(jt, "spec");
                    if let Some(js) = obj(js) {
                        job_spec(js);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A new Job without `manualSelector` selects its pods by its uid, as Kubernetes does: the
/// selector `batch.kubernetes.io/controller-uid=<uid>` and the matching template labels
/// (plus `job-name`, and the legacy unprefixed pair).
pub fn job_selector(o: &mut Value) {
    let uid = o
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let Some(t) = spec.get_mut("template").and_then(obj) else {
        return;
    };
    let m = child(t, "metadata");
    let Some(m) = obj(m) else { return };
    let labels = child(m, "labels");
    if let Some(l) = obj(labels) {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            l.insert(k.into(), json!(v));
        }
    }
}

fn job_spec(s: &mut Map<String, Value>) {
    let indexed = s.get("completionMode").and_then(Value::as_str) == Some("Indexed");
    if s.get("completions").is_none() && s.get("parallelism").is_none() {
        s.insert("completions".into(), json!(1));
    }
    set_default(s, "parallelism", json!(1));
    if s.get("completions").is_none() && indexed {
        s.insert("completions".into(), json!(1));
    }
    set_default(s, "backoffLimit", json!(6));
    set_default(s, "completionMode", json!("NonIndexed"));
    set_default(s, "suspend", json!(false));
    set_default(s, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(t) = s.get_mut("template").and_then(obj) {
        let tspec = child(t, "spec");
        pod_spec(tspec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_gets_strategy_and_template_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]}]}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn latest_or_untagged_images_pull_always() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "reg:5000/x"}, {"name": "b", "image": "x:latest"}]}});
        apply("", "Pod", &mut p);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["containers"][1]["imagePullPolicy"], "Always");
    }
}
