//! What the components that talk to the API server through kube-rs (kubelet, scheduler,
//! controllers, the scheduler's plugin loader, the service proxy) share. Start at
//! [`Recorder`]; [`watch_store`] keeps a reflector store of a resource.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
pub mod leader;
pub use shoal_api::events::Involved;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Writes core/v1 Events from one component (`kubelet` of a node, `default-scheduler`,
/// `deployment-controller`, ...), as `kubectl describe` and `kubectl events` show them. Each
/// event is written in the background; a failure is logged, never fatal.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    source: shoal_api::events::Source,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Self {
        Recorder {
            client,
            source: shoal_api::events::Source {
                component: component.to_owned(),
                host: host.map(str::to_owned),
            },
        }
    }

    /// Records `reason: message` about `obj`; `field_path` points inside it (a container).
    pub fn record<K>(
        &self,
        obj: &K,
        field_path: Option<String>,
        type_: EventType,
        reason: &str,
        message: String,
    ) where
        K: kube::Resource<DynamicType = ()>,
    {
        let m = obj.meta();
        self.record_about(
            Involved {
                api_version: K::api_version(&()).into_owned(),
                kind: K::kind(&()).into_owned(),
                namespace: m.namespace.clone().unwrap_or_default(),
                name: m.name.clone().unwrap_or_default(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                field_path,
            },
            type_,
            reason,
            message,
        );
    }

    /// Records `reason: message` about the object `about` names. Events about cluster-scoped
    /// objects live in `default`, as Kubernetes puts them.
    pub fn record_about(&self, about: Involved, type_: EventType, reason: &str, message: String) {
        let now = jiff::Timestamp::now();
        let mut value = shoal_api::events::core_event(
            &about,
            &self.source,
            type_.as_str(),
            reason,
            &message,
            &now.round(jiff::Unit::Second).unwrap_or(now).to_string(),
            now.as_nanosecond(),
        );
        let ns = if about.namespace.is_empty() {
            "default".to_owned()
        } else {
            about.namespace.clone()
        };
        value["metadata"]["namespace"] = serde_json::json!(ns);
        let client = self.client.clone();
        let time = value["lastTimestamp"].clone();
        let key = format!(
            "{}|{}|{}|{}|{}|{}|{}|{reason}|{message}",
            self.source.component,
            self.source.host.as_deref().unwrap_or(""),
            about.kind,
            ns,
            about.name,
            about.uid.as_deref().unwrap_or(""),
            about.field_path.as_deref().unwrap_or(""),
        );
        let repeat = repeated(&key, value["metadata"]["name"].as_str());
        tokio::spawn(async move {
            let api = Api::<Event>::namespaced(client, &ns);
            if let Some((name, count)) = repeat {
                // The same event again: its count and last time go up, as client-go's event
                // correlator does, instead of a new event per occurrence.
                let patch = serde_json::json!({"count": count, "lastTimestamp": time});
                let params = kube::api::PatchParams::default();
                match api
                    .patch(&name, &params, &kube::api::Patch::Merge(patch))
                    .await
                {
                    Ok(_) => return,
                    // Gone (expired or never written): written afresh under the old name.
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot update a repeated event");
                        value["metadata"]["name"] = serde_json::json!(name);
                        value["count"] = serde_json::json!(count);
                    }
                }
            }
            let event: Event = match serde_json::from_value(value) {
                Ok(e) => e,
                Err(e) => return tracing::warn!(error = %e, "malformed event"),
            };
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "cannot record an event");
            }
        });
    }
}

/// How long an event is remembered for counting repeats (client-go's correlator: ten minutes).
const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
/// The most events remembered at once.
const REMEMBERED: usize = 4096;

/// What one process has recorded recently: event key → (event name, count, last seen).
type Seen = std::collections::HashMap<String, (String, i32, std::time::Instant)>;

/// For an event recorded before within [`REPEAT_WINDOW`], its name and new count; otherwise
/// remembers `name` as this event's and returns `None`.
fn repeated(key: &str, name: Option<&str>) -> Option<(String, i32)> {
    static SEEN: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(Default::default);
    let now = std::time::Instant::now();
    if let Some((name, count, at)) = seen.get_mut(key)
        && now.duration_since(*at) < REPEAT_WINDOW
    {
        *count += 1;
        *at = now;
        return Some((name.clone(), *count));
    }
    if seen.len() >= REMEMBERED {
        seen.retain(|_, (_, _, at)| now.duration_since(*at) < REPEAT_WINDOW);
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
    }
    seen.insert(key.to_owned(), (name?.to_owned(), 1, now));
    None
}

/// A reflector store of `api`, fed by a task that calls `on_change` after every event it
/// applies and ends when the returned guard drops.
pub fn watch_store<K>(
    api: Api<K>,
    on_change: impl Fn() + Send + 'static,
) -> (
    kube::runtime::reflector::Store<K>,
    shoal_supervisor::AbortOnDrop,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watch_store_with(api, kube::runtime::watcher::Config::default(), on_change)
}

/// [`watch_store`] of the objects `config` selects.
pub fn watch_store_with<K>(
    api: Api<K>,
    config: kube::runtime::watcher::Config,
    on_change: impl Fn() + Send + 'static,
) -> (
    kube::runtime::reflector::Store<K>,
    shoal_supervisor::AbortOnDrop,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store::<K>();
    let mut stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .boxed();
    let task = tokio::spawn(async move {
        while stream.next().await.is_some() {
            on_change();
        }
    });
    (store, shoal_supervisor::AbortOnDrop(task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_event_counts_on_the_first_ones_name() {
        let key = "test|a_repeated_event_counts|Pod|ns|p|uid||Reason|message";
        assert_eq!(repeated(key, Some("p.1")), None);
        assert_eq!(repeated(key, Some("p.2")), Some(("p.1".to_owned(), 2)));
        assert_eq!(repeated(key, Some("p.3")), Some(("p.1".to_owned(), 3)));
        assert_eq!(repeated("test|another", Some("q.1")), None);
    }
}
