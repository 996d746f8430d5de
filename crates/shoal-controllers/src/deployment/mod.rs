//! Deployment: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`),
//! rolled with RollingUpdate (maxSurge / maxUnavailable) or Recreate, revisions in the
//! `deployment.kubernetes.io/revision` annotation (so `kubectl rollout history|undo` work),
//! pause and resume, the progress deadline, and the status and conditions `kubectl rollout
//! status` reads.
//!
//! Split as Kubernetes splits it: [`reconcile`] here, `sync.rs` (the ReplicaSets: finding or
//! creating the new one, scaling to the plan, history and revision), `rollout.rs` (the plan:
//! rolling, recreate, paused), `progress.rs` (status and conditions).

mod progress;
mod rollout;
mod sync;

use crate::runner::Ctx;
use crate::{Error, scaled_value, selector_string};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The revision annotation on Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that keeps the pods of a Deployment's ReplicaSets apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotations of the Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 4] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    DESIRED,
    MAX_REPLICAS,
];

/// Runs the Deployment controller (forever).
pub async fn run(client: kube::Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default());
    crate::runner::run("deployment", client, controller, reconcile).await;
}

/// Kubernetes' alphabet for names derived from hashes (no vowels, no look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-1a over its JSON form (and the collision count),
/// written in the safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collisions: i32) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if collisions > 0 {
        bytes.extend_from_slice(&collisions.to_be_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|c| SAFE[usize::from(c) % SAFE.len()] as char)
        .collect()
}

/// A ReplicaSet's template without the hash label: what the Deployment's template is compared to.
fn without_hash(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    serde_json::to_value(t).unwrap_or(Value::Null)
}

fn revision(m: &ObjectMeta) -> i64 {
    m.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status
        .as_ref()
        .map(|s| {
            (
                s.replicas,
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        })
        .unwrap_or_default()
}

fn rs_name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or("")
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// What a Deployment asks for, worked out once per reconcile.
struct Want<'a> {
    d: &'a Deployment,
    spec: &'a DeploymentSpec,
    ns: &'a str,
    name: &'a str,
    /// The selector in query form.
    selector: String,
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
    paused: bool,
    recreate: bool,
}

impl<'a> Want<'a> {
    fn of(d: &'a Deployment) -> Result<Self, Error> {
        let ns = d.metadata.namespace.as_deref().unwrap_or("default");
        let name = d.metadata.name.as_deref().unwrap_or("");
        let spec = d
            .spec
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("deployment {name} has no spec")))?;
        let selector = selector_string(&spec.selector)?;
        if selector.is_empty() {
            return Err(Error::Invalid(format!(
                "deployment {name} selects every pod"
            )));
        }
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let rolling = spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let (max_surge, max_unavailable) = if recreate {
            (0, 0)
        } else {
            let surge = scaled_value(
                rolling.and_then(|r| r.max_surge.as_ref()),
                replicas,
                true,
                -1,
            )?;
            let unavail = scaled_value(
                rolling.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                false,
                -1,
            )?;
            // Absent fields mean 25% (the API server defaults them; this covers older objects).
            let surge = if surge < 0 { (replicas + 3) / 4 } else { surge };
            let unavail = if unavail < 0 { replicas / 4 } else { unavail };
            if surge == 0 && unavail == 0 {
                (0, 1)
            } else {
                (surge, unavail)
            }
        };
        Ok(Want {
            d,
            spec,
            ns,
            name,
            selector,
            replicas,
            max_surge,
            max_unavailable,
            paused: spec.paused == Some(true),
            recreate,
        })
    }
}

