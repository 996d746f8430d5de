//! The resource table: every kind the API server serves, with what discovery, routing, storage
//! and kubectl need to know about it.

/// A subresource a resource offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subresource {
    Status,
    Scale,
    Binding,
    Log,
    Exec,
    Attach,
    PortForward,
    Proxy,
    Eviction,
    Finalize,
    Token,
    Approval,
    EphemeralContainers,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Proxy => "proxy",
            Subresource::Eviction => "eviction",
            Subresource::Finalize => "finalize",
            Subresource::Token => "token",
            Subresource::Approval => "approval",
            Subresource::EphemeralContainers => "ephemeralcontainers",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        ALL_SUBRESOURCES.iter().copied().find(|x| x.name() == s)
    }
    /// `(group, version, kind)` of the object the subresource takes and returns, if not the
    /// parent's own kind.
    pub fn response_kind(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Subresource::Scale => Some(("autoscaling", "v1", "Scale")),
            Subresource::Binding => Some(("", "v1", "Binding")),
            Subresource::Exec => Some(("", "v1", "PodExecOptions")),
            Subresource::Attach => Some(("", "v1", "PodAttachOptions")),
            Subresource::PortForward => Some(("", "v1", "PodPortForwardOptions")),
            Subresource::Proxy => Some(("", "v1", "PodProxyOptions")),
            Subresource::Eviction => Some(("policy", "v1", "Eviction")),
            Subresource::Token => Some(("authentication.k8s.io", "v1", "TokenRequest")),
            _ => None,
        }
    }
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status
            | Subresource::Scale
            | Subresource::Approval
            | Subresource::EphemeralContainers => &["get", "patch", "update"],
            Subresource::Binding | Subresource::Eviction | Subresource::Token => &["create"],
            Subresource::Log => &["get"],
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
                &["create", "get"]
            }
            Subresource::Proxy => &["create", "delete", "get", "patch", "update"],
            Subresource::Finalize => &["update"],
        }
    }
}

const ALL_SUBRESOURCES: &[Subresource] = &[
    Subresource::Status,
    Subresource::Scale,
    Subresource::Binding,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Attach,
    Subresource::PortForward,
    Subresource::Proxy,
    Subresource::Eviction,
    Subresource::Finalize,
    Subresource::Token,
    Subresource::Approval,
    Subresource::EphemeralContainers,
];

/// One served resource.
#[derive(Debug)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub subresources: &'static [Subresource],
    /// Field selector keys beyond `metadata.name` and `metadata.namespace`.
    pub selectable_fields: &'static [&'static str],
    /// Whether `metadata.generation` tracks changes to the spec (kinds with a `spec`).
    pub has_spec: bool,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }
    /// `pods`, or `deployments.apps`.
    pub fn qualified(&self) -> String {
        crate::status::qualified(self.plural, self.group)
    }
    /// Store key prefix for all objects of the resource.
    pub fn storage_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }
    /// Store key prefix for one namespace (or the whole resource if cluster-scoped).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.storage_prefix()),
            _ => self.storage_prefix(),
        }
    }
    pub fn storage_key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.namespace_prefix(namespace))
    }
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || field == "metadata.namespace"
            || self.selectable_fields.contains(&field)
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The verbs every served resource supports.
pub fn verbs() -> &'static [&'static str] {
    VERBS
}

use Subresource as S;

macro_rules! res {
    (version: $version:expr, $group:expr, $kind:expr, $plural:expr, $singular:expr, ns: $ns:expr, short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*], fields: [$($f:expr),*], spec: $spec:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            namespaced: $ns,
            subresources: &[$($sub),*],
            selectable_fields: &[$($f),*],
            has_spec: $spec,
        }
    };
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, ns: $ns:expr, short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*], fields: [$($f:expr),*], spec: $spec:expr) => {
        res!(version: "v1", $group, $kind, $plural, $singular, ns: $ns, short: [$($short),*], cat: [$($cat),*], sub: [$($sub),*], fields: [$($f),*], spec: $spec)
    };
}

