//! OpenAPI v3 documents generated from the served types (k8s-openapi's schemas), one per group
//! version, with a PATCH operation per kind that carries `x-kubernetes-group-version-kind` and
//! the `fieldValidation` parameter: what kubectl's validation and `kubectl explain` read.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use shoal_api::resources::RESOURCES;
use std::collections::BTreeMap;

pub struct OpenApi {
    /// `api/v1`, `apis/apps/v1`, ... → (hash, document bytes).
    docs: BTreeMap<String, (String, Bytes)>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn op(summary: &str, gvk: &Value, reference: &str, params: &[&str]) -> Value {
    let parameters: Vec<Value> = params.iter().map(|p| json!({"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": true})).collect();
    json!({
        "description": summary,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": reference}}}}},
    })
}

impl OpenApi {
    pub fn build() -> Self {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let names = crate::typed::schemas(&mut generator);
        let mut defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
        for (group, kind, schema) in &names {
            let version = if *kind == "Scale" {
                "v1"
            } else {
                RESOURCES
                    .iter()
                    .find(|r| r.group == *group && r.kind == *kind)
                    .map_or("v1", |r| r.version)
            };
            if let Some(Value::Object(s)) = defs.get_mut(schema) {
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "kind": kind, "version": version}]),
                );
            }
        }
        let mut by_gv: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for r in RESOURCES {
            let Some((_, _, schema)) = names.iter().find(|(g, k, _)| *g == r.group && *k == r.kind)
            else {
                continue;
            };
            let reference = format!("#/components/schemas/{schema}");
            let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
            let base = format!("/{}", gv_path(r.group, r.version));
            let item = if r.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
            } else {
                format!("{base}/{}/{{name}}", r.plural)
            };
            let write = ["dryRun", "fieldManager", "fieldValidation"];
            let paths = by_gv.entry(gv_path(r.group, r.version)).or_default();
            paths.insert(
                item,
                json!({
                    "get": op(&format!("read the specified {}", r.kind), &gvk, &reference, &[]),
                    "put": op(&format!("replace the specified {}", r.kind), &gvk, &reference, &write),
                    "patch": op(&format!("partially update the specified {}", r.kind), &gvk, &reference, &["dryRun", "fieldManager", "fieldValidation", "force"]),
                    "delete": op(&format!("delete a {}", r.kind), &gvk, &reference, &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
                }),
            );
            let collection = if r.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}", r.plural)
            } else {
                format!("{base}/{}", r.plural)
            };
            paths.insert(
                collection,
                json!({
                    "get": op(&format!("list or watch objects of kind {}", r.kind), &gvk, &reference, &["labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion"]),
                    "post": op(&format!("create a {}", r.kind), &gvk, &reference, &write),
                }),
            );
        }
        let schemas = Value::Object(defs);
        let docs = by_gv
            .into_iter()
            .map(|(gv, paths)| {
                let doc = json!({
                    "openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": shoal_api::version::GIT_VERSION},
                    "paths": paths,
                    "components": {"schemas": schemas},
                });
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let hash = format!("{:016X}", fnv(&bytes));
                (gv, (hash, Bytes::from(bytes)))
            })
            .collect();
        OpenApi { docs }
    }

    pub fn root(&self) -> Value {
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .map(|(gv, (hash, _))| {
                (
                    gv.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
                )
            })
            .collect();
        json!({ "paths": paths })
    }

    pub fn doc(&self, gv: &str) -> Option<Bytes> {
        self.docs.get(gv).map(|(_, b)| b.clone())
    }
}

/// FNV-1a, for a stable content hash in document URLs.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
