//! `meta.k8s.io/v1` Table responses for `Accept: application/json;as=Table`.

use serde_json::{Value, json};
use shoal_api::{ResourceInfo, printers};

/// What each Table row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn description(name: &str) -> String {
    match name {
        "Name" => "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.".into(),
        "Age" => "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        other => other.to_owned(),
    }
}

pub fn column_definitions(info: &ResourceInfo) -> Value {
    if let Some(c) = crate::crd::custom(info) {
        let mut cols = vec![
            json!({"name": "Name", "type": "string", "format": "name", "description": description("Name"), "priority": 0}),
        ];
        cols.extend(c.columns.iter().map(|col| {
            json!({"name": col.name, "type": col.ty, "format": col.format, "description": col.description, "priority": col.priority})
        }));
        return Value::Array(cols);
    }
    let cols: Vec<Value> = printers::columns(info.group, info.kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            json!({
                "name": name,
                "type": ty,
                "format": if name == "Name" { "name" } else { "" },
                "description": description(name),
                "priority": priority,
            })
        })
        .collect();
    Value::Array(cols)
}

pub fn now_secs() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

pub fn row(info: &ResourceInfo, o: &Value, include: IncludeObject, now: i64) -> Value {
    let cells = match crate::crd::custom(info) {
        Some(c) => custom_cells(c, o, now),
        None => printers::cells(info.group, info.kind, o, now),
    };
    let mut row = json!({ "cells": cells });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let mut meta = o.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta});
        }
        IncludeObject::Object => row["object"] = o.clone(),
    }
    row
}

/// A custom resource's row, as kube-apiextensions prints it: the name, then each printer
/// column's first value (dates as ages, lists joined by commas), or null when absent.
fn custom_cells(c: &crate::crd::CustomResource, o: &Value, now: i64) -> Vec<Value> {
    let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
    for col in &c.columns {
        let found = col.path.select(o);
        let cell = match (col.ty.as_str(), found.as_slice()) {
            (_, []) => Value::Null,
            ("date", [Value::String(ts), ..]) => json!(printers::age(ts, now)),
            ("integer" | "number" | "boolean", [v, ..]) if !v.is_string() => (*v).clone(),
            (_, values) => {
                let parts: Vec<String> = values
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                json!(parts.join(","))
            }
        };
        cells.push(cell);
    }
    cells
}

pub fn table(
    info: &ResourceInfo,
    objects: &[&Value],
    include: IncludeObject,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let now = now_secs();
    let rows: Vec<Value> = objects.iter().map(|o| row(info, o, include, now)).collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(info) } else { Value::Null },
        "rows": rows,
    });
    if !with_columns && let Some(m) = t.as_object_mut() {
        m.insert("columnDefinitions".into(), Value::Null);
    }
    t
}
