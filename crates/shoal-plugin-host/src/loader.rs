//! [`Loader`]: keeps a consumer's plugins in step with the API objects that configure them.
//!
//! The API server (admission policies) and the scheduler (scheduler plugins) each implement
//! [`Backend`] — how to read a ConfigMap, load a module of their world, build the plugin that
//! serves, write a status, record an Event — and drive a loader with the objects they see
//! ([`Loader::run`]). The loader does the rest, the same way for every kind:
//!
//! - it checks the module reference against the object's scope and the operator's
//!   [`SourcePolicy`], fetches it (local modules on every resync, remote ones when the spec
//!   changes; [`crate::reload::Attempt`]), compiles it off the async threads, links it and has
//!   it check its settings;
//! - it swaps the consumer's set of plugins whole when anything changed, keeping the last good
//!   module serving when a new one fails to load;
//! - after the consumer has the set, it writes each object's status: `Active` with the digest,
//!   `Failed` naming the error (and the module still serving), or `Degraded` while the plugin
//!   is benched by its circuit breaker; with the failure count;
//! - it turns the plugins' [`Notice`]s (failures with their output, benching, recovery,
//!   monitor-mode verdicts) into Events on the plugin objects.

use crate::health::{Health, Notice, Notices};
use crate::reload::{self, Attempt};
use crate::source::{Scope, Source, SourcePolicy};
use crate::{Host, PluginError, PluginKey};
use shoal_api::policy::{AdmissionPolicySpec, PluginStatus, SchedulerPluginSpec};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often objects and local modules are looked at again without a change.
pub const RESYNC: Duration = Duration::from_millis(500);

/// Notices waiting to become Events; more are dropped (they are logged too).
const NOTICES: usize = 1024;

/// A plugin object as the loader sees it.
#[derive(Debug, Clone)]
pub struct PluginObject<S> {
    pub key: PluginKey,
    pub uid: String,
    pub generation: i64,
    pub spec: S,
}

/// What the loader reads from a kind's spec.
pub trait PluginSpec: Clone + Send + Sync + 'static {
    fn module(&self) -> &str;
    fn module_digest(&self) -> Option<&str>;
    /// `spec.settings` as JSON text (`{}` when unset).
    fn settings(&self) -> String;
}

fn settings_text(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "{}".into())
}

impl PluginSpec for AdmissionPolicySpec {
    fn module(&self) -> &str {
        &self.module
    }
    fn module_digest(&self) -> Option<&str> {
        self.module_digest.as_deref()
    }
    fn settings(&self) -> String {
        settings_text(&self.settings)
    }
}

impl PluginSpec for SchedulerPluginSpec {
    fn module(&self) -> &str {
        &self.module
    }
    fn module_digest(&self) -> Option<&str> {
        self.module_digest.as_deref()
    }
    fn settings(&self) -> String {
        settings_text(&self.settings)
    }
}

/// What a consumer of plugins provides the loader.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    type Spec: PluginSpec;
    /// A loaded module of the consumer's world.
    type Module: Clone + Send + Sync + 'static;
    /// What serves calls: the module with the object's spec.
    type Plugin: Send + Sync + 'static;

    /// How logs and messages name the plugin (`scheduler plugin NAME`).
    fn label(&self, key: &PluginKey) -> String;
    /// The reason of the plugin's failure events (`PluginFailed`).
    fn failed_reason(&self) -> &'static str;
    /// The ConfigMap `namespace/name`, as JSON.
    async fn configmap(&self, namespace: &str, name: &str) -> Result<serde_json::Value, String>;
    /// Compiles and links `bytes` and has the module check its settings; its calls are
    /// accounted to `health`.
    async fn load(
        &self,
        host: &Host,
        health: Arc<Health>,
        bytes: Vec<u8>,
        spec: &Self::Spec,
    ) -> Result<Self::Module, PluginError>;
    /// The digest of a loaded module.
    fn digest(module: &Self::Module) -> &str;
    /// The plugin that serves for `object`, with `module`, or without one (`error` says why
    /// none loaded); `None` leaves the object out of the set.
    fn build(
        &self,
        object: &PluginObject<Self::Spec>,
        module: Option<&Self::Module>,
        error: Option<&str>,
        health: &Arc<Health>,
    ) -> Option<Arc<Self::Plugin>>;
    async fn write_status(&self, key: &PluginKey, status: &PluginStatus) -> Result<(), String>;
    /// Records `notice` as an Event on the object (`uid` when known).
    async fn record(&self, key: &PluginKey, uid: Option<&str>, notice: &Notice);
}

