//! The Deployment's status: replica counts, and the `Available` and `Progressing` conditions
//! (with the progress deadline) that `kubectl rollout status` and `kubectl wait` read.

use super::{Ctx, Progress, Want, now, rs_name, status_of};
use crate::Error;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;

/// Writes the Deployment's status and its `Available` and `Progressing` conditions; returns
/// when to look again (the progress deadline).
pub(super) async fn report(
    ctx: &Ctx,
    want: &Want<'_>,
    current: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    progress_reason: Progress,
) -> Result<Duration, Error> {
    let (d, spec, replicas, paused) = (want.d, want.spec, want.replicas, want.paused);
    let max_unavailable = want.max_unavailable;
    let new_name = new_rs.map(|r| rs_name(r).to_owned());
    let (mut total, mut ready, mut available) = (0, 0, 0);
    let mut updated = 0;
    for r in current {
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
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), want.ns);
    deployments
        .patch_status(want.name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(requeue)
}
