//! Deployment: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`),
//! rolled with RollingUpdate (maxSurge / maxUnavailable) or Recreate, revisions in the
//! `deployment.kubernetes.io/revision` annotation (so `kubectl rollout history|undo` work),
//! pause and resume, the progress deadline, and the status and conditions `kubectl rollout
//! status` reads.

use crate::{
    Error, claim, controller_ref, delete_quietly, pod_active, scaled_value, selector_string,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::BTreeMap;
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

struct Ctx {
    client: kube::Client,
}

/// Runs the Deployment controller (forever).
pub async fn run(client: kube::Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Ctx { client }))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "deployment reconcile");
            }
        })
        .await;
}

fn error_policy(_d: Arc<Deployment>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "deployment reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
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

/// What the rollout wants: new ReplicaSet size and old ones' sizes (by name).
struct Plan {
    sizes: BTreeMap<String, i32>,
}

impl Plan {
    fn get(&self, rs: &ReplicaSet) -> i32 {
        self.sizes.get(rs_name(rs)).copied().unwrap_or(0)
    }
    fn set(&mut self, rs: &ReplicaSet, n: i32) {
        self.sizes.insert(rs_name(rs).to_owned(), n);
    }
}

/// One RollingUpdate step (Kubernetes' reconcileNewReplicaSet + reconcileOldReplicaSets):
/// grow the new ReplicaSet within `replicas + max_surge`, shrink the old ones while at least
/// `replicas - max_unavailable` pods stay available, unhealthy old pods first.
fn rolling_step(
    plan: &mut Plan,
    new: &ReplicaSet,
    old: &[&ReplicaSet],
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
) {
    let total = |plan: &Plan| plan.get(new) + old.iter().map(|r| plan.get(r)).sum::<i32>();
    let new_size = plan.get(new);
    if new_size > replicas {
        plan.set(new, replicas);
    } else if new_size < replicas {
        let room = replicas + max_surge - total(plan);
        if room > 0 {
            plan.set(new, new_size + room.min(replicas - new_size));
        }
    }
    if old.iter().all(|r| plan.get(r) == 0) {
        return;
    }
    let min_available = replicas - max_unavailable;
    let new_unavailable = (plan.get(new) - status_of(new).2).max(0);
    let mut budget = total(plan) - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    // Unhealthy old pods first: they do not count as available anyway.
    for r in old {
        if budget == 0 {
            break;
        }
        let unhealthy = (plan.get(r) - status_of(r).2).max(0);
        let down = unhealthy.min(budget);
        if down > 0 {
            plan.set(r, plan.get(r) - down);
            budget -= down;
        }
    }
    // Then available ones, as long as enough stay available.
    let available: i32 = status_of(new).2
        + old
            .iter()
            .map(|r| status_of(r).2.min(plan.get(r)))
            .sum::<i32>();
    let mut down_total = available - min_available;
    for r in old {
        if down_total <= 0 {
            break;
        }
        let down = plan.get(r).min(down_total);
        plan.set(r, plan.get(r) - down);
        down_total -= down;
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
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

    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let owner = controller_ref("apps/v1", "Deployment", &d.metadata);
    let candidates = sets
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let mut all: Vec<ReplicaSet> = claim(&sets, &owner, candidates)
        .await
        .into_iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    all.sort_by_key(|r| {
        (
            revision(&r.metadata),
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });

    let template = spec.template.clone();
    let wanted = serde_json::to_value(&template).unwrap_or(Value::Null);
    let existing_new = all.iter().position(|r| {
        r.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(without_hash)
            == Some(wanted.clone())
    });
    let max_old_revision = all
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != existing_new)
        .map(|(_, r)| revision(&r.metadata))
        .max()
        .unwrap_or(0);
    let paused = spec.paused == Some(true);
    let mut progress_reason: Option<(&str, String)> = None;

    // The new ReplicaSet: found, or created (not while paused).
    let new_rs: Option<ReplicaSet> = match existing_new {
        Some(i) => {
            let rs = all.remove(i);
            if revision(&rs.metadata) <= max_old_revision && !paused {
                // A rollback to an older template: that ReplicaSet becomes the newest revision.
                let patch = json!({"metadata": {"annotations": {REVISION: (max_old_revision + 1).to_string()}}});
                let rs = sets
                    .patch(rs_name(&rs), &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                progress_reason = Some((
                    "FoundNewReplicaSet",
                    format!("Found new replica set {:?}", rs_name(&rs)),
                ));
                Some(rs)
            } else {
                Some(rs)
            }
        }
        None if paused => None,
        None => {
            let collisions = d
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0);
            let hash = template_hash(&template, collisions);
            let mut tpl = template.clone();
            let meta = tpl.metadata.get_or_insert_with(Default::default);
            meta.labels
                .get_or_insert_with(Default::default)
                .insert(HASH_LABEL.into(), hash.clone());
            let mut sel = spec.selector.clone();
            sel.match_labels
                .get_or_insert_with(Default::default)
                .insert(HASH_LABEL.into(), hash.clone());
            let mut annotations: BTreeMap<String, String> = d
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
                .collect();
            annotations.insert(REVISION.into(), (max_old_revision + 1).to_string());
            annotations.insert(DESIRED.into(), replicas.to_string());
            annotations.insert(MAX_REPLICAS.into(), (replicas + max_surge).to_string());
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let rs_name = format!("{name}-{hash}");
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(rs_name.clone()),
                    namespace: Some(ns.into()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                    replicas: Some(0),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector: sel,
                    template: Some(tpl),
                }),
                status: None,
            };
            match sets.create(&PostParams::default(), &rs).await {
                Ok(rs) => {
                    progress_reason = Some((
                        "NewReplicaSetCreated",
                        format!("Created new replica set {rs_name:?}"),
                    ));
                    Some(rs)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Same name, different template (or not ours): hash again with one more collision.
                    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
                    let patch = json!({"status": {"collisionCount": collisions + 1}});
                    deployments
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let old: Vec<&ReplicaSet> = all.iter().collect();

    let mut plan = Plan {
        sizes: all
            .iter()
            .chain(new_rs.iter())
            .map(|r| (rs_name(r).to_owned(), spec_replicas(r)))
            .collect(),
    };
    match &new_rs {
        // Paused, or a template without a ReplicaSet yet: only scale. With one active
        // ReplicaSet, it gets the new size; the rollout resumes later.
        _ if paused => {
            let active: Vec<&ReplicaSet> = old
                .iter()
                .copied()
                .chain(new_rs.iter())
                .filter(|r| spec_replicas(r) > 0)
                .collect();
            if let [only] = active.as_slice() {
                plan.set(only, replicas);
            } else if active.is_empty()
                && let Some(newest) = new_rs.as_ref().or(old.last().copied())
            {
                plan.set(newest, replicas);
            }
        }
        Some(new) if recreate => {
            for r in &old {
                plan.set(r, 0);
            }
            let old_running = if old
                .iter()
                .any(|r| spec_replicas(r) > 0 || status_of(r).0 > 0)
            {
                true
            } else {
                // Old pods may still be stopping: Recreate waits until none is left.
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
                let old_uids: Vec<&str> = old
                    .iter()
                    .filter_map(|r| r.metadata.uid.as_deref())
                    .collect();
                pods.list(&ListParams::default().labels(&selector))
                    .await?
                    .items
                    .iter()
                    .any(|p| {
                        crate::controller_uid(&p.metadata).is_some_and(|u| old_uids.contains(&u))
                            && !shoal_api::pod::is_terminal(p)
                            && (pod_active(p) || p.metadata.deletion_timestamp.is_some())
                    })
            };
            if !old_running {
                plan.set(new, replicas);
            }
        }
        Some(new) => rolling_step(&mut plan, new, &old, replicas, max_surge, max_unavailable),
        None => {}
    }

    // Apply the plan.
    let mut current: Vec<ReplicaSet> = Vec::new();
    for r in old.iter().copied().chain(new_rs.iter()) {
        let want = plan.get(r);
        let is_new = new_rs.as_ref().is_some_and(|n| rs_name(n) == rs_name(r));
        if want != spec_replicas(r) {
            let mut patch = json!({"spec": {"replicas": want}});
            if is_new {
                patch["metadata"] = json!({"annotations": {DESIRED: replicas.to_string(), MAX_REPLICAS: (replicas + max_surge).to_string()}});
            }
            let updated = sets
                .patch(rs_name(r), &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            let from = spec_replicas(r);
            let direction = if want > from { "up" } else { "down" };
            crate::record(
                &ctx.client,
                "deployment-controller",
                d.as_ref(),
                "Normal",
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {from} to {want}",
                    rs_name(r)
                ),
            );
            current.push(updated);
        } else {
            current.push(r.clone());
        }
    }

    // History: old ReplicaSets scaled to zero beyond revisionHistoryLimit go, oldest first.
    if !paused {
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&ReplicaSet> = current
            .iter()
            .filter(|r| new_rs.as_ref().is_none_or(|n| rs_name(n) != rs_name(r)))
            .filter(|r| spec_replicas(r) == 0 && status_of(r).0 == 0)
            .collect();
        if idle.len() > limit {
            for r in &idle[..idle.len() - limit] {
                delete_quietly(&sets, rs_name(r)).await?;
            }
        }
    }

    // The Deployment's revision annotation follows its newest ReplicaSet.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(new) = &new_rs {
        let rev = revision(&new.metadata);
        if revision(&d.metadata) != rev {
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            deployments
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
    }

    // Status and conditions.
    let new_name = new_rs.as_ref().map(|r| rs_name(r).to_owned());
    let (mut total, mut ready, mut available) = (0, 0, 0);
    let mut updated = 0;
    for r in &current {
        let (t, re, a) = status_of(r);
        total += t;
        ready += re;
        available += a;
        if Some(rs_name(r)) == new_name.as_deref() {
            updated = t;
        }
    }
    let old_status = d.status.clone().unwrap_or_default();
    let conditions = old_status.conditions.clone().unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
    let stamp = now();
    let make = |type_: &str,
                status: &str,
                reason: &str,
                message: String,
                prev: Option<DeploymentCondition>,
                progressed: bool|
     -> Value {
        let same = prev.as_ref().is_some_and(|p| p.status == status);
        let transition = prev
            .as_ref()
            .filter(|_| same)
            .and_then(|p| p.last_transition_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| stamp.clone());
        let unchanged = same
            && prev
                .as_ref()
                .is_some_and(|p| p.reason.as_deref() == Some(reason));
        let update = prev
            .as_ref()
            .filter(|_| unchanged && !progressed)
            .and_then(|p| p.last_update_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| stamp.clone());
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let min_available = replicas - max_unavailable;
    let available_cond = if available >= min_available {
        make(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            find("Available"),
            false,
        )
    } else {
        make(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            find("Available"),
            false,
        )
    };
    let generation = d.metadata.generation.unwrap_or(0);
    let complete =
        updated == replicas && total == replicas && available >= replicas && new_rs.is_some();
    let prev_progress = find("Progressing");
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let rs_label = new_name.clone().unwrap_or_default();
    let mut requeue = Duration::from_secs(300);
    let progressing_cond = if paused {
        make(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            prev_progress,
            false,
        )
    } else if complete {
        make(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {rs_label:?} has successfully progressed."),
            prev_progress,
            false,
        )
    } else if let Some((reason, message)) = progress_reason {
        make("Progressing", "True", reason, message, prev_progress, true)
    } else {
        let progressed = updated > old_status.updated_replicas.unwrap_or(0)
            || total - updated
                < old_status.replicas.unwrap_or(0) - old_status.updated_replicas.unwrap_or(0)
            || ready > old_status.ready_replicas.unwrap_or(0)
            || available > old_status.available_replicas.unwrap_or(0)
            || prev_progress.as_ref().is_none_or(|p| {
                p.reason.as_deref() == Some("DeploymentPaused")
                    || p.reason.as_deref() == Some("NewReplicaSetAvailable")
            });
        let last = prev_progress
            .as_ref()
            .and_then(|p| p.last_update_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let expired = jiff::Timestamp::now().duration_since(last).as_secs() >= i64::from(deadline);
        if !progressed
            && expired
            && prev_progress
                .as_ref()
                .is_some_and(|p| p.reason.as_deref() != Some("DeploymentPaused"))
        {
            make(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {rs_label:?} has timed out progressing."),
                prev_progress,
                false,
            )
        } else {
            if !progressed {
                let left =
                    i64::from(deadline) - jiff::Timestamp::now().duration_since(last).as_secs();
                requeue = Duration::from_secs(left.max(1) as u64);
            } else {
                requeue = Duration::from_secs(u64::try_from(deadline).unwrap_or(600).max(1));
            }
            make(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet {rs_label:?} is progressing."),
                prev_progress,
                progressed,
            )
        }
    };
    let status = json!({"status": {
        "observedGeneration": generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": [available_cond, progressing_cond],
    }});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

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
