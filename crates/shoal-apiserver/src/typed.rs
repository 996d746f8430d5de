//! The typed view of the built-in kinds: decoding through `k8s-openapi` catches wrong types
//! (naming the field) and, by comparing what survives a round trip with what was sent, finds
//! unknown fields for `fieldValidation`.

use k8s_openapi::api::{apps, batch, coordination, core, discovery, events, networking, node};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

pub(crate) fn round_trip<T: DeserializeOwned + Serialize>(
    message: &str,
    v: &Value,
) -> Result<Value, String> {
    let t: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        if path == "." {
            inner
        } else {
            go_type_error(message, &path, &inner).unwrap_or_else(|| format!("{path}: {inner}"))
        }
    })?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// A wrongly typed field as Go's JSON decoder words it (`json: cannot unmarshal string into
/// Go struct field DeploymentSpec.spec.replicas of type int32`): the struct holding the field
/// is found by walking the kind's protobuf schema along `path`.
fn go_type_error(message: &str, path: &str, serde_msg: &str) -> Option<String> {
    let rest = serde_msg.strip_prefix("invalid type: ")?;
    let (got, want) = rest.split_once(", expected ")?;
    let got = match got.split_whitespace().next()? {
        "string" => "string",
        "integer" | "floating" => "number",
        "boolean" => "bool",
        "map" => "object",
        "sequence" => "array",
        "null" | "unit" => "null",
        other => other,
    };
    let want = match want.trim() {
        "i32" => "int32".to_owned(),
        "i64" => "int64".to_owned(),
        "u32" => "uint32".to_owned(),
        "f64" => "float64".to_owned(),
        "a boolean" => "bool".to_owned(),
        "a string" => "string".to_owned(),
        "a sequence" => "[]interface {}".to_owned(),
        other => other.trim_start_matches("struct ").to_owned(),
    };
    let segments: Vec<&str> = path
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .collect();
    let mut parent = message.to_owned();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        let fields = crate::protobuf::lookup(&parent)?;
        match &fields.iter().find(|f| f.json == *seg)?.ty {
            crate::protobuf::Ty::Message(m) => parent = (*m).to_owned(),
            _ => return None,
        }
    }
    let short = parent.rsplit('.').next().unwrap_or(&parent);
    let json_path = segments.join(".");
    Some(format!(
        "json: cannot unmarshal {got} into Go struct field {short}.{json_path} of type {want}"
    ))
}

/// The version a kind's entry names, `v1` if it names none.
macro_rules! version_or_v1 {
    () => {
        "v1"
    };
    ($v:literal) => {
        $v
    };
}

/// The version a kind's entry names, if any.
macro_rules! explicit_version {
    () => {
        None
    };
    ($v:literal) => {
        Some($v)
    };
}

macro_rules! kinds {
    ($($group:literal, $kind:literal $(@ $version:literal)? => $ty:ty;)*) => {
        /// Decodes `v` as `group`/`kind` (in its storage version, the first listed) and encodes
        /// it back; `None` for kinds without a type.
        #[allow(unreachable_patterns)]
        pub fn round_trip_kind(group: &str, kind: &str, v: &Value) -> Option<Result<Value, String>> {
            match (group, kind) {
                $(($group, $kind) => {
                    let version = version_or_v1!($($version)?);
                    let api_version = if $group.is_empty() { version.to_owned() } else { format!("{}/{version}", $group) };
                    let message = format!("{}.{}", crate::protobuf::package(&api_version), $kind);
                    Some(round_trip::<$ty>(&message, v))
                },)*
                _ => None,
            }
        }

        /// Adds the schema of every served kind to `generator`; returns `(group, version,
        /// kind, schema name)`, the version `None` where the resource table says it.
        pub fn schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, Option<&'static str>, &'static str, String)> {
            let mut out = Vec::new();
            $(
                generator.subschema_for::<$ty>();
                out.push(($group, explicit_version!($($version)?), $kind, <$ty as schemars::JsonSchema>::schema_name().into_owned()));
            )*
            out
        }
    };
}

