//! Serving an object through a version other than the one it is stored in. Custom resources'
//! versions differ only in `apiVersion` ([`crate::crd::served_bytes`]); HorizontalPodAutoscalers
//! are stored as `autoscaling/v2` and served as `autoscaling/v1` too, converted as Kubernetes
//! converts them: v1 has one CPU target, and keeps what it has no field for (other metrics,
//! their current values, conditions, behavior) in `autoscaling.alpha.kubernetes.io/*`
//! annotations, so that a v1 client's read-modify-write loses nothing.
//!
//! Every write enters through [`from_served`] (right after its type meta is checked) and every
//! read leaves through [`served_bytes`] or [`serve_value`].

use crate::error::ApiResult;
use crate::request::FieldValidation;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use shoal_api::ResourceInfo;

/// The v2 metrics a v1 object has no field for (v1's alpha `MetricSpec` list, as JSON).
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// Their current values (v1's alpha `MetricStatus` list).
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// `status.conditions`.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// `spec.behavior` (as v2 writes it).
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// Whether objects served through `info` differ from the stored ones by more than their
/// `apiVersion`.
pub fn converts(info: &ResourceInfo) -> bool {
    info.group == "autoscaling" && info.kind == "HorizontalPodAutoscaler" && info.version == "v1"
}

/// An object's stored bytes as served through `info`'s version (a trailing newline is kept).
pub fn served_bytes(info: &ResourceInfo, bytes: &Bytes) -> Bytes {
    if !converts(info) {
        return crate::crd::served_bytes(info, bytes);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.clone();
    };
    hpa_to_v1(&mut v);
    let mut out = serde_json::to_vec(&v).unwrap_or_default();
    if bytes.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.into()
}

/// An object as served through `info`'s version.
pub fn serve_value(info: &ResourceInfo, o: &mut Value) {
    if converts(info) {
        hpa_to_v1(o);
    } else {
        crate::crd::serve_value(info, o);
    }
}

/// A body sent to `info`'s version turned into the storage version: its types checked in the
/// version it was sent in, fields that version does not know refused or warned about as
/// `validation` asks.
pub fn from_served(
    info: &ResourceInfo,
    o: &mut Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if !converts(info) {
        return Ok(());
    }
    crate::registry::check_typed_as::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(
        info, o, validation, warnings,
    )?;
    hpa_to_v2(o);
    Ok(())
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<&Value>) {
    if let Some(v) = v.filter(|v| !v.is_null()) {
        m.insert(key.to_owned(), v.clone());
    }
}

/// The fields both versions share, copied from `from` as they are.
fn shared(from: &Value, keys: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in keys {
        put(&mut out, k, from.get(*k));
    }
    out
}

const SHARED_SPEC: &[&str] = &["scaleTargetRef", "minReplicas", "maxReplicas"];
const SHARED_STATUS: &[&str] = &[
    "observedGeneration",
    "lastScaleTime",
    "currentReplicas",
    "desiredReplicas",
];

fn is_cpu_utilization(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && metric
            .pointer("/resource/target/averageUtilization")
            .is_some_and(|u| !u.is_null())
}

fn is_cpu_current(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && metric
            .pointer("/resource/current/averageUtilization")
            .is_some_and(|u| !u.is_null())
}

/// The source object of a metric (`resource`, `pods`, ...) for its `type`.
fn source_key(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => return None,
    })
}

/// One v2 `MetricSpec` (or `MetricStatus`, `status`) in v1's alpha form.
fn metric_to_v1(metric: &Value, status: bool) -> Value {
    let ty = metric.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Map::new();
    out.insert("type".into(), json!(ty));
    let Some(key) = source_key(ty) else {
        return Value::Object(out);
    };
    let src = metric.get(key).cloned().unwrap_or(Value::Null);
    let value = |field: &str| {
        src.pointer(&format!(
            "/{}/{field}",
            if status { "current" } else { "target" }
        ))
    };
    let (util, avg, val) = if status {
        (
            "currentAverageUtilization",
            "currentAverageValue",
            "currentValue",
        )
    } else {
        (
            "targetAverageUtilization",
            "targetAverageValue",
            "targetValue",
        )
    };
    let mut s = Map::new();
    match ty {
        "Resource" | "ContainerResource" => {
            put(&mut s, "name", src.get("name"));
            put(&mut s, util, value("averageUtilization"));
            put(&mut s, avg, value("averageValue"));
            put(&mut s, "container", src.get("container"));
        }
        "Pods" => {
            put(&mut s, "metricName", src.pointer("/metric/name"));
            put(&mut s, avg, value("averageValue"));
            put(&mut s, "selector", src.pointer("/metric/selector"));
        }
        "Object" => {
            put(&mut s, "target", src.get("describedObject"));
            put(&mut s, "metricName", src.pointer("/metric/name"));
            put(&mut s, val, value("value"));
            put(&mut s, "selector", src.pointer("/metric/selector"));
            put(&mut s, "averageValue", value("averageValue"));
        }
        _ => {
            put(&mut s, "metricName", src.pointer("/metric/name"));
            put(&mut s, "metricSelector", src.pointer("/metric/selector"));
            put(&mut s, val, value("value"));
            put(&mut s, avg, value("averageValue"));
        }
    }
    out.insert(key.into(), Value::Object(s));
    Value::Object(out)
}

