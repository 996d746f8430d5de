//! The horizontal pod autoscaler: every sync period, each HorizontalPodAutoscaler
//! (`autoscaling/v2`) reads its target's `scale` subresource (Deployments, ReplicaSets,
//! StatefulSets, ReplicationControllers, custom resources with a scale subresource), the
//! resource metrics of the pods its selector selects (`metrics.k8s.io`, which the API server
//! serves from the kubelets' CPU and memory accounting), and sets the replica count as
//! Kubernetes' controller does: the replica calculator's ratio against the target with a
//! tolerance of 10%, unready and missing pods treated as it treats them, the largest proposal
//! over all metrics, then stabilization and rate limits (`behavior`, or without it a five
//! minute scale-down window and at most doubling), with the same conditions (`AbleToScale`,
//! `ScalingActive`, `ScalingLimited`) and events (`SuccessfulRescale`, `FailedGetScale`,
//! `FailedGetResourceMetric`, ...).
//!
//! Only resource metrics (`Resource` and `ContainerResource`) exist on Shoal; `Pods`, `Object`
//! and `External` metrics need a custom or external metrics API, which is not served, and fail
//! as they do in a cluster without one.

use crate::runner::Ctx;
use crate::{Error, record};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, MetricSpec, MetricTarget,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// The controller's settings (kube-controller-manager's `--horizontal-pod-autoscaler-*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often each autoscaler is reconciled.
    pub sync_period: Duration,
    /// The scale-down stabilization window of autoscalers whose behavior does not set one.
    pub downscale_stabilization: Duration,
    /// How far from 1.0 the usage ratio must be before the replica count changes.
    pub tolerance: f64,
    /// How long after a pod starts its CPU samples may be skipped (see [`group_pods`]).
    pub cpu_initialization_period: Duration,
    /// How long after a pod starts a not-ready pod counts as not yet ready, not failing.
    pub initial_readiness_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

/// One recommendation, kept for stabilization.
#[derive(Debug, Clone, Copy)]
struct Recommendation {
    replicas: i32,
    at: jiff::Timestamp,
}

/// One change of the replica count, kept for the rate limits of `behavior`.
#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i32,
    at: jiff::Timestamp,
}

/// What the controller remembers per autoscaler between syncs (in memory, as Kubernetes').
#[derive(Default)]
struct Memory {
    recommendations: HashMap<String, Vec<Recommendation>>,
    scale_ups: HashMap<String, Vec<ScaleEvent>>,
    scale_downs: HashMap<String, Vec<ScaleEvent>>,
    /// Scale targets' API resources, found by discovery.
    resources: HashMap<(String, String), ApiResource>,
    /// When each autoscaler was last synced.
    synced: HashMap<String, std::time::Instant>,
}

/// Runs the autoscaler controller (forever).
pub async fn run(client: kube::Client, settings: Settings) {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    let controller = Controller::new(hpas, watcher::Config::default());
    let memory = Arc::new(Mutex::new(Memory::default()));
    let settings = Arc::new(settings);
    crate::runner::run(COMPONENT, client, controller, move |hpa, ctx| {
        let memory = memory.clone();
        let settings = settings.clone();
        async move { reconcile(hpa, ctx, memory, settings).await }
    })
    .await;
}

fn key(hpa: &HorizontalPodAutoscaler) -> String {
    format!(
        "{}/{}",
        hpa.metadata.namespace.as_deref().unwrap_or("default"),
        hpa.metadata.name.as_deref().unwrap_or("")
    )
}

