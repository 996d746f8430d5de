//! Wasm admission: `ClusterAdmissionPolicy` and `AdmissionPolicy` objects, loaded into the
//! plugin host and run on every write they match.
//!
//! The chain for a write is: built-in mutation (defaulting), Wasm mutating policies,
//! validation, Wasm validating policies ([`crate::registry::Registry`] calls
//! [`Admission::mutate`] and [`Admission::validate`] around its own steps). This module is
//! that request-time chain; [`policies`] is the loader that keeps its set of policies in step
//! with the policy objects.

pub mod podsecurity;
pub mod policies;
pub mod quota;

use crate::cache::WatchCache;
use crate::error::ApiResult;
use serde_json::Value;
use shoal_api::policy::AdmissionPolicySpec;
use shoal_api::selector::{LabelSelector, labels_of};
use shoal_api::{ResourceInfo, StatusError, Subresource};
use shoal_plugin_host::admission::{
    AdmissionModule, AdmissionRequest, GroupVersionKind, GroupVersionResource, UserInfo,
};
use shoal_plugin_host::health::Health;
use shoal_plugin_host::{PluginError, PluginKey};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One policy as it serves requests.
pub struct Active {
    key: PluginKey,
    spec: AdmissionPolicySpec,
    settings: String,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
    /// `None` until a module loads: calls then fail by the failure policy.
    module: Option<AdmissionModule>,
    load_error: Option<String>,
    /// Failures, breaker, logs and events (the module's, or one of its own without one).
    health: Arc<Health>,
}

impl Active {
    pub(crate) fn new(
        key: PluginKey,
        spec: AdmissionPolicySpec,
        module: Option<AdmissionModule>,
        load_error: Option<String>,
        health: Arc<Health>,
    ) -> Self {
        let selector = |s: &Option<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        >| { s.as_ref().and_then(|s| LabelSelector::try_from(s).ok()) };
        Active {
            key,
            namespace_selector: selector(&spec.namespace_selector),
            object_selector: selector(&spec.object_selector),
            settings: shoal_plugin_host::loader::PluginSpec::settings(&spec),
            spec,
            module,
            load_error,
            health,
        }
    }
    /// How denials name it: `name` or `namespace/name`.
    fn display(&self) -> String {
        self.key.display_name()
    }
    fn monitor(&self) -> bool {
        self.spec.mode.as_deref() == Some("monitor")
    }
    fn ignore_failures(&self) -> bool {
        self.spec.failure_policy.as_deref() == Some("Ignore")
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.spec.timeout_seconds.unwrap_or(2).clamp(1, 30) as u64)
    }
}

/// The policies in force.
#[derive(Default)]
pub struct Admission {
    active: RwLock<Arc<Vec<Arc<Active>>>>,
}

/// What a write is, for matching and for the request the policy sees.
pub struct Attributes<'a> {
    pub info: &'a ResourceInfo,
    pub sub: Option<Subresource>,
    pub operation: &'static str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub dry_run: bool,
    /// Who asks; `None`: the API server itself.
    pub user: Option<&'a crate::auth::UserInfo>,
}

