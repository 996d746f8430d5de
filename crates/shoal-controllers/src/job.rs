//! Job: runs pods until `completions` succeed (at most `parallelism` at once), fails the Job
//! after more than `backoffLimit` failures (failed pods and container restarts, recreating
//! with Kubernetes' 10 s doubling back-off) or past `activeDeadlineSeconds`, suspends, and
//! deletes a finished Job after `ttlSecondsAfterFinished`.

use crate::runner::Ctx;
use crate::{
    Error, PodName, claim, controller_ref, delete_quietly, pod_active, pod_from_template,
    pod_ready, selector_string,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Runs the Job controller (forever).
pub async fn run(client: kube::Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller =
        Controller::new(jobs, watcher::Config::default()).owns(pods, watcher::Config::default());
    crate::runner::run("job", client, controller, reconcile).await;
}

const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// When a finished pod's containers finished (its creation if unknown).
fn finished_at(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum()
}

/// Whether the Job has the condition `type_` with status True.
pub fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// When the Job finished, if it has.
pub fn finished(job: &Job) -> Option<jiff::Timestamp> {
    let s = job.status.as_ref()?;
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .or(s.completion_time.as_ref().map(|t| t.0))
                .unwrap_or_else(jiff::Timestamp::now)
        })
}

fn condition(type_: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": now, "lastTransitionTime": now})
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.metadata.namespace.as_deref().unwrap_or("default");
    let name = job.metadata.name.as_deref().unwrap_or("");
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let now = jiff::Timestamp::now();
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("job {name} has no spec")))?;

    // A finished Job only waits for its time to live.
    if let Some(done) = finished(&job) {
        let Some(ttl) = spec.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let expires = done + jiff::SignedDuration::from_secs(i64::from(ttl));
        if expires <= now {
            delete_quietly(&jobs, name).await?;
            return Ok(Action::await_change());
        }
        let left = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
        return Ok(Action::requeue(left + Duration::from_millis(100)));
    }

    let selector = spec
        .selector
        .as_ref()
        .map(selector_string)
        .transpose()?
        .unwrap_or_default();
    if selector.is_empty() {
        return Err(Error::Invalid(format!("job {name} has no selector")));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let owner = controller_ref("batch/v1", "Job", &job.metadata);
    let candidates = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let owned = claim(&pods, &owner, candidates).await;
    let active: Vec<&Pod> = owned.iter().filter(|p| pod_active(p)).collect();
    let succeeded = owned
        .iter()
        .filter(|p| phase(p) == Some("Succeeded"))
        .count() as i32;
    let failed_pods: Vec<&Pod> = owned
        .iter()
        .filter(|p| phase(p) == Some("Failed"))
        .collect();
    let failed = failed_pods.len() as i32;
    let status = job.status.clone().unwrap_or_default();
    let start = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);
    let suspended = spec.suspend == Some(true);

    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let failures = failed + active.iter().map(|p| restarts(p)).sum::<i32>();

    // Is it over?
    let mut outcome: Option<Value> = None;
    let now_s = stamp(now);
    if let Some(deadline) = spec.active_deadline_seconds
        && !suspended
        && now.duration_since(start).as_secs() >= deadline
    {
        outcome = Some(condition(
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            &now_s,
        ));
    } else if failures > backoff_limit {
        outcome = Some(condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            &now_s,
        ));
    } else if match completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    } {
        outcome = Some(condition("Complete", "", "", &now_s));
    }

    let mut again = spec
        .active_deadline_seconds
        .filter(|_| !suspended)
        .map(|d| {
            let left = d - now.duration_since(start).as_secs();
            Duration::from_secs(left.max(0) as u64) + Duration::from_millis(100)
        })
        .unwrap_or(Duration::from_secs(300));

    // Pods to run now.
    let want = if outcome.is_some() || suspended {
        0
    } else {
        match completions {
            Some(c) => parallelism.min(c - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
    };
    let running = active.len() as i32;
    let mut created = 0;
    if running < want {
        // After failures, new pods wait 10 s doubling per failure (up to 6 min).
        let last_failure = failed_pods.iter().filter_map(|p| finished_at(p)).max();
        let delay = if failed == 0 {
            Duration::ZERO
        } else {
            BACKOFF_BASE
                .saturating_mul(1 << (failed - 1).clamp(0, 10))
                .min(BACKOFF_MAX)
        };
        let ready_at = last_failure
            .map(|t| t + jiff::SignedDuration::try_from(delay).unwrap_or_default())
            .unwrap_or(now);
        if ready_at <= now {
            let template = spec.template.clone();
            let prefix = format!("{name}-");
            let pod = pod_from_template(&template, ns, PodName::Generate(&prefix), &owner, &[]);
            for _ in running..want {
                crate::create_pod(&ctx.client, "job-controller", job.as_ref(), &pod).await?;
                created += 1;
            }
        } else {
            again = again.min(Duration::try_from(ready_at.duration_since(now)).unwrap_or_default());
        }
    } else if running > want {
        // Newest first.
        let mut extra = active.clone();
        extra.sort_by_key(|p| {
            std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        for p in extra.iter().take((running - want) as usize) {
            delete_quietly(&pods, p.metadata.name.as_deref().unwrap_or("")).await?;
        }
    }

    let mut conditions: Vec<Value> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .filter(|c| c["type"] != "Suspended")
        .collect();
    if suspended {
        conditions.push(json!({"type": "Suspended", "status": "True", "reason": "JobSuspended",
                               "message": "Job suspended", "lastProbeTime": now_s, "lastTransitionTime": now_s}));
    }
    let complete = outcome.as_ref().is_some_and(|c| c["type"] == "Complete");
    if let Some(c) = &outcome {
        if complete {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                &now_s,
            ));
        } else {
            let mut target = c.clone();
            target["type"] = json!("FailureTarget");
            conditions.push(target);
        }
        conditions.push(c.clone());
    }
    let mut st = json!({
        "active": if outcome.is_some() { 0 } else { running + created },
        "succeeded": succeeded,
        "failed": failed,
        "ready": active.iter().filter(|p| pod_ready(p)).count(),
        "startTime": stamp(start),
        "conditions": conditions,
    });
    if complete {
        st["completionTime"] = json!(now_s);
    }
    if suspended {
        st["startTime"] = Value::Null;
    }
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": st})),
    )
    .await?;
    if let Some(c) = &outcome {
        if complete {
            crate::record(
                &ctx.client,
                "job-controller",
                job.as_ref(),
                "Normal",
                "Completed",
                "Job completed".into(),
            );
        } else {
            let reason = c["reason"].as_str().unwrap_or("Failed");
            let message = c["message"].as_str().unwrap_or("").to_owned();
            crate::record(
                &ctx.client,
                "job-controller",
                job.as_ref(),
                "Warning",
                reason,
                message,
            );
        }
        return Ok(Action::requeue(Duration::from_millis(10)));
    }
    Ok(Action::requeue(again))
}