fn lock(m: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The conditions being written, set as Kubernetes' `setCondition` sets them: the transition
/// time moves only when the status flips.
struct Conditions {
    list: Vec<Value>,
    now: String,
}

impl Conditions {
    fn set(&mut self, ty: &str, status: bool, reason: &str, message: String) {
        let status = if status { "True" } else { "False" };
        let existing = self.list.iter_mut().find(|c| c["type"] == ty);
        match existing {
            Some(c) => {
                if c["status"] != status {
                    c["lastTransitionTime"] = json!(self.now);
                }
                c["status"] = json!(status);
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            None => self.list.push(json!({"type": ty, "status": status,
                "lastTransitionTime": self.now, "reason": reason, "message": message})),
        }
    }
}

/// The scale target's API resource (from discovery, remembered).
async fn target_resource(
    client: &kube::Client,
    memory: &Mutex<Memory>,
    api_version: &str,
    kind: &str,
) -> Result<ApiResource, String> {
    let k = (api_version.to_owned(), kind.to_owned());
    if let Some(ar) = lock(memory).resources.get(&k) {
        return Ok(ar.clone());
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("unable to determine resource for scale target reference: {e}"))?;
    lock(memory).resources.insert(k, ar.clone());
    Ok(ar)
}

/// A metric's proposal.
struct Proposal {
    replicas: i32,
    /// `cpu resource utilization (percentage of request)`.
    name: String,
    status: Value,
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    ctx: Arc<Ctx>,
    memory: Arc<Mutex<Memory>>,
    settings: Arc<Settings>,
) -> Result<Action, Error> {
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = key(&hpa);
    // At most one sync per period, as Kubernetes' queue rate-limits autoscalers: a change to
    // one (its own status write, too) waits for its next turn.
    {
        let mut mem = lock(&memory);
        let since = mem.synced.get(&key).map(|t| t.elapsed());
        if let Some(wait) = since.and_then(|s| settings.sync_period.checked_sub(s))
            && wait > Duration::from_millis(50)
        {
            return Ok(Action::requeue(wait));
        }
        mem.synced.insert(key.clone(), std::time::Instant::now());
        // Autoscalers not synced for a long while are gone: forget them.
        let forget_after = settings.sync_period * 20 + Duration::from_secs(600);
        if mem.synced.values().any(|t| t.elapsed() > forget_after) {
            mem.synced.retain(|_, t| t.elapsed() <= forget_after);
            let Memory {
                synced,
                recommendations,
                scale_ups,
                scale_downs,
                ..
            } = &mut *mem;
            recommendations.retain(|k, _| synced.contains_key(k));
            scale_ups.retain(|k, _| synced.contains_key(k));
            scale_downs.retain(|k, _| synced.contains_key(k));
        }
    }
    let ns = hpa.metadata.namespace.as_deref().unwrap_or("default");
    let name = hpa.metadata.name.as_deref().unwrap_or("");
    let spec = hpa.spec.clone().unwrap_or_default();
    let old_status = hpa.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let mut conditions = Conditions {
        list: serde_json::to_value(old_status.conditions.clone().unwrap_or_default())
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default(),
        now: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let write = |status: Value| {
        let hpas = hpas.clone();
        async move {
            hpas.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        }
    };
    let target = &spec.scale_target_ref;
    let reference = format!("{}/{}", target.kind, target.name);
    // The target's scale.
    let scale = async {
        let ar = target_resource(
            &ctx.client,
            &memory,
            target.api_version.as_deref().unwrap_or(""),
            &target.kind,
        )
        .await?;
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        let scale = api
            .get_scale(&target.name)
            .await
            .map_err(|e| format!("{e}"))?;
        Ok::<_, String>((api, scale))
    }
    .await;
    let (api, scale) = match scale {
        Ok(s) => s,
        Err(e) => {
            record(
                &ctx.client,
                COMPONENT,
                hpa.as_ref(),
                "Warning",
                "FailedGetScale",
                e.clone(),
            );
            conditions.set(
                "AbleToScale",
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e}"),
            );
            write(json!({"observedGeneration": hpa.metadata.generation,
                "currentReplicas": old_status.current_replicas.unwrap_or(0),
                "desiredReplicas": old_status.desired_replicas,
                "conditions": conditions.list}))
            .await?;
            return Ok(Action::requeue(settings.sync_period));
        }
    };
    conditions.set(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    lock(&memory)
        .recommendations
        .entry(key.clone())
        .or_insert_with(|| {
            vec![Recommendation {
                replicas: current,
                at: now,
            }]
        });
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut desired = 0;
    let mut reason = String::new();
    let mut current_metrics: Option<Vec<Value>> = None;
    if current == 0 {
        // With `minReplicas: 0` (scale to zero), the next request through the ingress scales
        // the target back up; nothing can be measured meanwhile.
        let message = if min == 0 {
            "the target is scaled to zero; the next request through the ingress scales it up"
        } else {
            "scaling is disabled since the replica count of the target is zero"
        };
        conditions.set("ScalingActive", false, "ScalingDisabled", message.into());
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        let metrics = spec.metrics.clone().unwrap_or_default();
        let mut statuses = Vec::new();
        let mut best: Option<Proposal> = None;
        let mut first_error: Option<String> = None;
        let mut invalid = 0;
        for m in &metrics {
            match proposal(&ctx.client, ns, &selector, current, m, &settings).await {
                Ok(p) => {
                    statuses.push(p.status.clone());
                    if best.as_ref().is_none_or(|b| p.replicas > b.replicas) {
                        best = Some(p);
                    }
                }
                Err(MetricError { reason, message }) => {
                    invalid += 1;
                    statuses.push(json!({"type": ""}));
                    record(
                        &ctx.client,
                        COMPONENT,
                        hpa.as_ref(),
                        "Warning",
                        reason,
                        message.clone(),
                    );
                    conditions.set(
                        "ScalingActive",
                        false,
                        reason,
                        format!("the HPA was unable to compute the replica count: {message}"),
                    );
                    first_error.get_or_insert(message);
                }
            }
        }
        statuses.retain(|s| s["type"] != "");
        current_metrics = (!statuses.is_empty()).then_some(statuses);
        // Some metric failed and none succeeded, or a failing one might have asked for more
        // on the way up: Kubernetes does not scale on partial information downwards.
        let Some(best) = best.filter(|b| invalid == 0 || b.replicas > current) else {
            let message = format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                metrics.len(),
                first_error.unwrap_or_default()
            );
            record(
                &ctx.client,
                COMPONENT,
                hpa.as_ref(),
                "Warning",
                "FailedComputeMetricsReplicas",
                message,
            );
            write(json!({"observedGeneration": hpa.metadata.generation,
                "currentReplicas": current,
                "desiredReplicas": old_status.desired_replicas,
                "currentMetrics": current_metrics,
                "conditions": conditions.list}))
            .await?;
            return Ok(Action::requeue(settings.sync_period));
        };
        if invalid == 0 {
            conditions.set(
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!(
                    "the HPA was able to successfully calculate a replica count from {}",
                    best.name
                ),
            );
        }
        desired = best.replicas;
        if desired > current {
            reason = format!("{} above target", best.name);
        } else if desired < current {
            reason = "All metrics below target".into();
        }
        let mut mem = lock(&memory);
        desired = match &spec.behavior {
            None => normalize(
                &mut mem,
                &key,
                &mut conditions,
                current,
                desired,
                min,
                max,
                settings.downscale_stabilization,
                now,
            ),
            Some(b) => {
                let up = rules_or_default(b.scale_up.as_ref(), true, &settings);
                let down = rules_or_default(b.scale_down.as_ref(), false, &settings);
                normalize_with_behavior(
                    &mut mem,
                    &key,
                    &mut conditions,
                    Bounds {
                        current,
                        desired,
                        min,
                        max,
                    },
                    &up,
                    &down,
                    now,
                )
            }
        };
    }
    // Unchanged when scaling is disabled (`desired` stayed at the current zero).
    let rescale = desired != current;
    let mut last_scale_time = old_status
        .last_scale_time
        .as_ref()
        .map(|t| json!(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
    if rescale {
        let patched = api
            .patch_scale(
                &target.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": desired}})),
            )
            .await;
        if let Err(e) = patched {
            record(
                &ctx.client,
                COMPONENT,
                hpa.as_ref(),
                "Warning",
                "FailedRescale",
                format!("New size: {desired}; reason: {reason}; error: {e}"),
            );
            conditions.set(
                "AbleToScale",
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {e}"),
            );
            write(json!({"observedGeneration": hpa.metadata.generation,
                "currentReplicas": current, "desiredReplicas": old_status.desired_replicas,
                "currentMetrics": current_metrics, "conditions": conditions.list}))
            .await?;
            return Err(Error::Kube(e));
        }
        conditions.set(
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
        record(
            &ctx.client,
            COMPONENT,
            hpa.as_ref(),
            "Normal",
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {reason}"),
        );
        let mut mem = lock(&memory);
        if spec.behavior.is_some() {
            let at = now;
            let (events, change) = if desired > current {
                (
                    mem.scale_ups.entry(key.clone()).or_default(),
                    desired - current,
                )
            } else {
                (
                    mem.scale_downs.entry(key.clone()).or_default(),
                    current - desired,
                )
            };
            events.push(ScaleEvent { change, at });
            // Older than any policy's period: no longer counted.
            events.retain(|e| now.duration_since(e.at).as_secs() <= 1800);
        }
        last_scale_time = Some(json!(conditions.now));
        tracing::info!(hpa = %key, target = %reference, from = current, to = desired, reason = %reason, "rescaled");
    } else {
        desired = current;
    }
    let mut status = json!({
        "observedGeneration": hpa.metadata.generation,
        "lastScaleTime": last_scale_time,
        "currentReplicas": current,
        "desiredReplicas": desired,
        "conditions": conditions.list,
    });
    status["currentMetrics"] = json!(current_metrics);
    write(status).await?;
    Ok(Action::requeue(settings.sync_period))
}

/// Scaling rules with Kubernetes' defaults where `behavior` leaves them out (the API server
/// fills them in; an object written before that, or by another server, may lack them).
fn rules_or_default(r: Option<&HPAScalingRules>, up: bool, settings: &Settings) -> HPAScalingRules {
    let mut out = r.cloned().unwrap_or_default();
    if out.select_policy.is_none() {
        out.select_policy = Some("Max".into());
    }
    if out.stabilization_window_seconds.is_none() {
        out.stabilization_window_seconds = Some(if up {
            0
        } else {
            settings.downscale_stabilization.as_secs() as i32
        });
    }
    if out.policies.as_ref().is_none_or(Vec::is_empty) {
        let policy = |ty: &str, value| k8s_openapi::api::autoscaling::v2::HPAScalingPolicy {
            type_: ty.into(),
            value,
            period_seconds: 15,
        };
        out.policies = Some(if up {
            vec![policy("Pods", 4), policy("Percent", 100)]
        } else {
            vec![policy("Percent", 100)]
        });
    }
    out
}

/// Why one metric gave no proposal: the event reason and its message.
struct MetricError {
    reason: &'static str,
    message: String,
}

/// A metric's proposal: how many replicas it asks for, its name for messages, its status.
async fn proposal(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    current: i32,
    m: &MetricSpec,
    settings: &Settings,
) -> Result<Proposal, MetricError> {
    let (resource, container, target, key) = match (
        m.type_.as_str(),
        &m.resource,
        &m.container_resource,
    ) {
        ("Resource", Some(r), _) => (r.name.clone(), None, r.target.clone(), "resource"),
        ("ContainerResource", _, Some(r)) => (
            r.name.clone(),
            Some(r.container.clone()),
            r.target.clone(),
            "containerResource",
        ),
        (ty, _, _) => {
            let (reason, what) = match ty {
                "Pods" => ("FailedGetPodsMetric", "pods"),
                "Object" => ("FailedGetObjectMetric", "object"),
                _ => ("FailedGetExternalMetric", "external"),
            };
            return Err(MetricError {
                reason,
                message: format!(
                    "unable to get {what} metric: the custom and external metrics APIs are not served on Shoal"
                ),
            });
        }
    };
    let failed = |inner: String| {
        let reason = if key == "resource" {
            "FailedGetResourceMetric"
        } else {
            "FailedGetContainerResourceMetric"
        };
        let what = if target.type_ == "Utilization" {
            format!("failed to get {resource} utilization: {inner}")
        } else {
            format!("failed to get {resource} usage: {inner}")
        };
        MetricError {
            reason,
            message: what,
        }
    };
    let usage = pod_usage(client, ns, selector, &resource, container.as_deref())
        .await
        .map_err(failed)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            failed(format!(
                "unable to get pods while calculating replica count: {e}"
            ))
        })?
        .items;
    let input = Replicas {
        current,
        pods: &pods,
        usage: &usage,
        resource: &resource,
        container: container.as_deref(),
        now: jiff::Timestamp::now(),
        settings,
    };
    let name_of = |what: &str| match &container {
        Some(c) => format!("{resource} container resource {what} in container {c}"),
        None => format!("{resource} resource {what}"),
    };
    let (replicas, current_value, name) = match target_kind(&target) {
        Target::Utilization(pct) => {
            let (r, util, avg) = utilization_replicas(&input, pct).map_err(failed)?;
            (
                r,
                json!({"averageUtilization": util, "averageValue": milli_quantity(avg)}),
                name_of("utilization (percentage of request)"),
            )
        }
        Target::AverageValue(milli) => {
            let (r, avg) = average_value_replicas(&input, milli).map_err(failed)?;
            (r, json!({"averageValue": milli_quantity(avg)}), name_of(""))
        }
    };
    let mut source = json!({"name": resource, "current": current_value});
    if let Some(c) = &container {
        source["container"] = json!(c);
    }
    Ok(Proposal {
        replicas,
        name: name.trim_end().to_owned(),
        status: json!({"type": m.type_, key: source}),
    })
}

enum Target {
    Utilization(i64),
    AverageValue(i64),
}

fn target_kind(t: &MetricTarget) -> Target {
    match (&t.average_utilization, &t.average_value) {
        (Some(u), _) => Target::Utilization(i64::from(*u)),
        (None, Some(q)) => Target::AverageValue(milli(&q.0)),
        (None, None) => Target::Utilization(80),
    }
}

/// A quantity in thousandths (Kubernetes' `MilliValue`).
fn milli(q: &str) -> i64 {
    shoal_api::quantity::parse(q).map_or(0, |v| (v * 1000.0).round() as i64)
}

/// A value in thousandths as Kubernetes prints `NewMilliQuantity(v, DecimalSI)`: `150m`, `2`,
/// `64M`.
fn milli_quantity(m: i64) -> String {
    if m % 1000 != 0 {
        return format!("{m}m");
    }
    let mut v = m / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while v != 0 && v % 1000 == 0 && suffix < SUFFIXES.len() - 1 {
        v /= 1000;
        suffix += 1;
    }
    format!("{v}{}", SUFFIXES[suffix])
}

/// One pod's usage (thousandths of the resource) with when and over what window it was
/// measured.
#[derive(Debug, Clone, Copy)]
struct Usage {
    value: i64,
    at: jiff::Timestamp,
    window: Duration,
}

/// The usage of `resource` (in `container` only, if given) of each pod `selector` selects,
/// from `metrics.k8s.io`.
async fn pod_usage(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<HashMap<String, Usage>, String> {
    let ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            format!("unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}")
        })?;
    if list.items.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
        ));
    }
    let mut out = HashMap::new();
    for pm in list.items {
        let Some(name) = pm.metadata.name.clone() else {
            continue;
        };
        let mut sum = 0;
        let mut found = false;
        for c in pm.data["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|want| c["name"] != want) {
                continue;
            }
            if let Some(q) = c["usage"][resource].as_str() {
                sum += milli(q);
                found = true;
            }
        }
        if !found {
            continue;
        }
        let at = pm.data["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let window = pm.data["window"]
            .as_str()
            .and_then(|w| w.parse::<jiff::SignedDuration>().ok())
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(5));
        out.insert(
            name,
            Usage {
                value: sum,
                at,
                window,
            },
        );
    }
    Ok(out)
}

