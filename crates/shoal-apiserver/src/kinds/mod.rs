//! What happens to each kind on its way to the store, one [`Strategy`] per kind or kind family
//! (the shape of Kubernetes' `rest.RESTCreateStrategy` and friends): defaulting, preparation
//! of a new object, its initial status, validation on create and update, allocation (Service
//! IPs and node ports), and what deleting it involves. The registry's pipeline is the same for
//! every kind and asks [`strategy`] for the differences; a new kind's rules are a new file here
//! and a line in [`strategy`].

mod autoscaling;
pub(crate) mod certificates;
mod config;
pub(crate) mod crd;
pub(crate) mod defaulting;
mod disruption;
pub(crate) mod ingress;
mod job;
mod limits;
mod namespace;
mod network_policy;
mod pod;
mod policy;
pub(crate) mod priority;
mod rbac;
mod service;
mod serviceaccount;
pub(crate) mod storage;
mod templates;
pub(crate) mod validation;
mod workloads;

use crate::cache::ResourceCache;
use crate::error::ApiResult;
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo, Subresource};

/// What allocation sees: the kind's cached objects, the ranges to allocate from, and what an
/// earlier attempt found taken.
pub struct AllocContext<'a> {
    pub info: &'static ResourceInfo,
    pub cache: &'a ResourceCache,
    pub network: &'a ServiceNetwork,
    pub taken: &'a std::collections::HashSet<String>,
}

/// A value taken from a shared range, held by a store key of its own (the role of Kubernetes'
/// `IPAddress` objects and allocation bitmaps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `/registry/shoal.dev/serviceips/127.96.0.12`.
    pub key: String,
    /// The value itself (`127.96.0.12`, `30080`).
    pub value: String,
    /// The field it fills, for the error when a requested value is taken.
    pub field: String,
    /// Whether the client asked for exactly this value (then a clash is the client's error).
    pub requested: bool,
}

impl Claim {
    /// What a client that asked for this value is told when another object holds it.
    pub fn clash_message(&self) -> String {
        if self.field.ends_with("nodePort") {
            "provided port is already allocated".to_owned()
        } else {
            format!(
                "failed to allocate IP {}: provided IP is already allocated",
                self.value
            )
        }
    }
}

/// The ranges Services take addresses and node ports from.
#[derive(Debug, Clone)]
pub struct ServiceNetwork {
    pub cidr: shoal_api::net::Cidr,
    pub node_ports: std::ops::RangeInclusive<u16>,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        ServiceNetwork {
            cidr: shoal_api::net::DEFAULT_SERVICE_CIDR
                .parse()
                .expect("the default Service range parses"),
            node_ports: shoal_api::net::NODE_PORTS,
        }
    }
}

/// How a kind's names are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// A DNS-1123 label (Namespaces).
    Label,
    /// A DNS-1035 label (Services).
    Dns1035,
    /// Anything that fits in a path segment (RBAC kinds: `system:basic-user`).
    PathSegment,
}

/// A kind's rules. Every method has the behaviour of a kind with no rules of its own.
pub trait Strategy: Sync {
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Rewrites what a client may send but is never stored as sent (a Secret's
    /// `stringData`), on every write.
    fn normalize(&self, _o: &mut Value) {}

    /// Kubernetes' defaults, on every write.
    fn default(&self, _o: &mut Value) {}

    /// Removes the fields the kind does not declare and returns their paths (a custom
    /// resource's structural schema prunes; built-in kinds find unknown fields by decoding).
    fn prune(&self, _o: &mut Value) -> Vec<String> {
        Vec::new()
    }

    /// Turns an object written through any served version into its storage version.
    fn to_storage(&self, _o: &mut Value) {}

    /// Adjusts an update (`sub`: the subresource written) after the server's own fields are
    /// carried over from `old`: what a write through this path may not change goes back to
    /// what it was (a CertificateSigningRequest's spec, or its approval through `status`).
    fn prepare_update(&self, _sub: Option<Subresource>, _old: &Value, _new: &mut Value) {}

    /// Fills in what a new object gets from the server (a Job's selector from its uid).
    fn prepare_create(&self, _o: &mut Value) {}

    /// The status a new object starts with: an empty one if the kind has a status
    /// subresource.
    fn initial_status(&self, info: &ResourceInfo, _o: &Value) -> Option<Value> {
        info.has(Subresource::Status).then(|| json!({}))
    }

    /// Field errors of `o`, new or updated (metadata is checked for every kind).
    fn validate(&self, _o: &Value, _out: &mut Vec<Cause>) {}

    /// Field errors of an update that changes what may not change.
    fn validate_update(&self, _o: &Value, _old: &Value, _out: &mut Vec<Cause>) {}

    /// Allocates what a new object takes from a shared range (a Service's ClusterIP and node
    /// ports): fills them in and returns the [`Claim`]s the create must make in the same store
    /// transaction, so two API servers never hand out one value twice. `taken` holds values
    /// an earlier attempt found claimed by a live object.
    fn allocate(&self, _ctx: &AllocContext<'_>, _o: &mut Value) -> ApiResult<Vec<Claim>> {
        Ok(Vec::new())
    }

    /// The store keys of the claims `o` holds, released when it is deleted.
    fn claims(&self, _o: &Value) -> Vec<String> {
        Vec::new()
    }

    /// The key prefixes under which the kind's claims live.
    fn claim_prefixes(&self) -> &'static [&'static str] {
        &[]
    }

