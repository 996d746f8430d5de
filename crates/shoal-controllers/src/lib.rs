//! The controller-manager: one controller per file, each on kube-rs' controller runtime.
//! [`replicaset`], [`deployment`], [`job`], [`cronjob`], [`daemonset`], [`statefulset`], the
//! garbage collector [`gc`], [`namespace`] deletion, [`nodelifecycle`], the endpoints of
//! Services ([`endpointslice`]) and their load balancer addresses ([`servicelb`]), the
//! addresses of Ingresses served by Shoal's ingress controller ([`ingressstatus`]), the
//! aggregation of ClusterRoles ([`clusterrole_aggregation`]), every namespace's `default`
//! ServiceAccount ([`serviceaccount`]) and `kube-root-ca.crt` ConfigMap ([`rootca`]), the usage
//! of ResourceQuotas ([`resourcequota`]), HorizontalPodAutoscalers ([`podautoscaler`]), scale
//! to zero and concurrency autoscaling ([`scaletozero`]), and
//! CertificateSigningRequests' approval and signing with the bootstrap tokens' cleaning
//! ([`certificates`]).

pub mod certificates;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpointslice;
pub mod gc;
pub mod history;
pub mod ingressstatus;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod replicaset;
pub mod resourcequota;
pub mod rootca;
mod runner;
pub mod scaletozero;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod volume;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use shoal_api::pod::PodExt;
use shoal_api::selector::LabelSelectorExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A reconcile failure; the controller retries the object after a pause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("invalid object: {0}")]
    Invalid(String),
}

/// Settings of the controller-manager.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a node may go without renewing its lease before it is NotReady
    /// (Kubernetes' `--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// The cluster CA (PEM) published to every namespace as `kube-root-ca.crt`
    /// (`--root-ca-file`); `None`: nothing is published.
    pub root_ca: Option<String>,
    /// The CA approved CertificateSigningRequests are signed with; `None`: they are approved
    /// but not signed.
    pub signing: Option<certificates::Signing>,
    /// The horizontal pod autoscaler's settings.
    pub autoscaler: podautoscaler::Settings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_monitor_grace_period: Duration::from_secs(40),
            root_ca: None,
            signing: None,
            autoscaler: podautoscaler::Settings::default(),
        }
    }
}

/// A controller's run, as the supervisor starts it.
type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs every controller until `shutdown`, each a task of `supervisor`: one that panics or
/// ends is logged, reported and restarted on its own while the others go on.
pub async fn run(
    client: kube::Client,
    config: Config,
    supervisor: &shoal_supervisor::Supervisor,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let spawn = |name: &str, run: fn(kube::Client, &Config) -> BoxFuture| {
        let client = client.clone();
        let config = config.clone();
        supervisor.spawn(
            format!("controller/{name}"),
            shoal_supervisor::Restart::Always,
            shutdown.clone(),
            move || run(client.clone(), &config),
        )
    };
    let tasks = [
        spawn("replicaset", |c, _| Box::pin(replicaset::run(c))),
        spawn("replicationcontroller", |c, _| {
            Box::pin(replicaset::run_replication_controllers(c))
        }),
        spawn("deployment", |c, _| Box::pin(deployment::run(c))),
        spawn("job", |c, _| Box::pin(job::run(c))),
        spawn("cronjob", |c, _| Box::pin(cronjob::run(c))),
        spawn("daemonset", |c, _| Box::pin(daemonset::run(c))),
        spawn("statefulset", |c, _| Box::pin(statefulset::run(c))),
        spawn("namespace", |c, _| Box::pin(namespace::run(c))),
        spawn("endpointslice", |c, _| Box::pin(endpointslice::run(c))),
        spawn("service-lb", |c, _| Box::pin(servicelb::run(c))),
        spawn("ingress-status", |c, _| Box::pin(ingressstatus::run(c))),
        spawn("scale-to-zero", |c, _| Box::pin(scaletozero::run(c))),
        spawn("disruption", |c, _| Box::pin(disruption::run(c))),
        spawn("horizontal-pod-autoscaler", |c, config| {
            Box::pin(podautoscaler::run(c, config.autoscaler.clone()))
        }),
        spawn("persistentvolume-binder", |c, _| Box::pin(volume::run(c))),
        spawn("nodelifecycle", |c, config| {
            Box::pin(nodelifecycle::run(c, config.node_monitor_grace_period))
        }),
        spawn("resourcequota", |c, _| Box::pin(resourcequota::run(c))),
        spawn("root-ca-cert-publisher", |c, config| {
            Box::pin(rootca::run(c, config.root_ca.clone()))
        }),
        spawn("garbage-collector", |c, _| Box::pin(gc::run(c))),
        spawn("csr", |c, config| {
            Box::pin(certificates::run(c, config.signing.clone()))
        }),
        spawn("tokencleaner", |c, _| {
            Box::pin(certificates::run_token_cleaner(c))
        }),
        spawn("serviceaccount", |c, _| Box::pin(serviceaccount::run(c))),
        spawn("clusterrole-aggregation", |c, _| {
            Box::pin(clusterrole_aggregation::run(c))
        }),
    ];
    shutdown.cancelled().await;
    for t in tasks {
        t.abort();
    }
}

