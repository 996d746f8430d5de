//! Scheduler scorer: prefers nodes by the numeric value of a label (higher is better).
//! Settings: `{"label": "shoal.dev/tier"}`; nodes without it (or with a non-number) score 0.

use serde::Deserialize;
use shoal_plugin_sdk::scheduler::{Node, Plugin, Pod};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    label: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            label: "shoal.dev/preference".into(),
        }
    }
}

struct PreferNodes;

impl Plugin for PreferNodes {
    type Settings = Settings;

    fn score(_pod: &Pod, node: &Node<'_>, s: &Settings) -> i64 {
        node.label(&s.label)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0)
    }
}

shoal_plugin_sdk::scheduler_plugin!(PreferNodes);
