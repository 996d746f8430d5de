//! StatefulSet: pods with stable names `<set>-0 … <set>-(n-1)` (hostname and subdomain set
//! from them). OrderedReady creates them in order, each once the one before is Running and
//! Ready, and removes them from the highest ordinal down, one at a time; Parallel does both at
//! once. RollingUpdate replaces pods of an older template from the highest ordinal down to
//! `partition`, one at a time; OnDelete waits for pods to be deleted by hand.

use crate::daemonset::{REVISION_LABEL, revision_hash};
use crate::runner::Ctx;
use crate::{
    Error, PodName, claim, controller_ref, delete_quietly, pod_available, pod_from_template,
    pod_ready, selector_string,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Runs the StatefulSet controller (forever).
pub async fn run(client: kube::Client) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller =
        Controller::new(sets, watcher::Config::default()).owns(pods, watcher::Config::default());
    crate::runner::run("statefulset", client, controller, reconcile).await;
}

/// Makes the claims of `volumeClaimTemplates` for the pod `pod_name` (`<template>-<pod>`,
/// kept when the pod goes, as the default `Retain` retention policy says) and mounts them in
/// `pod` in place of any volume of the same name.
async fn claims_for(
    client: &kube::Client,
    sts: &StatefulSet,
    pod_name: &str,
    pod: &mut Pod,
) -> Result<(), Error> {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Volume,
    };
    let Some(templates) = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
    else {
        return Ok(());
    };
    let ns = sts.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let selector_labels = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    for t in templates {
        let template_name = t.metadata.name.clone().unwrap_or_default();
        let claim_name = format!("{template_name}-{pod_name}");
        let mut claim = t.clone();
        let mut labels = claim.metadata.labels.take().unwrap_or_default();
        labels.extend(selector_labels.clone());
        claim.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(claim_name.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some(labels),
            annotations: claim.metadata.annotations.take(),
            ..Default::default()
        };
        claim.status = None;
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => crate::record(
                client,
                "statefulset-controller",
                sts,
                "Normal",
                "SuccessfulCreate",
                format!(
                    "create Claim {claim_name} Pod {pod_name} in StatefulSet {} success",
                    sts.metadata.name.as_deref().unwrap_or("")
                ),
            ),
            // Kept from an earlier pod of that ordinal: the pod mounts it again.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(ps) = pod.spec.as_mut() {
            let volumes = ps.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != template_name);
            volumes.push(Volume {
                name: template_name,
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name,
                    read_only: None,
                }),
                ..Default::default()
            });
        }
    }
    Ok(())
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && pod_ready(p)
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// What one pass does: the single next step of an ordered set, or every step of a parallel one.
#[derive(Debug, PartialEq)]
pub enum Step {
    Create(i32),
    Delete(i32),
}

