//! core/v1 Events about pods, as `kubectl describe pod` and `kubectl events` show them,
//! written through the shared [`shoal_client::Recorder`] as the `kubelet` of this node.

use k8s_openapi::api::core::v1::Pod;
pub use shoal_client::EventType as Kind;

/// Writes events about the pods of one node; failures are logged, never fatal.
#[derive(Clone)]
pub struct Recorder(shoal_client::Recorder);

impl Recorder {
    pub fn new(client: kube::Client, node: &str) -> Self {
        Self(shoal_client::Recorder::new(client, "kubelet", Some(node)))
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
        self.0.record(pod, field_path, kind, reason, message);
    }
}