impl Admission {
    fn snapshot(&self) -> Arc<Vec<Arc<Active>>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The policies that may apply to a write. Policies do not apply to policies (as
    /// webhooks do not to webhook configurations): a broken policy can always be fixed.
    fn candidates(&self, attrs: &Attributes<'_>) -> Arc<Vec<Arc<Active>>> {
        if attrs.info.group == shoal_api::policy::GROUP {
            return Arc::default();
        }
        self.snapshot()
    }

    /// Swaps the set of policies in force.
    pub(crate) fn replace(&self, set: Vec<Arc<Active>>) {
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }
    /// Runs the mutating policies that match, in name order, each seeing the previous one's
    /// result.
    pub async fn mutate(
        &self,
        cache: &WatchCache,
        attrs: &Attributes<'_>,
        object: &mut Value,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> ApiResult<()> {
        let set = self.candidates(attrs);
        for p in set.iter().filter(|p| p.spec.mutating) {
            if !matches(cache, p, attrs, Some(object), old) {
                continue;
            }
            let req = request(p, attrs, Some(object), old);
            let Some(verdict) = call(p, &req, true, warnings).await? else {
                continue;
            };
            if p.monitor() {
                if !verdict.allowed {
                    warnings.push(format!(
                        "policy {} (monitor mode) would deny the request: {}",
                        p.display(),
                        verdict.message
                    ));
                    p.health.notify(
                        "Warning",
                        "PolicyViolation",
                        would_deny(attrs, &verdict.message),
                    );
                } else if verdict.patch.is_some() {
                    warnings.push(format!(
                        "policy {} (monitor mode) would change the object",
                        p.display()
                    ));
                }
                warnings.extend(verdict.warnings);
                continue;
            }
            warnings.extend(verdict.warnings);
            if !verdict.allowed {
                return Err(denied(p, verdict.code, &verdict.message));
            }
            if let Some(patch) = verdict.patch
                && let Err(why) = apply_patch(object, patch)
            {
                fail(p, &format!("its patch cannot be applied: {why}"), warnings)?;
            }
        }
        Ok(())
    }

    /// Runs the validating policies that match (all of them, in parallel order of names);
    /// the first denial in name order wins.
    pub async fn validate(
        &self,
        cache: &WatchCache,
        attrs: &Attributes<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> ApiResult<()> {
        let set = self.candidates(attrs);
        for p in set.iter().filter(|p| !p.spec.mutating) {
            if !matches(cache, p, attrs, object, old) {
                continue;
            }
            let req = request(p, attrs, object, old);
            let Some(verdict) = call(p, &req, false, warnings).await? else {
                continue;
            };
            warnings.extend(verdict.warnings);
            if !verdict.allowed {
                if p.monitor() {
                    warnings.push(format!(
                        "policy {} (monitor mode) would deny the request: {}",
                        p.display(),
                        verdict.message
                    ));
                    tracing::info!(policy = %p.display(), message = %verdict.message, "monitor-mode policy would deny");
                    p.health.notify(
                        "Warning",
                        "PolicyViolation",
                        would_deny(attrs, &verdict.message),
                    );
                    continue;
                }
                return Err(denied(p, verdict.code, &verdict.message));
            }
        }
        Ok(())
    }
}

/// `would deny CREATE of configmaps default/c1: ...`
fn would_deny(attrs: &Attributes<'_>, message: &str) -> String {
    let what = match attrs.namespace {
        Some(ns) => format!("{ns}/{}", attrs.name),
        None => attrs.name.to_owned(),
    };
    let resource = match attrs.sub {
        Some(s) => format!("{}/{}", attrs.info.qualified(), s.name()),
        None => attrs.info.qualified(),
    };
    format!(
        "would deny {} of {resource} {what}: {message}",
        attrs.operation
    )
}

fn denied(p: &Active, code: u16, message: &str) -> crate::ApiError {
    StatusError::with_code(
        code,
        format!(
            "admission policy \"{}\" denied the request: {message}",
            p.display()
        ),
    )
    .into()
}

/// A failed call (already counted, logged and noticed by the policy's health): denies under
/// `Fail` (unless in monitor mode), passes under `Ignore`.
fn fail(p: &Active, why: &str, warnings: &mut Vec<String>) -> ApiResult<()> {
    if p.monitor() {
        warnings.push(format!(
            "policy {} (monitor mode) failed: {why}",
            p.display()
        ));
        return Ok(());
    }
    if p.ignore_failures() {
        return Ok(());
    }
    Err(StatusError::internal(format!(
        "failed calling admission policy \"{}\": {why}",
        p.display()
    ))
    .into())
}

async fn call(
    p: &Active,
    req: &AdmissionRequest,
    mutating: bool,
    warnings: &mut Vec<String>,
) -> ApiResult<Option<shoal_plugin_host::admission::Verdict>> {
    let result = match &p.module {
        Some(module) => {
            use tracing::Instrument;
            let span =
                tracing::info_span!("admission", policy = %p.key.display_name(), uid = %req.uid);
            module
                .review(req, mutating, p.timeout())
                .instrument(span)
                .await
        }
        // Counted as the policy's failure too (and benched like one).
        None => {
            let e = PluginError::Invalid(format!(
                "its module is not loaded: {}",
                p.load_error.as_deref().unwrap_or("loading")
            ));
            if let Ok(call) = p.health.begin() {
                call.fail(&e);
            }
            Err(e)
        }
    };
    match result {
        Ok(v) => Ok(Some(v)),
        Err(PluginError::Invalid(why)) if p.module.is_none() => {
            fail(p, &why, warnings)?;
            Ok(None)
        }
        Err(e) => {
            fail(p, &e.to_string(), warnings)?;
            Ok(None)
        }
    }
}

/// Applies a policy's JSON patch; the object's identity must not change.
fn apply_patch(object: &mut Value, patch: Value) -> Result<(), String> {
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(|e| e.to_string())?;
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| e.to_string())?;
    for field in ["apiVersion", "kind"] {
        if patched.get(field) != object.get(field) {
            return Err(format!("it changed {field}"));
        }
    }
    for field in ["name", "namespace", "uid", "generateName"] {
        if patched.pointer(&format!("/metadata/{field}"))
            != object.pointer(&format!("/metadata/{field}"))
        {
            return Err(format!("it changed metadata.{field}"));
        }
    }
    *object = patched;
    Ok(())
}

/// Whether `rule` lists `value`, with `*` for anything.
fn lists(values: &[String], value: &str) -> bool {
    values.iter().any(|v| v == "*" || v == value)
}

fn resource_matches(patterns: &[String], resource: &str, sub: Option<&str>) -> bool {
    patterns.iter().any(|pat| {
        let (pr, ps) = pat.split_once('/').unwrap_or((pat, ""));
        let res_ok = pr == "*" || pr == resource;
        let sub_ok = match sub {
            None => ps.is_empty(),
            Some(s) => ps == "*" || ps == s,
        };
        res_ok && sub_ok
    })
}

fn matches(
    cache: &WatchCache,
    p: &Active,
    attrs: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> bool {
    if let Some(ns) = &p.key.namespace
        && attrs.namespace != Some(ns.as_str())
    {
        return false;
    }
    let sub = attrs.sub.map(|s| s.name());
    let rule_ok = p.spec.rules.iter().any(|r| {
        lists(&r.operations, attrs.operation)
            && lists(&r.api_groups, attrs.info.group)
            && resource_matches(&r.resources, attrs.info.plural, sub)
    });
    if !rule_ok {
        return false;
    }
    if let Some(sel) = &p.object_selector {
        let hit = |o: Option<&Value>| o.is_some_and(|o| sel.matches(&labels_of(o)));
        if !hit(object) && !hit(old) {
            return false;
        }
    }
    if let Some(sel) = &p.namespace_selector {
        // As for webhooks: a Namespace is matched on its own labels, other cluster-scoped
        // objects are never skipped.
        let labels = if attrs.info.group.is_empty() && attrs.info.kind == "Namespace" {
            object.or(old).map(labels_of)
        } else if let Some(ns) = attrs.namespace.filter(|_| attrs.info.namespaced) {
            let nsinfo = shoal_api::resources::find("", "v1", "namespaces")
                .expect("namespaces are in the resource table");
            let obj = cache.resource(nsinfo).get(&nsinfo.storage_key(None, ns));
            Some(obj.map(|o| labels_of(o.value())).unwrap_or_default())
        } else {
            None
        };
        if let Some(l) = labels
            && !sel.matches(&l)
        {
            return false;
        }
    }
    true
}

fn request(
    p: &Active,
    attrs: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> AdmissionRequest {
    AdmissionRequest {
        uid: uuid::Uuid::new_v4().to_string(),
        operation: attrs.operation.to_owned(),
        kind: GroupVersionKind {
            group: attrs.info.group.to_owned(),
            version: attrs.info.version.to_owned(),
            kind: attrs.info.kind.to_owned(),
        },
        resource: GroupVersionResource {
            group: attrs.info.group.to_owned(),
            version: attrs.info.version.to_owned(),
            resource: attrs.info.plural.to_owned(),
        },
        sub_resource: attrs.sub.map(|s| s.name().to_owned()).unwrap_or_default(),
        namespace: attrs.namespace.unwrap_or("").to_owned(),
        name: attrs.name.to_owned(),
        object: object.map(Value::to_string),
        old_object: old.map(Value::to_string),
        user_info: match attrs.user {
            Some(u) => UserInfo {
                username: u.username.clone(),
                uid: u.uid.clone(),
                groups: u.groups.clone(),
            },
            None => UserInfo {
                username: "system:apiserver".into(),
                uid: String::new(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        },
        dry_run: attrs.dry_run,
        settings: p.settings.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_patterns_follow_webhook_rules() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(resource_matches(&p(&["pods"]), "pods", None));
        assert!(!resource_matches(&p(&["pods"]), "pods", Some("status")));
        assert!(resource_matches(
            &p(&["pods/status"]),
            "pods",
            Some("status")
        ));
        assert!(resource_matches(&p(&["*"]), "deployments", None));
        assert!(!resource_matches(&p(&["*"]), "deployments", Some("scale")));
        assert!(resource_matches(
            &p(&["*/scale"]),
            "deployments",
            Some("scale")
        ));
        assert!(resource_matches(&p(&["*/*"]), "pods", Some("status")));
    }

    #[test]
    fn patches_may_not_rename_objects() {
        let mut o =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {}});
        let rename = json!([{"op": "replace", "path": "/metadata/name", "value": "b"}]);
        assert!(
            apply_patch(&mut o, rename)
                .unwrap_err()
                .contains("metadata.name")
        );
        let label = json!([{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]);
        apply_patch(&mut o, label).unwrap();
        assert_eq!(o["metadata"]["labels"]["x"], "y");
    }
}
