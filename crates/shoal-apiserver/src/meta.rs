//! Small helpers over object metadata in JSON form.

use serde_json::{Map, Value, json};

/// Now as a `MicroTime` (`2026-01-02T03:04:05.123456Z`).
pub fn now_micro() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn meta(o: &Value) -> &Value {
    o.get("metadata").unwrap_or(&Value::Null)
}

pub fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.is_object() {
        *o = json!({});
    }
    let root = o.as_object_mut().expect("made an object just above");
    let m = root.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("made an object just above")
}

pub fn str_field<'a>(o: &'a Value, key: &str) -> &'a str {
    meta(o).get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn name(o: &Value) -> &str {
    str_field(o, "name")
}

pub fn resource_version(o: &Value) -> Option<i64> {
    meta(o)
        .get("resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

/// Sets `metadata.resourceVersion` where Kubernetes writes it: after `uid` (and the name
/// fields before it), so a response keeps ObjectMeta's field order.
pub fn set_resource_version(o: &mut Value, rv: String) {
    let m = meta_mut(o);
    if let Some(v) = m.get_mut("resourceVersion") {
        *v = Value::String(rv);
        return;
    }
    let at = m
        .keys()
        .rposition(|k| {
            matches!(
                k.as_str(),
                "name" | "generateName" | "namespace" | "selfLink" | "uid"
            )
        })
        .map_or(0, |i| i + 1);
    m.shift_insert(at, "resourceVersion".into(), Value::String(rv));
}

pub fn finalizers(o: &Value) -> Vec<String> {
    strings(meta(o).get("finalizers"))
}

/// The strings of a JSON array (none if `v` is not one).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(o: &Value) -> bool {
    meta(o)
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// A random suffix for `generateName`, from Kubernetes' alphabet (no vowels, no confusables).
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    (0..n)
        .map(|i| ALPHABET[bytes[i % 16] as usize % ALPHABET.len()] as char)
        .collect()
}
