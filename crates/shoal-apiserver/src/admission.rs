//! Wasm admission: `ClusterAdmissionPolicy` and `AdmissionPolicy` objects, loaded into the
//! plugin host and run on every write they match.
//!
//! The chain for a write is: built-in mutation (defaulting), Wasm mutating policies,
//! validation, Wasm validating policies ([`crate::registry::Registry`] calls
//! [`Admission::mutate`] and [`Admission::validate`] around its own steps).
//!
//! A loader task ([`run`]) watches the policies in the watch cache, fetches and compiles
//! modules, swaps the set of active policies atomically, and writes each policy's status
//! (`Pending`, `Active`, `Failed`). A module that fails to load leaves the last good one
//! serving.

use crate::ApiServer;
use crate::cache::WatchCache;
use crate::error::ApiResult;
use crate::registry::WriteOptions;
use serde_json::{Value, json};
use shoal_api::policy::{AdmissionPolicySpec, PluginStatus};
use shoal_api::selector::{LabelSelector, labels_of};
use shoal_api::{ResourceInfo, StatusError, Subresource};
use shoal_plugin_host::admission::{
    AdmissionModule, AdmissionRequest, GroupVersionKind, GroupVersionResource, UserInfo,
};
use shoal_plugin_host::reload::{self, Attempt};
use shoal_plugin_host::source::Source;
use shoal_plugin_host::{DEFAULT_MEMORY_LIMIT, Host, PluginError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// How often the loader looks for changed policies and modules.
const RESYNC: Duration = Duration::from_millis(500);

/// One policy as it serves requests.
struct Active {
    /// `ClusterAdmissionPolicy/name` or `AdmissionPolicy/namespace/name`.
    key: String,
    /// How denials name it: `name` or `namespace/name`.
    display: String,
    /// Set for an `AdmissionPolicy`: it sees only its own namespace.
    namespace: Option<String>,
    spec: AdmissionPolicySpec,
    settings: String,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
    /// `None` until a module loads: calls then fail by the failure policy.
    module: Option<AdmissionModule>,
    load_error: Option<String>,
    failures: Arc<AtomicI64>,
}

impl Active {
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
    host: OnceLock<Result<Host, String>>,
    active: RwLock<Arc<Vec<Arc<Active>>>>,
    /// Where monitor-mode verdicts and failures go to become Events on the policy.
    notices: OnceLock<tokio::sync::mpsc::Sender<Notice>>,
}

/// Something an Event on a policy should say.
struct Notice {
    /// The policy's key (`Kind/[namespace/]name`).
    key: String,
    type_: &'static str,
    reason: &'static str,
    message: String,
}

/// Notices waiting to become Events; more are dropped (they are also logged).
const NOTICES: usize = 1024;

/// What a write is, for matching and for the request the policy sees.
pub struct Attributes<'a> {
    pub info: &'a ResourceInfo,
    pub sub: Option<Subresource>,
    pub operation: &'static str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub dry_run: bool,
}

