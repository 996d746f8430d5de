//! Shoal's plugin kinds (`policy.shoal.dev`): `Pending` on create, and validation of the
//! module reference (by the object's scope), digest, failure policy, rules and extension
//! points.

use super::Strategy;
use super::validation::{items, one_of};
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo};

pub(super) struct AdmissionPolicyStrategy;
pub(super) static ADMISSION_POLICY: AdmissionPolicyStrategy = AdmissionPolicyStrategy;
pub(super) struct SchedulerPluginStrategy;
pub(super) static SCHEDULER_PLUGIN: SchedulerPluginStrategy = SchedulerPluginStrategy;

/// `spec.module`, `spec.moduleDigest`, `spec.failurePolicy` of a plugin object. A namespaced
/// policy's module must come from a registry, `https://` or a ConfigMap of its namespace.
fn plugin_common(o: &Value, out: &mut Vec<Cause>) {
    use shoal_plugin_host::source::{Scope, Source};
    let scope = match o.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => Scope::Namespace(ns),
        _ => Scope::Cluster,
    };
    match o.pointer("/spec/module").and_then(Value::as_str) {
        None | Some("") => out.push(Cause::required("spec.module")),
        Some(m) => {
            if let Err(why) = Source::parse(m).and_then(|s| s.check_scope(scope)) {
                out.push(Cause::invalid("spec.module", m, &why));
            }
        }
    }
    if let Some(d) = o.pointer("/spec/moduleDigest").and_then(Value::as_str) {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push(Cause::invalid(
                "spec.moduleDigest",
                d,
                "must be sha256: followed by 64 hexadecimal digits",
            ));
        }
    }
    one_of(o, "failurePolicy", shoal_api::policy::FAILURE_POLICIES, out);
}

fn admission_policy(o: &Value, out: &mut Vec<Cause>) {
    one_of(o, "mode", shoal_api::policy::MODES, out);
    let rules = items(o.get("spec").unwrap_or(&Value::Null), "rules");
    if rules.is_empty() {
        out.push(
            Cause::required("spec.rules")
                .with_message("spec.rules: Required value: at least one rule is required"),
        );
    }
    for (i, r) in rules.iter().enumerate() {
        for f in ["operations", "apiGroups", "resources"] {
            if items(r, f).is_empty() {
                out.push(Cause::required(format!("spec.rules[{i}].{f}")));
            }
        }
        for (j, op) in items(r, "operations").iter().enumerate() {
            let op = op.as_str().unwrap_or("");
            if !shoal_api::policy::OPERATIONS.contains(&op) {
                out.push(Cause::not_supported(
                    format!("spec.rules[{i}].operations[{j}]"),
                    op,
                    shoal_api::policy::OPERATIONS,
                ));
            }
        }
    }
    if let Some(t) = o.pointer("/spec/timeoutSeconds").and_then(Value::as_i64)
        && !(1..=30).contains(&t)
    {
        out.push(Cause::invalid(
            "spec.timeoutSeconds",
            t,
            "must be between 1 and 30, inclusive",
        ));
    }
}

fn scheduler_plugin(o: &Value, out: &mut Vec<Cause>) {
    let points = items(o.get("spec").unwrap_or(&Value::Null), "extensionPoints");
    for (i, p) in points.iter().enumerate() {
        let p = p.as_str().unwrap_or("");
        if !shoal_api::policy::EXTENSION_POINTS.contains(&p) {
            out.push(Cause::not_supported(
                format!("spec.extensionPoints[{i}]"),
                p,
                shoal_api::policy::EXTENSION_POINTS,
            ));
        }
    }
    if let Some(w) = o.pointer("/spec/weight").and_then(Value::as_i64)
        && !(1..=100).contains(&w)
    {
        out.push(Cause::invalid(
            "spec.weight",
            w,
            "must be between 1 and 100, inclusive",
        ));
    }
    if let Some(t) = o
        .pointer("/spec/timeoutMilliseconds")
        .and_then(Value::as_i64)
        && !(1..=10_000).contains(&t)
    {
        out.push(Cause::invalid(
            "spec.timeoutMilliseconds",
            t,
            "must be between 1 and 10000, inclusive",
        ));
    }
}

impl Strategy for AdmissionPolicyStrategy {
    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        plugin_common(o, out);
        admission_policy(o, out);
    }
}

impl Strategy for SchedulerPluginStrategy {
    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        plugin_common(o, out);
        scheduler_plugin(o, out);
    }
}
