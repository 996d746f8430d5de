//! LimitRanges and the LimitRanger admission plugin: a new pod's containers get the namespace's
//! default limits and requests where they name none (recorded in the
//! `kubernetes.io/limit-ranger` annotation), then every container, and the pod as a whole, must
//! stay within the ranges' `min`, `max` and `maxLimitRequestRatio`, or the pod is refused with
//! Kubernetes' messages.

use super::Strategy;
use crate::cache::WatchCache;
use serde_json::{Map, Value, json};
use shoal_api::quantity;
use shoal_api::{Cause, ResourceInfo, StatusError};

pub(super) struct LimitRangeStrategy;
pub(super) static LIMIT_RANGE: LimitRangeStrategy = LimitRangeStrategy;

const TYPES: &[&str] = &["Container", "Pod", "PersistentVolumeClaim"];
const BOUNDS: &[&str] = &[
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

impl Strategy for LimitRangeStrategy {
    /// Known types; every bound a quantity.
    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        for (i, item) in o
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let t = item.get("type").and_then(Value::as_str).unwrap_or("");
            if !TYPES.contains(&t) {
                out.push(Cause::not_supported(
                    format!("spec.limits[{i}].type"),
                    t,
                    TYPES,
                ));
            }
            for bound in BOUNDS {
                for (k, v) in item
                    .get(*bound)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    if v.as_str().map(quantity::parse).is_none_or(|q| q.is_err()) {
                        out.push(Cause::invalid(
                            format!("spec.limits[{i}].{bound}[{k}]"),
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                        ));
                    }
                }
            }
        }
    }
}

fn amounts(v: Option<&Value>) -> Vec<(String, String, f64)> {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let s = v.as_str()?;
            Some((k.clone(), s.to_owned(), quantity::parse(s).ok()?))
        })
        .collect()
}

fn amount(c: &Value, kind: &str, resource: &str) -> Option<(String, f64)> {
    let s = c
        .pointer(&format!("/resources/{kind}/{resource}"))?
        .as_str()?;
    Some((s.to_owned(), quantity::parse(s).ok()?))
}