/// One v1 alpha metric (or metric status) in v2's form.
fn metric_to_v2(metric: &Value, status: bool) -> Value {
    let ty = metric.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Map::new();
    out.insert("type".into(), json!(ty));
    let Some(key) = source_key(ty) else {
        return Value::Object(out);
    };
    let src = metric.get(key).cloned().unwrap_or(Value::Null);
    let (util, avg, val) = if status {
        (
            "currentAverageUtilization",
            "currentAverageValue",
            "currentValue",
        )
    } else {
        (
            "targetAverageUtilization",
            "targetAverageValue",
            "targetValue",
        )
    };
    // A target says what it is; a current value only carries numbers.
    let target = |pairs: &[(&str, Option<&Value>)]| {
        let mut t = Map::new();
        for (k, v) in pairs {
            put(&mut t, k, *v);
        }
        if !status {
            let ty = if t.contains_key("averageUtilization") {
                "Utilization"
            } else if t.contains_key("averageValue") {
                "AverageValue"
            } else {
                "Value"
            };
            t.insert("type".into(), json!(ty));
        }
        Value::Object(t)
    };
    let metric_id = |selector: &str| {
        let mut m = Map::new();
        put(&mut m, "name", src.get("metricName"));
        put(&mut m, "selector", src.get(selector));
        Value::Object(m)
    };
    let which = if status { "current" } else { "target" };
    let mut s = Map::new();
    match ty {
        "Resource" | "ContainerResource" => {
            put(&mut s, "name", src.get("name"));
            put(&mut s, "container", src.get("container"));
            s.insert(
                which.into(),
                target(&[
                    ("averageUtilization", src.get(util)),
                    ("averageValue", src.get(avg)),
                ]),
            );
        }
        "Pods" => {
            s.insert("metric".into(), metric_id("selector"));
            s.insert(which.into(), target(&[("averageValue", src.get(avg))]));
        }
        "Object" => {
            put(&mut s, "describedObject", src.get("target"));
            s.insert("metric".into(), metric_id("selector"));
            s.insert(
                which.into(),
                target(&[
                    ("value", src.get(val)),
                    ("averageValue", src.get("averageValue")),
                ]),
            );
        }
        _ => {
            s.insert("metric".into(), metric_id("metricSelector"));
            s.insert(
                which.into(),
                target(&[("value", src.get(val)), ("averageValue", src.get(avg))]),
            );
        }
    }
    out.insert(key.into(), Value::Object(s));
    Value::Object(out)
}

/// Rebuilds `o` with `metadata`, `spec` and `status` replaced, keeping the key order.
fn rebuild(
    o: &mut Value,
    api_version: &str,
    annotations: Map<String, Value>,
    spec: Value,
    status: Option<Value>,
) {
    let Some(m) = o.as_object_mut() else {
        return;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    let mut meta = m
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if annotations.is_empty() {
        meta.shift_remove("annotations");
    } else {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    out.insert("metadata".into(), Value::Object(meta));
    out.insert("spec".into(), spec);
    if let Some(status) = status {
        out.insert("status".into(), status);
    }
    *m = out;
}

/// A stored (v2) HorizontalPodAutoscaler as autoscaling/v1 serves it.
pub fn hpa_to_v1(o: &mut Value) {
    let spec = o.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = o.get("status").cloned();
    let mut annotations = o
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut s = shared(&spec, SHARED_SPEC);
    let mut others = Vec::new();
    for metric in spec
        .get("metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if is_cpu_utilization(metric) {
            if !s.contains_key("targetCPUUtilizationPercentage") {
                put(
                    &mut s,
                    "targetCPUUtilizationPercentage",
                    metric.pointer("/resource/target/averageUtilization"),
                );
            }
        } else {
            others.push(metric_to_v1(metric, false));
        }
    }
    if !others.is_empty() {
        annotations.insert(
            METRICS_ANNOTATION.into(),
            json!(Value::Array(others).to_string()),
        );
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        annotations.insert(BEHAVIOR_ANNOTATION.into(), json!(b.to_string()));
    }
    let status = status.map(|st| {
        let mut out = shared(&st, SHARED_STATUS);
        // Plain int32s in v1: always present.
        for k in ["currentReplicas", "desiredReplicas"] {
            out.entry(k).or_insert(json!(0));
        }
        let mut others = Vec::new();
        for metric in st
            .get("currentMetrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if is_cpu_current(metric) && !out.contains_key("currentCPUUtilizationPercentage") {
                put(
                    &mut out,
                    "currentCPUUtilizationPercentage",
                    metric.pointer("/resource/current/averageUtilization"),
                );
            } else {
                others.push(metric_to_v1(metric, true));
            }
        }
        if !others.is_empty() {
            annotations.insert(
                CURRENT_METRICS_ANNOTATION.into(),
                json!(Value::Array(others).to_string()),
            );
        }
        if let Some(c) = st
            .get("conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            annotations.insert(
                CONDITIONS_ANNOTATION.into(),
                json!(Value::Array(c.clone()).to_string()),
            );
        }
        Value::Object(out)
    });
    rebuild(o, "autoscaling/v1", annotations, Value::Object(s), status);
}

