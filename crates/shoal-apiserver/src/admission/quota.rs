//! ResourceQuota admission, as Kubernetes does it: a new object is charged to every quota of
//! its namespace that covers it, by raising the quota's `status.used` with a
//! compare-and-swap write before the object itself is stored, so two creates racing for the
//! last unit cannot both win (on one API server or several). A charge that would pass `hard`
//! is refused with Kubernetes' message; the quota controller recounts `status.used` from what
//! exists, which also returns what a failed create was charged.

use crate::error::ApiResult;
use crate::registry::{ObjectRef, Registry};
use serde_json::{Map, Value, json};
use shoal_api::quota;
use shoal_api::{ResourceInfo, StatusError, Subresource};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

/// One lock per quota: the charges this server makes to a quota wait their turn instead of
/// losing compare-and-swap races to each other (which, with a back-off per lost race, cost
/// many times more); the compare-and-swap still orders them against other API servers.
fn lock_of(key: String) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(key).or_default().clone()
}

fn quotas_info() -> &'static ResourceInfo {
    shoal_api::resources::find("", "v1", "resourcequotas").expect("resourcequotas are served")
}

fn amounts(m: Option<&Value>) -> BTreeMap<String, f64> {
    m.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), shoal_api::quantity::parse(v.as_str()?).ok()?)))
        .collect()
}

/// What the objects of the namespace use now, for the quota resources `names` (a quota whose
/// status the controller has not filled in yet).
fn counted(registry: &Registry, ns: &str, spec: &Value, names: &[String]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = names.iter().map(|n| (n.clone(), 0.0)).collect();
    let mut kinds: Vec<&'static ResourceInfo> = Vec::new();
    for n in names {
        let (plural, group) = quota::counted_from(n);
        if let Some(info) = shoal_api::resources::RESOURCES
            .iter()
            .find(|i| i.plural == plural && i.group == group && i.namespaced)
            && !kinds.iter().any(|k| std::ptr::eq(*k, info))
        {
            kinds.push(info);
        }
    }
    for info in kinds {
        for o in registry
            .cache
            .resource(info)
            .list(&info.namespace_prefix(Some(ns)), None)
        {
            let v = o.value();
            if !quota::covers(spec, info.group, info.plural, v) {
                continue;
            }
            for (k, amount) in quota::usage(info.group, info.plural, v) {
                if let Some(t) = out.get_mut(&k) {
                    *t += amount;
                }
            }
        }
    }
    out
}

fn listing(names: &[&String], of: &BTreeMap<String, f64>) -> String {
    names
        .iter()
        .map(|k| {
            format!(
                "{k}={}",
                quota::format(k, of.get(*k).copied().unwrap_or(0.0))
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Charges the new object `o` (of `info`) to the quotas of its namespace, or refuses it.
pub async fn admit(
    registry: &Registry,
    info: &'static ResourceInfo,
    o: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let Some(ns) = o.pointer("/metadata/namespace").and_then(Value::as_str) else {
        return Ok(());
    };
    let quotas = quotas_info();
    let mut names: Vec<String> = registry
        .cache
        .resource(quotas)
        .list(&quotas.namespace_prefix(Some(ns)), None)
        .iter()
        .map(|q| crate::meta::name(q.value()).to_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let usage = quota::usage(info.group, info.plural, o);
    let is_pod = info.group.is_empty() && info.plural == "pods";
    let object_name = crate::meta::name(o).to_owned();
    for quota_name in &names {
        let _turn = lock_of(quotas.storage_key(Some(ns), quota_name))
            .lock_owned()
            .await;
        let r = ObjectRef::new(quotas, Some(ns), quota_name).subresource(Some(Subresource::Status));
        let (usage, object_name) = (&usage, object_name.as_str());
        let charged = registry
            .guaranteed_update(r, move |current| {
                Box::pin(async move {
                    let spec = current.value.get("spec").cloned().unwrap_or(Value::Null);
                    if !quota::covers(&spec, info.group, info.plural, o) {
                        return Ok(Some(()));
                    }
                    let hard = amounts(spec.get("hard"));
                    // A pod must say how much it needs of what the quota limits.
                    if is_pod {
                        let missing: Vec<String> = hard
                            .keys()
                            .filter_map(|k| {
                                let who = quota::unspecified(o, k);
                                (!who.is_empty()).then(|| format!("{k} for: {}", who.join(",")))
                            })
                            .collect();
                        if !missing.is_empty() {
                            return Err(StatusError::forbidden_object(
                                info.plural,
                                info.group,
                                object_name,
                                &format!(
                                    "failed quota: {quota_name}: must specify {}",
                                    missing.join("; ")
                                ),
                            )
                            .into());
                        }
                    }
                    let charged: Vec<&String> =
                        hard.keys().filter(|k| usage.contains_key(*k)).collect();
                    if charged.is_empty() {
                        return Ok(Some(()));
                    }
                    let mut used = amounts(current.value.pointer("/status/used"));
                    let unknown: Vec<String> = charged
                        .iter()
                        .filter(|k| !used.contains_key(**k))
                        .map(|k| (*k).clone())
                        .collect();
                    if !unknown.is_empty() {
                        used.extend(counted(registry, ns, &spec, &unknown));
                    }
                    let over: Vec<&String> = charged
                        .iter()
                        .copied()
                        .filter(|k| used.get(*k).copied().unwrap_or(0.0) + usage[*k] > hard[*k] + 1e-9)
                        .collect();
                    if !over.is_empty() {
                        return Err(StatusError::forbidden_object(
                            info.plural,
                            info.group,
                            object_name,
                            &format!(
                                "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                                listing(&over, usage),
                                listing(&over, &used),
                                listing(&over, &hard)
                            ),
                        )
                        .into());
                    }
                    if dry_run {
                        return Ok(Some(()));
                    }
                    let mut new = current.value.clone();
                    let status = new
                        .as_object_mut()
                        .map(|m| m.entry("status").or_insert_with(|| json!({})));
                    let Some(status) = status.and_then(Value::as_object_mut) else {
                        return Ok(Some(()));
                    };
                    let mut written: Map<String, Value> = status
                        .get("used")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    for k in &charged {
                        let total = used.get(*k).copied().unwrap_or(0.0) + usage[*k];
                        written.insert((*k).clone(), json!(quota::format(k, total)));
                    }
                    status.insert("used".into(), Value::Object(written));
                    status
                        .entry("hard")
                        .or_insert_with(|| spec.get("hard").cloned().unwrap_or(json!({})));
                    Ok(registry
                        .commit(&r, &current, new, false)
                        .await?
                        .map(|_| ()))
                })
            })
            .await;
        charged?;
    }
    Ok(())
}
