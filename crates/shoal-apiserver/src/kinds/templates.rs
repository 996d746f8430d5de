//! PodTemplates (a pod template stored on its own, defaulted and validated as every pod
//! template is) and ControllerRevisions (a controller's immutable snapshot of its template:
//! `revision` required, `data` never changes).

use super::Strategy;
use super::pod::{default_pod_spec, validate_pod_spec};
use serde_json::Value;
use shoal_api::Cause;

pub(super) struct PodTemplateStrategy;
pub(super) static POD_TEMPLATE: PodTemplateStrategy = PodTemplateStrategy;

impl Strategy for PodTemplateStrategy {
    fn default(&self, o: &mut Value) {
        if let Some(spec) = o.pointer_mut("/template/spec") {
            default_pod_spec(spec);
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        if let Some(spec) = o.pointer("/template/spec") {
            validate_pod_spec(
                spec,
                "template.spec",
                &["Always", "OnFailure", "Never"],
                out,
            );
        }
    }
}

pub(super) struct ControllerRevisionStrategy;
pub(super) static CONTROLLER_REVISION: ControllerRevisionStrategy = ControllerRevisionStrategy;

impl Strategy for ControllerRevisionStrategy {
    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        match o.get("revision") {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|r| r >= 0) => {}
            Some(v) => out.push(Cause::invalid(
                "revision",
                v,
                "must be greater than or equal to 0",
            )),
            None => out.push(Cause::required("revision")),
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        if o.get("data") != old.get("data") {
            out.push(Cause::invalid(
                "data",
                o.get("data").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}
