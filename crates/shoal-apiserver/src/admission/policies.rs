//! The admission policy loader: the API server's [`Backend`] for the plugin host's
//! [`Loader`], fed from the watch cache. It reads policy objects and ConfigMaps from the
//! cache, and writes statuses and Events through the registry.

use super::Active;
use crate::ApiServer;
use crate::registry::{ObjectRef, WriteOptions};
use serde_json::{Value, json};
use shoal_api::policy::{AdmissionPolicySpec, PluginStatus};
use shoal_api::{ResourceInfo, Subresource};
use shoal_plugin_host::admission::AdmissionModule;
use shoal_plugin_host::health::{Health, Notice};
use shoal_plugin_host::loader::{Backend, Loader, PluginObject, PluginSpec};
use shoal_plugin_host::source::SourcePolicy;
use shoal_plugin_host::{Host, PluginError, PluginKey};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The process's plugin engine and the operator's rules for module sources.
#[derive(Clone)]
pub struct PluginOptions {
    pub host: Host,
    pub sources: SourcePolicy,
}

/// After a write, how long the loader waits for more before it looks (a burst of writes
/// makes one pass).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The API server's side of the loader. It holds the server weakly: the server owns the
/// loader's task, not the other way round.
struct Policies {
    server: Weak<ApiServer>,
}

impl Policies {
    fn server(&self) -> Result<Arc<ApiServer>, String> {
        self.server
            .upgrade()
            .ok_or_else(|| "the API server is shutting down".to_owned())
    }
}

fn options() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        manager: "shoal-apiserver".into(),
        validation: crate::request::FieldValidation::Ignore,
        user: None,
    }
}

fn info(kind: &str) -> Option<&'static ResourceInfo> {
    shoal_api::resources::find_kind(shoal_api::policy::GROUP, kind)
}

#[async_trait::async_trait]
impl Backend for Policies {
    type Spec = AdmissionPolicySpec;
    type Module = AdmissionModule;
    type Plugin = Active;

    fn label(&self, key: &PluginKey) -> String {
        format!("admission policy {}", key.display_name())
    }

    fn failed_reason(&self) -> &'static str {
        "PolicyFailed"
    }

    async fn configmap(&self, namespace: &str, name: &str) -> Result<Value, String> {
        let server = self.server()?;
        let info = shoal_api::resources::find("", "v1", "configmaps")
            .expect("configmaps are in the resource table");
        server
            .cache
            .resource(info)
            .get(&info.storage_key(Some(namespace), name))
            .map(|cm| cm.value().clone())
            .ok_or_else(|| format!("configmap {namespace}/{name} not found"))
    }

    async fn load(
        &self,
        host: &Host,
        health: Arc<Health>,
        bytes: Vec<u8>,
        spec: &AdmissionPolicySpec,
    ) -> Result<AdmissionModule, PluginError> {
        AdmissionModule::load_as(
            host,
            health,
            &bytes,
            spec.module_digest.as_deref(),
            &spec.settings(),
        )
        .await
    }

    fn digest(module: &AdmissionModule) -> &str {
        &module.digest
    }

    fn build(
        &self,
        object: &PluginObject<AdmissionPolicySpec>,
        module: Option<&AdmissionModule>,
        error: Option<&str>,
        health: &Arc<Health>,
    ) -> Option<Arc<Active>> {
        // A policy without a module still applies: its calls fail by its failurePolicy.
        let health = module.map_or_else(|| health.clone(), |m| m.health().clone());
        Some(Arc::new(Active::new(
            object.key.clone(),
            object.spec.clone(),
            module.cloned(),
            error.map(str::to_owned),
            health,
        )))
    }

    async fn write_status(&self, key: &PluginKey, status: &PluginStatus) -> Result<(), String> {
        let server = self.server()?;
        let info = info(key.kind).ok_or_else(|| format!("unknown kind {}", key.kind))?;
        let body = json!({"apiVersion": info.api_version(), "kind": info.kind,
            "metadata": {"name": key.name}, "status": status});
        server
            .registry
            .update(
                ObjectRef::new(info, key.namespace.as_deref(), &key.name)
                    .subresource(Some(Subresource::Status)),
                body,
                &options(),
            )
            .await
            .map(drop)
            .map_err(|e| e.0.message)
    }

    async fn record(&self, key: &PluginKey, uid: Option<&str>, notice: &Notice) {
        let (Ok(server), Some(info)) = (self.server(), info(key.kind)) else {
            return;
        };
        let events = shoal_api::resources::find("", "v1", "events")
            .expect("events are in the resource table");
        let about = shoal_api::events::Involved {
            api_version: info.api_version(),
            kind: key.kind.to_owned(),
            namespace: key.namespace.clone().unwrap_or_default(),
            name: key.name.clone(),
            uid: uid.map(str::to_owned),
            ..Default::default()
        };
        let source = shoal_api::events::Source {
            component: "shoal-apiserver".into(),
            host: None,
        };
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or_default();
        let mut event = shoal_api::events::core_event(
            &about,
            &source,
            notice.type_,
            notice.reason,
            &notice.message,
            &crate::meta::now(),
            unique,
        );
        let event_ns = key.namespace.clone().unwrap_or_else(|| "default".into());
        event["metadata"]["namespace"] = json!(event_ns);
        if let Err(e) = server
            .registry
            .create(events, Some(&event_ns), event, &options())
            .await
        {
            tracing::debug!(error = %e.0.message, "cannot record a policy event");
        }
    }
}

/// The policy objects in the cache, as the loader sees them.
fn objects(server: &ApiServer) -> Vec<PluginObject<AdmissionPolicySpec>> {
    let mut out = Vec::new();
    for kind in ["ClusterAdmissionPolicy", "AdmissionPolicy"] {
        let info = info(kind).expect("policies are in the resource table");
        for o in server
            .cache
            .resource(info)
            .list(&info.storage_prefix(), None)
        {
            let o = o.value();
            if crate::meta::is_deleting(o) {
                continue;
            }
            // Validation keeps malformed specs out of the store.
            let Ok(spec) = serde_json::from_value::<AdmissionPolicySpec>(
                o.get("spec").cloned().unwrap_or(Value::Null),
            ) else {
                continue;
            };
            let namespace = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned);
            out.push(PluginObject {
                key: PluginKey {
                    kind: info.kind,
                    namespace,
                    name: crate::meta::name(o).to_owned(),
                },
                uid: crate::meta::str_field(o, "uid").to_owned(),
                generation: o
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1),
                spec,
            });
        }
    }
    out
}

/// Keeps the server's admission chain in step with the policy objects until the server is
/// dropped: a pass after every burst of writes, and every half second for local modules.
pub async fn run(server: Weak<ApiServer>, options: PluginOptions) {
    let Some(strong) = server.upgrade() else {
        return;
    };
    let tick = Arc::new(tokio::sync::Mutex::new(strong.cache.subscribe_revision()));
    drop(strong);
    let loader = Loader::new(
        Policies {
            server: server.clone(),
        },
        options.host,
        options.sources,
    );
    let list = {
        let server = server.clone();
        move || server.upgrade().map(|s| objects(&s))
    };
    let changed = move || {
        let tick = tick.clone();
        async move {
            let _ = tick.lock().await.changed().await;
            tokio::time::sleep(DEBOUNCE).await;
        }
    };
    let publish = move |set: Vec<Arc<Active>>| {
        if let Some(s) = server.upgrade() {
            s.registry.admission.replace(set);
        }
    };
    loader.run(list, changed, publish).await;
}
