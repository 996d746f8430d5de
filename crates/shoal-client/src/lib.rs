//! What the components that talk to the API server through kube-rs (kubelet, scheduler,
//! controllers, the scheduler's plugin loader) share. Start at [`Recorder`].

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
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
        tokio::spawn(async move {
            let event: Event = match serde_json::from_value(value) {
                Ok(e) => e,
                Err(e) => return tracing::warn!(error = %e, "malformed event"),
            };
            if let Err(e) = Api::<Event>::namespaced(client, &ns)
                .create(&PostParams::default(), &event)
                .await
            {
                tracing::debug!(error = %e, "cannot record an event");
            }
        });
    }
}
