//! Admission policies: [`Policy`] and [`admission_policy!`](crate::admission_policy).

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "admission",
        path: "../shoal-plugin-host/wit",
        pub_export_macro: true,
        export_macro_name: "export_admission",
        default_bindings_module: "shoal_plugin_sdk::admission::bindings",
    });
}

use bindings::shoal::plugin::admission_types::{AdmissionRequest, AdmissionResponse};
use serde_json::Value;

/// The request, with its objects parsed.
pub struct Request {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The plural resource name (`pods`).
    pub resource: String,
    pub sub_resource: String,
    pub namespace: String,
    pub name: String,
    pub object: Option<Value>,
    pub old_object: Option<Value>,
    pub username: String,
    pub groups: Vec<String>,
    pub dry_run: bool,
}

impl Request {
    fn from_raw(r: AdmissionRequest) -> Result<Self, String> {
        let parse = |s: Option<String>, what: &str| -> Result<Option<Value>, String> {
            s.map(|s| serde_json::from_str(&s).map_err(|e| format!("{what} is not JSON: {e}")))
                .transpose()
        };
        Ok(Request {
            operation: r.operation,
            group: r.kind.group,
            version: r.kind.version,
            kind: r.kind.kind,
            resource: r.resource.resource,
            sub_resource: r.sub_resource,
            namespace: r.namespace,
            name: r.name,
            object: parse(r.object, "object")?,
            old_object: parse(r.old_object, "oldObject")?,
            username: r.user_info.username,
            groups: r.user_info.groups,
            dry_run: r.dry_run,
        })
    }

    /// The object's value at a JSON pointer (`/metadata/labels`), if any.
    pub fn object_at(&self, pointer: &str) -> Option<&Value> {
        self.object.as_ref()?.pointer(pointer)
    }

    /// The object's string at a JSON pointer.
    pub fn object_str(&self, pointer: &str) -> Option<&str> {
        self.object_at(pointer)?.as_str()
    }

    /// The pod spec of a Pod, or the pod template's spec of a workload (Deployment,
    /// ReplicaSet, StatefulSet, DaemonSet, Job), or of a CronJob's job template.
    pub fn pod_spec(&self) -> Option<&Value> {
        let o = self.object.as_ref()?;
        match self.kind.as_str() {
            "Pod" => o.get("spec"),
            "CronJob" => o.pointer("/spec/jobTemplate/spec/template/spec"),
            _ => o.pointer("/spec/template/spec"),
        }
    }

    /// Where [`Request::pod_spec`] is, as a JSON pointer (for patches).
    pub fn pod_spec_pointer(&self) -> &'static str {
        match self.kind.as_str() {
            "Pod" => "/spec",
            "CronJob" => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        }
    }

    /// Every container of the pod spec (init, regular and ephemeral) with its JSON pointer.
    pub fn containers(&self) -> Vec<(String, &Value)> {
        let Some(spec) = self.pod_spec() else {
            return Vec::new();
        };
        let base = self.pod_spec_pointer();
        let mut out = Vec::new();
        for field in ["initContainers", "containers", "ephemeralContainers"] {
            for (i, c) in spec
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                out.push((format!("{base}/{field}/{i}"), c));
            }
        }
        out
    }
}

/// A policy's answer.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub allowed: bool,
    pub message: Option<String>,
    pub code: Option<u16>,
    pub warnings: Vec<String>,
    /// JSON patch operations.
    pub patch: Option<Value>,
}

impl Response {
    pub fn allow() -> Self {
        Response {
            allowed: true,
            ..Default::default()
        }
    }

    /// Denies with `message` (HTTP 403 unless [`Response::with_code`] says otherwise).
    pub fn deny(message: impl Into<String>) -> Self {
        Response {
            allowed: false,
            message: Some(message.into()),
            ..Default::default()
        }
    }

    pub fn with_code(mut self, code: u16) -> Self {
        self.code = Some(code);
        self
    }

    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Allows the request with `modified` in place of `original` (sent as a JSON patch).
    pub fn mutate(original: &Value, modified: &Value) -> Self {
        let patch = json_patch::diff(original, modified);
        let mut r = Response::allow();
        if !patch.0.is_empty() {
            r.patch = serde_json::to_value(&patch).ok();
        }
        r
    }

    fn into_raw(self) -> AdmissionResponse {
        AdmissionResponse {
            allowed: self.allowed,
            message: self.message,
            code: self.code,
            warnings: self.warnings,
            patch: self.patch.map(|p| p.to_string()),
        }
    }
}

/// An admission policy.
pub trait Policy {
    /// The policy's `spec.settings`.
    type Settings: serde::de::DeserializeOwned;

    /// Further checks on settings that parsed.
    fn check_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    fn validate(request: &Request, settings: &Self::Settings) -> Response;

    /// For policies configured with `mutating: true`; validates by default.
    fn mutate(request: &Request, settings: &Self::Settings) -> Response {
        Self::validate(request, settings)
    }
}

#[doc(hidden)]
pub fn run<P: Policy>(raw: AdmissionRequest, mutating: bool) -> AdmissionResponse {
    let settings = match crate::parse_settings::<P::Settings>(&raw.settings) {
        Ok(s) => s,
        Err(e) => return Response::deny(e).with_code(500).into_raw(),
    };
    let request = match Request::from_raw(raw) {
        Ok(r) => r,
        Err(e) => return Response::deny(e).with_code(400).into_raw(),
    };
    if mutating {
        P::mutate(&request, &settings).into_raw()
    } else {
        P::validate(&request, &settings).into_raw()
    }
}

#[doc(hidden)]
pub fn check<P: Policy>(settings: &str) -> Result<(), String> {
    let s = crate::parse_settings::<P::Settings>(settings)?;
    P::check_settings(&s)
}

/// Exports `$policy` (a [`Policy`]) as the component's admission world.
#[macro_export]
macro_rules! admission_policy {
    ($policy:ty) => {
        struct __ShoalAdmission;
        impl $crate::admission::bindings::Guest for __ShoalAdmission {
            fn validate_settings(settings: ::std::string::String) -> Result<(), ::std::string::String> {
                $crate::admission::check::<$policy>(&settings)
            }
            fn validate(
                request: $crate::admission::bindings::shoal::plugin::admission_types::AdmissionRequest,
            ) -> $crate::admission::bindings::shoal::plugin::admission_types::AdmissionResponse {
                $crate::admission::run::<$policy>(request, false)
            }
            fn mutate(
                request: $crate::admission::bindings::shoal::plugin::admission_types::AdmissionRequest,
            ) -> $crate::admission::bindings::shoal::plugin::admission_types::AdmissionResponse {
                $crate::admission::run::<$policy>(request, true)
            }
        }
        $crate::admission::bindings::export_admission!(__ShoalAdmission with_types_in $crate::admission::bindings);
    };
}
