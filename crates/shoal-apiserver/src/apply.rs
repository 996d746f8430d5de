//! Server-side apply: field ownership recorded in `metadata.managedFields` (FieldsV1), conflicts
//! between managers, and removal of fields a manager stops applying.
//!
//! A field set is a set of paths; each path is a list of FieldsV1 segments: `f:<field>`,
//! `k:<json key>` for an item of a list merged by key, `v:<json>` for a scalar in a set-like
//! list, and `.` for "the list item itself".

use crate::patch::{ListStrategy, list_strategy};
use serde_json::{Map, Value, json};
use shoal_api::{Cause, StatusError};
use std::collections::BTreeSet;

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Top-level and metadata fields nobody owns.
fn excluded(path: &[String], skip_status: bool) -> bool {
    match path {
        [f] if f == "f:apiVersion" || f == "f:kind" => true,
        [f, ..] if skip_status && f == "f:status" => true,
        [m, f, ..] if m == "f:metadata" => matches!(
            f.as_str(),
            "f:name"
                | "f:namespace"
                | "f:uid"
                | "f:resourceVersion"
                | "f:creationTimestamp"
                | "f:generation"
                | "f:managedFields"
                | "f:deletionTimestamp"
                | "f:deletionGracePeriodSeconds"
                | "f:selfLink"
        ),
        _ => false,
    }
}

/// The fields set in `v`.
pub fn fields_of(v: &Value, skip_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    collect(v, "", &mut Vec::new(), &mut out);
    out.retain(|p| !excluded(p, skip_status));
    out
}

fn collect(v: &Value, parent: &str, prefix: &mut Path, out: &mut FieldSet) {
    let Value::Object(m) = v else {
        out.insert(prefix.clone());
        return;
    };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, c) in m {
        prefix.push(format!("f:{k}"));
        let here = if parent.is_empty() {
            k.clone()
        } else {
            format!("{parent}.{k}")
        };
        match c {
            Value::Object(_) => collect(c, &here, prefix, out),
            Value::Array(items) => match list_strategy(parent, k) {
                ListStrategy::MergeByKey(key) => {
                    for item in items {
                        let id = item.get(key).cloned().unwrap_or(Value::Null);
                        prefix.push(format!("k:{}", json!({ key: id })));
                        prefix.push(".".into());
                        out.insert(prefix.clone());
                        prefix.pop();
                        collect(item, &here, prefix, out);
                        prefix.pop();
                    }
                }
                ListStrategy::MergeScalars => {
                    for item in items {
                        prefix.push(format!("v:{item}"));
                        out.insert(prefix.clone());
                        prefix.pop();
                    }
                }
                ListStrategy::Replace => {
                    out.insert(prefix.clone());
                }
            },
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

/// The value at `path` in `v`, if present.
pub fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            continue;
        }
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array()?
                .iter()
                .find(|it| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))?
        } else if let Some(x) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(x).ok()?;
            cur.as_array()?.iter().find(|it| **it == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the field at `path` from `v`.
pub fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        // The list item itself: remove the item from its list.
        if let Some((item, list_path)) = parent.split_last()
            && let Some(Value::Array(list)) = value_at_mut(v, list_path)
            && let Some(k) = item.strip_prefix("k:")
            && let Ok(key) = serde_json::from_str::<Map<String, Value>>(k)
        {
            list.retain(|it| !key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)));
        }
        return;
    }
    match value_at_mut(v, parent) {
        Some(Value::Object(m)) => {
            if let Some(f) = last.strip_prefix("f:") {
                m.remove(f);
            }
        }
        Some(Value::Array(list)) => {
            if let Some(x) = last.strip_prefix("v:")
                && let Ok(want) = serde_json::from_str::<Value>(x)
            {
                list.retain(|it| *it != want);
            }
        }
        _ => {}
    }
}

fn value_at_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            continue;
        }
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)?
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array_mut()?
                .iter_mut()
                .find(|it| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Renders a field set as FieldsV1.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let e = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            // Every entry is created as an object, so this always holds.
            let Value::Object(m) = e else { break };
            cur = m;
        }
    }
    Value::Object(root)
}

/// Parses FieldsV1 into a field set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Manager {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

