//! CronJob: creates a Job at each time of `schedule` (standard five-field cron, in
//! `timeZone` or UTC), honouring `startingDeadlineSeconds`, `concurrencyPolicy` (Allow, Forbid,
//! Replace) and `suspend`, and keeps `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`
//! finished Jobs.

use crate::job::{finished, has_condition};
use crate::runner::Ctx;
use crate::{Error, controller_ref, controller_uid, delete_quietly};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs the CronJob controller (forever).
pub async fn run(client: kube::Client) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let controller = Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default());
    crate::runner::run("cronjob", client, controller, reconcile).await;
}

/// Parses a schedule as Kubernetes does: five fields or a `@hourly`-style descriptor.
pub fn parse_schedule(s: &str) -> Result<Cron, Error> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| Error::Invalid(format!("unparseable schedule {s:?}: {e}")))
}

/// The latest time of `cron` in `(after, now]`, and the next one after `now`.
pub fn due(
    cron: &Cron,
    after: &jiff::Zoned,
    now: &jiff::Zoned,
) -> (Option<jiff::Zoned>, Option<jiff::Zoned>) {
    let latest = cron
        .find_previous_occurrence(now, true)
        .ok()
        .filter(|t| t > after);
    let next = cron.find_next_occurrence(now, false).ok();
    (latest, next)
}

fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn job_ref(j: &ObjectMeta) -> serde_json::Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": j.name, "namespace": j.namespace,
           "uid": j.uid, "resourceVersion": j.resource_version})
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cj.metadata.namespace.as_deref().unwrap_or("default");
    let name = cj.metadata.name.as_deref().unwrap_or("");
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let spec = cj
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("cronjob {name} has no spec")))?;
    let cron = parse_schedule(&spec.schedule)?;
    let tz = match spec.time_zone.as_deref() {
        Some(z) => jiff::tz::TimeZone::get(z)
            .map_err(|e| Error::Invalid(format!("unknown time zone {z:?}: {e}")))?,
        None => jiff::tz::TimeZone::UTC,
    };
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);

    let mut mine: Vec<Job> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| controller_uid(&j.metadata) == Some(uid.as_str()))
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    mine.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));

    // History: keep the newest finished Jobs of each kind.
    for (failed, limit) in [
        (false, spec.successful_jobs_history_limit.unwrap_or(3)),
        (true, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = mine
            .iter()
            .filter(|j| finished(j).is_some() && has_condition(j, "Failed") == failed)
            .collect();
        let limit = limit.max(0) as usize;
        if done.len() > limit {
            for j in &done[..done.len() - limit] {
                delete_quietly(&jobs, j.metadata.name.as_deref().unwrap_or("")).await?;
            }
        }
    }
    let active: Vec<&Job> = mine.iter().filter(|j| finished(j).is_none()).collect();
    let last_success = mine
        .iter()
        .filter(|j| has_condition(j, "Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max();

    let now = jiff::Timestamp::now().to_zoned(tz.clone());
    let status = cj.status.clone().unwrap_or_default();
    let since = status
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(jiff::Timestamp::now)
        .to_zoned(tz);
    let (scheduled, next) = due(&cron, &since, &now);
    if next.is_none() {
        // A schedule that parses but never comes (the 31st of February): Kubernetes' words.
        crate::record(
            &ctx.client,
            "cronjob-controller",
            cj.as_ref(),
            "Warning",
            "InvalidSchedule",
            format!(
                "invalid schedule: {} : time difference between two schedules is less than 1 second",
                spec.schedule
            ),
        );
    }
    let mut st = json!({
        "active": active.iter().map(|j| job_ref(&j.metadata)).collect::<Vec<_>>(),
    });
    if let Some(t) = last_success {
        st["lastSuccessfulTime"] = json!(stamp(t));
    }
    let requeue = next
        .as_ref()
        .map(|n| {
            Duration::try_from(n.timestamp().duration_since(now.timestamp())).unwrap_or_default()
                + Duration::from_millis(100)
        })
        .unwrap_or(Duration::from_secs(3600));

    let run_at = scheduled
        .filter(|_| spec.suspend != Some(true))
        .filter(|t| {
            // Too late to start this one?
            spec.starting_deadline_seconds
                .is_none_or(|d| now.timestamp().duration_since(t.timestamp()).as_secs() <= d)
        });
    if let Some(t) = run_at {
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active.is_empty() {
            // Skipped; the next time is tried when it comes (or when the active Job ends).
            cronjobs
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": st})),
                )
                .await?;
            return Ok(Action::requeue(requeue));
        }
        if policy == "Replace" {
            for j in &active {
                delete_quietly(&jobs, j.metadata.name.as_deref().unwrap_or("")).await?;
            }
            st["active"] = json!([]);
        }
        let template = spec.job_template.clone();
        let tmeta = template.metadata.unwrap_or_default();
        let mut annotations = tmeta.annotations.unwrap_or_default();
        annotations.insert(
            "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
            t.timestamp().to_string(),
        );
        let job = Job {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{}", t.timestamp().as_second() / 60)),
                namespace: Some(ns.into()),
                labels: tmeta.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref("batch/v1", "CronJob", &cj.metadata)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let job_name = created.metadata.name.clone().unwrap_or_default();
                crate::record(
                    &ctx.client,
                    "cronjob-controller",
                    cj.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    format!("Created job {job_name}"),
                );
                if let Some(a) = st["active"].as_array_mut() {
                    a.push(job_ref(&created.metadata));
                }
            }
            // Created by an earlier pass whose status write was lost.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        st["lastScheduleTime"] = json!(stamp(t.timestamp()));
    }
    cronjobs
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": st})),
        )
        .await?;
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Zoned {
        s.parse::<jiff::Timestamp>()
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
    }

    #[test]
    fn the_latest_missed_time_runs_and_the_next_is_known() {
        let every_minute = parse_schedule("*/1 * * * *").unwrap();
        let (due_at, next) = due(
            &every_minute,
            &at("2026-01-01T00:00:30Z"),
            &at("2026-01-01T00:03:10Z"),
        );
        assert_eq!(
            due_at.unwrap().timestamp(),
            at("2026-01-01T00:03:00Z").timestamp()
        );
        assert_eq!(
            next.unwrap().timestamp(),
            at("2026-01-01T00:04:00Z").timestamp()
        );
        let (due_at, _) = due(
            &every_minute,
            &at("2026-01-01T00:03:00Z"),
            &at("2026-01-01T00:03:59Z"),
        );
        assert!(due_at.is_none());
    }

    #[test]
    fn schedules_parse_like_kubernetes() {
        assert!(parse_schedule("@hourly").is_ok());
        assert!(parse_schedule("0 9 * * MON-FRI").is_ok());
        assert!(parse_schedule("* * * * * *").is_err(), "six fields");
        assert!(parse_schedule("61 * * * *").is_err());
    }

    #[test]
    fn a_schedule_that_never_fires_has_no_next_time() {
        let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
        let never = parse_schedule("59 23 31 2 *").expect("parses, as in Kubernetes");
        assert_eq!(due(&never, &now, &now).1, None);
        let daily = parse_schedule("0 0 * * *").unwrap();
        assert!(due(&daily, &now, &now).1.is_some());
    }
}
