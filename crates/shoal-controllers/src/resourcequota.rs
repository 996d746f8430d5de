//! The ResourceQuota controller, as Kubernetes' resourcequota-controller: it counts what each
//! quota's namespace holds of every resource the quota limits and writes `status.hard` and
//! `status.used` (what `kubectl describe quota` shows), when a quota or a pod, Service,
//! ConfigMap, Secret or claim of its namespace changes, and every 30 s for the rest. The API
//! server's quota admission charges new objects to `status.used` as they are created; this
//! recount gives back what deleted objects (and failed creates) held.

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{Map, Value, json};
use shoal_api::quota;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The kinds a quota can count: (group, version, kind, plural).
const COUNTED: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "ReplicationController", "replicationcontrollers"),
    ("", "v1", "ResourceQuota", "resourcequotas"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

/// The kind a quota resource name is counted from, if this controller counts it.
fn source(
    resource: &str,
) -> Option<&'static (&'static str, &'static str, &'static str, &'static str)> {
    let (plural, group) = quota::counted_from(resource);
    COUNTED
        .iter()
        .find(|(g, _, _, p)| *g == group && *p == plural)
}

/// The quotas of namespace `ns`.
fn quotas_in(store: &Store<ResourceQuota>, ns: Option<&str>) -> Vec<ObjectRef<ResourceQuota>> {
    let Some(ns) = ns else { return Vec::new() };
    store
        .state()
        .iter()
        .filter(|q| q.metadata.namespace.as_deref() == Some(ns))
        .map(|q| ObjectRef::from_obj(q.as_ref()))
        .collect()
}

/// `controller`, also woken for every quota of a namespace whose `K` objects change.
fn counting<K>(
    controller: Controller<ResourceQuota>,
    client: &kube::Client,
) -> Controller<ResourceQuota>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let store = controller.store();
    controller.watches(
        Api::<K>::all(client.clone()),
        watcher::Config::default(),
        move |o: K| quotas_in(&store, o.meta().namespace.as_deref()),
    )
}

/// Runs the controller (forever).
pub async fn run(client: kube::Client) {
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let controller = Controller::new(quotas, watcher::Config::default());
    let controller = counting::<Pod>(controller, &client);
    let controller = counting::<Service>(controller, &client);
    let controller = counting::<ConfigMap>(controller, &client);
    let controller = counting::<Secret>(controller, &client);
    let controller = counting::<PersistentVolumeClaim>(controller, &client);
    crate::runner::run("resourcequota", client, controller, reconcile).await;
}

async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (Some(ns), Some(name)) = (q.metadata.namespace.as_deref(), q.metadata.name.as_deref())
    else {
        return Ok(Action::await_change());
    };
    let json = |e: serde_json::Error| Error::Invalid(e.to_string());
    let spec = serde_json::to_value(q.spec.clone().unwrap_or_default()).map_err(json)?;
    let hard = spec.get("hard").cloned().unwrap_or_else(|| json!({}));
    let names: Vec<String> = hard
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut used: BTreeMap<String, f64> = names.iter().map(|n| (n.clone(), 0.0)).collect();
    let mut sources: Vec<&(&str, &str, &str, &str)> =
        names.iter().filter_map(|n| source(n)).collect();
    sources.sort();
    sources.dedup();
    for (group, version, kind, plural) in sources {
        let ar = ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.to_string(),
            plural: plural.to_string(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        for o in api.list(&ListParams::default()).await? {
            let v = serde_json::to_value(&o).map_err(json)?;
            if !quota::covers(&spec, group, plural, &v) {
                continue;
            }
            for (k, amount) in quota::usage(group, plural, &v) {
                if let Some(t) = used.get_mut(&k) {
                    *t += amount;
                }
            }
        }
    }
    let mut used_json: Map<String, Value> = used
        .iter()
        .map(|(k, v)| (k.clone(), json!(quota::format(k, *v))))
        .collect();
    let current = serde_json::to_value(q.status.clone().unwrap_or_default()).map_err(json)?;
    let same = current.get("hard") == Some(&hard)
        && current.get("used").and_then(Value::as_object) == Some(&used_json);
    if !same {
        // Resources no longer limited leave `used` too.
        for k in current
            .get("used")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            used_json.entry(k.clone()).or_insert(Value::Null);
        }
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), ns);
        let patch = json!({"status": {"hard": hard, "used": used_json}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}