pub fn read_managers(obj: &Value) -> Vec<Manager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| Manager {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .to_owned(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    time: e
                        .get("time")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let list: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&m.fields),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn render_path(p: &[String]) -> String {
    let mut s = String::new();
    for seg in p {
        if seg == "." {
            continue;
        }
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            s.push('[');
            s.push_str(&k.replace(':', "="));
            s.push(']');
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Records an Update by `manager` that turned `old` into `new`: the fields it changed become
/// its own and leave other managers.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: &str,
    subresource: &str,
) {
    let skip_status = subresource.is_empty();
    let before = old.map(|o| fields_of(o, false)).unwrap_or_default();
    let after = fields_of(new, false);
    let changed: FieldSet = after
        .iter()
        .filter(|p| !before.contains(*p) || old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .filter(|p| !skip_status || p.first().is_none_or(|f| f != "f:status"))
        .filter(|p| subresource.is_empty() || p.first().is_some_and(|f| f == "f:status"))
        .cloned()
        .collect();
    let mut managers = old.map(read_managers).unwrap_or_default();
    for m in &mut managers {
        // Fields that no longer exist are owned by nobody; changed ones move to this manager.
        m.fields
            .retain(|p| after.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        match managers.iter_mut().find(|m| {
            m.manager == manager && m.operation == "Update" && m.subresource == subresource
        }) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now.to_owned();
            }
            None => managers.push(Manager {
                manager: manager.to_owned(),
                operation: "Update".into(),
                api_version: api_version.to_owned(),
                time: now.to_owned(),
                subresource: subresource.to_owned(),
                fields: changed,
            }),
        }
    }
    write_managers(new, &managers);
}

/// The field manager `kubectl apply --server-side` uses by default.
const KUBECTL: &str = "kubectl";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether every conflicting field is one the object's `last-applied-configuration` (written
/// by client-side `kubectl apply`) sets: then the server-side apply may take them over, as
/// Kubernetes' `lastAppliedManager` allows.
fn client_side_applied(live: &Value, conflicts: &[(String, Path)]) -> bool {
    let Some(last) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        return false;
    };
    let allowed = fields_of(&last, true);
    conflicts.iter().all(|(_, p)| allowed.contains(p))
}

/// Applies `applied` (the manager's full intent) to `live`. Returns the new object or a 409
/// naming every conflicting field.
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
) -> Result<Value, StatusError> {
    let mut managers = read_managers(live);
    let new_set = fields_of(applied, true);
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for m in managers
        .iter_mut()
        .filter(|m| m.manager != manager || m.operation != "Apply")
    {
        let clash: Vec<Path> = m
            .fields
            .intersection(&new_set)
            .filter(|p| {
                p.last().is_some_and(|l| l != ".") && value_at(live, p) != value_at(applied, p)
            })
            .cloned()
            .collect();
        if force {
            for p in clash {
                m.fields.remove(&p);
            }
        } else {
            conflicts.extend(clash.into_iter().map(|p| (m.manager.clone(), p)));
        }
    }
    if !conflicts.is_empty() && manager == KUBECTL && client_side_applied(live, &conflicts) {
        // The documented client-side → server-side apply migration: `kubectl apply
        // --server-side` takes over what `kubectl apply` last applied.
        return apply(live, applied, manager, true, api_version, now);
    }
    let conflicts: Vec<(String, String)> = conflicts
        .into_iter()
        .map(|(m, p)| (m, render_path(&p)))
        .collect();
    if !conflicts.is_empty() {
        let causes: Vec<Cause> = conflicts
            .iter()
            .map(|(m, f)| Cause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with \"{m}\""),
                field: f.clone(),
            })
            .collect();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, f)| format!("conflict with \"{m}\": {f}"))
            .collect();
        let message = if lines.len() == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                lines.len(),
                lines.join("\n")
            )
        };
        return Err(StatusError {
            code: 409,
            reason: "Conflict",
            message,
            details: Some(Box::new(shoal_api::Details {
                causes,
                ..Default::default()
            })),
        });
    }
    let mut out = live.clone();
    // Fields this manager applied before and no longer applies go, unless someone else owns them.
    let previous: FieldSet = managers
        .iter()
        .filter(|m| m.manager == manager && m.operation == "Apply")
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    let others: FieldSet = managers
        .iter()
        .filter(|m| m.manager != manager || m.operation != "Apply")
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    for p in previous.difference(&new_set) {
        if !others.contains(p) {
            remove_at(&mut out, p);
        }
    }
    let patch = serde_json::to_vec(applied).unwrap_or_default();
    crate::patch::strategic_merge_patch(&mut out, &patch)?;
    managers.retain(|m| !(m.manager == manager && m.operation == "Apply"));
    managers.push(Manager {
        manager: manager.to_owned(),
        operation: "Apply".into(),
        api_version: api_version.to_owned(),
        time: now.to_owned(),
        subresource: String::new(),
        fields: new_set,
    });
    write_managers(&mut out, &managers);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"k": "v"}});
        let set = fields_of(&v, true);
        let fv1 = to_fields_v1(&set);
        assert_eq!(
            fv1,
            json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
        );
        assert_eq!(from_fields_v1(&fv1), set);
    }

    #[test]
    fn second_manager_changing_a_field_conflicts_unless_forced() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let live = apply(
            &json!({"metadata": {"name": "c"}}),
            &applied,
            "helm",
            false,
            "v1",
            "t",
        )
        .unwrap();
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2"}});
        let err = apply(&live, &other, "kubectl", false, "v1", "t").unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"helm\": .data.a"),
            "{}",
            err.message
        );
        let forced = apply(&live, &other, "kubectl", true, "v1", "t").unwrap();
        assert_eq!(forced["data"]["a"], "2");
        // Same value from a second manager is shared ownership, not a conflict.
        assert!(apply(&live, &applied, "kubectl", false, "v1", "t").is_ok());
    }

    #[test]
    fn server_side_apply_by_kubectl_takes_over_what_client_side_apply_last_applied() {
        let last = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let mut live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": {LAST_APPLIED: last.to_string()}},
            "data": {"a": "1", "b": "1"}});
        record_update(None, &mut live, "kubectl-client-side-apply", "v1", "t", "");
        let changed = |k: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {k: "2"}});
        // `a` was client-side applied: kubectl's server-side apply takes it over.
        let out = apply(&live, &changed("a"), "kubectl", false, "v1", "t").unwrap();
        assert_eq!(out["data"]["a"], "2");
        // `b` was set some other way: still a conflict; and only kubectl migrates.
        assert_eq!(
            apply(&live, &changed("b"), "kubectl", false, "v1", "t")
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(
            apply(&live, &changed("a"), "helm", false, "v1", "t")
                .unwrap_err()
                .code,
            409
        );
    }

    #[test]
    fn dropping_a_field_from_the_applied_config_removes_it() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = apply(
            &json!({"metadata": {"name": "c"}}),
            &first,
            "me",
            false,
            "v1",
            "t",
        )
        .unwrap();
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let out = apply(&live, &second, "me", false, "v1", "t").unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
    }
}