impl Admission {
    fn host(&self) -> Result<Host, String> {
        self.host
            .get_or_init(|| Host::new(DEFAULT_MEMORY_LIMIT).map_err(|e| e.to_string()))
            .clone()
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Active>>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn notify(&self, p: &Active, type_: &'static str, reason: &'static str, message: String) {
        if let Some(tx) = self.notices.get() {
            let _ = tx.try_send(Notice {
                key: p.key.clone(),
                type_,
                reason,
                message,
            });
        }
    }

    /// The policies that may apply to a write. Policies do not apply to policies (as
    /// webhooks do not to webhook configurations): a broken policy can always be fixed.
    fn candidates(&self, attrs: &Attributes<'_>) -> Arc<Vec<Arc<Active>>> {
        if attrs.info.group == shoal_api::policy::GROUP {
            return Arc::default();
        }
        self.snapshot()
    }

    fn replace(&self, set: Vec<Arc<Active>>) {
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
            let Some(verdict) = call(self, p, &req, true, warnings).await? else {
                continue;
            };
            if p.monitor() {
                if !verdict.allowed {
                    warnings.push(format!(
                        "policy {} (monitor mode) would deny the request: {}",
                        p.display, verdict.message
                    ));
                    self.notify(
                        p,
                        "Warning",
                        "PolicyViolation",
                        would_deny(attrs, &verdict.message),
                    );
                } else if verdict.patch.is_some() {
                    warnings.push(format!(
                        "policy {} (monitor mode) would change the object",
                        p.display
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
                fail(
                    self,
                    p,
                    &format!("its patch cannot be applied: {why}"),
                    warnings,
                )?;
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
            let Some(verdict) = call(self, p, &req, false, warnings).await? else {
                continue;
            };
            warnings.extend(verdict.warnings);
            if !verdict.allowed {
                if p.monitor() {
                    warnings.push(format!(
                        "policy {} (monitor mode) would deny the request: {}",
                        p.display, verdict.message
                    ));
                    tracing::info!(policy = %p.display, message = %verdict.message, "monitor-mode policy would deny");
                    self.notify(
                        p,
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
            p.display
        ),
    )
    .into()
}

/// A failed call: counted; denies under `Fail` (unless in monitor mode), passes under `Ignore`.
fn fail(adm: &Admission, p: &Active, why: &str, warnings: &mut Vec<String>) -> ApiResult<()> {
    p.failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(policy = %p.display, error = %why, "admission policy failed");
    adm.notify(p, "Warning", "PolicyFailed", why.to_owned());
    if p.monitor() {
        warnings.push(format!("policy {} (monitor mode) failed: {why}", p.display));
        return Ok(());
    }
    if p.ignore_failures() {
        return Ok(());
    }
    Err(StatusError::internal(format!(
        "failed calling admission policy \"{}\": {why}",
        p.display
    ))
    .into())
}

async fn call(
    adm: &Admission,
    p: &Active,
    req: &AdmissionRequest,
    mutating: bool,
    warnings: &mut Vec<String>,
) -> ApiResult<Option<shoal_plugin_host::admission::Verdict>> {
    let Some(module) = &p.module else {
        let why = format!(
            "its module is not loaded: {}",
            p.load_error.as_deref().unwrap_or("loading")
        );
        fail(adm, p, &why, warnings)?;
        return Ok(None);
    };
    match module.review(req, mutating, p.timeout()).await {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            fail(adm, p, &e.to_string(), warnings)?;
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
    if let Some(ns) = &p.namespace
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
        // One credential, the cluster admin's (see `authenticate`).
        user_info: UserInfo {
            username: "shoal-admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        },
        dry_run: attrs.dry_run,
        settings: p.settings.clone(),
    }
}

/// What the loader knows about one policy object.
struct Loaded {
    attempt: Attempt,
    active: Arc<Active>,
    /// The status last written.
    status: PluginStatus,
    /// The status to write once the active set includes this load.
    next: Option<PluginStatus>,
}

/// Watches the policies and keeps [`Admission`] in step, until the process ends.
pub async fn run(server: Arc<ApiServer>) {
    let (tx, rx) = tokio::sync::mpsc::channel(NOTICES);
    if server.registry.admission.notices.set(tx).is_ok() {
        tokio::spawn(record_events(server.clone(), rx));
    }
    let mut loaded: HashMap<String, Loaded> = HashMap::new();
    let mut tick = server.cache.subscribe_revision();
    loop {
        sync(&server, &mut loaded).await;
        // Wake on any write or after RESYNC (ConfigMap and file modules can change without
        // the policy changing).
        let _ = tokio::time::timeout(RESYNC, tick.changed()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn policy_infos() -> [&'static ResourceInfo; 2] {
    [
        shoal_api::resources::find_kind(shoal_api::policy::GROUP, "ClusterAdmissionPolicy")
            .expect("policies are in the resource table"),
        shoal_api::resources::find_kind(shoal_api::policy::GROUP, "AdmissionPolicy")
            .expect("policies are in the resource table"),
    ]
}

async fn sync(server: &Arc<ApiServer>, loaded: &mut HashMap<String, Loaded>) {
    let mut seen = Vec::new();
    let mut changed = false;
    for info in policy_infos() {
        let objects = server
            .cache
            .resource(info)
            .list(&info.storage_prefix(), None);
        for o in objects {
            let o = o.value().clone();
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let name = crate::meta::name(&o).to_owned();
            let key = match &ns {
                Some(ns) => format!("{}/{ns}/{name}", info.kind),
                None => format!("{}/{name}", info.kind),
            };
            seen.push(key.clone());
            if crate::meta::is_deleting(&o) {
                continue;
            }
            changed |= reconcile(server, &key, ns.as_deref(), &name, &o, loaded).await;
        }
    }
    let before = loaded.len();
    loaded.retain(|k, _| seen.contains(k));
    changed |= loaded.len() != before;
    if changed {
        let mut set: Vec<Arc<Active>> = loaded.values().map(|l| l.active.clone()).collect();
        set.sort_by(|a, b| a.key.cmp(&b.key));
        server.registry.admission.replace(set);
    }
    // Statuses are written once the set they describe is in force (a policy reported Active
    // already applies); failure counts reach them at most once per resync.
    for (key, l) in loaded.iter_mut() {
        let mut want = l.next.take().unwrap_or_else(|| l.status.clone());
        want.failures = Some(l.active.failures.load(Ordering::Relaxed));
        write_status(server, key, &mut l.status, want).await;
    }
}

/// Turns notices into core/v1 Events on the policy objects (`kubectl describe cap NAME`).
async fn record_events(server: Arc<ApiServer>, mut rx: tokio::sync::mpsc::Receiver<Notice>) {
    let events =
        shoal_api::resources::find("", "v1", "events").expect("events are in the resource table");
    let opts = WriteOptions {
        dry_run: false,
        manager: "shoal-apiserver".into(),
        validation: crate::request::FieldValidation::Ignore,
    };
    while let Some(n) = rx.recv().await {
        let mut parts = n.key.splitn(3, '/');
        let kind = parts.next().unwrap_or("").to_owned();
        let (ns, name) = match (parts.next(), parts.next()) {
            (Some(ns), Some(name)) => (Some(ns.to_owned()), name.to_owned()),
            (Some(name), None) => (None, name.to_owned()),
            _ => continue,
        };
        let Some(info) = shoal_api::resources::find_kind(shoal_api::policy::GROUP, &kind) else {
            continue;
        };
        let uid = server
            .cache
            .resource(info)
            .get(&info.storage_key(ns.as_deref(), &name))
            .map(|o| crate::meta::str_field(o.value(), "uid").to_owned());
        let about = shoal_api::events::Involved {
            api_version: info.api_version(),
            kind,
            namespace: ns.clone().unwrap_or_default(),
            name,
            uid,
            ..Default::default()
        };
        let source = shoal_api::events::Source {
            component: "shoal-apiserver".into(),
            host: None,
        };
        let now = crate::meta::now();
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or_default();
        let mut event = shoal_api::events::core_event(
            &about, &source, n.type_, n.reason, &n.message, &now, unique,
        );
        let event_ns = ns.unwrap_or_else(|| "default".into());
        event["metadata"]["namespace"] = json!(event_ns);
        if let Err(e) = server
            .registry
            .create(events, Some(&event_ns), event, &opts)
            .await
        {
            tracing::debug!(error = %e.0.message, "cannot record a policy event");
        }
    }
}

/// Fetches the module bytes `spec.module` names.
async fn fetch(server: &ApiServer, src: &Source, own_ns: Option<&str>) -> Result<Vec<u8>, String> {
    match src {
        Source::ConfigMap {
            namespace,
            name,
            key,
        } => {
            let ns = namespace.as_deref().or(own_ns).unwrap_or("default");
            let info = shoal_api::resources::find("", "v1", "configmaps")
                .expect("configmaps are in the resource table");
            let cm = server
                .cache
                .resource(info)
                .get(&info.storage_key(Some(ns), name))
                .ok_or_else(|| format!("configmap {ns}/{name} not found"))?;
            shoal_plugin_host::source::configmap_module(cm.value(), key)
        }
        other => other.fetch().await.map_err(|e| e.to_string()),
    }
}

/// Brings one policy up to date; whether the active set changed.
async fn reconcile(
    server: &Arc<ApiServer>,
    key: &str,
    ns: Option<&str>,
    name: &str,
    o: &Value,
    loaded: &mut HashMap<String, Loaded>,
) -> bool {
    let uid = crate::meta::str_field(o, "uid").to_owned();
    let generation = o
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    // Validation keeps malformed specs and module references out of the store.
    let Ok(spec) = serde_json::from_value::<AdmissionPolicySpec>(
        o.get("spec").cloned().unwrap_or(Value::Null),
    ) else {
        return false;
    };
    let Ok(src) = Source::parse(&spec.module) else {
        return false;
    };
    let prev = loaded.get(key).filter(|l| l.attempt.uid == uid);
    if !Attempt::should_fetch(prev.map(|l| &l.attempt), &uid, generation, &src) {
        return false;
    }
    let bytes = fetch(server, &src, ns).await;
    let digest = bytes.as_ref().ok().map(|b| shoal_plugin_host::digest(b));
    if !Attempt::should_load(
        prev.map(|l| &l.attempt),
        &uid,
        generation,
        digest.as_deref(),
    ) {
        return false;
    }
    let settings = spec
        .settings
        .as_ref()
        .map(Value::to_string)
        .unwrap_or_else(|| "{}".into());
    let result = match bytes {
        Err(e) => Err(e),
        Ok(bytes) => match server.registry.admission.host() {
            Err(e) => Err(format!("the plugin engine failed to start: {e}")),
            Ok(host) => {
                AdmissionModule::load(&host, &bytes, spec.module_digest.as_deref(), &settings)
                    .await
                    .map_err(|e: PluginError| e.to_string())
            }
        },
    };
    let status_before = prev.map(|l| l.status.clone()).unwrap_or_default();
    let last = prev.map(|l| l.active.clone());
    let last_good = last.as_ref().and_then(|a| a.module.clone());
    let status = reload::status(
        result
            .as_ref()
            .map(|m| m.digest.as_str())
            .map_err(String::as_str),
        last_good.as_ref().map(|m| m.digest.as_str()),
        generation,
        status_before.failures,
    );
    let active = match result {
        Ok(module) => active(key, ns, name, spec, settings, Some(module), None),
        // The last good module keeps serving, with the spec that went with it.
        Err(e) => match last.filter(|a| a.module.is_some()) {
            Some(a) => a,
            None => active(key, ns, name, spec, settings, None, Some(e)),
        },
    };
    let entry = Loaded {
        attempt: Attempt::new(&uid, generation, digest),
        active,
        status: status_before,
        next: Some(status),
    };
    loaded.insert(key.to_owned(), entry);
    true
}

fn active(
    key: &str,
    ns: Option<&str>,
    name: &str,
    spec: AdmissionPolicySpec,
    settings: String,
    module: Option<AdmissionModule>,
    load_error: Option<String>,
) -> Arc<Active> {
    let selector = |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
        s.as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| LabelSelector::from_object(&v).ok())
    };
    Arc::new(Active {
        key: key.to_owned(),
        display: match ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        },
        namespace: ns.map(str::to_owned),
        namespace_selector: selector(&spec.namespace_selector),
        object_selector: selector(&spec.object_selector),
        spec,
        settings,
        module,
        load_error,
        failures: Arc::new(AtomicI64::new(0)),
    })
}

/// Writes a policy's status if it changed.
async fn write_status(
    server: &ApiServer,
    key: &str,
    current: &mut PluginStatus,
    new: PluginStatus,
) {
    if *current == new {
        return;
    }
    let mut parts = key.split('/');
    let kind = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    let (ns, name) = match rest.as_slice() {
        [ns, name] => (Some(*ns), *name),
        [name] => (None, *name),
        _ => return,
    };
    let Some(info) = shoal_api::resources::find_kind(shoal_api::policy::GROUP, kind) else {
        return;
    };
    let opts = WriteOptions {
        dry_run: false,
        manager: "shoal-apiserver".into(),
        validation: crate::request::FieldValidation::Ignore,
    };
    let body = json!({"apiVersion": info.api_version(), "kind": info.kind,
        "metadata": {"name": name}, "status": new});
    match server
        .registry
        .update(info, ns, name, Some(Subresource::Status), body, &opts)
        .await
    {
        Ok(_) => *current = new,
        Err(e) => tracing::debug!(policy = key, error = %e.0.message, "cannot write policy status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
