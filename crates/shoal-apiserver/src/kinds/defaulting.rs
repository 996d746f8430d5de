//! Helpers for defaulting JSON objects: fields Kubernetes fills in when they are missing.

use serde_json::{Map, Value, json};

pub(crate) fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

pub(crate) fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

pub(crate) fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Value {
    let e = m.entry(key.to_owned()).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e
}

/// Sets each of `counters` in `root.status` to 0 when absent: the plain `int32` counters of
/// Kubernetes' status structs, present before any controller writes.
pub(crate) fn status_counters(root: &mut Map<String, Value>, counters: &[&str]) {
    if counters.is_empty() {
        return;
    }
    if let Some(status) = obj(child(root, "status")) {
        for c in counters {
            set_default(status, c, json!(0));
        }
    }
}

pub(crate) fn each(v: Option<&mut Value>, mut f: impl FnMut(&mut Map<String, Value>)) {
    if let Some(Value::Array(items)) = v {
        for it in items {
            if let Some(m) = it.as_object_mut() {
                f(m);
            }
        }
    }
}
