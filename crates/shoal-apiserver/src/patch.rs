//! The patch types kubectl sends: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic
//! merge patch, Kubernetes' list-aware merge for the built-in kinds.
//!
//! Strategic merge needs each list's patch strategy. k8s-openapi does not carry the
//! `x-kubernetes-patch-merge-key` metadata, so the table below names, by field and by the
//! field that holds it, the lists that merge by key; every other list is replaced whole, as in
//! Kubernetes.

use serde_json::{Map, Value};
use shoal_api::StatusError;

/// The content types of PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml"
            | "application/apply-patch+json"
            | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// How a list merges under strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Items are matched by this key and merged.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set (e.g. finalizers).
    MergeScalars,
    Replace,
}

thread_local! {
    /// The custom resource whose schema says how its lists merge, while [`with_lists`] runs.
    static CUSTOM: std::cell::Cell<Option<&'static crate::crd::CustomResource>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` (a merge or a field-set computation, never suspended) with the lists of `custom`'s
/// objects merged as its schema's `x-kubernetes-list-type` says, instead of by the built-in
/// kinds' patch strategies.
pub fn with_lists<T>(
    custom: Option<&'static crate::crd::CustomResource>,
    f: impl FnOnce() -> T,
) -> T {
    let before = CUSTOM.with(|c| c.replace(custom));
    let out = f();
    CUSTOM.with(|c| c.set(before));
    out
}

/// The strategy of list field `field` whose parent object is at `parent` (a `.`-joined path of
/// field names, list indexes dropped).
pub fn list_strategy(parent: &str, field: &str) -> ListStrategy {
    if let Some(custom) = CUSTOM.with(std::cell::Cell::get) {
        return custom.list_strategy(parent, field);
    }
    use ListStrategy::*;
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => MergeByKey("name"),
        "env" => MergeByKey("name"),
        "volumeMounts" => MergeByKey("mountPath"),
        "volumeDevices" => MergeByKey("devicePath"),
        "hostAliases" => MergeByKey("ip"),
        "ownerReferences" => MergeByKey("uid"),
        "finalizers" => MergeScalars,
        "topologySpreadConstraints" => MergeByKey("topologyKey"),
        "conditions" => MergeByKey("type"),
        "addresses" if parent.ends_with("status") => MergeByKey("type"),
        "ports"
            if parent.ends_with("spec")
                && !parent.contains("template")
                && !parent.contains("containers") =>
        {
            MergeByKey("port")
        }
        "ports" if parent.contains("containers") || parent.contains("Containers") => {
            MergeByKey("containerPort")
        }
        "containerStatuses" | "initContainerStatuses" | "ephemeralContainerStatuses" => Replace,
        _ => Replace,
    }
}

fn bad(msg: impl Into<String>) -> StatusError {
    StatusError::bad_request(msg)
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &[u8]) -> Result<(), StatusError> {
    let p: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| bad(format!("error decoding patch: {e}")))?;
    json_patch::patch(target, &p).map_err(|e| StatusError::invalid_patch(e.to_string()))
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &[u8]) -> Result<(), StatusError> {
    let p: Value =
        serde_json::from_slice(patch).map_err(|e| bad(format!("error decoding patch: {e}")))?;
    if !p.is_object() {
        return Err(bad("merge patch must be a JSON object"));
    }
    json_patch::merge(target, &p);
    Ok(())
}

/// Applies a strategic merge patch to an object of a built-in kind.
pub fn strategic_merge_patch(target: &mut Value, patch: &[u8]) -> Result<(), StatusError> {
    let p: Value =
        serde_json::from_slice(patch).map_err(|e| bad(format!("error decoding patch: {e}")))?;
    let Value::Object(p) = p else {
        return Err(bad("strategic merge patch must be a JSON object"));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    merge_map(target, &p, "")
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn merge_map(
    target: &mut Value,
    patch: &Map<String, Value>,
    path: &str,
) -> Result<(), StatusError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = patch.clone();
            clean.remove("$patch");
            *target = Value::Object(strip_directives(clean));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) if other != "merge" => return Err(bad(format!("unknown patch type: {other}"))),
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object just above");
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let Some(order) = v.as_array() {
                orders.push((field, order));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(pm) => {
                let child = t.entry(k.clone()).or_insert(Value::Null);
                merge_map(child, pm, &join(path, k))?;
                if child.is_null() {
                    t.remove(k);
                }
            }
            Value::Array(pl) => {
                let strategy = list_strategy(path, k);
                let cur = t.remove(k).unwrap_or(Value::Null);
                let merged = merge_list(cur, pl, strategy, &join(path, k))?;
                t.insert(k.clone(), merged);
            }
            scalar => {
                t.insert(k.clone(), scalar.clone());
            }
        }
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = t.get_mut(field) {
            reorder(list, order, list_strategy(path, field));
        }
    }
    Ok(())
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}

