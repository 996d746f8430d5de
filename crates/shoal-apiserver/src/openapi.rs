//! OpenAPI v3 documents generated from the served types (k8s-openapi's schemas), one per group
//! version, with a PATCH operation per kind that carries `x-kubernetes-group-version-kind` and
//! the `fieldValidation` parameter: what kubectl's validation and `kubectl explain` read.

use crate::crd::{Catalog, CustomResource};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use shoal_api::ResourceInfo;
use shoal_api::resources::RESOURCES;
use std::collections::BTreeMap;
use std::sync::Arc;

type Docs = BTreeMap<String, (String, Bytes)>;

pub struct OpenApi {
    /// `api/v1`, `apis/apps/v1`, ... → (hash, document bytes).
    docs: Docs,
    /// The built-in kinds' schemas, which custom resources' documents refer to.
    schemas: Value,
    /// The custom resources' documents, built for a generation of the catalog.
    custom: std::sync::Mutex<(u64, Arc<Docs>)>,
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
        for (group, version, kind, schema) in &names {
            let version = version.unwrap_or_else(|| {
                RESOURCES
                    .iter()
                    .find(|r| r.group == *group && r.kind == *kind)
                    .map_or("v1", |r| r.version)
            });
            if let Some(Value::Object(s)) = defs.get_mut(schema) {
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "kind": kind, "version": version}]),
                );
            }
        }
        let mut by_gv: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for r in RESOURCES {
            let Some((_, _, _, schema)) = names.iter().find(|(g, v, k, _)| {
                *g == r.group && *k == r.kind && v.is_none_or(|v| v == r.version)
            }) else {
                continue;
            };
            let reference = format!("#/components/schemas/{schema}");
            let paths = by_gv.entry(gv_path(r.group, r.version)).or_default();
            operations(r, &reference, paths);
        }
        let schemas = Value::Object(defs);
        let docs = by_gv
            .into_iter()
            .map(|(gv, paths)| (gv, document(paths, &schemas)))
            .collect();
        OpenApi {
            docs,
            schemas,
            custom: std::sync::Mutex::new((u64::MAX, Arc::default())),
        }
    }

    /// The custom resources' documents for the catalog as it is now.
    fn custom(&self, catalog: &Catalog) -> Arc<Docs> {
        let generation = catalog.generation();
        let mut memo = self.custom.lock().unwrap_or_else(|p| p.into_inner());
        if memo.0 != generation {
            // Per group version: its paths and its kinds' schemas.
            type PathsAndSchemas = (Map<String, Value>, Map<String, Value>);
            let mut by_gv: BTreeMap<String, PathsAndSchemas> = BTreeMap::new();
            for c in catalog.all() {
                let (paths, defs) = by_gv
                    .entry(gv_path(c.info.group, c.info.version))
                    .or_default();
                let name = schema_name(c);
                let reference = format!("#/components/schemas/{name}");
                operations(&c.info, &reference, paths);
                defs.insert(name, custom_schema(c));
            }
            let docs = by_gv
                .into_iter()
                .map(|(gv, (paths, defs))| {
                    let mut schemas = self.schemas.clone();
                    if let Some(m) = schemas.as_object_mut() {
                        m.extend(defs);
                    }
                    (gv, document(paths, &schemas))
                })
                .collect();
            *memo = (generation, Arc::new(docs));
        }
        memo.1.clone()
    }

    pub fn root(&self, catalog: &Catalog) -> Value {
        let custom = self.custom(catalog);
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .chain(custom.iter())
            .map(|(gv, (hash, _))| {
                (
                    gv.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
                )
            })
            .collect();
        json!({ "paths": paths })
    }

    /// `/openapi/v2` as kubectl asks for it (gnostic's protobuf `openapi.v2.Document`): the
    /// document's version and title, without definitions. kubectl reads kinds' schemas from
    /// `/openapi/v3` and turns to v2 only for a kind the server does not serve, for which this
    /// document has nothing either, so kubectl goes on to say the kind is unknown.
    pub fn v2_protobuf() -> Bytes {
        fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
            out.push((number << 3) | 2);
            let mut n = bytes.len();
            while n >= 0x80 {
                out.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(bytes);
        }
        let mut info = Vec::new();
        field(&mut info, 1, b"Kubernetes");
        field(&mut info, 2, shoal_api::version::GIT_VERSION.as_bytes());
        let mut doc = Vec::new();
        field(&mut doc, 1, b"2.0");
        field(&mut doc, 2, &info);
        Bytes::from(doc)
    }

    /// `/openapi/v2` in JSON: the built-in kinds' schemas as Swagger 2.0 `definitions`.
    pub fn v2_json(&self) -> Bytes {
        let text = serde_json::to_string(&json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": shoal_api::version::GIT_VERSION},
            "paths": {},
            "definitions": self.schemas,
        }))
        .unwrap_or_default()
        .replace("#/components/schemas/", "#/definitions/");
        Bytes::from(text)
    }

    pub fn doc(&self, catalog: &Catalog, gv: &str) -> Option<Bytes> {
        self.docs
            .get(gv)
            .or(self.custom(catalog).get(gv))
            .map(|(_, b)| b.clone())
    }
}

/// The paths of one resource: its item and collection operations.
fn operations(r: &ResourceInfo, reference: &str, paths: &mut Map<String, Value>) {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let base = format!("/{}", gv_path(r.group, r.version));
    let item = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    };
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    paths.insert(
        item,
        json!({
            "get": op(&format!("read the specified {}", r.kind), &gvk, reference, &[]),
            "put": op(&format!("replace the specified {}", r.kind), &gvk, reference, &write),
            "patch": op(&format!("partially update the specified {}", r.kind), &gvk, reference, &["dryRun", "fieldManager", "fieldValidation", "force"]),
            "delete": op(&format!("delete a {}", r.kind), &gvk, reference, &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
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
            "get": op(&format!("list or watch objects of kind {}", r.kind), &gvk, reference, &["labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion"]),
            "post": op(&format!("create a {}", r.kind), &gvk, reference, &write),
        }),
    );
}

/// A document of `paths` with `schemas`, and its content hash.
fn document(paths: Map<String, Value>, schemas: &Value) -> (String, Bytes) {
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": shoal_api::version::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let hash = format!("{:016X}", fnv(&bytes));
    (hash, Bytes::from(bytes))
}

/// `com.example.v1.Widget` for `example.com/v1` `Widget`, as kube-apiextensions names it.
fn schema_name(c: &CustomResource) -> String {
    let reversed: Vec<&str> = c.info.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), c.info.version, c.info.kind)
}

/// A custom resource's schema as published: the definition's, with the standard `apiVersion`,
/// `kind` and `metadata` fields and its group-version-kind.
fn custom_schema(c: &CustomResource) -> Value {
    let mut s = match &c.openapi {
        Value::Object(_) => c.openapi.clone(),
        _ => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    };
    let props = s
        .as_object_mut()
        .map(|m| m.entry("properties").or_insert_with(|| json!({})));
    if let Some(Value::Object(p)) = props {
        p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        p.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
    }
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": c.info.group, "kind": c.info.kind, "version": c.info.version}]);
    s
}

/// FNV-1a, for a stable content hash in document URLs.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
