//! core/v1 Events about pods, as `kubectl describe pod` and `kubectl events` show them.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// Writes events about one pod; failures are logged, never fatal.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    node: String,
}

impl Recorder {
    pub fn new(client: kube::Client, node: &str) -> Self {
        Self {
            client,
            node: node.to_owned(),
        }
    }

    /// Records `reason: message` about `pod` (and its container `container`, if any).
    pub fn record(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: Kind,
        reason: &str,
        message: String,
    ) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let field_path = container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|ics| ics.iter().any(|i| i.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let about = shoal_api::events::Involved {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: ns.clone(),
            name: name.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        };
        let source = shoal_api::events::Source {
            component: "kubelet".into(),
            host: Some(self.node.clone()),
        };
        let kind = match kind {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        };
        let time = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
        let value = shoal_api::events::core_event(
            &about,
            &source,
            kind,
            reason,
            &message,
            &time,
            now.as_nanosecond(),
        );
        let client = self.client.clone();
        tokio::spawn(async move {
            let event: Event = match serde_json::from_value(value) {
                Ok(e) => e,
                Err(e) => return tracing::warn!(error = %e, "malformed event"),
            };
            let api: Api<Event> = Api::namespaced(client, &ns);
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "cannot record event");
            }
        });
    }
}
