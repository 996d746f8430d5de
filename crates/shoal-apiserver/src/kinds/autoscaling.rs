//! HorizontalPodAutoscalers (stored as `autoscaling/v2`; [`crate::conversion`] serves v1):
//! Kubernetes' defaults (one replica at least, a CPU target of 80% when no metric is given,
//! the scale-up and scale-down rules filled in where `behavior` is given) and validation.

use super::Strategy;
use super::defaulting::{obj, set_default};
use super::validation::{items, s};
use serde_json::{Value, json};
use shoal_api::Cause;

pub(super) struct HpaStrategy;
pub(super) static HPA: HpaStrategy = HpaStrategy;

/// Kubernetes' `MaxStabilizationWindowSeconds`.
const MAX_STABILIZATION_WINDOW: i64 = 3600;
/// Kubernetes' `MaxPeriodSeconds`.
const MAX_PERIOD: i64 = 1800;

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

/// Fills the unset parts of scaling rules from `defaults` (Kubernetes' `copyHPAScalingRules`).
fn fill_rules(rules: Option<&Value>, defaults: Value) -> Value {
    let mut out = defaults;
    if let (Some(Value::Object(given)), Some(o)) = (rules, out.as_object_mut()) {
        for k in ["selectPolicy", "stabilizationWindowSeconds", "policies"] {
            if let Some(v) = given.get(k).filter(|v| !v.is_null()) {
                o.insert(k.into(), v.clone());
            }
        }
    }
    out
}