kinds! {
    "", "Namespace" => core::v1::Namespace;
    "", "Pod" => core::v1::Pod;
    "", "Node" => core::v1::Node;
    "", "Service" => core::v1::Service;
    "", "Endpoints" => core::v1::Endpoints;
    "", "ConfigMap" => core::v1::ConfigMap;
    "", "Secret" => core::v1::Secret;
    "", "ServiceAccount" => core::v1::ServiceAccount;
    "", "Event" => core::v1::Event;
    "", "Binding" => core::v1::Binding;
    "", "PodTemplate" => core::v1::PodTemplate;
    "", "ResourceQuota" => core::v1::ResourceQuota;
    "", "LimitRange" => core::v1::LimitRange;
    "", "PersistentVolume" => core::v1::PersistentVolume;
    "", "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim;
    "storage.k8s.io", "StorageClass" => k8s_openapi::api::storage::v1::StorageClass;
    "", "ReplicationController" => core::v1::ReplicationController;
    "apiextensions.k8s.io", "CustomResourceDefinition" => k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    "apps", "ControllerRevision" => apps::v1::ControllerRevision;
    "apps", "Deployment" => apps::v1::Deployment;
    "apps", "ReplicaSet" => apps::v1::ReplicaSet;
    "apps", "StatefulSet" => apps::v1::StatefulSet;
    "apps", "DaemonSet" => apps::v1::DaemonSet;
    "batch", "Job" => batch::v1::Job;
    "batch", "CronJob" => batch::v1::CronJob;
    "certificates.k8s.io", "CertificateSigningRequest" => k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    "coordination.k8s.io", "Lease" => coordination::v1::Lease;
    "discovery.k8s.io", "EndpointSlice" => discovery::v1::EndpointSlice;
    "flowcontrol.apiserver.k8s.io", "FlowSchema" => k8s_openapi::api::flowcontrol::v1::FlowSchema;
    "flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration" => k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration;
    "networking.k8s.io", "NetworkPolicy" => networking::v1::NetworkPolicy;
    "networking.k8s.io", "Ingress" => networking::v1::Ingress;
    "networking.k8s.io", "IngressClass" => networking::v1::IngressClass;
    "node.k8s.io", "RuntimeClass" => node::v1::RuntimeClass;
    "policy", "PodDisruptionBudget" => k8s_openapi::api::policy::v1::PodDisruptionBudget;
    "scheduling.k8s.io", "PriorityClass" => k8s_openapi::api::scheduling::v1::PriorityClass;
    "events.k8s.io", "Event" => events::v1::Event;
    "autoscaling", "Scale" @ "v1" => k8s_openapi::api::autoscaling::v1::Scale;
    "autoscaling", "HorizontalPodAutoscaler" @ "v2" => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    "autoscaling", "HorizontalPodAutoscaler" @ "v1" => k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
    "policy.shoal.dev", "ClusterAdmissionPolicy" => shoal_api::policy::ClusterAdmissionPolicy;
    "policy.shoal.dev", "AdmissionPolicy" => shoal_api::policy::AdmissionPolicy;
    "policy.shoal.dev", "SchedulerPlugin" => shoal_api::policy::SchedulerPlugin;
}

/// Paths (`spec.foo`, `spec.containers[0].bar`) present in `sent` but dropped by the round
/// trip: the fields the type does not know.
pub fn unknown_fields(sent: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(sent, typed, String::new(), &mut out);
    out
}

fn walk(sent: &Value, typed: &Value, path: String, out: &mut Vec<String>) {
    match (sent, typed) {
        (Value::Object(s), Value::Object(t)) => {
            for (k, v) in s {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => walk(v, tv, p, out),
                    // A null or empty value the type drops is not an unknown field.
                    None if v.is_null()
                        || v.as_object().is_some_and(|m| m.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(s), Value::Array(t)) => {
            for (i, (sv, tv)) in s.iter().zip(t).enumerate() {
                walk(sv, tv, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_and_type_errors() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": null},
            "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "bar": true}]}});
        let typed = round_trip_kind("", "Pod", &pod).unwrap().unwrap();
        assert_eq!(
            unknown_fields(&pod, &typed),
            ["spec.foo", "spec.containers[0].bar"]
        );
        let bad = json!({"metadata": {"name": "p"}, "spec": {"replicas": "three"}});
        let err = round_trip_kind("apps", "Deployment", &bad)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err,
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        );
        let bad = json!({"metadata": {"name": "p"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": 5}]}}}});
        let err = round_trip_kind("apps", "Deployment", &bad)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err,
            "json: cannot unmarshal number into Go struct field Container.spec.template.spec.containers.image of type string"
        );
    }
}