/// What the replica calculator works from.
struct Replicas<'a> {
    current: i32,
    pods: &'a [Pod],
    usage: &'a HashMap<String, Usage>,
    resource: &'a str,
    container: Option<&'a str>,
    now: jiff::Timestamp,
    settings: &'a Settings,
}

/// Pods sorted as the replica calculator sorts them: ready with metrics (their count), not
/// ready (or not yet measured since ready), without metrics, and ignored (deleted, failed).
#[derive(Debug, Default, PartialEq)]
struct Groups {
    ready: usize,
    unready: Vec<String>,
    missing: Vec<String>,
    ignored: Vec<String>,
}

fn group_pods(r: &Replicas<'_>) -> Groups {
    let mut g = Groups::default();
    for p in r.pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let phase = status.phase.as_deref().unwrap_or("Pending");
        if p.metadata.deletion_timestamp.is_some() || phase == "Failed" {
            g.ignored.push(name);
            continue;
        }
        if phase == "Pending" {
            g.unready.push(name);
            continue;
        }
        let Some(usage) = r.usage.get(&name) else {
            g.missing.push(name);
            continue;
        };
        if r.resource == "cpu" {
            let ready = status
                .conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            let unready = match (ready, &status.start_time) {
                (Some(cond), Some(start)) => {
                    let start = start.0;
                    let since = cond.last_transition_time.as_ref().map_or(start, |t| t.0);
                    let init = r.settings.cpu_initialization_period;
                    if start + init > r.now {
                        // Starting: skip the sample if not ready, or if it was measured
                        // before one window had passed since the pod became ready.
                        cond.status == "False" || usage.at < since + usage.window
                    } else {
                        // Never ready since starting.
                        cond.status == "False" && start + r.settings.initial_readiness_delay > since
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.push(name);
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// Each pod's request of the resource (thousandths), summed over its containers (or the one
/// container asked about).
fn requests(r: &Replicas<'_>) -> Result<HashMap<String, i64>, String> {
    let mut out = HashMap::new();
    for p in r.pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let mut sum = 0;
        for c in p
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[])
        {
            if r.container.is_some_and(|want| c.name != want) {
                continue;
            }
            match c
                .resources
                .as_ref()
                .and_then(|res| res.requests.as_ref())
                .and_then(|req| req.get(r.resource))
            {
                Some(q) => sum += milli(&q.0),
                None => {
                    return Err(format!(
                        "missing request for {} in container {} of Pod {name}",
                        r.resource, c.name
                    ));
                }
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

/// `(usage ratio, utilization %, average usage)` of the pods in `metrics` against their
/// requests (Kubernetes' `GetResourceUtilizationRatio`).
fn utilization_ratio(
    metrics: &HashMap<String, i64>,
    requests: &HashMap<String, i64>,
    target_pct: i64,
) -> Result<(f64, i64, i64), String> {
    let mut used = 0i64;
    let mut requested = 0i64;
    let mut counted = 0i64;
    for (pod, v) in metrics {
        if let Some(req) = requests.get(pod) {
            used += v;
            requested += req;
            counted += 1;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let util = used * 100 / requested;
    Ok((util as f64 / target_pct as f64, util, used / counted.max(1)))
}

/// The replica count the pods' samples ask for (Kubernetes' replica calculator, shared by
/// every kind of target): `ratio_of` is the usage ratio of a set of samples against the
/// target, `missing_as` what a pod without samples counts as when scaling down. Returns the
/// count and the samples of the pods that counted.
fn replicas_for(
    r: &Replicas<'_>,
    ratio_of: impl Fn(&HashMap<String, i64>) -> Result<f64, String>,
    missing_as: impl Fn(&str) -> i64,
) -> Result<(i32, HashMap<String, i64>), String> {
    if r.pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group_pods(r);
    let measured: HashMap<String, i64> = r
        .usage
        .iter()
        .filter(|(p, _)| !g.ignored.contains(p) && !g.unready.contains(p))
        .map(|(p, u)| (p.clone(), u.value))
        .collect();
    if measured.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let ratio = ratio_of(&measured)?;
    let tolerance = r.settings.tolerance;
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok((r.current, measured));
        }
        return Ok(((ratio * g.ready as f64).ceil() as i32, measured));
    }
    let mut metrics = measured.clone();
    // Scaling down, a pod without samples counts as at its target; scaling up, as idle.
    for p in &g.missing {
        metrics.insert(p.clone(), if ratio < 1.0 { missing_as(p) } else { 0 });
    }
    if scale_up_with_unready {
        for p in &g.unready {
            metrics.insert(p.clone(), 0);
        }
    }
    let new_ratio = ratio_of(&metrics)?;
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    let unchanged = (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
        || (new_ratio < 1.0 && replicas > r.current)
        || (new_ratio > 1.0 && replicas < r.current);
    Ok((if unchanged { r.current } else { replicas }, measured))
}

/// The replica count for a utilization target (Kubernetes' `GetResourceReplicas`):
/// `(replicas, utilization %, average usage)`.
fn utilization_replicas(r: &Replicas<'_>, target_pct: i64) -> Result<(i32, i64, i64), String> {
    let requests = requests(r)?;
    let (replicas, measured) = replicas_for(
        r,
        |m| utilization_ratio(m, &requests, target_pct).map(|(ratio, _, _)| ratio),
        // At its target, and at least its request.
        |p| requests.get(p).copied().unwrap_or(0) * target_pct.max(100) / 100,
    )?;
    let (_, util, avg) = utilization_ratio(&measured, &requests, target_pct)?;
    Ok((replicas, util, avg))
}

/// The replica count for an average value target (Kubernetes' `GetRawResourceReplicas`,
/// through `calcPlainMetricReplicas`): `(replicas, average usage)`.
fn average_value_replicas(r: &Replicas<'_>, target: i64) -> Result<(i32, i64), String> {
    if target <= 0 {
        return Err("the target value must be positive".into());
    }
    let average = |m: &HashMap<String, i64>| m.values().sum::<i64>() / m.len().max(1) as i64;
    let (replicas, measured) = replicas_for(
        r,
        |m| {
            let sum: i64 = m.values().sum();
            Ok(sum as f64 / m.len().max(1) as f64 / target as f64)
        },
        |_| target,
    )?;
    Ok((replicas, average(&measured)))
}

/// Without `behavior`: the highest recommendation of the scale-down window, then the bounds
/// and at most doubling (at least four) per sync (Kubernetes' `normalizeDesiredReplicas`).
#[allow(clippy::too_many_arguments)]
fn normalize(
    mem: &mut Memory,
    key: &str,
    conditions: &mut Conditions,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    window: Duration,
    now: jiff::Timestamp,
) -> i32 {
    let recs = mem.recommendations.entry(key.to_owned()).or_default();
    let cutoff = now - window;
    let mut stabilized = desired;
    for r in recs.iter() {
        if r.at >= cutoff && r.replicas > stabilized {
            stabilized = r.replicas;
        }
    }
    remember(recs, desired, now, |r| r.at < cutoff);
    if stabilized != desired {
        conditions.set(
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
        );
    } else {
        conditions.set(
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size".into(),
        );
    }
    let scale_up_limit = (2 * current).max(4);
    let (upper, upper_reason, upper_message) = if max > scale_up_limit {
        (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    };
    let (out, reason, message) = if stabilized < min {
        (
            min,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if stabilized > upper {
        (upper, upper_reason, upper_message)
    } else {
        (
            stabilized,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    conditions.set("ScalingLimited", out != stabilized, reason, message.into());
    out
}

/// Records a recommendation, reusing the slot of one `stale` says has aged out.
fn remember(
    recs: &mut Vec<Recommendation>,
    replicas: i32,
    now: jiff::Timestamp,
    stale: impl Fn(&Recommendation) -> bool,
) {
    let rec = Recommendation { replicas, at: now };
    match recs.iter_mut().rev().find(|r| stale(r)) {
        Some(slot) => *slot = rec,
        None => recs.push(rec),
    }
}

/// The replica counts one normalization works with.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
}

/// With `behavior`: stabilization over each direction's window, then each direction's
/// policies over the replicas added or removed in their periods (Kubernetes'
/// `normalizeDesiredReplicasWithBehaviors`).
fn normalize_with_behavior(
    mem: &mut Memory,
    key: &str,
    conditions: &mut Conditions,
    b: Bounds,
    up: &HPAScalingRules,
    down: &HPAScalingRules,
    now: jiff::Timestamp,
) -> i32 {
    let secs = |r: &HPAScalingRules| i64::from(r.stabilization_window_seconds.unwrap_or(0));
    let up_cutoff = now - jiff::SignedDuration::from_secs(secs(up));
    let down_cutoff = now - jiff::SignedDuration::from_secs(secs(down));
    let recs = mem.recommendations.entry(key.to_owned()).or_default();
    let mut up_rec = b.desired;
    let mut down_rec = b.desired;
    for r in recs.iter() {
        if r.at > up_cutoff {
            up_rec = up_rec.min(r.replicas);
        }
        if r.at > down_cutoff {
            down_rec = down_rec.max(r.replicas);
        }
    }
    let stabilized = b.current.max(up_rec).min(down_rec);
    remember(recs, b.desired, now, |r| {
        r.at < up_cutoff && r.at < down_cutoff
    });
    if stabilized != b.desired {
        let (reason, message) = if b.desired >= b.current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        };
        conditions.set("AbleToScale", true, reason, message.into());
    } else {
        conditions.set(
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size".into(),
        );
    }
    let ups = mem.scale_ups.get(key).cloned().unwrap_or_default();
    let downs = mem.scale_downs.get(key).cloned().unwrap_or_default();
    let (out, reason, message) = rate_limit(
        Bounds {
            desired: stabilized,
            ..b
        },
        up,
        down,
        &ups,
        &downs,
        now,
    );
    conditions.set("ScalingLimited", out != stabilized, reason, message.into());
    out
}

/// Replicas added (`events` of scale-ups) or removed in the last `period` seconds.
fn changed_within(events: &[ScaleEvent], period: i32, now: jiff::Timestamp) -> i32 {
    let cutoff = now - jiff::SignedDuration::from_secs(i64::from(period));
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

/// How far the policies of `rules` let the replica count go from `current`, upwards (`up`) or
/// downwards, each policy counted from where its period started (`period_start`): `Max` picks
/// the policy allowing the most change, `Min` the least, `Disabled` none (Kubernetes'
/// `calculateScaleUpLimitWithScalingRules` and `calculateScaleDownLimitWithBehaviors`).
fn policy_limit(
    rules: &HPAScalingRules,
    current: i32,
    up: bool,
    period_start: impl Fn(i32) -> i32,
) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().flatten().map(|p| {
        let start = period_start(p.period_seconds);
        let pct = f64::from(p.value) / 100.0;
        match (p.type_.as_str(), up) {
            ("Pods", true) => start + p.value,
            ("Pods", false) => start - p.value,
            // Rounded up going up, so that a small percentage still adds a pod.
            (_, true) => (f64::from(start) * (1.0 + pct)).ceil() as i32,
            (_, false) => (f64::from(start) * (1.0 - pct)) as i32,
        }
    });
    // The most change is the highest count going up, the lowest going down.
    let most_change = up == (select != "Min");
    let limit = if most_change {
        proposals.max()
    } else {
        proposals.min()
    };
    limit.unwrap_or(current)
}

/// The policies' limit on a change from `b.current` to `b.desired` (Kubernetes'
/// `convertDesiredReplicasWithBehaviorRate`).
fn rate_limit(
    b: Bounds,
    up: &HPAScalingRules,
    down: &HPAScalingRules,
    ups: &[ScaleEvent],
    downs: &[ScaleEvent],
    now: jiff::Timestamp,
) -> (i32, &'static str, &'static str) {
    let period_start = |period: i32| {
        b.current - changed_within(ups, period, now) + changed_within(downs, period, now)
    };
    let within = (
        b.desired,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    );
    if b.desired > b.current {
        let limit = policy_limit(up, b.current, true, period_start).max(b.current);
        let (allowed, reason, message) = if b.max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                b.max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if b.desired > allowed {
            return (allowed, reason, message);
        }
    } else if b.desired < b.current {
        let limit = policy_limit(down, b.current, false, period_start).min(b.current);
        let (allowed, reason, message) = if b.min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                b.min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if b.desired < allowed {
            return (allowed, reason, message);
        }
    }
    within
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;
    use k8s_openapi::api::core::v1::{
        Container, PodCondition, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs_ago: i64) -> jiff::Timestamp {
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs_ago)
    }

    fn pod(name: &str, cpu_request: &str, started_ago: i64) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_owned(), Quantity(cpu_request.into()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                start_time: Some(Time(ts(started_ago))),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ts(started_ago))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn usage(pairs: &[(&str, i64)]) -> HashMap<String, Usage> {
        pairs
            .iter()
            .map(|(p, v)| {
                (
                    (*p).to_owned(),
                    Usage {
                        value: *v,
                        at: ts(0),
                        window: Duration::from_secs(5),
                    },
                )
            })
            .collect()
    }

    fn calc(pods: &[Pod], u: &HashMap<String, Usage>, current: i32, target: i64) -> (i32, i64) {
        let settings = Settings::default();
        let r = Replicas {
            current,
            pods,
            usage: u,
            resource: "cpu",
            container: None,
            now: jiff::Timestamp::now(),
            settings: &settings,
        };
        let (n, util, _) = utilization_replicas(&r, target).unwrap();
        (n, util)
    }

    #[test]
    fn utilization_proposals_follow_the_replica_calculator() {
        let pods = [pod("a", "100m", 600), pod("b", "100m", 600)];
        // 200% of requests against a 50% target: four times as many.
        assert_eq!(
            calc(&pods, &usage(&[("a", 200), ("b", 200)]), 2, 50),
            (8, 200)
        );
        // Within the 10% tolerance: unchanged.
        assert_eq!(calc(&pods, &usage(&[("a", 52), ("b", 54)]), 2, 50), (2, 53));
        // Idle: down to one.
        assert_eq!(calc(&pods, &usage(&[("a", 1), ("b", 1)]), 2, 50), (1, 1));
        // Scaling down, a pod without metrics counts as at its request: no scale-down below
        // what that implies.
        assert_eq!(calc(&pods, &usage(&[("a", 10)]), 2, 50).0, 2);
    }

    #[test]
    fn average_value_targets_need_no_requests() {
        // Memory (in thousandths of bytes, as Kubernetes' MilliValue) against 64Mi per pod.
        let mut a = pod("a", "100m", 600);
        let mut b = pod("b", "100m", 600);
        for p in [&mut a, &mut b] {
            p.spec.as_mut().unwrap().containers[0].resources = None;
        }
        let mib = 1024 * 1024 * 1000;
        let u = usage(&[("a", 96 * mib), ("b", 96 * mib)]);
        let settings = Settings::default();
        let r = Replicas {
            current: 2,
            pods: &[a, b],
            usage: &u,
            resource: "memory",
            container: None,
            now: jiff::Timestamp::now(),
            settings: &settings,
        };
        // 96Mi on average over a 64Mi target: 1.5 × 2 pods.
        assert_eq!(average_value_replicas(&r, 64 * mib), Ok((3, 96 * mib)));
        assert_eq!(milli_quantity(96 * mib), "100663296");
        // Within tolerance: unchanged.
        assert_eq!(average_value_replicas(&r, 90 * mib).unwrap().0, 2);
    }

    #[test]
    fn missing_requests_are_an_error_naming_the_container() {
        let mut p = pod("a", "100m", 600);
        p.spec.as_mut().unwrap().containers[0].resources = None;
        let settings = Settings::default();
        let u = usage(&[("a", 10)]);
        let r = Replicas {
            current: 1,
            pods: std::slice::from_ref(&p),
            usage: &u,
            resource: "cpu",
            container: None,
            now: jiff::Timestamp::now(),
            settings: &settings,
        };
        let e = utilization_replicas(&r, 50).unwrap_err();
        assert_eq!(e, "missing request for cpu in container c of Pod a");
    }

    #[test]
    fn fresh_pods_measured_before_a_window_passed_are_unready() {
        let mut fresh = pod("new", "100m", 10);
        // Ready an instant ago: its sample (taken now, over 5 s) predates readiness + window.
        fresh.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(Time(ts(1)));
        let pods = [pod("old", "100m", 600), fresh];
        let u = usage(&[("old", 100), ("new", 100)]);
        let settings = Settings::default();
        let r = Replicas {
            current: 2,
            pods: &pods,
            usage: &u,
            resource: "cpu",
            container: None,
            now: jiff::Timestamp::now(),
            settings: &settings,
        };
        let g = group_pods(&r);
        assert_eq!(g.ready, 1);
        assert_eq!(g.unready, ["new"]);
    }

    fn rules(window: i32, policies: &[(&str, i32, i32)], select: &str) -> HPAScalingRules {
        HPAScalingRules {
            stabilization_window_seconds: Some(window),
            select_policy: Some(select.into()),
            policies: Some(
                policies
                    .iter()
                    .map(|(t, v, p)| HPAScalingPolicy {
                        type_: (*t).into(),
                        value: *v,
                        period_seconds: *p,
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn conditions() -> Conditions {
        Conditions {
            list: Vec::new(),
            now: "2026-11-30T00:00:00Z".into(),
        }
    }

    fn condition<'a>(c: &'a Conditions, ty: &str) -> &'a Value {
        c.list.iter().find(|c| c["type"] == ty).unwrap()
    }

    #[test]
    fn default_scale_up_rules_allow_four_pods_or_doubling_per_period() {
        let up = rules(0, &[("Pods", 4, 15), ("Percent", 100, 15)], "Max");
        let down = rules(300, &[("Percent", 100, 15)], "Max");
        let now = jiff::Timestamp::now();
        let b = Bounds {
            current: 1,
            desired: 20,
            min: 1,
            max: 10,
        };
        assert_eq!(rate_limit(b, &up, &down, &[], &[], now).0, 5);
        let b = Bounds {
            current: 8,
            desired: 20,
            min: 1,
            max: 30,
        };
        assert_eq!(rate_limit(b, &up, &down, &[], &[], now).0, 16);
        // Four already added in this period: counted from where the period started.
        let ups = [ScaleEvent {
            change: 4,
            at: ts(5),
        }];
        let b = Bounds {
            current: 5,
            desired: 20,
            min: 1,
            max: 30,
        };
        assert_eq!(rate_limit(b, &up, &down, &ups, &[], now).0, 5);
        // The maximum is the limit when it is lower.
        let b = Bounds {
            current: 2,
            desired: 20,
            min: 1,
            max: 3,
        };
        assert_eq!(
            rate_limit(b, &up, &down, &[], &[], now),
            (
                3,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count"
            )
        );
    }

    #[test]
    fn select_policies_pick_the_most_or_least_change_or_none() {
        let now = jiff::Timestamp::now();
        let both = [("Pods", 2, 15), ("Percent", 50, 15)];
        let up_b = Bounds {
            current: 10,
            desired: 30,
            min: 1,
            max: 100,
        };
        let down_b = Bounds {
            current: 10,
            desired: 1,
            min: 1,
            max: 100,
        };
        let limit = |up: &HPAScalingRules, down: &HPAScalingRules, b| {
            rate_limit(b, up, down, &[], &[], now).0
        };
        let (max, min, off) = (
            rules(0, &both, "Max"),
            rules(0, &both, "Min"),
            rules(0, &both, "Disabled"),
        );
        // Up: +2 pods or +50% (15): Max takes 15, Min 12, Disabled stays.
        assert_eq!(limit(&max, &max, up_b), 15);
        assert_eq!(limit(&min, &max, up_b), 12);
        assert_eq!(limit(&off, &max, up_b), 10);
        // Down: -2 pods (8) or -50% (5): Max takes 5, Min 8, Disabled stays.
        assert_eq!(limit(&max, &max, down_b), 5);
        assert_eq!(limit(&max, &min, down_b), 8);
        assert_eq!(limit(&max, &off, down_b), 10);
    }

    #[test]
    fn scale_down_is_stabilized_over_the_window() {
        let mut mem = Memory::default();
        let up = rules(0, &[("Pods", 4, 15)], "Max");
        let down = rules(60, &[("Percent", 100, 15)], "Max");
        let now = jiff::Timestamp::now();
        mem.recommendations.insert(
            "ns/h".into(),
            vec![Recommendation {
                replicas: 6,
                at: ts(30),
            }],
        );
        let mut c = conditions();
        let b = Bounds {
            current: 6,
            desired: 1,
            min: 1,
            max: 10,
        };
        assert_eq!(
            normalize_with_behavior(&mut mem, "ns/h", &mut c, b, &up, &down, now),
            6
        );
        assert_eq!(
            condition(&c, "AbleToScale")["reason"],
            "ScaleDownStabilized"
        );
        // With no window, straight down.
        let down = rules(0, &[("Percent", 100, 15)], "Max");
        let mut c = conditions();
        assert_eq!(
            normalize_with_behavior(&mut mem, "ns/h", &mut c, b, &up, &down, now),
            1
        );
        assert_eq!(condition(&c, "ScalingLimited")["status"], "False");
    }

    #[test]
    fn without_behavior_scale_up_at_most_doubles() {
        let mut mem = Memory::default();
        let mut c = conditions();
        let now = jiff::Timestamp::now();
        let n = normalize(
            &mut mem,
            "k",
            &mut c,
            3,
            20,
            1,
            50,
            Duration::from_secs(300),
            now,
        );
        assert_eq!(n, 6);
        assert_eq!(condition(&c, "ScalingLimited")["reason"], "ScaleUpLimit");
        let mut c = conditions();
        let n = normalize(
            &mut mem,
            "k",
            &mut c,
            6,
            2,
            1,
            50,
            Duration::from_secs(300),
            now,
        );
        // The unnormalized 20 of the first sync is what the window remembers.
        assert_eq!(n, 12);
        assert_eq!(
            condition(&c, "AbleToScale")["reason"],
            "ScaleDownStabilized"
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_until_they_flip() {
        let mut c = conditions();
        c.set("AbleToScale", true, "A", "a".into());
        c.now = "2026-11-30T01:00:00Z".into();
        c.set("AbleToScale", true, "B", "b".into());
        assert_eq!(
            condition(&c, "AbleToScale")["lastTransitionTime"],
            "2026-11-30T00:00:00Z"
        );
        assert_eq!(condition(&c, "AbleToScale")["reason"], "B");
        c.set("AbleToScale", false, "C", "c".into());
        assert_eq!(
            condition(&c, "AbleToScale")["lastTransitionTime"],
            "2026-11-30T01:00:00Z"
        );
    }

    #[test]
    fn milli_quantities_print_canonically() {
        assert_eq!(milli_quantity(150), "150m");
        assert_eq!(milli_quantity(2000), "2");
        assert_eq!(milli_quantity(64_000_000_000), "64M");
        assert_eq!(milli_quantity(0), "0");
    }
}