impl Strategy for HpaStrategy {
    fn default(&self, o: &mut Value) {
        let Some(spec) = obj(o).and_then(|m| m.get_mut("spec")).and_then(obj) else {
            return;
        };
        set_default(spec, "minReplicas", json!(1));
        if spec
            .get("metrics")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
        if let Some(b) = spec.get_mut("behavior").and_then(obj) {
            let up = fill_rules(
                b.get("scaleUp"),
                json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": 15}]}),
            );
            // The scale-down window stays unset: the controller's own default applies.
            let down = fill_rules(
                b.get("scaleDown"),
                json!({"selectPolicy": "Max", "policies": [
                    {"type": "Percent", "value": 100, "periodSeconds": 15}]}),
            );
            b.insert("scaleUp".into(), up);
            b.insert("scaleDown".into(), down);
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        let min = spec.get("minReplicas").and_then(Value::as_i64);
        let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
        // 0 as with Kubernetes' HPAScaleToZero: the ingress scales a target at zero back up.
        if let Some(min) = min.filter(|m| *m < 0) {
            out.push(Cause::invalid(
                "spec.minReplicas",
                min,
                "must be greater than or equal to 0",
            ));
        }
        if max < 1 {
            out.push(Cause::invalid(
                "spec.maxReplicas",
                max,
                "must be greater than 0",
            ));
        }
        if min.is_some_and(|min| max < min) {
            out.push(Cause::invalid(
                "spec.maxReplicas",
                max,
                "must be greater than or equal to `minReplicas`",
            ));
        }
        // As Kubernetes: the reference first, then the metrics, then the behavior.
        let before = out.len();
        target_ref(spec.get("scaleTargetRef"), "spec.scaleTargetRef", out);
        if out.len() == before {
            for (i, m) in items(spec, "metrics").iter().enumerate() {
                metric(m, &format!("spec.metrics[{i}]"), out);
            }
        }
        if out.len() == before
            && let Some(b) = spec.get("behavior").filter(|b| !b.is_null())
        {
            for dir in ["scaleUp", "scaleDown"] {
                if let Some(r) = b.get(dir).filter(|r| !r.is_null()) {
                    rules(r, &format!("spec.behavior.{dir}"), out);
                }
            }
        }
    }
}

fn required(field: String, detail: &str) -> Cause {
    Cause::required(field).with_message(format!("Required value: {detail}"))
}

fn target_ref(r: Option<&Value>, path: &str, out: &mut Vec<Cause>) {
    let r = r.unwrap_or(&Value::Null);
    for key in ["kind", "name"] {
        match s(r, key).unwrap_or("") {
            "" => out.push(Cause::required(format!("{path}.{key}"))),
            v => {
                let bad = match v {
                    "." => Some("may not be '.'"),
                    ".." => Some("may not be '..'"),
                    v if v.contains('/') => Some("may not contain '/'"),
                    v if v.contains('%') => Some("may not contain '%'"),
                    _ => None,
                };
                if let Some(msg) = bad {
                    out.push(Cause::invalid(format!("{path}.{key}"), v, msg));
                }
            }
        }
    }
}

fn metric(m: &Value, path: &str, out: &mut Vec<Cause>) {
    let ty = s(m, "type").unwrap_or("");
    if ty.is_empty() {
        out.push(required(
            format!("{path}.type"),
            "must specify a metric source type",
        ));
    }
    let Some(key) = (match ty {
        "Resource" => Some("resource"),
        "ContainerResource" => Some("containerResource"),
        "Pods" => Some("pods"),
        "Object" => Some("object"),
        "External" => Some("external"),
        _ => None,
    }) else {
        out.push(Cause::not_supported(
            format!("{path}.type"),
            ty,
            METRIC_TYPES,
        ));
        return;
    };
    for other in [
        "object",
        "pods",
        "resource",
        "containerResource",
        "external",
    ] {
        if other != key && m.get(other).is_some_and(|v| !v.is_null()) {
            out.push(Cause::forbidden(
                format!("{path}.{other}"),
                "must populate the given metric source only",
            ));
        }
    }
    let Some(src) = m.get(key).filter(|v| !v.is_null()) else {
        out.push(required(
            format!("{path}.{key}"),
            "must populate information for the given metric source",
        ));
        return;
    };
    let path = format!("{path}.{key}");
    let target = src.get("target").unwrap_or(&Value::Null);
    if matches!(key, "resource" | "containerResource") {
        if s(src, "name").unwrap_or("").is_empty() {
            out.push(required(
                format!("{path}.name"),
                "must specify a resource name",
            ));
        }
        if key == "containerResource" && s(src, "container").unwrap_or("").is_empty() {
            out.push(required(
                format!("{path}.container"),
                "must specify a container",
            ));
        }
        metric_target(target, &format!("{path}.target"), out);
        let util = target
            .get("averageUtilization")
            .is_some_and(|v| !v.is_null());
        let avg = target.get("averageValue").is_some_and(|v| !v.is_null());
        if !util && !avg {
            out.push(required(
                format!("{path}.target.averageUtilization"),
                "must set either a target raw value or a target utilization",
            ));
        }
        if util && avg {
            out.push(Cause::forbidden(
                format!("{path}.target.averageValue"),
                "may not set both a target raw value and a target utilization",
            ));
        }
    } else {
        if s(src.get("metric").unwrap_or(&Value::Null), "name")
            .unwrap_or("")
            .is_empty()
        {
            out.push(required(
                format!("{path}.metric.name"),
                "must specify a metric name",
            ));
        }
        metric_target(target, &format!("{path}.target"), out);
    }
}

fn metric_target(t: &Value, path: &str, out: &mut Vec<Cause>) {
    let ty = s(t, "type").unwrap_or("");
    if ty.is_empty() {
        out.push(required(
            format!("{path}.type"),
            "must specify a metric target type",
        ));
    }
    if !matches!(ty, "Utilization" | "Value" | "AverageValue") {
        out.push(Cause::invalid(
            format!("{path}.type"),
            ty,
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for key in ["value", "averageValue"] {
        if let Some(q) = t.get(key).filter(|v| !v.is_null()) {
            let text = q
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| q.to_string());
            if !shoal_api::quantity::parse(&text).is_ok_and(|v| v > 0.0) {
                out.push(Cause::invalid(
                    format!("{path}.{key}"),
                    &text,
                    "must be positive",
                ));
            }
        }
    }
    if let Some(u) = t
        .get("averageUtilization")
        .and_then(Value::as_i64)
        .filter(|u| *u < 1)
    {
        out.push(Cause::invalid(
            format!("{path}.averageUtilization"),
            u,
            "must be greater than 0",
        ));
    }
}

fn rules(r: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(w) = r.get("stabilizationWindowSeconds").and_then(Value::as_i64) {
        if w < 0 {
            out.push(Cause::invalid(
                format!("{path}.stabilizationWindowSeconds"),
                w,
                "must be greater than or equal to zero",
            ));
        }
        if w > MAX_STABILIZATION_WINDOW {
            out.push(Cause::invalid(
                format!("{path}.stabilizationWindowSeconds"),
                w,
                &format!("must be less than or equal to {MAX_STABILIZATION_WINDOW}"),
            ));
        }
    }
    if let Some(p) = s(r, "selectPolicy")
        && !matches!(p, "Max" | "Min" | "Disabled")
    {
        out.push(Cause::not_supported(
            format!("{path}.selectPolicy"),
            p,
            &["Disabled", "Max", "Min"],
        ));
    }
    let policies = items(r, "policies");
    if policies.is_empty() {
        out.push(required(
            format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, p) in policies.iter().enumerate() {
        let at = format!("{path}.policies[{i}]");
        let ty = s(p, "type").unwrap_or("");
        if !matches!(ty, "Pods" | "Percent") {
            out.push(Cause::not_supported(
                format!("{at}.type"),
                ty,
                &["Percent", "Pods"],
            ));
        }
        let value = p.get("value").and_then(Value::as_i64).unwrap_or(0);
        if value <= 0 {
            out.push(Cause::invalid(
                format!("{at}.value"),
                value,
                "must be greater than zero",
            ));
        }
        let period = p.get("periodSeconds").and_then(Value::as_i64).unwrap_or(0);
        if period <= 0 {
            out.push(Cause::invalid(
                format!("{at}.periodSeconds"),
                period,
                "must be greater than zero",
            ));
        }
        if period > MAX_PERIOD {
            out.push(Cause::invalid(
                format!("{at}.periodSeconds"),
                period,
                &format!("must be less than or equal to {MAX_PERIOD}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(spec: Value) -> Value {
        json!({"metadata": {"name": "h"}, "spec": spec})
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let mut o = hpa(
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 3,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}),
        );
        HPA.default(&mut o);
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        let b = &o["spec"]["behavior"];
        assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 5);
        assert_eq!(b["scaleDown"]["policies"][0]["type"], "Percent");
        assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(b["scaleUp"]["policies"].as_array().unwrap().len(), 2);
        // No behavior: none is made up.
        let mut o = hpa(json!({"maxReplicas": 3}));
        HPA.default(&mut o);
        assert!(o["spec"].get("behavior").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let mut out = Vec::new();
        HPA.validate(
            &hpa(json!({"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "minReplicas": 3, "maxReplicas": 2})),
            &mut out,
        );
        assert_eq!(out[0].field, "spec.maxReplicas");
        assert!(
            out[0]
                .message
                .contains("must be greater than or equal to `minReplicas`")
        );
        let mut out = Vec::new();
        HPA.validate(
            &hpa(json!({"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 2,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]})),
            &mut out,
        );
        assert_eq!(
            out[0].field,
            "spec.metrics[0].resource.target.averageUtilization"
        );
        let mut out = Vec::new();
        HPA.validate(
            &hpa(json!({"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 2,
                "behavior": {"scaleUp": {"policies": [{"type": "Bogus", "value": 0, "periodSeconds": 4000}]}}})),
            &mut out,
        );
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.behavior.scaleUp.policies[0].type",
                "spec.behavior.scaleUp.policies[0].value",
                "spec.behavior.scaleUp.policies[0].periodSeconds"
            ]
        );
        let mut out = Vec::new();
        HPA.validate(&hpa(json!({"maxReplicas": 2})), &mut out);
        assert_eq!(out[0].field, "spec.scaleTargetRef.kind");
    }
}
