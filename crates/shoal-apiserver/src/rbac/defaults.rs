//! Kubernetes' default roles and bindings (its `bootstrappolicy`), for the kinds Shoal serves:
//! `cluster-admin`, the user-facing `admin`/`edit`/`view` (aggregated from the
//! `system:aggregate-to-*` roles), what every authenticated user may do (`system:basic-user`,
//! `system:discovery`, `system:public-info-viewer`) and the components' roles. They are
//! reconciled at every start: created when missing, and given back rules or subjects they
//! lost unless annotated `rbac.authorization.kubernetes.io/autoupdate: "false"`.

use super::{GROUP, Rule};
use serde_json::{Value, json};

pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";

/// The user (and its ClusterRole and binding) the nodes' ingress controller runs as.
pub const INGRESS_CONTROLLER: &str = "system:shoal:ingress-controller";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

/// A rule for the objects of `resources` named `names` only.
fn named_rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    let mut r = rule(verbs, groups, resources);
    r["resourceNames"] = json!(names);
    r
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: &[(&str, &str)], selects: &str) -> Value {
    let mut r = cluster_role(name, labels, Vec::new());
    r["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {format!("{AGGREGATE_TO}{selects}"): "true"}}]});
    r
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, name)| json!({"kind": kind, "apiGroup": GROUP, "name": name}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": meta(name, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

/// The default ClusterRoles, aggregated ones with the rules aggregation gives them.
pub fn cluster_roles() -> Vec<Value> {
    let to = |what: &str| format!("{AGGREGATE_TO}{what}");
    let (to_admin, to_edit, to_view) = (to("admin"), to("edit"), to("view"));
    let mut roles = vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", &[], "admin"),
        aggregated("edit", &[(to_admin.as_str(), "true")], "edit"),
        aggregated("view", &[(to_edit.as_str(), "true")], "view"),
        cluster_role(
            "system:aggregate-to-admin",
            &[(to_admin.as_str(), "true")],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    shoal_api::resources::verbs(),
                    &[GROUP],
                    &["rolebindings", "roles"],
                ),
                rule(
                    shoal_api::resources::verbs(),
                    &["policy.shoal.dev"],
                    &["admissionpolicies"],
                ),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(to_edit.as_str(), "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(to_view.as_str(), "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
                rule(
                    READ,
                    &["policy.shoal.dev"],
                    &["admissionpolicies", "admissionpolicies/status"],
                ),
            ],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                rule(&["create"], &["", "events.k8s.io"], &["events"]),
                rule(&["patch", "update"], &["", "events.k8s.io"], &["events"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(
                    READ,
                    &[""],
                    &[
                        "nodes",
                        "namespaces",
                        "pods",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "replicationcontrollers",
                        "services",
                    ],
                ),
                rule(&["delete"], &[""], &["pods"]),
                // Volume binding: the node picked for a WaitForFirstConsumer claim.
                rule(
                    &["patch", "update"],
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                // Shoal's scheduler plugins may load their modules from ConfigMaps.
                rule(READ, &[""], &["configmaps"]),
                rule(&["create"], &[""], &["bindings", "pods/binding"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(READ, &["apps"], &["replicasets", "statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "storageclasses",
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                    ],
                ),
                rule(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
                rule(READ, &["policy.shoal.dev"], &["schedulerplugins"]),
                rule(
                    &["update", "patch"],
                    &["policy.shoal.dev"],
                    &["schedulerplugins/status"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(
                    shoal_api::resources::verbs(),
                    &["", "apps", "batch", "policy", "discovery.k8s.io"],
                    &["*"],
                ),
                rule(
                    shoal_api::resources::verbs(),
                    &["storage.k8s.io"],
                    &["storageclasses"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(READ, &["*"], &["*"]),
                // The garbage collector and the namespace controller remove objects of every
                // kind, as Kubernetes' generic-garbage-collector and namespace-controller do.
                rule(
                    &["patch", "update", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                ),
                // ClusterRole aggregation writes rules the controller does not hold itself.
                rule(&["escalate"], &[GROUP], &["clusterroles"]),
                // The CSR approving and signing controllers.
                rule(
                    &["update"],
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/approval",
                        "certificatesigningrequests/status",
                    ],
                ),
                named_rule(
                    &["approve", "sign"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[shoal_pki::CLIENT_SIGNER, shoal_pki::KUBELET_CLIENT_SIGNER],
                ),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            &[],
            vec![named_rule(
                &["approve"],
                &["certificates.k8s.io"],
                &["signers"],
                &[shoal_pki::CLIENT_SIGNER],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            &[],
            vec![named_rule(
                &["approve"],
                &["certificates.k8s.io"],
                &["signers"],
                &[shoal_pki::KUBELET_CLIENT_SIGNER],
            )],
        ),
        cluster_role(
            "system:shoal:local-path-provisioner",
            &[],
            vec![
                rule(READ, &[""], &["persistentvolumeclaims"]),
                rule(
                    &["patch", "update"],
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumeclaims/status"],
                ),
                rule(
                    &[
                        "create", "delete", "get", "list", "watch", "patch", "update",
                    ],
                    &[""],
                    &["persistentvolumes", "persistentvolumes/status"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
            ],
        ),
        cluster_role(
            "system:node",
            &[],
            vec![
                rule(
                    &["create", "get", "list", "watch", "patch", "update"],
                    &[""],
                    &["nodes", "nodes/status"],
                ),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                // Pods, Services and endpoints for the node's proxy and DNS, namespaces and
                // NetworkPolicies for its policy enforcement.
                rule(
                    READ,
                    &[""],
                    &["pods", "services", "endpoints", "namespaces"],
                ),
                rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
                rule(&["create", "delete"], &[""], &["pods"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(
                    &["get"],
                    &[""],
                    &[
                        "configmaps",
                        "secrets",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                    ],
                ),
                rule(
                    &["get", "update", "patch"],
                    &[""],
                    &[
                        "persistentvolumes",
                        "persistentvolumes/status",
                        "persistentvolumeclaims/status",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    &["get", "create", "update", "patch", "delete"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
            ],
        ),
        // The nodes' ingress controller (as ingress-nginx's ServiceAccount): the routes'
        // objects and TLS Secrets, which a node's own identity may not read.
        cluster_role(
            INGRESS_CONTROLLER,
            &[],
            vec![
                rule(
                    &["list", "watch"],
                    &[""],
                    &["services", "endpoints", "secrets"],
                ),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                ),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                // Scale to zero: waking Deployments and reporting their activity.
                rule(&["list", "watch"], &["apps"], &["deployments"]),
                rule(
                    &["get", "patch", "update"],
                    &["apps"],
                    &["deployments/scale"],
                ),
                rule(
                    &["list", "watch"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers"],
                ),
                rule(
                    &["get", "create", "patch", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
            ],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], &[""], &["endpoints", "services"]),
                rule(&["get", "list", "watch"], &[""], &["nodes"]),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                rule(
                    &["get", "list", "watch"],
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses", "networkpolicies"],
                ),
            ],
        ),
    ];
    aggregate_all(&mut roles);
    roles
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            INGRESS_CONTROLLER,
            INGRESS_CONTROLLER,
            &[("User", INGRESS_CONTROLLER)],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        // What kubeadm binds for joining nodes: bootstrap tokens may ask for a kubelet
        // certificate, which the approval controller approves; a node may renew its own.
        binding(
            "shoal:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", crate::bootstraptoken::GROUP)],
        ),
        binding(
            "shoal:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", crate::bootstraptoken::GROUP)],
        ),
        binding(
            "shoal:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", super::node::NODES_GROUP)],
        ),
        binding(
            "shoal:local-path-provisioner",
            "system:shoal:local-path-provisioner",
            &[("Group", super::node::NODES_GROUP)],
        ),
    ]
}

/// Whether a ClusterRole's labels match one of an aggregation rule's selectors.
pub fn selected_by(aggregation: &Value, role: &Value) -> bool {
    aggregation
        .get("clusterRoleSelectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|sel| {
            shoal_api::selector::LabelSelector::from_object(sel)
                .is_ok_and(|s| !s.is_empty() && s.matches_object(role))
        })
}

/// The rules an aggregated ClusterRole gets from the others: theirs, in name order, each once.
pub fn aggregate(role: &Value, all: &[Value]) -> Vec<Value> {
    let Some(aggregation) = role.get("aggregationRule") else {
        return role
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
    };
    let mut sources: Vec<&Value> = all
        .iter()
        .filter(|r| crate::meta::name(r) != crate::meta::name(role) && selected_by(aggregation, r))
        .collect();
    sources.sort_by_key(|r| crate::meta::name(r).to_owned());
    let mut out: Vec<Value> = Vec::new();
    let mut seen: Vec<Rule> = Vec::new();
    for r in sources {
        for rule in r
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let parsed = Rule::from_json(rule);
            if !seen.contains(&parsed) {
                seen.push(parsed);
                out.push(rule.clone());
            }
        }
    }
    out
}

/// Aggregates every aggregated role of `roles` until nothing changes (an aggregated role may
/// feed another: `view` → `edit` → `admin`).
fn aggregate_all(roles: &mut [Value]) {
    for _ in 0..roles.len() {
        let mut changed = false;
        for i in 0..roles.len() {
            if roles[i].get("aggregationRule").is_none() {
                continue;
            }
            let rules = aggregate(&roles[i], roles);
            if roles[i]["rules"] != json!(rules) {
                roles[i]["rules"] = json!(rules);
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_holds_edit_which_holds_view() {
        let roles = cluster_roles();
        let rules = |name: &str| -> Vec<Rule> {
            roles.iter().find(|r| crate::meta::name(r) == name).unwrap()["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(Rule::from_json)
                .collect()
        };
        let (admin, edit, view) = (rules("admin"), rules("edit"), rules("view"));
        assert!(!view.is_empty());
        assert!(super::super::uncovered(&edit, &view).is_empty());
        assert!(super::super::uncovered(&admin, &edit).is_empty());
        assert!(!super::super::uncovered(&view, &edit).is_empty());
        // view reads no Secrets.
        let secrets = vec![Rule::from_json(
            &json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}),
        )];
        assert!(!super::super::uncovered(&view, &secrets).is_empty());
        assert!(super::super::uncovered(&edit, &secrets).is_empty());
    }
}
