//! The Deployment's ReplicaSets: claiming them, finding or creating the one of the current
//! template, scaling them to the rollout's plan, and the revision history.

use super::rollout::Plan;
use super::{
    Ctx, DESIRED, HASH_LABEL, MAX_REPLICAS, NOT_COPIED, Progress, REVISION, Want, revision,
    rs_name, spec_replicas, status_of, template_hash, without_hash,
};
use crate::{Error, claim, controller_ref, delete_quietly};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The Deployment's ReplicaSets (claimed, not being deleted), oldest revision first.
pub(super) async fn replica_sets(
    sets: &Api<ReplicaSet>,
    want: &Want<'_>,
) -> Result<Vec<ReplicaSet>, Error> {
    let owner = controller_ref("apps/v1", "Deployment", &want.d.metadata);
    let candidates = sets
        .list(&ListParams::default().labels(&want.selector))
        .await?
        .items;
    let mut all: Vec<ReplicaSet> = claim(sets, &owner, candidates)
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

    Ok(all)
}

/// The ReplicaSet of the Deployment's current template, taken out of `all`: found (made the
/// newest revision again on a rollback), or created (not while paused); with why the
/// Deployment progressed. `None`: the name was taken by another template, and the collision
/// count was raised for the next try.
pub(super) async fn new_replica_set(
    ctx: &Ctx,
    sets: &Api<ReplicaSet>,
    want: &Want<'_>,
    all: &mut Vec<ReplicaSet>,
) -> Result<Option<(Option<ReplicaSet>, Progress)>, Error> {
    let (d, spec, ns, name) = (want.d, want.spec, want.ns, want.name);
    let (replicas, max_surge, paused) = (want.replicas, want.max_surge, want.paused);
    let owner = controller_ref("apps/v1", "Deployment", &d.metadata);
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
    let mut progress_reason: Progress = None;

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
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(Some((new_rs, progress_reason)))
}

/// Scales every ReplicaSet to the plan (recording `ScalingReplicaSet`); returns them as they
/// now are.
pub(super) async fn scale(
    ctx: &Ctx,
    sets: &Api<ReplicaSet>,
    want: &Want<'_>,
    plan: &Plan,
    old: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Result<Vec<ReplicaSet>, Error> {
    let (replicas, max_surge) = (want.replicas, want.max_surge);
    let mut current: Vec<ReplicaSet> = Vec::new();
    for r in old.iter().copied().chain(new_rs) {
        let size = plan.get(r);
        let is_new = new_rs.is_some_and(|n| rs_name(n) == rs_name(r));
        if size != spec_replicas(r) {
            let mut patch = json!({"spec": {"replicas": size}});
            if is_new {
                patch["metadata"] = json!({"annotations": {DESIRED: replicas.to_string(), MAX_REPLICAS: (replicas + max_surge).to_string()}});
            }
            let updated = sets
                .patch(rs_name(r), &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            let from = spec_replicas(r);
            let direction = if size > from { "up" } else { "down" };
            crate::record(
                &ctx.client,
                "deployment-controller",
                want.d,
                "Normal",
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {from} to {size}",
                    rs_name(r)
                ),
            );
            current.push(updated);
        } else {
            current.push(r.clone());
        }
    }

    Ok(current)
}

/// Deletes old ReplicaSets scaled to zero beyond `revisionHistoryLimit`, oldest first.
pub(super) async fn clean_history(
    sets: &Api<ReplicaSet>,
    want: &Want<'_>,
    current: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Result<(), Error> {
    let limit = want.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let idle: Vec<&ReplicaSet> = current
        .iter()
        .filter(|r| new_rs.is_none_or(|n| rs_name(n) != rs_name(r)))
        .filter(|r| spec_replicas(r) == 0 && status_of(r).0 == 0)
        .collect();
    if idle.len() > limit {
        for r in &idle[..idle.len() - limit] {
            delete_quietly(sets, rs_name(r)).await?;
        }
    }
    Ok(())
}

/// The Deployment's revision annotation follows its newest ReplicaSet.
pub(super) async fn set_revision(
    ctx: &Ctx,
    want: &Want<'_>,
    new_rs: Option<&ReplicaSet>,
) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), want.ns);
    if let Some(new) = new_rs {
        let rev = revision(&new.metadata);
        if revision(&want.d.metadata) != rev {
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            deployments
                .patch(want.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
    }

    Ok(())
}
