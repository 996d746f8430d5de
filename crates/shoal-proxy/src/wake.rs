//! Which Deployments a request may wake from zero, and which of them stands behind a
//! Service: shared by the ingress and the Service proxy, which both hold a request for a
//! Service at zero while its Deployment scales to one ([`crate::ingress::activator`]).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use shoal_api::serverless::{SCALE_TO_ZERO_AFTER, TARGET_CONCURRENCY};
use std::sync::Arc;

/// A Deployment autoscaled from its requests (annotated [`SCALE_TO_ZERO_AFTER`] or
/// [`TARGET_CONCURRENCY`]) or that may sit at zero replicas (the target of an HPA with
/// `minReplicas: 0`) behind a backend Service: its requests are counted, and one arriving
/// while it has no endpoint wakes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wake {
    pub namespace: String,
    pub deployment: String,
    pub uid: String,
}

/// The Deployments a request may wake (annotated for scale to zero or concurrency, or the
/// target of an HPA with `minReplicas: 0`), found once per build: usually few of all.
pub fn wakeable<'a>(
    deployments: &[&'a Deployment],
    autoscalers: &[&HorizontalPodAutoscaler],
) -> Vec<&'a Deployment> {
    let by_hpa: std::collections::HashSet<(&str, &str)> = autoscalers
        .iter()
        .filter_map(|h| {
            let s = h.spec.as_ref()?;
            (s.min_replicas == Some(0) && s.scale_target_ref.kind == "Deployment").then_some((
                h.metadata.namespace.as_deref()?,
                s.scale_target_ref.name.as_str(),
            ))
        })
        .collect();
    deployments
        .iter()
        .copied()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter(|d| {
            let annotations = d.metadata.annotations.as_ref();
            let annotated = annotations
                .and_then(|a| a.get(SCALE_TO_ZERO_AFTER))
                .is_some_and(|v| shoal_api::serverless::idle_after(v).is_ok())
                || annotations.is_some_and(|a| a.contains_key(TARGET_CONCURRENCY));
            annotated
                || matches!(
                    (d.metadata.namespace.as_deref(), d.metadata.name.as_deref()),
                    (Some(ns), Some(name)) if by_hpa.contains(&(ns, name))
                )
        })
        .collect()
}

/// The wakeable Deployment in `ns` whose pods `selector` (a Service's) selects.
pub fn behind(
    wakeable: &[&Deployment],
    ns: &str,
    selector: &std::collections::BTreeMap<String, String>,
) -> Option<Arc<Wake>> {
    if selector.is_empty() {
        return None;
    }
    wakeable.iter().find_map(|d| {
        let name = d.metadata.name.as_deref()?;
        if d.metadata.namespace.as_deref() != Some(ns) {
            return None;
        }
        let labels = d
            .spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .labels
            .as_ref()?;
        selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            .then(|| {
                Arc::new(Wake {
                    namespace: ns.to_owned(),
                    deployment: name.to_owned(),
                    uid: d.metadata.uid.clone().unwrap_or_default(),
                })
            })
    })
}