fn merge_list(
    cur: Value,
    patch: &[Value],
    strategy: ListStrategy,
    path: &str,
) -> Result<Value, StatusError> {
    let mut list = match cur {
        Value::Array(l) => l,
        _ => Vec::new(),
    };
    // A `{"$patch": "replace"}` element replaces the whole list with the other elements.
    if patch
        .iter()
        .any(|x| x.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let rest = patch
            .iter()
            .filter(|x| x.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(rest));
    }
    match strategy {
        ListStrategy::Replace => Ok(Value::Array(
            patch
                .iter()
                .map(|x| {
                    if let Value::Object(m) = x {
                        Value::Object(strip_directives(m.clone()))
                    } else {
                        x.clone()
                    }
                })
                .collect(),
        )),
        ListStrategy::MergeScalars => {
            for x in patch {
                if !list.contains(x) {
                    list.push(x.clone());
                }
            }
            Ok(Value::Array(list))
        }
        ListStrategy::MergeByKey(key) => {
            for item in patch {
                let Value::Object(pm) = item else {
                    return Err(bad(format!(
                        "{path}: expected a list of objects merged by {key:?}"
                    )));
                };
                let id = pm.get(key).cloned().unwrap_or(Value::Null);
                let pos = list
                    .iter()
                    .position(|x| x.get(key) == Some(&id) && !id.is_null());
                match (pm.get("$patch").and_then(Value::as_str), pos) {
                    (Some("delete"), Some(i)) => {
                        list.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => merge_map(&mut list[i], pm, path)?,
                    (_, None) => {
                        let mut fresh = Value::Object(Map::new());
                        merge_map(&mut fresh, pm, path)?;
                        list.push(fresh);
                    }
                }
            }
            Ok(Value::Array(list))
        }
    }
}

/// Orders `list` as `$setElementOrder` says; items it does not name keep their relative order
/// after the named ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let id = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(k) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(id).collect();
    let mut named: Vec<Value> = Vec::new();
    for w in &wanted {
        if let Some(pos) = list.iter().position(|x| &id(x) == w) {
            named.push(list.remove(pos));
        }
    }
    named.append(list);
    *list = named;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value) -> Value {
        let mut t = target;
        strategic_merge_patch(&mut t, &serde_json::to_vec(&patch).unwrap()).unwrap();
        t
    }

    #[test]
    fn containers_merge_by_name_and_keep_sibling_fields() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "side", "image": "busybox"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}, {"name": "side"}],
            "containers": [{"name": "nginx", "image": "nginx:1.26"}]}}}});
        let out = smp(live, patch);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "nginx:1.26");
        assert_eq!(
            cs[0]["ports"][0]["containerPort"], 80,
            "merge keeps sibling lists"
        );
        assert_eq!(cs[1]["name"], "side");
    }

    #[test]
    fn delete_directive_and_null_remove() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"metadata": {"labels": {"a": null}}, "spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        let out = smp(live, patch);
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn unkeyed_lists_are_replaced_and_finalizers_merge() {
        let live = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "c", "args": ["x", "y"]}]}});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "c", "args": ["z"]}]}});
        let out = smp(live, patch);
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn service_ports_merge_by_port_and_retain_keys() {
        let live = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}],
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = smp(live, patch);
        assert_eq!(out["spec"]["ports"][1]["targetPort"], 8443);
        assert_eq!(out["spec"]["ports"][0]["name"], "http");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }
}
