//! Which Deployments a request may wake from zero, and which of them stands behind a
//! Service: shared by the ingress and the Service proxy, which both hold a request for a
//! Service at zero while its Deployment scales to one ([`crate::ingress::activator`]).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use shoal_api::serverless::{ANSWER_WHILE_WAKING, SCALE_TO_ZERO_AFTER, TARGET_CONCURRENCY};
use shoal_runtime::local_http::Standby;
use std::sync::Arc;

/// A Deployment autoscaled from its requests (annotated [`SCALE_TO_ZERO_AFTER`] or
/// [`TARGET_CONCURRENCY`]) or that may sit at zero replicas (the target of an HPA with
/// `minReplicas: 0`) behind a backend Service: its requests are counted, and one arriving
/// while it has no endpoint wakes it.
///
/// A Wake is the Deployment (its namespace, name and uid); `standby` rides along.
#[derive(Debug, Clone)]
pub struct Wake {
    pub namespace: String,
    pub deployment: String,
    pub uid: String,
    /// What answers requests while it has no ready pod, if it opted in
    /// ([`ANSWER_WHILE_WAKING`]) and its template allows it ([`standby`]).
    pub standby: Option<Arc<Standby>>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        (&self.namespace, &self.deployment, &self.uid)
            == (&other.namespace, &other.deployment, &other.uid)
    }
}

impl Eq for Wake {}

impl std::hash::Hash for Wake {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.namespace, &self.deployment, &self.uid).hash(state);
    }
}

/// The standby template of `d`, when it opted in with [`ANSWER_WHILE_WAKING`] and a request
/// can be answered without a pod as its pod would: one container, run by the Wasm runtime (no
/// other `runtimeClassName`), no volume mounts, every environment variable a literal value.
/// Anything else (a Secret's value, the pod's name, a volume) needs the pod.
pub fn standby(d: &Deployment) -> Option<Standby> {
    let opted = d.metadata.annotations.as_ref()?.get(ANSWER_WHILE_WAKING)?;
    if shoal_api::serverless::boolean(opted) != Ok(true) {
        return None;
    }
    let spec = d.spec.as_ref()?.template.spec.as_ref()?;
    if spec.containers.len() != 1
        || spec.init_containers.as_ref().is_some_and(|i| !i.is_empty())
        || spec
            .runtime_class_name
            .as_deref()
            .is_some_and(|r| r != shoal_runtime::WASMTIME)
    {
        return None;
    }
    let c = &spec.containers[0];
    if c.volume_mounts.as_ref().is_some_and(|m| !m.is_empty())
        || c.env_from.as_ref().is_some_and(|e| !e.is_empty())
    {
        return None;
    }
    let env = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            e.value_from
                .is_none()
                .then(|| (e.name.clone(), e.value.clone().unwrap_or_default()))
        })
        .collect::<Option<Vec<_>>>()?;
    let memory_limit = match c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref()?.get("memory"))
    {
        Some(q) => Some(shoal_api::quantity::bytes(&q.0).ok()?),
        None => None,
    };
    Some(Standby {
        image: c.image.clone()?,
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        env,
        working_dir: c.working_dir.clone(),
        memory_limit,
    })
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
                    standby: standby(d).map(Arc::new),
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(annotations: serde_json::Value, pod: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "fn", "namespace": "default", "annotations": annotations},
            "spec": {"selector": {"matchLabels": {"app": "fn"}},
                "template": {"metadata": {"labels": {"app": "fn"}}, "spec": pod}},
        }))
        .unwrap()
    }

    fn echo(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"name": "echo", "image": "shoal.local/http-echo:latest",
            "args": ["-v"], "env": [{"name": "GREETING", "value": "hi"}],
            "resources": {"limits": {"memory": "64Mi"}}});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"containers": [c]})
    }

    #[test]
    fn a_standby_is_made_only_for_templates_that_need_no_pod() {
        let opted = json!({ANSWER_WHILE_WAKING: "true"});
        let s = standby(&deployment(opted.clone(), echo(json!({})))).expect("a standby");
        assert_eq!(s.image, "shoal.local/http-echo:latest");
        assert_eq!(s.args, ["-v"]);
        assert_eq!(s.env, [("GREETING".to_owned(), "hi".to_owned())]);
        assert_eq!(s.memory_limit, Some(64 << 20));
        // Not opted in.
        assert!(standby(&deployment(json!({}), echo(json!({})))).is_none());
        assert!(
            standby(&deployment(
                json!({ANSWER_WHILE_WAKING: "false"}),
                echo(json!({}))
            ))
            .is_none()
        );
        // What only a pod has: its name, a volume, a Secret's values.
        for needs_a_pod in [
            json!({"env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
            json!({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}),
            json!({"envFrom": [{"secretRef": {"name": "s"}}]}),
        ] {
            assert!(
                standby(&deployment(opted.clone(), echo(needs_a_pod.clone()))).is_none(),
                "{needs_a_pod}"
            );
        }
        let mut containers = echo(json!({}));
        containers["runtimeClassName"] = json!("runc");
        assert!(standby(&deployment(opted, containers)).is_none());
    }
}
