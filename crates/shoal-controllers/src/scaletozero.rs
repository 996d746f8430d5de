//! Scale to zero and concurrency autoscaling for Deployments that opt in by annotation, in
//! Knative's autoscaler's role. The nodes' ingress controllers count the requests they
//! forward to such a Deployment and renew one activity Lease per node while requests arrive,
//! with the average requests in flight ([`shoal_api::serverless`]). From those Leases:
//!
//! - `shoal.dev/scale-to-zero-after: 30s` — with no request for that long (and none in
//!   flight), the Deployment is scaled to zero; the next request wakes it (the ingress holds
//!   it meanwhile). A Deployment counts as active from when this controller first sees it
//!   above zero, so one scaled up by hand or woken is given the whole period.
//! - `shoal.dev/target-concurrency: N` (with `shoal.dev/max-scale`, default 10) — replicas
//!   follow the requests in flight over all nodes divided by N, at once upwards and, as
//!   Knative's stable window, downwards only to the highest recommendation of the last
//!   [`STABLE_WINDOW`].

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use shoal_api::serverless::{
    ACTIVITY_OF, CONCURRENCY, MAX_SCALE, SCALE_TO_ZERO_AFTER, TARGET_CONCURRENCY, idle_after,
    positive,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const COMPONENT: &str = "scale-to-zero";

/// How far back scale-down recommendations are remembered.
pub const STABLE_WINDOW: Duration = Duration::from_secs(30);

/// How often a Deployment autoscaled by concurrency is looked at while it runs.
const SYNC: Duration = Duration::from_secs(2);

/// The default `shoal.dev/max-scale`.
const DEFAULT_MAX_SCALE: i32 = 10;

/// What the controller remembers per Deployment (in memory; a restart starts afresh).
#[derive(Default)]
struct Memory {
    /// When each Deployment was first seen above zero replicas.
    active_since: HashMap<String, Timestamp>,
    /// Recent concurrency recommendations, oldest first.
    recommendations: HashMap<String, Vec<(Timestamp, i32)>>,
}

/// Runs the controller (forever).
pub async fn run(client: kube::Client) {
    let memory = Arc::new(Mutex::new(Memory::default()));
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().labels(ACTIVITY_OF),
        |lease: Lease| {
            let ns = lease.metadata.namespace.clone()?;
            let name = lease.metadata.labels.as_ref()?.get(ACTIVITY_OF)?.clone();
            Some(ObjectRef::<Deployment>::new(&name).within(&ns))
        },
    );
    crate::runner::run(COMPONENT, client, controller, move |d, ctx| {
        let memory = memory.clone();
        async move { reconcile(d, ctx, &memory).await }
    })
    .await;
}

/// A Deployment's opt-in, parsed (the API server has checked the values).
struct Settings {
    idle: Option<Duration>,
    target: Option<f64>,
    max: i32,
}

fn settings(d: &Deployment) -> Option<Settings> {
    let a = d.metadata.annotations.as_ref()?;
    let idle = a.get(SCALE_TO_ZERO_AFTER).and_then(|v| idle_after(v).ok());
    let target = a.get(TARGET_CONCURRENCY).and_then(|v| positive(v).ok());
    let max = a
        .get(MAX_SCALE)
        .and_then(|v| positive(v).ok())
        .map_or(DEFAULT_MAX_SCALE, |m| m.min(f64::from(i32::MAX)) as i32);
    (idle.is_some() || target.is_some()).then_some(Settings { idle, target, max })
}

/// What the activity Leases say: the last request anywhere, and the requests in flight now
/// (summed over the Leases still within their duration).
fn activity(leases: &[Lease], now: Timestamp) -> (Option<Timestamp>, f64) {
    let mut last: Option<Timestamp> = None;
    let mut concurrency = 0.0;
    for l in leases {
        let Some(spec) = &l.spec else { continue };
        let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
            continue;
        };
        last = Some(last.map_or(renewed, |l| l.max(renewed)));
        let fresh = i64::from(spec.lease_duration_seconds.unwrap_or(4));
        if now.duration_since(renewed).as_secs() <= fresh {
            concurrency += l
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CONCURRENCY))
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(0.0);
        }
    }
    (last, concurrency)
}

/// Replicas for `concurrency` requests in flight at `target` per pod, within 1..=`max`.
pub fn for_concurrency(concurrency: f64, target: f64, max: i32) -> i32 {
    ((concurrency / target).ceil() as i32).clamp(1, max.max(1))
}

/// The replicas to scale to, given the recommendation `wanted` now and the ones remembered in
/// `recs` (which it joins): up at once, down no lower than the highest recommendation of the
/// last [`STABLE_WINDOW`].
fn stabilized(recs: &mut Vec<(Timestamp, i32)>, now: Timestamp, wanted: i32, replicas: i32) -> i32 {
    recs.push((now, wanted));
    recs.retain(|(at, _)| now.duration_since(*at).unsigned_abs() <= STABLE_WINDOW);
    let stable = recs.iter().map(|(_, r)| *r).max().unwrap_or(wanted);
    if wanted > replicas { wanted } else { stable }
}

