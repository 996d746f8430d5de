//! Shoal's own kinds in `policy.shoal.dev/v1`: admission policies and scheduler plugins, each
//! a Wasm component configured by an API object with a status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "policy.shoal.dev";
pub const VERSION: &str = "v1";

/// Which requests a policy sees, as a webhook's `rules`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `*`.
    #[serde(default)]
    pub operations: Vec<String>,
    /// `""` for the core group, `apps`, ..., or `*`.
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// `pods`, `pods/status`, `deployments/scale`, `*` (every resource, no subresources),
    /// `*/*` (everything).
    #[serde(default)]
    pub resources: Vec<String>,
}

/// The spec of `ClusterAdmissionPolicy` and `AdmissionPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionPolicySpec {
    /// `registry://host/repo:tag`, `https://...`, `file:///path.wasm` or
    /// `configmap://[namespace/]name/key`.
    pub module: String,
    /// `sha256:<hex>`: the module must have this digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<String>,
    /// Passed to the policy as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    /// Whether the policy may change objects (a JSON patch); mutating policies run before
    /// validation, validating ones after.
    #[serde(default)]
    pub mutating: bool,
    /// `protect` (the default) denies; `monitor` only warns and records events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `Fail` (the default) or `Ignore`: what a trap, timeout or load failure means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<String>,
    /// Per request, 1–30 (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// What the API server reports about a plugin it loaded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// `Pending`, `Active` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Digest of the module serving now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Calls that trapped, timed out or hit the memory cap since the module was loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<i64>,
}

macro_rules! kind {
    ($ty:ident, $spec:ty, $kind:literal, $plural:literal, $scope:ty) => {
        #[derive(
            Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema,
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $ty {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub api_version: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub kind: Option<String>,
            #[serde(default)]
            pub metadata: ObjectMeta,
            pub spec: $spec,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<PluginStatus>,
        }

        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = "policy.shoal.dev/v1";
            const GROUP: &'static str = GROUP;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = VERSION;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = concat!($kind, "List");
        }
    };
}

kind!(
    ClusterAdmissionPolicy,
    AdmissionPolicySpec,
    "ClusterAdmissionPolicy",
    "clusteradmissionpolicies",
    k8s_openapi::ClusterResourceScope
);
kind!(
    AdmissionPolicy,
    AdmissionPolicySpec,
    "AdmissionPolicy",
    "admissionpolicies",
    k8s_openapi::NamespaceResourceScope
);
kind!(
    SchedulerPlugin,
    SchedulerPluginSpec,
    "SchedulerPlugin",
    "schedulerplugins",
    k8s_openapi::ClusterResourceScope
);

/// The spec of `SchedulerPlugin`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerPluginSpec {
    /// As an admission policy's module.
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// `PreFilter`, `Filter`, `Score`; all three when empty.
    #[serde(default)]
    pub extension_points: Vec<String>,
    /// Multiplies the plugin's normalised score (1–100, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// `Fail` (the default: a failing filter rejects the node) or `Ignore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<String>,
    /// Per call, 1–10000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_milliseconds: Option<i64>,
}

pub const EXTENSION_POINTS: &[&str] = &["PreFilter", "Filter", "Score"];
pub const MODES: &[&str] = &["protect", "monitor"];
pub const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
pub const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT", "*"];