/// What the loader knows about one object.
struct Entry<B: Backend> {
    attempt: Attempt,
    uid: String,
    generation: i64,
    /// The module serving (the last good one after a failed load), with its health.
    module: Option<B::Module>,
    health: Arc<Health>,
    plugin: Option<Arc<B::Plugin>>,
    /// Why the last load failed, if it did.
    error: Option<String>,
    /// The status last written.
    written: PluginStatus,
}

/// Keeps one consumer's plugins in step with their objects (see the module docs).
pub struct Loader<B: Backend> {
    backend: B,
    host: Host,
    sources: SourcePolicy,
    loaded: HashMap<PluginKey, Entry<B>>,
    notices: Notices,
    received: tokio::sync::mpsc::Receiver<Notice>,
}

impl<B: Backend> Loader<B> {
    pub fn new(backend: B, host: Host, sources: SourcePolicy) -> Self {
        let (notices, received) = tokio::sync::mpsc::channel(NOTICES);
        Loader {
            backend,
            host,
            sources,
            loaded: HashMap::new(),
            notices,
            received,
        }
    }

    /// Loads what changed among `objects` (those being deleted left out by the caller);
    /// returns the new set of plugins, in key order, when it changed.
    pub async fn sync(
        &mut self,
        objects: Vec<PluginObject<B::Spec>>,
    ) -> Option<Vec<Arc<B::Plugin>>> {
        let before = self.loaded.len();
        self.loaded
            .retain(|k, _| objects.iter().any(|o| &o.key == k));
        let mut changed = before != self.loaded.len();
        for object in objects {
            changed |= self.reconcile(object).await;
        }
        if !changed {
            return None;
        }
        let mut keys: Vec<&PluginKey> = self.loaded.keys().collect();
        keys.sort();
        Some(
            keys.into_iter()
                .filter_map(|k| self.loaded[k].plugin.clone())
                .collect(),
        )
    }

