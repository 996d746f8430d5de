//! PriorityClasses (`scheduling.k8s.io/v1`) and Kubernetes' Priority admission: the two
//! system classes exist in every cluster; a user class is at most 1,000,000,000 and may not
//! take a `system-` name; `value` and `preemptionPolicy` never change; at most one class is the
//! global default. A new pod's `priorityClassName` (or the global default) sets its
//! `priority` and `preemptionPolicy`.

use super::Strategy;
use super::defaulting::{obj, set_default};
use crate::cache::WatchCache;
use crate::error::ApiResult;
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo, StatusError};

pub(super) struct PriorityClassStrategy;
pub(super) static PRIORITY_CLASS: PriorityClassStrategy = PriorityClassStrategy;

/// The highest priority a user-defined class may have.
const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;
const SYSTEM_PREFIX: &str = "system-";

/// The classes every cluster has: name, value, description.
pub(crate) const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

impl Strategy for PriorityClassStrategy {
    fn default(&self, o: &mut Value) {
        if let Some(root) = obj(o) {
            set_default(root, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let name = crate::meta::name(o);
        let value = o.get("value").and_then(Value::as_i64);
        if o.get("value").is_none() {
            out.push(Cause::required("value"));
        }
        if name.starts_with(SYSTEM_PREFIX) {
            let known = SYSTEM_CLASSES
                .iter()
                .any(|(n, v, _)| *n == name && Some(*v) == value);
            if !known {
                out.push(Cause::forbidden(
                    "metadata.name",
                    format!("priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {name:?} is not a known system priority class"),
                ));
            }
        } else if value.is_some_and(|v| v > HIGHEST_USER_DEFINABLE) {
            out.push(Cause::forbidden(
                "value",
                format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"
                ),
            ));
        }
        if let Some(p) = o.get("preemptionPolicy").and_then(Value::as_str)
            && !matches!(p, "PreemptLowerPriority" | "Never")
        {
            out.push(Cause::not_supported(
                "preemptionPolicy",
                p,
                &["Never", "PreemptLowerPriority"],
            ));
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        if o.get("value") != old.get("value") {
            out.push(Cause::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        if o.get("preemptionPolicy") != old.get("preemptionPolicy") {
            out.push(Cause::invalid(
                "preemptionPolicy",
                o.get("preemptionPolicy").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }

    /// At most one global default (checked against the cache, as the admission plugin does).
    fn admit(
        &self,
        cache: &WatchCache,
        info: &ResourceInfo,
        o: &mut Value,
        _old: Option<&Value>,
    ) -> ApiResult<()> {
        if o.get("globalDefault").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        let name = crate::meta::name(o);
        if let Some(other) = global_default(cache).filter(|(n, _)| n != name) {
            return Err(StatusError::forbidden_object(
                info.plural,
                info.group,
                name,
                &format!(
                    "PriorityClass {} is already marked as default. Only one default can exist",
                    other.0
                ),
            )
            .into());
        }
        Ok(())
    }
}

fn classes() -> &'static ResourceInfo {
    shoal_api::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priorityclasses are served")
}

/// The global default class: its name and object.
fn global_default(cache: &WatchCache) -> Option<(String, Value)> {
    let info = classes();
    cache
        .resource(info)
        .list(&info.namespace_prefix(None), None)
        .into_iter()
        .map(|o| o.value().clone())
        .find(|o| o.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .map(|o| (crate::meta::name(&o).to_owned(), o))
}

/// Priority admission for a new pod: its class (named, or the global default) gives its
/// `priority` and `preemptionPolicy`; a pod that names neither gets priority 0.
pub(super) fn admit_pod(cache: &WatchCache, info: &ResourceInfo, pod: &mut Value) -> ApiResult<()> {
    let name = crate::meta::name(pod).to_owned();
    let forbidden = |why: String| -> crate::error::ApiError {
        StatusError::forbidden_object(info.plural, info.group, &name, &why).into()
    };
    let asked = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let class = match &asked {
        Some(class_name) => {
            let pcs = classes();
            let found = cache
                .resource(pcs)
                .get(&pcs.storage_key(None, class_name))
                .map(|o| o.value().clone());
            match found {
                Some(c) => Some((class_name.clone(), c)),
                None => {
                    return Err(forbidden(format!(
                        "no PriorityClass with name {class_name} was found"
                    )));
                }
            }
        }
        None => global_default(cache),
    };
    let (priority, policy) = match &class {
        Some((_, c)) => (
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy").cloned(),
        ),
        None => (0, Some(json!("PreemptLowerPriority"))),
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64)
        && given != priority
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let (Some(given), Some(computed)) = (
        spec.get("preemptionPolicy").and_then(Value::as_str),
        policy.as_ref().and_then(Value::as_str),
    ) && given != computed
    {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
        )));
    }
    spec.insert("priority".into(), json!(priority));
    if let Some(p) = policy {
        spec.insert("preemptionPolicy".into(), p);
    }
    if let (None, Some((n, _))) = (&asked, &class) {
        spec.insert("priorityClassName".into(), json!(n));
    }
    Ok(())
}