/// Records a core/v1 Event about `obj` from `component` (`deployment-controller`, ...), in the
/// background; a failure is logged, never fatal.
pub fn record<K>(
    client: &kube::Client,
    component: &str,
    obj: &K,
    type_: &str,
    reason: &str,
    message: String,
) where
    K: kube::Resource<DynamicType = ()>,
{
    let type_ = if type_ == "Warning" {
        shoal_client::EventType::Warning
    } else {
        shoal_client::EventType::Normal
    };
    shoal_client::Recorder::new(client.clone(), component, None)
        .record(obj, None, type_, reason, message);
}

/// Creates `pod` for `owner` and records `SuccessfulCreate` (`Created pod: NAME`) on the
/// owner, as Kubernetes' controllers do.
pub async fn create_pod<K>(
    client: &kube::Client,
    component: &str,
    owner: &K,
    pod: &Pod,
) -> Result<Pod, Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let made = Api::<Pod>::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), pod)
        .await?;
    let name = made.metadata.name.as_deref().unwrap_or("");
    record(
        client,
        component,
        owner,
        "Normal",
        "SuccessfulCreate",
        format!("Created pod: {name}"),
    );
    Ok(made)
}

/// A label selector in the query syntax (`a=b,c in (d,e),!f`), for listing what it selects.
pub fn selector_string(sel: &LabelSelector) -> Result<String, Error> {
    sel.to_query().map_err(|e| Error::Invalid(e.to_string()))
}

/// The controller ownerReference to `owner` (a `kind` of `api_version`).
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The uid of the object's controller, if it has one.
pub fn controller_uid(m: &ObjectMeta) -> Option<&str> {
    m.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// The objects in `candidates` (already filtered by the owner's selector) the owner controls:
/// those whose controller reference names it, plus orphans it adopts by adding its controller
/// reference (Kubernetes' ControllerRefManager). Objects controlled by someone else are left.
pub async fn claim<K>(api: &Api<K>, owner: &OwnerReference, candidates: Vec<K>) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut owned = Vec::new();
    for o in candidates {
        let m = o.meta();
        match controller_uid(m) {
            Some(uid) if uid == owner.uid => owned.push(o),
            Some(_) => {}
            None if m.deletion_timestamp.is_none() => {
                let mut refs = m.owner_references.clone().unwrap_or_default();
                refs.push(owner.clone());
                let name = m.name.clone().unwrap_or_default();
                // The uid precondition keeps a replaced object with the same name out.
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": m.uid}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) => tracing::debug!(%name, error = %e, "cannot adopt"),
                }
            }
            None => {}
        }
    }
    owned
}

/// A pod built from `template` in `ns`, controlled by `owner`: named `name`, or generated
/// from `generate_name`; `labels` are added to the template's.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    ns: &str,
    name: PodName<'_>,
    owner: &OwnerReference,
    labels: &[(&str, &str)],
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut all = meta.labels.unwrap_or_default();
    for (k, v) in labels {
        all.insert((*k).into(), (*v).into());
    }
    let (name, generate_name) = match name {
        PodName::Fixed(n) => (Some(n.to_owned()), None),
        PodName::Generate(p) => (None, Some(p.to_owned())),
    };
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(ns.into()),
            labels: Some(all),
            annotations: meta.annotations,
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// How a controller names the pods it creates.
pub enum PodName<'a> {
    Fixed(&'a str),
    Generate(&'a str),
}

/// Whether a pod still counts: not being deleted, not finished.
pub fn pod_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !p.is_terminal()
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// When a ready pod became ready.
fn ready_since(p: &Pod) -> Option<Option<jiff::Timestamp>> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether a pod is available: ready for at least `min_ready_seconds`. Otherwise, for a ready
/// pod, how long until it will be.
pub fn pod_available(
    p: &Pod,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Result<(), Option<Duration>> {
    let since = ready_since(p).ok_or(None)?;
    if min_ready_seconds <= 0 {
        return Ok(());
    }
    let Some(since) = since else { return Ok(()) };
    let at = since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    if at <= now {
        Ok(())
    } else {
        Err(Some(
            Duration::try_from(at.duration_since(now)).unwrap_or_default(),
        ))
    }
}

/// Replaces `name` with `obj` at `resource_version` (the version a reflector last saw); if that
/// turns out stale (the reflector trails a write of our own), once more at the version the
/// object has now, instead of failing the reconcile into a back-off.
pub async fn replace_fresh<K>(
    api: &Api<K>,
    name: &str,
    mut obj: K,
    resource_version: Option<String>,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    obj.meta_mut().resource_version = resource_version;
    match api
        .replace(name, &kube::api::PostParams::default(), &obj)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let now = api.get(name).await?;
            obj.meta_mut().resource_version = now.meta().resource_version.clone();
            api.replace(name, &kube::api::PostParams::default(), &obj)
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes, treating "already gone" as done.
pub async fn delete_quietly<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An `intstr` against a total: a number, or a percentage rounded up or down.
pub fn scaled_value(
    v: Option<&IntOrString>,
    total: i32,
    round_up: bool,
    default: i32,
) -> Result<i32, Error> {
    match v {
        None => Ok(default),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "invalid value {s:?}: must be an integer or a percentage"
                    ))
                })?;
            let scaled = i64::from(total) * pct;
            let r = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            Ok(r as i32)
        }
    }
}
