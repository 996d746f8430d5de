//! Mutating: gives every container without them default resource limits (and requests).
//! Settings: `{"cpu": "500m", "memory": "128Mi"}`.

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_plugin_sdk::admission::{Policy, Request, Response};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    cpu: String,
    memory: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cpu: "500m".into(),
            memory: "128Mi".into(),
        }
    }
}

struct DefaultLimits;

impl Policy for DefaultLimits {
    type Settings = Settings;

    fn validate(_req: &Request, _s: &Settings) -> Response {
        Response::allow()
    }

    fn mutate(req: &Request, s: &Settings) -> Response {
        let Some(original) = &req.object else {
            return Response::allow();
        };
        let mut modified = original.clone();
        let mut changed = Vec::new();
        for (path, c) in req.containers() {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
            let Some(target) = modified.pointer_mut(&path) else {
                continue;
            };
            let resources = target
                .as_object_mut()
                .map(|o| o.entry("resources").or_insert_with(|| json!({})));
            let Some(Value::Object(resources)) = resources else {
                continue;
            };
            for (field, value) in [("cpu", &s.cpu), ("memory", &s.memory)] {
                let limits = resources.entry("limits").or_insert_with(|| json!({}));
                if let Value::Object(l) = limits
                    && !l.contains_key(field)
                {
                    l.insert(field.into(), json!(value));
                    changed.push(format!("{name}: limits.{field}={value}"));
                }
            }
        }
        if changed.is_empty() {
            return Response::allow();
        }
        Response::mutate(original, &modified)
            .warn(format!("default resource limits added ({})", changed.join(", ")))
    }
}

shoal_plugin_sdk::admission_policy!(DefaultLimits);