/// The steps towards `replicas` pods at revision `update` (from `partition` up), given the
/// pods by ordinal as (revision, running-and-ready, being deleted).
pub fn plan(
    pods: &BTreeMap<i32, (String, bool, bool)>,
    replicas: i32,
    update: &str,
    partition: i32,
    ordered: bool,
    rolling: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    // Creation, lowest first; ordered sets wait for every lower pod to be Running and Ready.
    for i in 0..replicas {
        match pods.get(&i) {
            None => {
                steps.push(Step::Create(i));
                if ordered {
                    return steps;
                }
            }
            Some((_, ready, deleting)) if ordered && (!ready || *deleting) => return steps,
            Some(_) => {}
        }
    }
    // Removal of ordinals beyond replicas, highest first.
    let extra: Vec<i32> = pods
        .keys()
        .rev()
        .copied()
        .filter(|i| *i >= replicas)
        .collect();
    for i in extra {
        let (_, _, deleting) = &pods[&i];
        if ordered && *deleting {
            return steps;
        }
        steps.push(Step::Delete(i));
        if ordered {
            return steps;
        }
    }
    if !steps.is_empty() {
        return steps;
    }
    // Rolling update: the highest pod at an old revision goes, once all the others are ready.
    if rolling {
        if pods
            .values()
            .any(|(_, ready, deleting)| !ready || *deleting)
        {
            return steps;
        }
        if let Some(i) = (partition..replicas)
            .rev()
            .find(|i| pods.get(i).is_some_and(|(rev, _, _)| rev != update))
        {
            steps.push(Step::Delete(i));
        }
    }
    steps
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.metadata.namespace.as_deref().unwrap_or("default");
    let name = sts.metadata.name.as_deref().unwrap_or("");
    let spec = sts
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("statefulset {name} has no spec")))?;
    let selector = selector_string(&spec.selector)?;
    if selector.is_empty() {
        return Err(Error::Invalid(format!(
            "statefulset {name} selects every pod"
        )));
    }
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let update = revision_hash(&spec.template);
    let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let owner = controller_ref("apps/v1", "StatefulSet", &sts.metadata);
    let candidates = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let owned = claim(&pods, &owner, candidates).await;
    crate::history::record(
        &ctx.client,
        &crate::history::Owner {
            kind: "StatefulSet",
            meta: &sts.metadata,
            selector: &selector,
            template: &spec.template,
            hash: &update,
            limit: spec.revision_history_limit.unwrap_or(10),
        },
        &crate::history::hashes_in_use(&owned),
    )
    .await?;
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in &owned {
        if let Some(i) = p.metadata.name.as_deref().and_then(|n| ordinal(name, n)) {
            by_ordinal.insert(i, p);
        }
    }
    // A failed pod is deleted and comes back under the same name.
    for (i, p) in &by_ordinal {
        let failed = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
        if failed && p.metadata.deletion_timestamp.is_none() {
            delete_quietly(&pods, &format!("{name}-{i}")).await?;
        }
    }
    let view: BTreeMap<i32, (String, bool, bool)> = by_ordinal
        .iter()
        .map(|(i, p)| {
            let failed = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
            (
                *i,
                (
                    revision_of(p).unwrap_or("").to_owned(),
                    running_and_ready(p),
                    p.metadata.deletion_timestamp.is_some() || failed,
                ),
            )
        })
        .collect();
    for step in plan(&view, replicas, &update, partition, ordered, rolling) {
        match step {
            Step::Create(i) => {
                let pod_name = format!("{name}-{i}");
                let index = i.to_string();
                let mut pod = pod_from_template(
                    &spec.template,
                    ns,
                    PodName::Fixed(&pod_name),
                    &owner,
                    &[
                        (REVISION_LABEL, &update),
                        ("statefulset.kubernetes.io/pod-name", &pod_name),
                        ("apps.kubernetes.io/pod-index", &index),
                    ],
                );
                if let Some(ps) = pod.spec.as_mut() {
                    ps.hostname = Some(pod_name.clone());
                    if !spec.service_name.as_deref().unwrap_or("").is_empty() {
                        ps.subdomain = spec.service_name.clone();
                    }
                }
                claims_for(&ctx.client, sts.as_ref(), &pod_name, &mut pod).await?;
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => crate::record(
                        &ctx.client,
                        "statefulset-controller",
                        sts.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        format!("create Pod {pod_name} in StatefulSet {name} successful"),
                    ),
                    // The old pod of that name is still being deleted: the next pass makes it.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Step::Delete(i) => {
                delete_quietly(&pods, &format!("{name}-{i}")).await?;
                crate::record(
                    &ctx.client,
                    "statefulset-controller",
                    sts.as_ref(),
                    "Normal",
                    "SuccessfulDelete",
                    format!("delete Pod {name}-{i} in StatefulSet {name} successful"),
                );
            }
        }
    }

    // Status.
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let live: Vec<&&Pod> = by_ordinal
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let updated = live
        .iter()
        .filter(|p| revision_of(p) == Some(update.as_str()))
        .count();
    let status = sts.status.clone().unwrap_or_default();
    let done = updated as i32 == replicas && live.len() as i32 == replicas;
    let current_revision = if done || status.current_revision.is_none() {
        update.clone()
    } else {
        status.current_revision.clone().unwrap_or_default()
    };
    let current = live
        .iter()
        .filter(|p| revision_of(p) == Some(current_revision.as_str()))
        .count();
    let st = json!({"status": {
        "observedGeneration": sts.metadata.generation,
        "replicas": live.len(),
        "readyReplicas": live.iter().filter(|p| pod_ready(p)).count(),
        "availableReplicas": live.iter().filter(|p| pod_available(p, min_ready, now).is_ok()).count(),
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update,
        "collisionCount": 0,
    }});
    Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(st))
        .await?;
    Ok(Action::requeue(Duration::from_secs(if min_ready > 0 {
        1
    } else {
        300
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(list: &[(i32, &str, bool)]) -> BTreeMap<i32, (String, bool, bool)> {
        list.iter()
            .map(|(i, r, ready)| (*i, ((*r).to_owned(), *ready, false)))
            .collect()
    }

    #[test]
    fn ordered_sets_start_one_at_a_time_after_the_previous_is_ready() {
        assert_eq!(
            plan(&pods(&[]), 3, "a", 0, true, true),
            vec![Step::Create(0)]
        );
        assert!(plan(&pods(&[(0, "a", false)]), 3, "a", 0, true, true).is_empty());
        assert_eq!(
            plan(&pods(&[(0, "a", true)]), 3, "a", 0, true, true),
            vec![Step::Create(1)]
        );
        // Parallel: all at once.
        assert_eq!(
            plan(&pods(&[]), 3, "a", 0, false, true),
            vec![Step::Create(0), Step::Create(1), Step::Create(2)]
        );
    }

    #[test]
    fn ordered_sets_stop_from_the_highest_ordinal() {
        let p = pods(&[(0, "a", true), (1, "a", true), (2, "a", true)]);
        assert_eq!(plan(&p, 1, "a", 0, true, true), vec![Step::Delete(2)]);
        assert_eq!(
            plan(&p, 1, "a", 0, false, true),
            vec![Step::Delete(2), Step::Delete(1)]
        );
    }

    #[test]
    fn rolling_updates_go_down_from_the_top_and_respect_the_partition() {
        let p = pods(&[(0, "old", true), (1, "old", true), (2, "new", true)]);
        assert_eq!(plan(&p, 3, "new", 0, true, true), vec![Step::Delete(1)]);
        assert!(plan(&p, 3, "new", 2, true, true).is_empty());
        assert!(plan(&p, 3, "new", 0, true, false).is_empty(), "OnDelete");
        let p = pods(&[(0, "old", true), (1, "old", false), (2, "new", true)]);
        assert!(
            plan(&p, 3, "new", 0, true, true).is_empty(),
            "waits for ready"
        );
    }

    #[test]
    fn ordinals_parse_only_for_their_set() {
        assert_eq!(ordinal("web", "web-3"), Some(3));
        assert_eq!(ordinal("web", "webby-3"), None);
        assert_eq!(ordinal("web", "web-x"), None);
    }
}
