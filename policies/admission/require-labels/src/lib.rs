//! Requires labels on objects. Settings: `{"labels": ["team", "app"]}`; optionally
//! `{"values": {"env": ["dev", "prod"]}}` to restrict their values.

use serde::Deserialize;
use shoal_plugin_sdk::admission::{Policy, Request, Response};
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    labels: Vec<String>,
    values: BTreeMap<String, Vec<String>>,
}

struct RequireLabels;

impl Policy for RequireLabels {
    type Settings = Settings;

    fn check_settings(s: &Settings) -> Result<(), String> {
        if s.labels.is_empty() && s.values.is_empty() {
            return Err("settings.labels: at least one label is required".into());
        }
        Ok(())
    }

    fn validate(req: &Request, s: &Settings) -> Response {
        let labels = req.object_at("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        let missing: Vec<&str> = s
            .labels
            .iter()
            .map(String::as_str)
            .filter(|k| get(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Response::deny(format!(
                "{} {} is missing required label(s): {}",
                req.kind,
                req.name,
                missing.join(", ")
            ));
        }
        for (k, allowed) in &s.values {
            if let Some(v) = get(k)
                && !allowed.iter().any(|a| a == v)
            {
                return Response::deny(format!(
                    "label {k}={v} is not allowed (allowed: {})",
                    allowed.join(", ")
                ));
            }
        }
        Response::allow()
    }
}

shoal_plugin_sdk::admission_policy!(RequireLabels);