    /// Seconds a delete waits before the object goes (a pod's grace period); `requested` is
    /// what the delete asked for.
    fn delete_grace(&self, _o: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Whether something besides `metadata.finalizers` keeps a deleted object (a Namespace's
    /// `spec.finalizers`).
    fn holds_deletion(&self, _o: &Value) -> bool {
        false
    }

    /// What a deletion that has to wait marks on the object (a Namespace's `Terminating`).
    fn begin_deletion(&self, _o: &mut Value) {}

    /// Built-in admission that reads other objects (from the watch cache), before defaults:
    /// a pod's priority from its PriorityClass, the single default PriorityClass. `old` is
    /// `None` on create.
    fn admit(
        &self,
        _cache: &crate::cache::WatchCache,
        _info: &ResourceInfo,
        _o: &mut Value,
        _old: Option<&Value>,
    ) -> ApiResult<()> {
        Ok(())
    }

    /// Whether [`Strategy::admit`] must read a cache that has caught up with the store (a
    /// definition's names are checked against every other definition's).
    fn admits_from_fresh_cache(&self) -> bool {
        false
    }

    /// Refuses the deletion of `o` outright (the system namespaces).
    fn check_delete(&self, _info: &ResourceInfo, _o: &Value) -> ApiResult<()> {
        Ok(())
    }
}

/// A new object's `spec.<field>` set to the default class of `classes` (the
/// DefaultStorageClass and DefaultIngressClass admission plugins), if there is one.
pub(crate) fn give_default_class(
    cache: &crate::cache::WatchCache,
    classes: &'static ResourceInfo,
    annotation: &str,
    o: &mut Value,
    field: &str,
) {
    if let Some(class) = default_class(cache, classes, annotation)
        && let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert(field.into(), json!(class));
    }
}

/// The name of the class of `info` (StorageClass, IngressClass) marked default by
/// `annotation: "true"`: the newest, if several are, as Kubernetes picks it.
fn default_class(
    cache: &crate::cache::WatchCache,
    info: &'static ResourceInfo,
    annotation: &str,
) -> Option<String> {
    let created = |c: &Value| {
        c.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    cache
        .resource(info)
        .list(&info.storage_prefix(), None)
        .iter()
        .map(|c| c.value().clone())
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(annotation))
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by_key(created)
        .map(|c| crate::meta::name(&c).to_owned())
}

/// A kind without rules of its own.
struct Generic;
impl Strategy for Generic {}
static GENERIC: Generic = Generic;

/// Nodes: their status is the kubelet's to write, from nothing.
struct NodeStrategy;
impl Strategy for NodeStrategy {
    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        None
    }
}
static NODE: NodeStrategy = NodeStrategy;

