//! Denies pods (and workloads' pod templates) that run a privileged container or mount a
//! hostPath volume. Settings: `{"allowHostPath": false}`.

use serde::Deserialize;
use shoal_plugin_sdk::admission::{Policy, Request, Response};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Settings {
    allow_host_path: bool,
}

struct DenyPrivileged;

impl Policy for DenyPrivileged {
    type Settings = Settings;

    fn validate(req: &Request, s: &Settings) -> Response {
        let mut problems = Vec::new();
        for (path, c) in req.containers() {
            if c.pointer("/securityContext/privileged")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
            {
                let name = c.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                problems.push(format!(
                    "container {name} is privileged ({}.securityContext.privileged)",
                    path.trim_start_matches('/').replace('/', ".")
                ));
            }
        }
        if !s.allow_host_path
            && let Some(vols) = req
                .pod_spec()
                .and_then(|p| p.get("volumes"))
                .and_then(|v| v.as_array())
        {
            for v in vols.iter().filter(|v| v.get("hostPath").is_some()) {
                let name = v.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                problems.push(format!("volume {name} is a hostPath volume"));
            }
        }
        if problems.is_empty() {
            Response::allow()
        } else {
            Response::deny(format!("privileged pods are not allowed: {}", problems.join("; ")))
        }
    }
}

shoal_plugin_sdk::admission_policy!(DenyPrivileged);