async fn reconcile(
    d: Arc<Deployment>,
    ctx: Arc<Ctx>,
    memory: &Mutex<Memory>,
) -> Result<Action, Error> {
    let lock = || memory.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(ns), Some(name)) = (&d.metadata.namespace, &d.metadata.name) else {
        return Ok(Action::await_change());
    };
    let key = format!("{ns}/{name}");
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(settings) = settings(&d).filter(|_| d.metadata.deletion_timestamp.is_none()) else {
        let mut m = lock();
        m.active_since.remove(&key);
        m.recommendations.remove(&key);
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    if replicas == 0 {
        // Asleep until a request through the ingress wakes it.
        let mut m = lock();
        m.active_since.remove(&key);
        m.recommendations.remove(&key);
        return Ok(Action::await_change());
    }
    let active_since = *lock().active_since.entry(key.clone()).or_insert(now);
    let leases = Api::<Lease>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{ACTIVITY_OF}={name}")))
        .await?
        .items;
    let (last, concurrency) = activity(&leases, now);
    let idle_since = last.map_or(active_since, |l| l.max(active_since));
    let idle_for = now.duration_since(idle_since).unsigned_abs();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let scale = |to: i32| {
        let api = api.clone();
        async move {
            api.patch_scale(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": to}})),
            )
            .await
        }
    };
    if let Some(idle) = settings.idle
        && idle_for >= idle
        && concurrency == 0.0
    {
        scale(0).await?;
        crate::record(
            &ctx.client,
            COMPONENT,
            d.as_ref(),
            "Normal",
            "ScaledToZero",
            format!(
                "Scaled to zero after {}s without requests",
                idle_for.as_secs()
            ),
        );
        return Ok(Action::await_change());
    }
    let Some(target) = settings.target else {
        let wait = settings.idle.map_or(Duration::from_secs(3600), |i| {
            i.saturating_sub(idle_for).max(Duration::from_millis(500))
        });
        return Ok(Action::requeue(wait));
    };
    let wanted = for_concurrency(concurrency, target, settings.max);
    let next = {
        let mut m = lock();
        stabilized(
            m.recommendations.entry(key).or_default(),
            now,
            wanted,
            replicas,
        )
    };
    if next != replicas {
        scale(next).await?;
        crate::record(
            &ctx.client,
            COMPONENT,
            d.as_ref(),
            "Normal",
            "ScaledByConcurrency",
            format!(
                "New size: {next}; {concurrency:.1} requests in flight for a target of {target} per pod"
            ),
        );
    }
    Ok(Action::requeue(SYNC))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(renewed: Timestamp, concurrency: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "l", "annotations": {CONCURRENCY: concurrency}},
            "spec": {"renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(renewed),
                "leaseDurationSeconds": 4},
        }))
        .unwrap()
    }

    #[test]
    fn fresh_leases_add_their_concurrency_and_the_newest_is_the_last_request() {
        // Micro-second precision, as a Lease's MicroTime keeps it.
        let now = Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap();
        let old = now - k8s_openapi::jiff::SignedDuration::from_secs(60);
        let recent = now - k8s_openapi::jiff::SignedDuration::from_secs(1);
        let (last, c) = activity(
            &[lease(old, "7"), lease(recent, "1.5"), lease(now, "2")],
            now,
        );
        assert_eq!(last, Some(now));
        assert!((c - 3.5).abs() < 1e-9, "{c}");
        assert_eq!(activity(&[], now), (None, 0.0));
    }

    #[test]
    fn replicas_go_up_at_once_and_down_only_past_the_stable_window() {
        let t0 = Timestamp::now();
        let at = |s: i64| t0 + k8s_openapi::jiff::SignedDuration::from_secs(s);
        let mut recs = Vec::new();
        assert_eq!(stabilized(&mut recs, at(0), 4, 1), 4);
        // Load falls: held at 4 while the window remembers it.
        assert_eq!(stabilized(&mut recs, at(10), 1, 4), 4);
        assert_eq!(stabilized(&mut recs, at(29), 2, 4), 4);
        // 4 is out of the window: down to the highest since, 2.
        assert_eq!(stabilized(&mut recs, at(31), 1, 4), 2);
        assert_eq!(stabilized(&mut recs, at(61), 1, 2), 1);
    }

    #[test]
    fn replicas_follow_concurrency_within_bounds() {
        assert_eq!(for_concurrency(0.0, 10.0, 5), 1);
        assert_eq!(for_concurrency(25.0, 10.0, 5), 3);
        assert_eq!(for_concurrency(300.0, 10.0, 5), 5);
        assert_eq!(for_concurrency(10.0, 10.0, 5), 1);
    }
}
