//! Jobs and CronJobs: defaults (completions, parallelism, back-off, the pod template's), the
//! selector a new Job gets from its uid, validation, and a template that may not change.

use super::Strategy;
use super::defaulting::{child, obj, set_default};
use super::pod::{default_pod_spec, validate_pod_spec};
use super::validation::selector_and_template;
use serde_json::{Map, Value, json};
use shoal_api::Cause;

pub(super) struct JobStrategy;
pub(super) static JOB: JobStrategy = JobStrategy;
pub(super) struct CronJobStrategy;
pub(super) static CRON_JOB: CronJobStrategy = CronJobStrategy;

/// A new Job without `manualSelector` selects its pods by its uid, as Kubernetes does: the
/// selector `batch.kubernetes.io/controller-uid=<uid>` and the matching template labels
/// (plus `job-name`, and the legacy unprefixed pair).
fn job_selector(o: &mut Value) {
    let uid = o
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let Some(t) = spec.get_mut("template").and_then(obj) else {
        return;
    };
    let m = child(t, "metadata");
    let Some(m) = obj(m) else { return };
    let labels = child(m, "labels");
    if let Some(l) = obj(labels) {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            l.insert(k.into(), json!(v));
        }
    }
}

fn job_spec(s: &mut Map<String, Value>) {
    let indexed = s.get("completionMode").and_then(Value::as_str) == Some("Indexed");
    if s.get("completions").is_none() && s.get("parallelism").is_none() {
        s.insert("completions".into(), json!(1));
    }
    set_default(s, "parallelism", json!(1));
    if s.get("completions").is_none() && indexed {
        s.insert("completions".into(), json!(1));
    }
    set_default(s, "backoffLimit", json!(6));
    set_default(s, "completionMode", json!("NonIndexed"));
    set_default(s, "suspend", json!(false));
    set_default(s, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(t) = s.get_mut("template").and_then(obj) {
        let tspec = child(t, "spec");
        default_pod_spec(tspec);
    }
}

impl Strategy for JobStrategy {
    fn prepare_create(&self, o: &mut Value) {
        job_selector(o);
    }

    fn default(&self, o: &mut Value) {
        let Some(root) = obj(o) else { return };
        let spec = child(root, "spec");
        if let Some(s) = obj(spec) {
            job_spec(s);
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let empty = Value::Null;
        let tmpl = o.pointer("/spec/template").unwrap_or(&empty);
        let tspec = tmpl.get("spec").unwrap_or(&empty);
        if o.pointer("/spec/selector").is_some()
            && o.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true)
        {
            selector_and_template(o, "spec.template", tmpl, out);
        }
        validate_pod_spec(tspec, "spec.template.spec", &["OnFailure", "Never"], out);
        for f in ["parallelism", "completions", "backoffLimit"] {
            if let Some(n) = o.pointer(&format!("/spec/{f}")).and_then(Value::as_i64)
                && n < 0
            {
                out.push(Cause::invalid(
                    format!("spec.{f}"),
                    n,
                    "must be greater than or equal to 0",
                ));
            }
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        let changed = |ptr: &str| o.pointer(ptr) != old.pointer(ptr);
        if changed("/spec/template") || changed("/spec/completions") {
            out.push(Cause::invalid("spec.template", "...", "field is immutable"));
        }
    }
}

impl Strategy for CronJobStrategy {
    fn default(&self, o: &mut Value) {
        let Some(root) = obj(o) else { return };
        let spec = child(root, "spec");
        if let Some(s) = obj(spec) {
            set_default(s, "concurrencyPolicy", json!("Allow"));
            set_default(s, "suspend", json!(false));
            set_default(s, "successfulJobsHistoryLimit", json!(3));
            set_default(s, "failedJobsHistoryLimit", json!(1));
            if let Some(jt) = s.get_mut("jobTemplate").and_then(obj) {
                let js = child(jt, "spec");
                if let Some(js) = obj(js) {
                    job_spec(js);
                }
            }
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let empty = Value::Null;
        match o.pointer("/spec/schedule").and_then(Value::as_str) {
            None | Some("") => out.push(Cause::required("spec.schedule")),
            Some(sched) => {
                let fields = sched.split_whitespace().count();
                if !(sched.starts_with('@') || fields == 5) {
                    out.push(Cause::invalid(
                        "spec.schedule",
                        sched,
                        &format!("expected exactly 5 fields, found {fields}: {sched}"),
                    ));
                }
            }
        }
        let jt = o
            .pointer("/spec/jobTemplate/spec/template/spec")
            .unwrap_or(&empty);
        validate_pod_spec(
            jt,
            "spec.jobTemplate.spec.template.spec",
            &["OnFailure", "Never"],
            out,
        );
    }
}
