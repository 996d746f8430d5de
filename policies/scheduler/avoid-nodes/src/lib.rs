//! Scheduler filter: keeps pods off nodes that carry a label. Settings:
//! `{"label": "shoal.dev/maintenance"}` (any value), or with `"value": "true"` only nodes
//! where the label has that value. Pods labelled `<label>-tolerated: "true"` are exempt.

use serde::Deserialize;
use shoal_plugin_sdk::scheduler::{Node, Plugin, Pod};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    label: String,
    value: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            label: "shoal.dev/avoid".into(),
            value: None,
        }
    }
}

struct AvoidNodes;

impl Plugin for AvoidNodes {
    type Settings = Settings;

    fn filter(pod: &Pod, node: &Node<'_>, s: &Settings) -> Result<(), String> {
        let Some(v) = node.label(&s.label) else {
            return Ok(());
        };
        if s.value.as_ref().is_some_and(|want| *want != v) {
            return Ok(());
        }
        if pod.label(&format!("{}-tolerated", s.label)).as_deref() == Some("true") {
            return Ok(());
        }
        Err(format!("node(s) had label {}", s.label))
    }
}

shoal_plugin_sdk::scheduler_plugin!(AvoidNodes);
