//! Deployments, ReplicaSets, StatefulSets and DaemonSets: their defaults (strategies, history
//! limits, the pod template's), a selector that matches the template and may not change, and
//! non-negative replicas.

use super::Strategy;
use super::defaulting::{child, obj, set_default};
use super::pod::{default_pod_spec, validate_pod_spec};
use super::validation::{replicas, selector_and_template};
use serde_json::{Map, Value, json};
use shoal_api::Cause;

/// One of the four workload kinds.
pub(super) struct Workload(&'static str);
pub(super) static DEPLOYMENT: Workload = Workload("Deployment");
pub(super) static REPLICA_SET: Workload = Workload("ReplicaSet");
pub(super) static STATEFUL_SET: Workload = Workload("StatefulSet");
pub(super) static DAEMON_SET: Workload = Workload("DaemonSet");

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(obj) {
        let tspec = child(t, "spec");
        default_pod_spec(tspec);
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

impl Strategy for Workload {
    fn default(&self, o: &mut Value) {
        let Some(root) = obj(o) else { return };
        match self.0 {
            "Deployment" => {
                let spec = child(root, "spec");
                if let Some(s) = obj(spec) {
                    set_default(s, "replicas", json!(1));
                    set_default(s, "strategy", rolling("Deployment"));
                    set_default(s, "revisionHistoryLimit", json!(10));
                    set_default(s, "progressDeadlineSeconds", json!(600));
                    template(s);
                }
            }
            "ReplicaSet" => {
                let spec = child(root, "spec");
                if let Some(s) = obj(spec) {
                    set_default(s, "replicas", json!(1));
                    template(s);
                }
            }
            "StatefulSet" => {
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
            _ => {
                let spec = child(root, "spec");
                if let Some(s) = obj(spec) {
                    set_default(s, "updateStrategy", rolling("DaemonSet"));
                    set_default(s, "revisionHistoryLimit", json!(10));
                    template(s);
                }
            }
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let empty = Value::Null;
        let tmpl = o.pointer("/spec/template").unwrap_or(&empty);
        replicas(o, out);
        selector_and_template(o, "spec.template", tmpl, out);
        validate_pod_spec(
            tmpl.get("spec").unwrap_or(&empty),
            "spec.template.spec",
            &["Always"],
            out,
        );
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        if o.pointer("/spec/selector") != old.pointer("/spec/selector") {
            out.push(Cause::invalid(
                "spec.selector",
                o.pointer("/spec/selector").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}
