//! ResourceQuota accounting, shared by the API server's quota admission and the controller
//! that keeps `status.used`: what one object uses of each resource a quota may name, whether a
//! quota's scopes cover a pod, and quantities written as Kubernetes writes them.

use crate::quantity;
use serde_json::Value;
use std::collections::BTreeMap;

/// What an object of `plural` in `group` uses, by quota resource name (`pods`,
/// `requests.cpu`, `count/deployments.apps`, ...). A pod that has finished uses nothing.
pub fn usage(group: &str, plural: &str, o: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    if group.is_empty() && plural == "pods" {
        if is_terminal(o) {
            return out;
        }
        out.insert("pods".into(), 1.0);
        out.insert(count, 1.0);
        for (name, v) in pod_resources(o) {
            out.insert(name, v);
        }
        return out;
    }
    out.insert(count, 1.0);
    if !group.is_empty() {
        return out;
    }
    match plural {
        "services" => {
            out.insert("services".into(), 1.0);
            let kind = o
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("");
            if matches!(kind, "NodePort" | "LoadBalancer") {
                let ports = o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                out.insert("services.nodeports".into(), ports as f64);
            }
            if kind == "LoadBalancer" {
                out.insert("services.loadbalancers".into(), 1.0);
            }
        }
        "persistentvolumeclaims" => {
            out.insert("persistentvolumeclaims".into(), 1.0);
            let storage = o
                .pointer("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .and_then(|q| quantity::parse(q).ok())
                .unwrap_or(0.0);
            out.insert("requests.storage".into(), storage);
            if let Some(class) = o.pointer("/spec/storageClassName").and_then(Value::as_str) {
                out.insert(
                    format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                    storage,
                );
                out.insert(
                    format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                    1.0,
                );
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            out.insert(plural.into(), 1.0);
        }
        _ => {}
    }
    out
}

/// The resource (plural, group) whose objects a quota resource name is counted from:
/// `requests.cpu` from pods, `services.nodeports` from services, `requests.storage` from
/// claims, `count/deployments.apps` from deployments.
pub fn counted_from(resource: &str) -> (&str, &str) {
    if let Some(name) = resource.strip_prefix("count/") {
        return name.split_once('.').unwrap_or((name, ""));
    }
    if resource == "requests.storage" || resource.contains(".storageclass.storage.k8s.io/") {
        return ("persistentvolumeclaims", "");
    }
    let head = resource.split('.').next().unwrap_or("");
    if matches!(
        head,
        "requests" | "limits" | "cpu" | "memory" | "ephemeral-storage"
    ) {
        return ("pods", "");
    }
    if head == "services" {
        return ("services", "");
    }
    (resource, "")
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's requests and limits as quota names them: the larger of its containers' sum and
/// any one init container, plus its overhead, as Kubernetes computes a pod's resources.
fn pod_resources(pod: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let containers = |key: &str| -> Vec<&Value> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    for kind in ["requests", "limits"] {
        let amounts = |c: &Value| -> BTreeMap<String, f64> {
            c.pointer(&format!("/resources/{kind}"))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), quantity::parse(v.as_str()?).ok()?)))
                .collect()
        };
        let mut total: BTreeMap<String, f64> = BTreeMap::new();
        for c in containers("containers") {
            for (k, v) in amounts(c) {
                *total.entry(k).or_default() += v;
            }
        }
        for c in containers("initContainers") {
            for (k, v) in amounts(c) {
                let t = total.entry(k).or_default();
                *t = t.max(v);
            }
        }
        if let Some(overhead) = pod.pointer("/spec/overhead").and_then(Value::as_object) {
            for (k, v) in overhead {
                if let Some(q) = v.as_str().and_then(|q| quantity::parse(q).ok()) {
                    *total.entry(k.clone()).or_default() += q;
                }
            }
        }
        for (k, v) in total {
            if kind == "requests" && matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                out.insert(k.clone(), v);
            }
            out.insert(format!("{kind}.{k}"), v);
        }
    }
    out
}

