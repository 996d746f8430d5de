//! The controller-manager: one controller per file, each on kube-rs' controller runtime.
//! Today: [`replicaset`] and the garbage collector [`gc`].

pub mod gc;
pub mod replicaset;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use tokio_util::sync::CancellationToken;

/// A reconcile failure; the controller retries the object after a pause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("invalid object: {0}")]
    Invalid(String),
}

/// Runs every controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    tokio::select! {
        _ = replicaset::run(client.clone()) => {}
        _ = gc::run(client) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// A label selector in the query syntax (`a=b,c in (d,e),!f`); `None` if it selects nothing.
pub fn selector_string(sel: &LabelSelector) -> Result<String, Error> {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => {
                return Err(Error::Invalid(format!(
                    "unknown selector operator {other:?}"
                )));
            }
        });
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_as_queries() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "legacy", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert_eq!(
            selector_string(&sel).unwrap(),
            "app=web,tier in (a,b),!legacy"
        );
    }
}
