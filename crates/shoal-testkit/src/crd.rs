//! A CustomResourceDefinition the size of real operators' (a few thousand lines of schema):
//! its spec embeds the whole pod template, the way operator definitions (a monitoring stack's
//! server, a database cluster) embed `PodTemplateSpec`, generated as code generators do from
//! the built-in types' OpenAPI schemas: references inlined, int-or-string kept, embedded
//! metadata an open object.

use serde_json::{Map, Value, json};

/// Below any real nesting of the pod template; stops a recursive type.
const MAX_DEPTH: usize = 24;

/// The structural form of `schema` (from `schemas`, the `components.schemas` of an OpenAPI v3
/// document served by the API server).
fn structural(schema: &Value, schemas: &Map<String, Value>, depth: usize) -> Value {
    let Some(m) = schema.as_object() else {
        return json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    };
    // `{"allOf": [{"$ref": ...}], "description": ...}` and `{"$ref": ...}` are the type they
    // name.
    let reference = m.get("$ref").or_else(|| {
        m.get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0].get("$ref"))
    });
    if let Some(r) = reference.and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        if name.ends_with("meta.v1.ObjectMeta") || depth >= MAX_DEPTH {
            return json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        }
        let mut inner = structural(&schemas[name], schemas, depth + 1);
        if let (Some(d), Some(o)) = (m.get("description"), inner.as_object_mut()) {
            o.insert("description".into(), d.clone());
        }
        return inner;
    }
    let mut out = Map::new();
    for key in [
        "description",
        "type",
        "format",
        "required",
        "enum",
        "nullable",
    ] {
        if let Some(v) = m.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if m.contains_key("x-kubernetes-int-or-string")
        || m.contains_key("oneOf")
        || m.contains_key("anyOf")
    {
        out.remove("type");
        out.remove("format");
        out.insert("x-kubernetes-int-or-string".into(), json!(true));
        return Value::Object(out);
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        let props: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), structural(v, schemas, depth + 1)))
            .collect();
        out.insert("properties".into(), Value::Object(props));
        out.insert("type".into(), json!("object"));
    }
    if let Some(a) = m.get("additionalProperties").filter(|a| a.is_object()) {
        out.insert(
            "additionalProperties".into(),
            structural(a, schemas, depth + 1),
        );
        out.insert("type".into(), json!("object"));
    }
    if let Some(items) = m.get("items") {
        out.insert("items".into(), structural(items, schemas, depth + 1));
        out.insert("type".into(), json!("array"));
    }
    match out.get("type").and_then(Value::as_str) {
        None => {
            out.insert("type".into(), json!("object"));
            out.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        Some("object")
            if !out.contains_key("properties") && !out.contains_key("additionalProperties") =>
        {
            out.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        _ => {}
    }
    Value::Object(out)
}

/// `appservers.operator.example.com`: a namespaced `AppServer` with replicas, a version, a
/// retention period, the whole pod template and a status with conditions; status and scale
/// subresources and printer columns. `core_v1` is the API server's `/openapi/v3/api/v1`.
pub fn operator_crd(core_v1: &Value) -> Value {
    let schemas = core_v1
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let template = structural(
        &json!({"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}),
        &schemas,
        0,
    );
    let resources = structural(
        &json!({"$ref": "#/components/schemas/io.k8s.api.core.v1.ResourceRequirements"}),
        &schemas,
        0,
    );
    let spec = json!({"type": "object", "required": ["version"], "properties": {
        "replicas": {"type": "integer", "format": "int32", "minimum": 0, "default": 1},
        "version": {"type": "string", "pattern": "^v[0-9]+\\.[0-9]+\\.[0-9]+$"},
        "retention": {"type": "string", "default": "24h", "pattern": "^[0-9]+(ms|s|m|h|d|w|y)$"},
        "logLevel": {"type": "string", "enum": ["debug", "info", "warn", "error"], "default": "info"},
        "paused": {"type": "boolean"},
        "externalLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "resources": resources,
        "podTemplate": template,
    }});
    let status = json!({"type": "object", "properties": {
        "replicas": {"type": "integer"},
        "availableReplicas": {"type": "integer"},
        "selector": {"type": "string"},
        "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object", "required": ["type", "status"], "properties": {
                "type": {"type": "string"}, "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "reason": {"type": "string"}, "message": {"type": "string"},
                "lastTransitionTime": {"type": "string", "format": "date-time"}}}},
    }});
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "appservers.operator.example.com"},
        "spec": {"group": "operator.example.com", "scope": "Namespaced",
            "names": {"plural": "appservers", "singular": "appserver", "kind": "AppServer", "listKind": "AppServerList",
                "shortNames": ["as"], "categories": ["all"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "description": "AppServer runs an application server fleet.",
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                        "spec": spec, "status": status}}},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                "additionalPrinterColumns": [
                    {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}]}})
}

/// An `AppServer` whose pod template has `containers` containers, each with environment
/// variables, ports, probes and resources: about `containers` KiB of JSON.
pub fn operator_object(name: &str, containers: usize) -> Value {
    let containers: Vec<Value> = (0..containers)
        .map(|c| {
            let env: Vec<Value> = (0..8)
                .map(|e| json!({"name": format!("VAR_{e}"), "value": "x".repeat(24)}))
                .collect();
            json!({"name": format!("c{c}"), "image": "registry.local/app:1.0", "env": env,
                "ports": [{"name": "http", "containerPort": 8080 + c, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": 1}}})
        })
        .collect();
    json!({"apiVersion": "operator.example.com/v1", "kind": "AppServer",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"version": "v2.45.0", "replicas": 2, "externalLabels": {"cluster": "a"},
            "podTemplate": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}})
}
