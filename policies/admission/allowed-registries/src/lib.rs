//! Restricts container images to allowed registries. Settings:
//! `{"registries": ["127.0.0.1:5000", "ghcr.io/acme"]}`. An image without a registry is
//! Docker Hub's (`docker.io`).

use serde::Deserialize;
use shoal_plugin_sdk::admission::{Policy, Request, Response};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    registries: Vec<String>,
}

/// `docker.io/library/nginx` for `nginx`, as container runtimes read it.
fn qualified(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    let has_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        image.to_owned()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

struct AllowedRegistries;

impl Policy for AllowedRegistries {
    type Settings = Settings;

    fn check_settings(s: &Settings) -> Result<(), String> {
        if s.registries.is_empty() {
            return Err("settings.registries: at least one registry is required".into());
        }
        Ok(())
    }

    fn validate(req: &Request, s: &Settings) -> Response {
        for (_, c) in req.containers() {
            let image = c.get("image").and_then(|i| i.as_str()).unwrap_or("");
            let q = qualified(image);
            let ok = s.registries.iter().any(|r| {
                let r = r.trim_end_matches('/');
                q.starts_with(&format!("{r}/"))
            });
            if !ok {
                let name = c.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                return Response::deny(format!(
                    "container {name}: image {image} is not from an allowed registry ({})",
                    s.registries.join(", ")
                ));
            }
        }
        Response::allow()
    }
}

shoal_plugin_sdk::admission_policy!(AllowedRegistries);