    /// Brings one object up to date; whether its plugin changed.
    async fn reconcile(&mut self, object: PluginObject<B::Spec>) -> bool {
        let scope = match &object.key.namespace {
            Some(ns) => Scope::Namespace(ns),
            None => Scope::Cluster,
        };
        let src =
            Source::parse(object.spec.module()).and_then(|s| s.check_scope(scope).map(|()| s));
        let prev = self.loaded.get(&object.key).filter(|e| e.uid == object.uid);
        let prev_attempt = prev.map(|e| &e.attempt);
        let bytes = match &src {
            Ok(src) => {
                if prev.is_some()
                    && !Attempt::should_fetch(prev_attempt, &object.uid, object.generation, src)
                {
                    return false;
                }
                self.fetch(src, &object.key).await
            }
            Err(rule) => Err(PluginError::Refused {
                reference: object.spec.module().to_owned(),
                rule: rule.clone(),
            }),
        };
        let digest = bytes.as_ref().ok().map(|b| crate::digest(b));
        if !Attempt::should_load(
            prev_attempt,
            &object.uid,
            object.generation,
            digest.as_deref(),
        ) {
            return false;
        }
        let health = Health::new(
            object.key.clone(),
            self.backend.label(&object.key),
            self.backend.failed_reason(),
            Some(self.notices.clone()),
        );
        let result = match bytes {
            Ok(bytes) => {
                self.backend
                    .load(&self.host, health.clone(), bytes, &object.spec)
                    .await
            }
            Err(e) => Err(e),
        };
        let attempt = Attempt::new(&object.uid, object.generation, digest);
        let written = prev.map(|e| e.written.clone()).unwrap_or_default();
        let entry = match result {
            Ok(module) => Entry {
                attempt,
                uid: object.uid.clone(),
                generation: object.generation,
                plugin: self.backend.build(&object, Some(&module), None, &health),
                module: Some(module),
                health,
                error: None,
                written,
            },
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(plugin = %object.key, error = %error, "plugin module failed to load");
                match prev.filter(|p| p.module.is_some()) {
                    // The last good module keeps serving, with the spec that went with it.
                    Some(p) => Entry {
                        attempt,
                        uid: object.uid.clone(),
                        generation: object.generation,
                        module: p.module.clone(),
                        health: p.health.clone(),
                        plugin: p.plugin.clone(),
                        error: Some(error),
                        written,
                    },
                    None => Entry {
                        attempt,
                        uid: object.uid.clone(),
                        generation: object.generation,
                        plugin: self.backend.build(&object, None, Some(&error), &health),
                        module: None,
                        health,
                        error: Some(error),
                        written,
                    },
                }
            }
        };
        self.loaded.insert(object.key, entry);
        true
    }

    async fn fetch(&self, src: &Source, key: &PluginKey) -> Result<Vec<u8>, PluginError> {
        match src {
            Source::ConfigMap {
                namespace,
                name,
                key: item,
            } => {
                let ns = namespace
                    .as_deref()
                    .or(key.namespace.as_deref())
                    .unwrap_or("default");
                let fail = |message: String| PluginError::Fetch {
                    reference: src.to_string(),
                    message,
                };
                let cm = self.backend.configmap(ns, name).await.map_err(fail)?;
                crate::source::configmap_module(&cm, item).map_err(fail)
            }
            other => self.sources.fetch(other).await,
        }
    }

    /// Records pending notices as Events, then writes the statuses that changed (call it once
    /// the consumer has the set [`Loader::sync`] returned). Events first: a status that shows
    /// a failure or a bench has its Event already.
    pub async fn report(&mut self) {
        while let Ok(notice) = self.received.try_recv() {
            let uid = self.loaded.get(&notice.key).map(|e| e.uid.as_str());
            self.backend.record(&notice.key, uid, &notice).await;
        }
        for (key, entry) in self.loaded.iter_mut() {
            let want = status(entry);
            if want == entry.written {
                continue;
            }
            match self.backend.write_status(key, &want).await {
                Ok(()) => entry.written = want,
                Err(e) => tracing::debug!(plugin = %key, error = %e, "cannot write plugin status"),
            }
        }
    }

    /// Syncs with `list()` and reports, then waits for `changed()` (or [`RESYNC`]) and does
    /// it again, until `list()` returns `None` (the consumer is gone); every new set goes to
    /// `publish` before statuses say it serves.
    pub async fn run<L, W, Fut>(
        mut self,
        mut list: L,
        mut changed: W,
        publish: impl Fn(Vec<Arc<B::Plugin>>),
    ) where
        L: FnMut() -> Option<Vec<PluginObject<B::Spec>>>,
        W: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        while let Some(objects) = list() {
            if let Some(set) = self.sync(objects).await {
                publish(set);
            }
            self.report().await;
            let _ = tokio::time::timeout(RESYNC, changed()).await;
        }
    }
}

/// The status `entry` should have.
fn status<B: Backend>(entry: &Entry<B>) -> PluginStatus {
    let serving = entry.module.as_ref().map(B::digest);
    let result = match (&entry.error, serving) {
        (Some(e), _) => Err(e.as_str()),
        (None, Some(d)) => Ok(d),
        (None, None) => Err("no module is loaded"),
    };
    let mut st = reload::status(result, serving, entry.generation, None);
    st.failures = Some(entry.health.failures());
    if let Some(benched) = entry.health.benched()
        && st.phase.as_deref() == Some("Active")
    {
        st.phase = Some("Degraded".into());
        st.message = Some(benched.to_string());
    }
    st
}