/// An autoscaling/v1 HorizontalPodAutoscaler as stored (v2), its annotations taken back.
pub fn hpa_to_v2(o: &mut Value) {
    let spec = o.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = o.get("status").cloned();
    let mut annotations = o
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut take = |key: &str| -> Option<Value> {
        let text = annotations.shift_remove(key)?;
        serde_json::from_str(text.as_str()?).ok()
    };
    let other_metrics = take(METRICS_ANNOTATION);
    let current_metrics = take(CURRENT_METRICS_ANNOTATION);
    let conditions = take(CONDITIONS_ANNOTATION);
    let behavior = take(BEHAVIOR_ANNOTATION);
    let mut s = shared(&spec, SHARED_SPEC);
    let mut metrics = Vec::new();
    if let Some(cpu) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": cpu}}}));
    }
    for m in other_metrics
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        metrics.push(metric_to_v2(m, false));
    }
    if !metrics.is_empty() {
        s.insert("metrics".into(), Value::Array(metrics));
    }
    put(&mut s, "behavior", behavior.as_ref());
    let status = status.map(|st| {
        let mut out = shared(&st, SHARED_STATUS);
        let mut current = Vec::new();
        if let Some(cpu) = st
            .get("currentCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": cpu}}}));
        }
        for m in current_metrics
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            current.push(metric_to_v2(m, true));
        }
        if !current.is_empty() {
            out.insert("currentMetrics".into(), Value::Array(current));
        }
        put(&mut out, "conditions", conditions.as_ref());
        Value::Object(out)
    });
    rebuild(o, "autoscaling/v2", annotations, Value::Object(s), status);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10, "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}},
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75, "averageValue": "150m"}}},
                    {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "80Mi"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "lastTransitionTime": "2026-11-30T00:00:00Z",
                    "reason": "ReadyForNewScale", "message": "recommended size matches current size"}],
            },
        })
    }

    #[test]
    fn v1_view_keeps_the_cpu_target_in_fields_and_the_rest_in_annotations() {
        let mut o = stored();
        hpa_to_v1(&mut o);
        assert_eq!(o["apiVersion"], "autoscaling/v1");
        assert_eq!(o["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(o["spec"].get("metrics").is_none());
        assert_eq!(o["status"]["currentCPUUtilizationPercentage"], 75);
        let ann = &o["metadata"]["annotations"];
        assert_eq!(ann["team"], "a");
        let metrics: Value =
            serde_json::from_str(ann[METRICS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            metrics[0],
            json!({"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}})
        );
        assert_eq!(
            metrics[1],
            json!({"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}})
        );
        assert!(ann.get(CONDITIONS_ANNOTATION).is_some());
        assert!(ann.get(BEHAVIOR_ANNOTATION).is_some());
    }

    #[test]
    fn v1_round_trip_loses_nothing() {
        let mut o = stored();
        hpa_to_v1(&mut o);
        hpa_to_v2(&mut o);
        let mut want = stored();
        // v1 keeps only the CPU utilization of the CPU metric's current value.
        want["status"]["currentMetrics"][0]["resource"]["current"] =
            json!({"averageUtilization": 75});
        assert_eq!(o, want);
    }

    #[test]
    fn kubectl_autoscale_body_becomes_a_cpu_metric() {
        let mut o = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 60},
            "status": {"currentReplicas": 0, "desiredReplicas": 0}});
        hpa_to_v2(&mut o);
        assert_eq!(o["apiVersion"], "autoscaling/v2");
        assert_eq!(
            o["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}])
        );
        assert!(o["metadata"].get("annotations").is_none());
    }
}