/// Every resource served, core group first, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    res!("", "Namespace", "namespaces", "namespace", ns: false, short: ["ns"], cat: [], sub: [S::Status, S::Finalize], fields: ["status.phase"], spec: false),
    res!("", "Pod", "pods", "pod", ns: true, short: ["po"], cat: ["all"], sub: [S::Status, S::Binding, S::Log, S::Exec, S::Attach, S::PortForward, S::Proxy, S::Eviction, S::EphemeralContainers],
        fields: ["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"], spec: false),
    res!("", "Node", "nodes", "node", ns: false, short: ["no"], cat: [], sub: [S::Status, S::Proxy], fields: ["spec.unschedulable"], spec: false),
    res!("", "Service", "services", "service", ns: true, short: ["svc"], cat: ["all"], sub: [S::Status, S::Proxy], fields: ["spec.clusterIP", "spec.type"], spec: false),
    res!("", "Endpoints", "endpoints", "endpoints", ns: true, short: ["ep"], cat: [], sub: [], fields: [], spec: false),
    res!("", "ConfigMap", "configmaps", "configmap", ns: true, short: ["cm"], cat: [], sub: [], fields: [], spec: false),
    res!("", "Secret", "secrets", "secret", ns: true, short: [], cat: [], sub: [], fields: ["type"], spec: false),
    res!("", "ServiceAccount", "serviceaccounts", "serviceaccount", ns: true, short: ["sa"], cat: [], sub: [S::Token], fields: [], spec: false),
    res!("", "Event", "events", "event", ns: true, short: ["ev"], cat: [], sub: [],
        fields: ["involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"], spec: false),
    res!("", "ReplicationController", "replicationcontrollers", "replicationcontroller", ns: true, short: ["rc"], cat: ["all"], sub: [S::Status, S::Scale], fields: ["status.replicas"], spec: true),
    res!("", "PersistentVolume", "persistentvolumes", "persistentvolume", ns: false, short: ["pv"], cat: [], sub: [S::Status], fields: [], spec: false),
    res!("", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", ns: true, short: ["pvc"], cat: [], sub: [S::Status], fields: [], spec: false),
    res!("", "PodTemplate", "podtemplates", "podtemplate", ns: true, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("", "LimitRange", "limitranges", "limitrange", ns: true, short: ["limits"], cat: [], sub: [], fields: [], spec: false),
    res!("", "ResourceQuota", "resourcequotas", "resourcequota", ns: true, short: ["quota"], cat: [], sub: [S::Status], fields: [], spec: false),
    res!("apiextensions.k8s.io", "CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition", ns: false, short: ["crd", "crds"], cat: ["api-extensions"], sub: [S::Status], fields: [], spec: true),
    res!("apps", "ControllerRevision", "controllerrevisions", "controllerrevision", ns: true, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("apps", "Deployment", "deployments", "deployment", ns: true, short: ["deploy"], cat: ["all"], sub: [S::Status, S::Scale], fields: [], spec: true),
    res!("apps", "ReplicaSet", "replicasets", "replicaset", ns: true, short: ["rs"], cat: ["all"], sub: [S::Status, S::Scale], fields: ["status.replicas"], spec: true),
    res!("apps", "StatefulSet", "statefulsets", "statefulset", ns: true, short: ["sts"], cat: ["all"], sub: [S::Status, S::Scale], fields: [], spec: true),
    res!("apps", "DaemonSet", "daemonsets", "daemonset", ns: true, short: ["ds"], cat: ["all"], sub: [S::Status], fields: [], spec: true),
    // Stored as autoscaling/v2 (listed first: the preferred version), served as v1 too by
    // conversion (`autoscaling` in the API server).
    res!(version: "v2", "autoscaling", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", ns: true, short: ["hpa"], cat: ["all"], sub: [S::Status], fields: [], spec: true),
    res!("autoscaling", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", ns: true, short: ["hpa"], cat: ["all"], sub: [S::Status], fields: [], spec: true),
    res!("batch", "Job", "jobs", "job", ns: true, short: [], cat: ["all"], sub: [S::Status], fields: ["status.successful"], spec: true),
    res!("batch", "CronJob", "cronjobs", "cronjob", ns: true, short: ["cj"], cat: ["all"], sub: [S::Status], fields: [], spec: true),
    res!("certificates.k8s.io", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", ns: false, short: ["csr"], cat: [], sub: [S::Status, S::Approval], fields: ["spec.signerName"], spec: true),
    res!("coordination.k8s.io", "Lease", "leases", "lease", ns: true, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("discovery.k8s.io", "EndpointSlice", "endpointslices", "endpointslice", ns: true, short: [], cat: [], sub: [], fields: ["addressType"], spec: false),
    res!("flowcontrol.apiserver.k8s.io", "FlowSchema", "flowschemas", "flowschema", ns: false, short: [], cat: [], sub: [S::Status], fields: [], spec: true),
    res!("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration", "prioritylevelconfigurations", "prioritylevelconfiguration", ns: false, short: [], cat: [], sub: [S::Status], fields: [], spec: true),
    res!("networking.k8s.io", "Ingress", "ingresses", "ingress", ns: true, short: ["ing"], cat: [], sub: [S::Status], fields: [], spec: true),
    res!("networking.k8s.io", "IngressClass", "ingressclasses", "ingressclass", ns: false, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("networking.k8s.io", "NetworkPolicy", "networkpolicies", "networkpolicy", ns: true, short: ["netpol"], cat: [], sub: [], fields: [], spec: true),
    res!("node.k8s.io", "RuntimeClass", "runtimeclasses", "runtimeclass", ns: false, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("policy", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", ns: true, short: ["pdb"], cat: [], sub: [S::Status], fields: [], spec: true),
    res!("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", ns: false, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", "clusterrole", ns: false, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("rbac.authorization.k8s.io", "RoleBinding", "rolebindings", "rolebinding", ns: true, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("rbac.authorization.k8s.io", "Role", "roles", "role", ns: true, short: [], cat: [], sub: [], fields: [], spec: false),
    res!("scheduling.k8s.io", "PriorityClass", "priorityclasses", "priorityclass", ns: false, short: ["pc"], cat: [], sub: [], fields: [], spec: false),
    res!("storage.k8s.io", "StorageClass", "storageclasses", "storageclass", ns: false, short: ["sc"], cat: [], sub: [], fields: [], spec: false),
    res!("events.k8s.io", "Event", "events", "event", ns: true, short: ["ev"], cat: [], sub: [],
        fields: ["regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid", "reason", "reportingController", "type"], spec: false),
    res!("policy.shoal.dev", "ClusterAdmissionPolicy", "clusteradmissionpolicies", "clusteradmissionpolicy", ns: false, short: ["cap"], cat: ["policies"], sub: [S::Status], fields: [], spec: true),
    res!("policy.shoal.dev", "AdmissionPolicy", "admissionpolicies", "admissionpolicy", ns: true, short: ["ap"], cat: ["policies"], sub: [S::Status], fields: [], spec: true),
    res!("policy.shoal.dev", "SchedulerPlugin", "schedulerplugins", "schedulerplugin", ns: false, short: ["sp"], cat: ["policies"], sub: [S::Status], fields: [], spec: true),
];

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group and kind.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The groups served, in discovery order, with their versions.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// A DNS-1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, ≤ 253.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// The name part of a qualified name or a label value: alphanumerics, '-', '_', '.', starting
/// and ending alphanumeric, ≤ 63.
pub fn is_qualified_name_part(s: &str) -> bool {
    let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && ok_end(s.chars().next())
        && ok_end(s.chars().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_keys_separate_groups_and_namespaces() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.storage_key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let deploy = find_kind("apps", "Deployment").unwrap();
        assert_eq!(
            deploy.storage_key(Some("a"), "b"),
            "/registry/apps/deployments/a/b"
        );
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(
            ns.storage_key(None, "default"),
            "/registry/namespaces/default"
        );
    }

    #[test]
    fn name_rules() {
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(is_dns1035_label("web"));
        assert!(!is_dns1035_label("1web"));
        assert!(is_qualified_name_part("My_app.v1"));
        assert!(!is_qualified_name_part("-x"));
    }
}
