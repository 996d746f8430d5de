//! The disruption controller: each PodDisruptionBudget's status from the pods it selects —
//! `expectedPods`, `currentHealthy` (ready pods not already evicted), `desiredHealthy` (from
//! `minAvailable`, or `maxUnavailable` against the expected pods; percentages rounded up),
//! `disruptionsAllowed` and the `DisruptionAllowed` condition — as Kubernetes' controller
//! writes it. The API server's `pods/eviction` reads and spends `disruptionsAllowed`; evicted
//! pods stay in `disruptedPods` until they are gone (or two minutes pass).

use crate::runner::Ctx;
use crate::{Error, pod_active, pod_ready, scaled_value, selector_string};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long an evicted pod counts as disrupted if it is not seen going.
const DISRUPTED_FOR: Duration = Duration::from_secs(120);

/// Runs the disruption controller (forever).
pub async fn run(client: kube::Client) {
    let budgets: Api<PodDisruptionBudget> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(budgets, watcher::Config::default());
    let store = controller.store();
    // A pod change concerns every budget of its namespace (selectors are checked on reconcile).
    let controller = controller.watches(pods, watcher::Config::default(), move |pod: Pod| {
        let ns = pod.metadata.namespace;
        store
            .state()
            .into_iter()
            .filter(|b| b.metadata.namespace == ns)
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect::<Vec<_>>()
    });
    crate::runner::run("disruption", client, controller, reconcile).await;
}

/// The status numbers of a budget over `pods` (those its selector selects).
#[derive(Debug, PartialEq)]
pub struct Budget {
    pub expected: i32,
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub allowed: i32,
}

/// Computes a budget's numbers; `disrupted` are the pods already evicted.
pub fn budget(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    disrupted: &[String],
) -> Result<Budget, Error> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let active: Vec<&Pod> = pods.iter().filter(|p| pod_active(p)).collect();
    let expected = active.len() as i32;
    let current_healthy = active
        .iter()
        .filter(|p| pod_ready(p))
        .filter(|p| {
            !disrupted
                .iter()
                .any(|d| Some(d.as_str()) == p.metadata.name.as_deref())
        })
        .count() as i32;
    let desired_healthy = match (&spec.min_available, &spec.max_unavailable) {
        (Some(min), _) => scaled_value(Some(min), expected, true, 0)?,
        (None, Some(max)) => (expected - scaled_value(Some(max), expected, true, 0)?).max(0),
        (None, None) => expected,
    };
    Ok(Budget {
        expected,
        current_healthy,
        desired_healthy,
        allowed: (current_healthy - desired_healthy).max(0),
    })
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.metadata.namespace.as_deref().unwrap_or("default");
    let name = pdb.metadata.name.as_deref().unwrap_or("");
    let selector = pdb
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(selector_string)
        .transpose()?
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    // In policy/v1 an absent selector selects no pod and an empty one (`{}`) every pod.
    let selected = if pdb
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_none()
    {
        Vec::new()
    } else {
        pods.list(&ListParams::default().labels(&selector))
            .await?
            .items
    };
    // Evicted pods stay disrupted while they exist, not deleting, for at most two minutes.
    let now = jiff::Timestamp::now();
    let status = pdb.status.clone().unwrap_or_default();
    let mut disrupted = serde_json::Map::new();
    for (pod, at) in status.disrupted_pods.unwrap_or_default() {
        let present = selected.iter().any(|p| {
            p.metadata.name.as_deref() == Some(pod.as_str())
                && p.metadata.deletion_timestamp.is_none()
        });
        let recent = now.duration_since(at.0).as_secs() < DISRUPTED_FOR.as_secs() as i64;
        if present && recent {
            disrupted.insert(pod, json!(at.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
        }
    }
    let names: Vec<String> = disrupted.keys().cloned().collect();
    let b = budget(&pdb, &selected, &names)?;
    let allowed = b.allowed > 0;
    let previous = status
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    // The transition time moves only when the condition flips.
    let since = match previous {
        Some(c) if (c.status == "True") == allowed => c.last_transition_time.0,
        _ => now,
    };
    let condition = json!({
        "type": "DisruptionAllowed",
        "status": if allowed { "True" } else { "False" },
        "observedGeneration": pdb.metadata.generation,
        "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "reason": if allowed { "SufficientPods" } else { "InsufficientPods" },
        "message": "",
    });
    let new_status = json!({
        "observedGeneration": pdb.metadata.generation,
        "disruptedPods": if disrupted.is_empty() { serde_json::Value::Null } else { serde_json::Value::Object(disrupted) },
        "disruptionsAllowed": b.allowed,
        "currentHealthy": b.current_healthy,
        "desiredHealthy": b.desired_healthy,
        "expectedPods": b.expected,
        "conditions": [condition],
    });
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    budgets
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": new_status})),
        )
        .await?;
    // Evicted pods leave `disruptedPods` by time too.
    Ok(Action::requeue(Duration::from_secs(30)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pod(name: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn budgets_count_like_the_disruption_controller() {
        let pods = [pod("a", true), pod("b", true), pod("c", false)];
        let b = budget(&pdb(Some(IntOrString::Int(2)), None), &pods, &[]).unwrap();
        assert_eq!(
            b,
            Budget {
                expected: 3,
                current_healthy: 2,
                desired_healthy: 2,
                allowed: 0
            }
        );
        let b = budget(&pdb(None, Some(IntOrString::Int(1))), &pods, &[]).unwrap();
        assert_eq!(
            b,
            Budget {
                expected: 3,
                current_healthy: 2,
                desired_healthy: 2,
                allowed: 0
            }
        );
        let b = budget(
            &pdb(Some(IntOrString::String("50%".into())), None),
            &pods,
            &[],
        )
        .unwrap();
        assert_eq!(b.desired_healthy, 2, "50% of 3 rounded up");
        let b = budget(&pdb(Some(IntOrString::Int(1)), None), &pods, &["a".into()]).unwrap();
        assert_eq!(b.current_healthy, 1, "an evicted pod is not healthy");
        assert_eq!(b.allowed, 0);
    }
}
