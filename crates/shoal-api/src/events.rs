//! core/v1 Events as every component writes them (kubelet, scheduler, controllers), so
//! `kubectl describe` and `kubectl events` show them alike.

use serde_json::{Value, json};

/// The object an event is about.
#[derive(Debug, Clone, Default)]
pub struct Involved {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// e.g. `spec.containers{web}`.
    pub field_path: Option<String>,
}

/// Who writes the event.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `kubelet`, `default-scheduler`, `deployment-controller`, ...
    pub component: String,
    /// The node, for a kubelet.
    pub host: Option<String>,
}

/// A core/v1 Event (`Normal` or `Warning` in `type_`), named after its object and `unique`
/// (a nanosecond timestamp), stamped `time` (RFC 3339, seconds).
pub fn core_event(
    about: &Involved,
    source: &Source,
    type_: &str,
    reason: &str,
    message: &str,
    time: &str,
    unique: i128,
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{unique:x}", about.name), "namespace": about.namespace},
        "involvedObject": {
            "apiVersion": about.api_version, "kind": about.kind, "namespace": about.namespace,
            "name": about.name, "uid": about.uid, "resourceVersion": about.resource_version,
            "fieldPath": about.field_path,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": source.component, "host": source.host},
        "reportingComponent": source.component,
        "reportingInstance": source.host.as_deref().unwrap_or(&source.component),
        "firstTimestamp": time,
        "lastTimestamp": time,
        "count": 1,
    })
}