/// Why the Deployment progressed in this reconcile, when a ReplicaSet was made or found.
type Progress = Option<(&'static str, String)>;

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let want = Want::of(&d)?;
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), want.ns);
    let mut all = sync::replica_sets(&sets, &want).await?;
    let Some((new_rs, progress)) = sync::new_replica_set(&ctx, &sets, &want, &mut all).await?
    else {
        // A hash collision was recorded; the next pass hashes again.
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    let old: Vec<&ReplicaSet> = all.iter().collect();
    let plan = rollout::plan(&ctx, &want, &old, new_rs.as_ref()).await?;
    let current = sync::scale(&ctx, &sets, &want, &plan, &old, new_rs.as_ref()).await?;
    if !want.paused {
        sync::clean_history(&sets, &want, &current, new_rs.as_ref()).await?;
    }
    sync::set_revision(&ctx, &want, new_rs.as_ref()).await?;
    let requeue = progress::report(&ctx, &want, &current, new_rs.as_ref(), progress).await?;
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::rollout::{Plan, rolling_step};
    use super::*;
    use serde_json::json;

    fn rs(name: &str, spec: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": spec, "availableReplicas": available, "readyReplicas": available}
        }))
        .unwrap()
    }

    fn plan_of(sets: &[&ReplicaSet]) -> Plan {
        Plan {
            sizes: sets
                .iter()
                .map(|r| (rs_name(r).to_owned(), spec_replicas(r)))
                .collect(),
        }
    }

    #[test]
    fn hashes_are_stable_safe_and_change_with_the_template() {
        let a: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}})).unwrap();
        let b: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "b"}]}})).unwrap();
        let h = template_hash(&a, 0);
        assert_eq!(h, template_hash(&a, 0));
        assert_ne!(h, template_hash(&b, 0));
        assert_ne!(h, template_hash(&a, 1));
        assert!(h.bytes().all(|c| SAFE.contains(&c)), "{h}");
    }

    #[test]
    fn a_rolling_update_surges_then_trades_old_for_new_within_max_unavailable() {
        // 3 replicas, maxSurge 1, maxUnavailable 0: one new pod first, no old pod goes yet.
        let new = rs("new", 0, 0);
        let old = rs("old", 3, 3);
        let mut plan = plan_of(&[&new, &old]);
        rolling_step(&mut plan, &new, &[&old], 3, 1, 0);
        assert_eq!((plan.get(&new), plan.get(&old)), (1, 3));
        // The new pod is available: one old pod may go, and the new set grows again.
        let new = rs("new", 1, 1);
        let mut plan = plan_of(&[&new, &old]);
        rolling_step(&mut plan, &new, &[&old], 3, 1, 0);
        assert_eq!((plan.get(&new), plan.get(&old)), (1, 2));
        // maxUnavailable 1, maxSurge 0: an old pod goes first.
        let new = rs("new", 0, 0);
        let mut plan = plan_of(&[&new, &old]);
        rolling_step(&mut plan, &new, &[&old], 3, 0, 1);
        assert_eq!((plan.get(&new), plan.get(&old)), (0, 2));
        let old = rs("old", 2, 2);
        let mut plan = plan_of(&[&new, &old]);
        rolling_step(&mut plan, &new, &[&old], 3, 0, 1);
        assert_eq!((plan.get(&new), plan.get(&old)), (1, 2));
    }

    #[test]
    fn scaling_a_settled_deployment_moves_only_the_new_set() {
        let new = rs("new", 3, 3);
        let mut plan = plan_of(&[&new]);
        rolling_step(&mut plan, &new, &[], 5, 2, 1);
        assert_eq!(plan.get(&new), 5);
        let new = rs("new", 5, 5);
        let mut plan = plan_of(&[&new]);
        rolling_step(&mut plan, &new, &[], 3, 1, 0);
        assert_eq!(plan.get(&new), 3);
    }

    #[test]
    fn unhealthy_old_pods_go_first() {
        let new = rs("new", 3, 0);
        let old = rs("old", 3, 0);
        let mut plan = plan_of(&[&new, &old]);
        rolling_step(&mut plan, &new, &[&old], 3, 1, 1);
        // Nothing is available, so the unavailable old pods can go down to what the budget allows.
        assert!(plan.get(&old) < 3);
    }
}
