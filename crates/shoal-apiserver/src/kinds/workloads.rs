//! Deployments, ReplicaSets, StatefulSets and DaemonSets: their defaults (strategies down to
//! their nested fields, history limits, the pod template's, the status counters that are
//! never absent), a selector that matches the template and may not change, and non-negative
//! replicas. The defaults follow Kubernetes' `SetDefaults_Deployment`, `_StatefulSet` and
//! `_DaemonSet` field by field.

use super::Strategy;
use super::defaulting::{child, obj, set_default, status_counters};
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
pub(super) static REPLICATION_CONTROLLER: Workload = Workload("ReplicationController");

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(obj) {
        let tspec = child(t, "spec");
        default_pod_spec(tspec);
    }
}

/// A strategy of type `RollingUpdate` (the default type) gets its `rollingUpdate` and each
/// missing field of it, as `SetDefaults_Deployment`/`_DaemonSet` do.
fn rolling_update(s: &mut Map<String, Value>, key: &str, fields: &[(&str, Value)]) {
    let strategy = child(s, key);
    let Some(st) = obj(strategy) else { return };
    set_default(st, "type", json!("RollingUpdate"));
    if st.get("type").and_then(Value::as_str) != Some("RollingUpdate") {
        return;
    }
    let Some(ru) = obj(child(st, "rollingUpdate")) else {
        return;
    };
    for (k, v) in fields {
        set_default(ru, k, v.clone());
    }
}

/// `SetDefaults_StatefulSet`: a missing type becomes `RollingUpdate` with an empty
/// `rollingUpdate`; a `rollingUpdate` present under that type gets `partition: 0`. A type
/// given without `rollingUpdate` gets none.
fn stateful_update_strategy(s: &mut Map<String, Value>) {
    let Some(st) = obj(child(s, "updateStrategy")) else {
        return;
    };
    if st
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        st.insert("type".into(), json!("RollingUpdate"));
        set_default(st, "rollingUpdate", json!({}));
    }
    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate")
        && let Some(ru) = st.get_mut("rollingUpdate").and_then(obj)
    {
        set_default(ru, "partition", json!(0));
    }
}

/// Status counters Kubernetes' status structs always carry (plain `int32`s, not pointers): a
/// new object has them at 0 before any controller writes.
fn counters_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "ReplicaSet" | "ReplicationController" => &["replicas"],
        "StatefulSet" => &["replicas", "availableReplicas"],
        "DaemonSet" => &[
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
        ],
        _ => &[],
    }
}

impl Strategy for Workload {
    fn default(&self, o: &mut Value) {
        let Some(root) = obj(o) else { return };
        status_counters(root, counters_of(self.0));
        match self.0 {
            "Deployment" => {
                let spec = child(root, "spec");
                if let Some(s) = obj(spec) {
                    set_default(s, "replicas", json!(1));
                    rolling_update(
                        s,
                        "strategy",
                        &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))],
                    );
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
            "ReplicationController" => {
                let spec = child(root, "spec");
                if let Some(s) = obj(spec) {
                    set_default(s, "replicas", json!(1));
                    template(s);
                    // `SetDefaults_ReplicationController`: the selector and the labels default
                    // to the template's labels.
                    let labels = s
                        .get("template")
                        .and_then(|t| t.pointer("/metadata/labels"))
                        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                        .cloned();
                    if let Some(labels) = labels {
                        if s.get("selector")
                            .and_then(Value::as_object)
                            .is_none_or(Map::is_empty)
                        {
                            s.insert("selector".into(), labels.clone());
                        }
                        let meta = child(root, "metadata");
                        if let Some(m) = obj(meta)
                            && m.get("labels")
                                .and_then(Value::as_object)
                                .is_none_or(Map::is_empty)
                        {
                            m.insert("labels".into(), labels);
                        }
                    }
                }
            }
            "StatefulSet" => {
                let spec = child(root, "spec");
                if let Some(s) = obj(spec) {
                    set_default(s, "replicas", json!(1));
                    set_default(s, "podManagementPolicy", json!("OrderedReady"));
                    stateful_update_strategy(s);
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
                    rolling_update(
                        s,
                        "updateStrategy",
                        &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))],
                    );
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
        if self.0 == "ReplicationController" {
            map_selector_and_template(o, tmpl, out);
        } else {
            selector_and_template(o, "spec.template", tmpl, out);
        }
        validate_pod_spec(
            tmpl.get("spec").unwrap_or(&empty),
            "spec.template.spec",
            &["Always"],
            out,
        );
        if self.0 == "Deployment" {
            serverless_annotations(o, out);
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        // A ReplicationController's selector may change (its pods are adopted or released).
        if self.0 != "ReplicationController"
            && o.pointer("/spec/selector") != old.pointer("/spec/selector")
        {
            out.push(Cause::invalid(
                "spec.selector",
                o.pointer("/spec/selector").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}

/// A ReplicationController's selector (a plain label map): present, and matching the
/// template's labels (`ValidateReplicationControllerSpec`).
fn map_selector_and_template(o: &Value, tmpl: &Value, out: &mut Vec<Cause>) {
    let selector = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty());
    let Some(selector) = selector else {
        out.push(Cause::required("spec.selector"));
        return;
    };
    if tmpl.is_null() {
        out.push(Cause::required("spec.template"));
        return;
    }
    let labels = tmpl.pointer("/metadata/labels");
    let matches = selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    if !matches {
        out.push(Cause::invalid(
            "spec.template.metadata.labels",
            labels.map(Value::to_string).unwrap_or_default(),
            "`selector` does not match template `labels`",
        ));
    }
}

/// Shoal's scale-to-zero annotations on a Deployment must parse.
fn serverless_annotations(o: &Value, out: &mut Vec<Cause>) {
    use shoal_api::serverless::{
        ANSWER_WHILE_WAKING, MAX_SCALE, SCALE_TO_ZERO_AFTER, TARGET_CONCURRENCY,
    };
    let Some(ann) = o
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    else {
        return;
    };
    for (key, check) in [
        (
            SCALE_TO_ZERO_AFTER,
            (|v: &str| shoal_api::serverless::idle_after(v).map(drop))
                as fn(&str) -> Result<(), String>,
        ),
        (TARGET_CONCURRENCY, |v| {
            shoal_api::serverless::positive(v).map(drop)
        }),
        (MAX_SCALE, |v| {
            shoal_api::serverless::positive(v).and_then(|n| {
                (n.fract() == 0.0)
                    .then_some(())
                    .ok_or_else(|| "must be a whole number".into())
            })
        }),
        (ANSWER_WHILE_WAKING, |v| {
            shoal_api::serverless::boolean(v).map(drop)
        }),
    ] {
        if let Some(v) = ann.get(key) {
            let text = v.as_str().unwrap_or_default();
            if let Err(e) = check(text) {
                out.push(Cause::invalid(
                    format!("metadata.annotations[{key}]"),
                    text,
                    &e,
                ));
            }
        }
    }
}