/// The rules of `info`'s kind.
pub fn strategy(info: &ResourceInfo) -> &'static dyn Strategy {
    match (info.group, info.kind) {
        ("", "Pod") => &pod::POD,
        ("", "Service") => &service::SERVICE,
        ("", "Namespace") => &namespace::NAMESPACE,
        ("", "Node") => &NODE,
        ("", "ConfigMap") => &config::CONFIG_MAP,
        ("", "Secret") => &config::SECRET,
        ("", "ResourceQuota") => &config::RESOURCE_QUOTA,
        ("", "LimitRange") => &limits::LIMIT_RANGE,
        ("apps", "Deployment") => &workloads::DEPLOYMENT,
        ("apps", "ReplicaSet") => &workloads::REPLICA_SET,
        ("", "ReplicationController") => &workloads::REPLICATION_CONTROLLER,
        ("apps", "StatefulSet") => &workloads::STATEFUL_SET,
        ("apps", "DaemonSet") => &workloads::DAEMON_SET,
        ("batch", "Job") => &job::JOB,
        ("batch", "CronJob") => &job::CRON_JOB,
        ("networking.k8s.io", "NetworkPolicy") => &network_policy::NETWORK_POLICY,
        ("networking.k8s.io", "Ingress") => &ingress::INGRESS,
        ("networking.k8s.io", "IngressClass") => &ingress::INGRESS_CLASS,
        ("scheduling.k8s.io", "PriorityClass") => &priority::PRIORITY_CLASS,
        ("policy", "PodDisruptionBudget") => &disruption::DISRUPTION_BUDGET,
        ("autoscaling", "HorizontalPodAutoscaler") => &autoscaling::HPA,
        ("", "PodTemplate") => &templates::POD_TEMPLATE,
        ("", "PersistentVolume") => &storage::PERSISTENT_VOLUME,
        ("", "PersistentVolumeClaim") => &storage::PERSISTENT_VOLUME_CLAIM,
        ("storage.k8s.io", "StorageClass") => &storage::STORAGE_CLASS,
        ("apps", "ControllerRevision") => &templates::CONTROLLER_REVISION,
        (shoal_api::policy::GROUP, "ClusterAdmissionPolicy" | "AdmissionPolicy") => {
            &policy::ADMISSION_POLICY
        }
        (shoal_api::policy::GROUP, "SchedulerPlugin") => &policy::SCHEDULER_PLUGIN,
        (crate::crd::GROUP, "CustomResourceDefinition") => &crd::CRD,
        (certificates::GROUP, "CertificateSigningRequest") => &certificates::CSR,
        (crate::rbac::GROUP, "Role" | "ClusterRole") => &rbac::ROLE,
        (crate::rbac::GROUP, "RoleBinding" | "ClusterRoleBinding") => &rbac::BINDING,
        _ => match crate::crd::custom(info) {
            Some(c) => c,
            None => &GENERIC,
        },
    }
}

/// Every field error of `o` as a new (`old` is `None`) or updated object of `info`.
pub fn validate(info: &ResourceInfo, o: &Value, old: Option<&Value>) -> Vec<Cause> {
    let s = strategy(info);
    let mut out = Vec::new();
    validation::metadata(s.name_rule(), o, &mut out);
    s.validate(o, &mut out);
    if let Some(old) = old {
        s.validate_update(o, old, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(group: &str, kind: &str) -> &'static ResourceInfo {
        shoal_api::resources::find_kind(group, kind).unwrap()
    }

    #[test]
    fn pod_without_image_names_the_field() {
        let pod = json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}});
        let causes = validate(info("", "Pod"), &pod, None);
        assert_eq!(causes, vec![Cause::required("spec.containers[0].image")]);
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate(info("apps", "Deployment"), &d, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn invalid_names_and_labels_are_reported() {
        let cm = json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "not ok"}}});
        let causes = validate(info("", "ConfigMap"), &cm, None);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "metadata.labels"]);
    }

    #[test]
    fn deployment_gets_strategy_and_template_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]}]}}}});
        strategy(info("apps", "Deployment")).default(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"],
            json!({"maxUnavailable": "25%", "maxSurge": "25%"})
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn nested_strategy_fields_are_defaulted_as_set_defaults_does() {
        let tmpl = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        // A given type gets the missing fields of its rolling update.
        let mut d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}, "template": tmpl}});
        strategy(info("apps", "Deployment")).default(&mut d);
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": 2, "maxUnavailable": "25%"})
        );
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}, "template": tmpl}});
        strategy(info("apps", "Deployment")).default(&mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        let mut ds =
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}, "template": tmpl}});
        strategy(info("apps", "DaemonSet")).default(&mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"],
            json!({"maxUnavailable": 1, "maxSurge": 0})
        );
        assert_eq!(
            ds["status"],
            json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
        );
        // A StatefulSet's type given without rollingUpdate gets none; none given gets both.
        let mut ss =
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}, "template": tmpl}});
        strategy(info("apps", "StatefulSet")).default(&mut ss);
        assert_eq!(
            ss["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate"})
        );
        let mut ss = json!({"spec": {"template": tmpl}});
        strategy(info("apps", "StatefulSet")).default(&mut ss);
        assert_eq!(
            ss["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(ss["status"], json!({"replicas": 0, "availableReplicas": 0}));
    }

    #[test]
    fn pod_requests_default_to_limits_and_service_account_is_mirrored() {
        let mut p = json!({"spec": {"serviceAccountName": "robot", "containers": [{"name": "a", "image": "x:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m"}}}]}});
        strategy(info("", "Pod")).default(&mut p);
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "100m", "memory": "1Gi"})
        );
        assert_eq!(p["spec"]["serviceAccount"], "robot");
    }

    #[test]
    fn latest_or_untagged_images_pull_always() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "reg:5000/x"}, {"name": "b", "image": "x:latest"}]}});
        strategy(info("", "Pod")).default(&mut p);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["containers"][1]["imagePullPolicy"], "Always");
    }
}
