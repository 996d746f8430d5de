//! ConfigMaps and Secrets: valid data keys; a Secret's type defaults to `Opaque` and its
//! write-only `stringData` is folded into `data`.

use super::Strategy;
use super::defaulting::{obj, set_default};
use serde_json::{Value, json};
use shoal_api::Cause;

pub(super) struct ConfigMapStrategy;
pub(super) static CONFIG_MAP: ConfigMapStrategy = ConfigMapStrategy;
pub(super) struct SecretStrategy;
pub(super) static SECRET: SecretStrategy = SecretStrategy;

fn data_keys(o: &Value, out: &mut Vec<Cause>) {
    for field in ["data", "binaryData", "stringData"] {
        if let Some(m) = o.get(field).and_then(Value::as_object) {
            for k in m.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                if !ok {
                    out.push(Cause::invalid(format!("{field}[{k}]"), k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
                }
            }
        }
    }
}

/// A Secret's write-only `stringData` is merged into `data`, base64-encoded, as Kubernetes does.
fn fold_string_data(o: &mut Value) {
    use base64::Engine;
    let Some(root) = o.as_object_mut() else {
        return;
    };
    let Some(Value::Object(sd)) = root.remove("stringData") else {
        return;
    };
    let data = root.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            d.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

impl Strategy for ConfigMapStrategy {
    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        data_keys(o, out);
    }
}

impl Strategy for SecretStrategy {
    fn normalize(&self, o: &mut Value) {
        fold_string_data(o);
    }

    fn default(&self, o: &mut Value) {
        if let Some(root) = obj(o) {
            set_default(root, "type", json!("Opaque"));
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        data_keys(o, out);
    }
}

pub(super) struct ResourceQuotaStrategy;
pub(super) static RESOURCE_QUOTA: ResourceQuotaStrategy = ResourceQuotaStrategy;

const QUOTA_SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

impl Strategy for ResourceQuotaStrategy {
    /// `spec.hard`: quantities, none negative; known scopes.
    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        for (k, v) in o
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let field = format!("spec.hard[{k}]");
            match v.as_str().map(shoal_api::quantity::parse) {
                Some(Ok(q)) if q < 0.0 => out.push(Cause::invalid(
                    field,
                    v.as_str().unwrap_or(""),
                    "must be greater than or equal to 0",
                )),
                Some(Ok(_)) => {}
                _ => out.push(Cause::invalid(
                    field,
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
            }
        }
        for (i, scope) in o
            .pointer("/spec/scopes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let s = scope.as_str().unwrap_or("");
            if !QUOTA_SCOPES.contains(&s) {
                out.push(Cause::not_supported(
                    format!("spec.scopes[{i}]"),
                    s,
                    QUOTA_SCOPES,
                ));
            }
        }
    }
}
