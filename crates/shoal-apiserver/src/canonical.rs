//! Objects in the order kube-apiserver writes them: `kind, apiVersion, metadata, spec/data,
//! status`, every nested struct in its Go field order (from the generated protobuf schema,
//! whose messages list fields in Go struct order), map keys sorted as Go's encoder sorts them,
//! and the empty optional fields of `metadata` omitted (`labels: {}` after the last label is
//! removed). Fields the schema does not know keep their place after the known ones.
//!
//! Every object is canonicalised once, before it is stored, so GET, LIST, watch and the
//! answer to a write all send the same bytes.

use crate::protobuf::{Field, Ty, lookup};
use serde_json::{Map, Value};

/// Deeper than any Kubernetes object; bounds recursion on hostile input.
const MAX_DEPTH: usize = 64;
const OBJECT_META: &str = "apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The protobuf message of a kind (`apps/v1`, `Deployment` → `api.apps.v1.Deployment`).
fn message_of(api_version: &str, kind: &str) -> String {
    format!("{}.{kind}", crate::protobuf::package(api_version))
}

/// Reorders `obj` (a whole object with `kind` and `apiVersion`) in place.
pub fn canonicalize(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let api_version = m
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let fields = lookup(&message_of(&api_version, &kind));
    let mut out = Map::with_capacity(m.len());
    for k in ["kind", "apiVersion"] {
        if let Some(v) = m.shift_remove(k) {
            out.insert(k.to_owned(), v);
        }
    }
    match fields {
        Some(fields) => reorder_fields(fields, m, &mut out, 0),
        // Unknown to the schema (Shoal's own kinds): metadata is still ObjectMeta.
        None => {
            if let Some(mut meta) = m.shift_remove("metadata") {
                reorder(OBJECT_META, &mut meta, 0);
                out.insert("metadata".into(), meta);
            }
        }
    }
    out.append(m);
    *m = out;
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        // Every ObjectMeta field is `omitempty`.
        meta.retain(|_, v| !is_empty(v));
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Moves the schema's fields from `m` to `out` in schema order, each reordered in turn.
fn reorder_fields(
    fields: &[Field],
    m: &mut Map<String, Value>,
    out: &mut Map<String, Value>,
    depth: usize,
) {
    for f in fields {
        if let Some(mut v) = m.shift_remove(f.json) {
            reorder_value(&f.ty, f.repeated, &mut v, depth + 1);
            out.insert(f.json.to_owned(), v);
        }
    }
}

fn reorder_value(ty: &Ty, repeated: bool, v: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match (ty, v) {
        (ty, Value::Array(items)) if repeated => {
            for item in items {
                reorder_value(ty, false, item, depth + 1);
            }
        }
        (Ty::Message(name), v) => reorder(name, v, depth),
        (Ty::Map(inner), Value::Object(m)) => {
            m.sort_keys();
            for item in m.values_mut() {
                reorder_value(inner, false, item, depth + 1);
            }
        }
        _ => {}
    }
}

/// Reorders a JSON object holding the message `name`; other JSON (a Time's string, an
/// IntOrString, a Quantity) is left as it is. An object already in order (most are, on an
/// update) is only walked, not rebuilt.
fn reorder(name: &str, v: &mut Value, depth: usize) {
    let (Some(fields), Value::Object(m)) = (lookup(name), v) else {
        return;
    };
    if in_order(fields, m) {
        for f in fields {
            if let Some(v) = m.get_mut(f.json) {
                reorder_value(&f.ty, f.repeated, v, depth + 1);
            }
        }
        return;
    }
    let mut out = Map::with_capacity(m.len());
    reorder_fields(fields, m, &mut out, depth);
    out.append(m);
    *m = out;
}

/// Whether `m`'s keys the schema knows come first, in schema order.
fn in_order(fields: &[Field], m: &Map<String, Value>) -> bool {
    let mut keys = m.keys();
    fields
        .iter()
        .filter(|f| m.contains_key(f.json))
        .all(|f| keys.next().is_some_and(|k| k == f.json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn a_deployment_comes_out_in_go_field_order() {
        let mut d = json!({
            "status": {},
            "spec": {
                "template": {
                    "spec": {"containers": [{"image": "i", "name": "c"}], "restartPolicy": "Always"},
                    "metadata": {"labels": {"b": "2", "a": "1"}}
                },
                "selector": {"matchLabels": {"a": "1"}},
                "replicas": 1
            },
            "metadata": {"uid": "u", "labels": {}, "namespace": "d", "name": "n", "annotations": {"x": "y"}},
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "extra": true
        });
        canonicalize(&mut d);
        assert_eq!(
            keys(&d),
            ["kind", "apiVersion", "metadata", "spec", "status", "extra"]
        );
        assert_eq!(
            keys(&d["metadata"]),
            ["name", "namespace", "uid", "annotations"]
        );
        assert_eq!(keys(&d["spec"]), ["replicas", "selector", "template"]);
        assert_eq!(
            keys(&d["spec"]["template"]["metadata"]["labels"]),
            ["a", "b"]
        );
        assert_eq!(
            keys(&d["spec"]["template"]["spec"]["containers"][0]),
            ["name", "image"]
        );
    }

    #[test]
    fn unknown_kinds_keep_their_order_but_metadata_is_ordered() {
        let mut p = json!({"apiVersion": "policy.shoal.dev/v1", "kind": "AdmissionPolicy",
            "spec": {"z": 1, "a": 2}, "metadata": {"namespace": "d", "name": "p"}});
        canonicalize(&mut p);
        assert_eq!(keys(&p), ["kind", "apiVersion", "metadata", "spec"]);
        assert_eq!(keys(&p["spec"]), ["z", "a"]);
        assert_eq!(keys(&p["metadata"]), ["name", "namespace"]);
    }
}