/// Sets the defaults of the `Container` items on the containers that lack them; returns the
/// annotation's text (empty if nothing was set).
fn apply_defaults(items: &[&Value], pod: &mut Value) -> String {
    let mut notes = Vec::new();
    for key in ["containers", "initContainers"] {
        let Some(list) = pod
            .pointer_mut(&format!("/spec/{key}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in list {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            for (field, bound) in [("requests", "defaultRequest"), ("limits", "default")] {
                let mut set = Vec::new();
                for item in items {
                    for (k, text, _) in amounts(item.get(bound)) {
                        let Some(res) = c
                            .as_object_mut()
                            .map(|m| m.entry("resources").or_insert_with(|| json!({})))
                        else {
                            continue;
                        };
                        let Some(res) = res.as_object_mut() else {
                            continue;
                        };
                        let slot = res.entry(field).or_insert_with(|| json!({}));
                        if let Some(m) = slot.as_object_mut()
                            && !m.contains_key(&k)
                        {
                            m.insert(k.clone(), json!(text));
                            set.push(k);
                        }
                    }
                }
                if !set.is_empty() {
                    set.sort();
                    let what = if field == "requests" {
                        "request"
                    } else {
                        "limit"
                    };
                    notes.push(format!(
                        "{} {what} for {key_name} {name}",
                        set.join(", "),
                        key_name = if key == "containers" {
                            "container"
                        } else {
                            "init container"
                        }
                    ));
                }
            }
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("LimitRanger plugin set: {}", notes.join("; "))
    }
}

/// The violations of one bound set (`min`, `max`, `maxLimitRequestRatio`) by one subject
/// (`Container` or `Pod`) with the given requests and limits, in Kubernetes' words.
fn check(
    item: &Value,
    subject: &str,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
    out: &mut Vec<String>,
) {
    let get = |m: &Map<String, Value>, k: &str| -> Option<(String, f64)> {
        let s = m.get(k)?.as_str()?;
        Some((s.to_owned(), quantity::parse(s).ok()?))
    };
    for (k, text, min) in amounts(item.get("min")) {
        match get(requests, &k) {
            None => out.push(format!(
                "minimum {k} usage per {subject} is {text}.  No request is specified"
            )),
            Some((r, v)) if v < min => out.push(format!(
                "minimum {k} usage per {subject} is {text}, but request is {r}"
            )),
            _ => {}
        }
        if let Some((l, v)) = get(limits, &k)
            && v < min
        {
            out.push(format!(
                "minimum {k} usage per {subject} is {text}, but limit is {l}"
            ));
        }
    }
    for (k, text, max) in amounts(item.get("max")) {
        match get(limits, &k) {
            None => out.push(format!(
                "maximum {k} usage per {subject} is {text}.  No limit is specified"
            )),
            Some((l, v)) if v > max => out.push(format!(
                "maximum {k} usage per {subject} is {text}, but limit is {l}"
            )),
            _ => {}
        }
        if let Some((r, v)) = get(requests, &k)
            && v > max
        {
            out.push(format!(
                "maximum {k} usage per {subject} is {text}, but request is {r}"
            ));
        }
    }
    for (k, text, ratio) in amounts(item.get("maxLimitRequestRatio")) {
        let (Some((_, l)), Some((_, r))) = (get(limits, &k), get(requests, &k)) else {
            continue;
        };
        if r > 0.0 && l / r > ratio + 1e-9 {
            out.push(format!(
                "{k} max limit to request ratio per {subject} is {text}, but provided ratio is {:.6}",
                l / r
            ));
        }
    }
}

/// LimitRanger on a new pod: defaults, then the bounds of every LimitRange of its namespace.
pub(super) fn admit_pod(
    cache: &WatchCache,
    info: &ResourceInfo,
    pod: &mut Value,
) -> Result<(), StatusError> {
    let Some(ns) = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Ok(());
    };
    let Some(ranges) = shoal_api::resources::find("", "v1", "limitranges") else {
        return Ok(());
    };
    let mut found = cache
        .resource(ranges)
        .list(&ranges.namespace_prefix(Some(&ns)), None);
    if found.is_empty() {
        return Ok(());
    }
    found.sort_by(|a, b| crate::meta::name(a.value()).cmp(crate::meta::name(b.value())));
    let values: Vec<Value> = found.iter().map(|o| o.value().clone()).collect();
    let items_of = |t: &str| -> Vec<&Value> {
        values
            .iter()
            .flat_map(|v| {
                v.pointer("/spec/limits")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter(|i| i.get("type").and_then(Value::as_str) == Some(t))
            .collect()
    };
    let containers = items_of("Container");
    let note = apply_defaults(&containers, pod);
    if !note.is_empty() {
        let m = crate::meta::meta_mut(pod);
        let annotations = m.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert("kubernetes.io/limit-ranger".into(), json!(note));
        }
    }
    let mut errors = Vec::new();
    let empty = Map::new();
    let mut pod_requests: Map<String, Value> = Map::new();
    let mut pod_limits: Map<String, Value> = Map::new();
    let mut sums: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let requests = c
            .pointer("/resources/requests")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let limits = c
            .pointer("/resources/limits")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for item in &containers {
            check(item, "Container", requests, limits, &mut errors);
        }
        for (kind, m) in [("requests", requests), ("limits", limits)] {
            for k in m.keys() {
                if let Some((_, v)) = amount(c, kind, k) {
                    *sums.entry((kind.to_owned(), k.clone())).or_default() += v;
                }
            }
        }
    }
    for ((kind, k), v) in sums {
        let text = shoal_api::quota::format(&k, v);
        if kind == "requests" {
            pod_requests.insert(k, json!(text));
        } else {
            pod_limits.insert(k, json!(text));
        }
    }
    for item in items_of("Pod") {
        check(item, "Pod", &pod_requests, &pod_limits, &mut errors);
    }
    if errors.is_empty() {
        return Ok(());
    }
    let why = if errors.len() == 1 {
        errors.remove(0)
    } else {
        format!("[{}]", errors.join(", "))
    };
    Err(StatusError::forbidden_object(
        info.plural,
        info.group,
        crate::meta::name(pod),
        &why,
    ))
}