/// Whether every container of `pod` says how much of `resource` (`requests.cpu`,
/// `limits.memory`, `cpu`) it needs; the names of those that do not.
pub fn unspecified(pod: &Value, resource: &str) -> Vec<String> {
    let (kind, name) = match resource.split_once('.') {
        Some((k @ ("requests" | "limits"), n)) => (k, n),
        _ if matches!(resource, "cpu" | "memory") => ("requests", resource),
        _ => return Vec::new(),
    };
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.pointer(&format!("/resources/{kind}/{name}")).is_none())
        .map(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// The pod's QoS class is BestEffort: no requests or limits anywhere.
fn best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|k| {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|r| {
                    c.pointer(&format!("/resources/{r}"))
                        .and_then(Value::as_object)
                        .is_none_or(|m| m.is_empty())
                })
            })
    })
}

fn scope_matches(scope: &str, operator: &str, values: &[&str], pod: &Value) -> bool {
    let deadline = pod.pointer("/spec/activeDeadlineSeconds").is_some();
    let priority = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    match scope {
        "Terminating" => deadline,
        "NotTerminating" => !deadline,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => match operator {
            "In" => values.contains(&priority),
            "NotIn" => !values.contains(&priority),
            "Exists" => !priority.is_empty(),
            "DoesNotExist" => priority.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a quota with `spec` (its `scopes` and `scopeSelector`) covers the object: scopes
/// apply to pods only; a scoped quota covers nothing else.
pub fn covers(spec: &Value, group: &str, plural: &str, o: &Value) -> bool {
    let scopes: Vec<&str> = spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let selector: Vec<&Value> = spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if scopes.is_empty() && selector.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    scopes.iter().all(|s| scope_matches(s, "Exists", &[], o))
        && selector.iter().all(|e| {
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            scope_matches(
                e.get("scopeName").and_then(Value::as_str).unwrap_or(""),
                e.get("operator").and_then(Value::as_str).unwrap_or(""),
                &values,
                o,
            )
        })
}

/// Whether `name` is measured in bytes (so written with binary suffixes).
fn is_bytes(name: &str) -> bool {
    name.ends_with("memory") || name.ends_with("storage")
}

/// `amount` of resource `name` as Kubernetes writes a quantity: `2`, `500m`, `128Mi`.
pub fn format(name: &str, amount: f64) -> String {
    if is_bytes(name) && amount >= 1024.0 && amount.fract() == 0.0 {
        let units = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        let mut v = amount;
        let mut unit = "";
        for u in units {
            if v % 1024.0 != 0.0 {
                break;
            }
            v /= 1024.0;
            unit = u;
        }
        return format!("{}{unit}", v as i64);
    }
    if amount.fract() == 0.0 {
        return format!("{}", amount as i64);
    }
    format!("{}m", (amount * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_uses_its_containers_sum_or_its_largest_init_container() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}],
        }});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], 1.0);
        assert_eq!(u["requests.cpu"], 1.0);
        assert_eq!(u["cpu"], 1.0);
        assert_eq!(format("requests.memory", u["requests.memory"]), "64Mi");
        assert_eq!(format("limits.memory", u["limits.memory"]), "128Mi");
        assert_eq!(unspecified(&pod, "limits.cpu"), ["a", "b"]);
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", &done).is_empty());
        assert_eq!(
            usage("apps", "deployments", &json!({}))["count/deployments.apps"],
            1.0
        );
        assert_eq!(format("requests.cpu", 0.5), "500m");
        assert_eq!(format("pods", 3.0), "3");
        assert_eq!(
            counted_from("requests.storage"),
            ("persistentvolumeclaims", "")
        );
        assert_eq!(counted_from("limits.cpu"), ("pods", ""));
        assert_eq!(counted_from("services.nodeports"), ("services", ""));
        assert_eq!(
            counted_from("count/deployments.apps"),
            ("deployments", "apps")
        );
    }

    #[test]
    fn scopes_select_pods() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        let burst = json!({"spec": {"activeDeadlineSeconds": 5, "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        let scoped = json!({"scopes": ["BestEffort"]});
        assert!(covers(&scoped, "", "pods", &best));
        assert!(!covers(&scoped, "", "pods", &burst));
        assert!(!covers(&scoped, "", "configmaps", &json!({})));
        assert!(covers(
            &json!({"scopes": ["Terminating"]}),
            "",
            "pods",
            &burst
        ));
        let by_class = json!({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}});
        assert!(!covers(&by_class, "", "pods", &best));
    }
}
