//! Pods: defaults for the pod spec (shared by every pod template), the status a new pod
//! starts with (`Pending`, its QoS class), validation, what may change on update, and the
//! grace period of a delete.

use super::Strategy;
use super::defaulting::{child, each, obj, set_default};
use super::validation::{DNS1123_LABEL_MSG, items, port_ok, s};
use serde_json::{Map, Value, json};
use shoal_api::resources::is_dns1123_label;
use shoal_api::{Cause, ResourceInfo};

pub(super) struct PodStrategy;
pub(super) static POD: PodStrategy = PodStrategy;

fn default_container(c: &mut Map<String, Value>) {
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
pub(crate) fn default_pod_spec(spec: &mut Value) {
    let Some(s) = obj(spec) else { return };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    // The deprecated `serviceAccount` mirrors `serviceAccountName` (v1 conversion), both ways.
    for (from, to) in [
        ("serviceAccountName", "serviceAccount"),
        ("serviceAccount", "serviceAccountName"),
    ] {
        if let Some(v) = s
            .get(from)
            .filter(|v| v.as_str().is_some_and(|x| !x.is_empty()))
        {
            let v = v.clone();
            set_default(s, to, v);
        }
    }
    for key in ["containers", "initContainers"] {
        each(s.get_mut(key), default_container);
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

fn validate_container(c: &Value, path: &str, names: &mut Vec<String>, out: &mut Vec<Cause>) {
    match s(c, "name") {
        None | Some("") => out.push(Cause::required(format!("{path}.name"))),
        Some(n) => {
            if !is_dns1123_label(n) {
                out.push(Cause::invalid(format!("{path}.name"), n, DNS1123_LABEL_MSG));
            }
            if names.iter().any(|x| x == n) {
                out.push(Cause::duplicate(format!("{path}.name"), n));
            }
            names.push(n.to_owned());
        }
    }
    if s(c, "image").is_none_or(str::is_empty) {
        out.push(Cause::required(format!("{path}.image")));
    }
    for (i, p) in items(c, "ports").iter().enumerate() {
        let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
        if cp.is_null() {
            out.push(Cause::required(format!("{path}.ports[{i}].containerPort")));
        } else if !port_ok(&cp) {
            out.push(Cause::invalid(
                format!("{path}.ports[{i}].containerPort"),
                &cp,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = s(p, "protocol")
            && !matches!(proto, "TCP" | "UDP" | "SCTP")
        {
            out.push(Cause::not_supported(
                format!("{path}.ports[{i}].protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    for (i, e) in items(c, "env").iter().enumerate() {
        if s(e, "name").is_none_or(str::is_empty) {
            out.push(Cause::required(format!("{path}.env[{i}].name")));
        }
    }
    if let Some(policy) = s(c, "imagePullPolicy")
        && !matches!(policy, "Always" | "IfNotPresent" | "Never")
    {
        out.push(Cause::not_supported(
            format!("{path}.imagePullPolicy"),
            policy,
            &["Always", "IfNotPresent", "Never"],
        ));
    }
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
pub(crate) fn validate_pod_spec(
    spec: &Value,
    path: &str,
    allowed_restart: &[&str],
    out: &mut Vec<Cause>,
) {
    let containers = items(spec, "containers");
    if containers.is_empty() {
        out.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = Vec::new();
    for (i, c) in items(spec, "initContainers").iter().enumerate() {
        validate_container(c, &format!("{path}.initContainers[{i}]"), &mut names, out);
    }
    for (i, c) in containers.iter().enumerate() {
        validate_container(c, &format!("{path}.containers[{i}]"), &mut names, out);
    }
    let mut vols = Vec::new();
    for (i, v) in items(spec, "volumes").iter().enumerate() {
        match s(v, "name") {
            None | Some("") => out.push(Cause::required(format!("{path}.volumes[{i}].name"))),
            Some(n) if vols.contains(&n) => {
                out.push(Cause::duplicate(format!("{path}.volumes[{i}].name"), n))
            }
            Some(n) => vols.push(n),
        }
    }
    if let Some(rp) = s(spec, "restartPolicy")
        && !allowed_restart.contains(&rp)
    {
        out.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            rp,
            allowed_restart,
        ));
    }
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        out.push(Cause::invalid(
            format!("{path}.activeDeadlineSeconds"),
            d,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let cs = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        any |= req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty());
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

impl Strategy for PodStrategy {
    /// LimitRanger, ServiceAccount admission's token volume and Priority admission, on
    /// create, in Kubernetes' order.
    fn admit(
        &self,
        cache: &crate::cache::WatchCache,
        info: &ResourceInfo,
        o: &mut Value,
        old: Option<&Value>,
    ) -> crate::error::ApiResult<()> {
        match old {
            None => {
                super::limits::admit_pod(cache, info, o)?;
                super::serviceaccount::admit_pod(cache, o);
                super::priority::admit_pod(cache, info, o)
            }
            Some(_) => Ok(()),
        }
    }

    /// ServiceAccount admission's default: a new pod that names no account runs as `default`
    /// (the ServiceAccount controller keeps one in every namespace).
    fn prepare_create(&self, o: &mut Value) {
        let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        let named = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !named {
            spec.insert("serviceAccountName".into(), serde_json::json!("default"));
            spec.insert("serviceAccount".into(), serde_json::json!("default"));
        }
    }

    fn default(&self, o: &mut Value) {
        let Some(root) = obj(o) else { return };
        let spec = child(root, "spec");
        default_pod_spec(spec);
        if let Some(s) = obj(spec) {
            // `SetDefaults_Pod` (pods only, not templates): requests default to limits.
            for key in ["containers", "initContainers"] {
                each(s.get_mut(key), |c| {
                    let Some(limits) = c
                        .get("resources")
                        .and_then(|r| r.get("limits"))
                        .and_then(Value::as_object)
                        .cloned()
                    else {
                        return;
                    };
                    let Some(res) = obj(child(c, "resources")) else {
                        return;
                    };
                    if let Some(requests) = obj(child(res, "requests")) {
                        for (k, v) in limits {
                            set_default(requests, &k, v);
                        }
                    }
                });
            }
            set_default(s, "serviceAccountName", json!("default"));
            set_default(s, "serviceAccount", json!("default"));
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

    fn initial_status(&self, _info: &ResourceInfo, o: &Value) -> Option<Value> {
        let qos = qos_class(o.get("spec").unwrap_or(&Value::Null));
        Some(json!({"phase": "Pending", "qosClass": qos}))
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        validate_pod_spec(
            o.get("spec").unwrap_or(&Value::Null),
            "spec",
            &["Always", "OnFailure", "Never"],
            out,
        );
    }

    fn prepare_update(&self, sub: Option<shoal_api::Subresource>, old: &Value, new: &mut Value) {
        // Ephemeral containers are added through `ephemeralcontainers` only.
        if sub.is_none() {
            match old.pointer("/spec/ephemeralContainers") {
                Some(ec) => new["spec"]["ephemeralContainers"] = ec.clone(),
                None => {
                    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.remove("ephemeralContainers");
                    }
                }
            }
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        ephemeral_containers(o, old, out);
        // Pods allow image, activeDeadlineSeconds and added tolerations to change.
        let strip = |v: &Value| {
            let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
            for key in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = spec.get_mut(key) {
                    for c in cs {
                        if let Some(m) = c.as_object_mut() {
                            m.remove("image");
                        }
                    }
                }
            }
            if let Some(m) = spec.as_object_mut() {
                for k in [
                    "activeDeadlineSeconds",
                    "tolerations",
                    "nodeName",
                    "ephemeralContainers",
                ] {
                    m.remove(k);
                }
            }
            spec
        };
        if strip(o) != strip(old) {
            out.push(Cause::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
        }
        let old_node = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let new_node = o
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !old_node.is_empty() && old_node != new_node {
            out.push(Cause::forbidden(
                "spec.nodeName",
                "pod updates may not change nodeName once set",
            ));
        }
    }

    /// A pod on a node is stopped by its kubelet first (its grace period, or the one the
    /// delete asks for); an unbound pod has nothing to stop.
    fn delete_grace(&self, o: &Value, requested: Option<i64>) -> i64 {
        let bound = o
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let default = o
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        if bound {
            requested.unwrap_or(default)
        } else {
            0
        }
    }
}

/// Kubernetes' rules for `spec.ephemeralContainers` as they change: existing ones stay as they
/// are, new ones have a unique name and an image, and none has what only a container that is
/// part of the pod's design may have (ports, probes, resources, lifecycle).
fn ephemeral_containers(o: &Value, old: &Value, out: &mut Vec<Cause>) {
    let list = |v: &Value| -> Vec<Value> {
        v.pointer("/spec/ephemeralContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (now, before) = (list(o), list(old));
    for prev in &before {
        let name = prev["name"].as_str().unwrap_or("");
        match now.iter().find(|c| c["name"] == prev["name"]) {
            None => out.push(Cause::forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers \"{name}\" may not be removed"),
            )),
            Some(c) if c != prev => out.push(Cause::forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers \"{name}\" may not be changed"),
            )),
            Some(_) => {}
        }
    }
    let mut names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| o["spec"][*k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    for (i, c) in now.iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{i}]");
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            out.push(Cause::required(format!("{path}.name")));
        } else if names.iter().any(|n| n == name) {
            out.push(Cause::duplicate(format!("{path}.name"), name));
        }
        names.push(name.to_owned());
        if before.iter().any(|p| p["name"] == c["name"]) {
            continue;
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            out.push(Cause::required(format!("{path}.image")));
        }
        for field in [
            "ports",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "resources",
        ] {
            if c.get(field)
                .is_some_and(|v| !v.is_null() && v != &json!({}) && v != &json!([]))
            {
                out.push(Cause::forbidden(
                    format!("{path}.{field}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
}
