//! Kubernetes' Node authorizer and NodeRestriction admission: a kubelet (`system:node:NAME` in
//! `system:nodes`) reads only the Secrets, ConfigMaps, PersistentVolumeClaims and
//! PersistentVolumes of the pods bound to its node and asks tokens only for their service
//! accounts; everything else it may do is the `system:node` role's rules, which are not bound
//! to anyone but applied here. It writes only its own Node and Lease, the status of its own
//! pods, and deletes or evicts only its own pods.

use super::{Decision, json_rule_allows};
use crate::auth::UserInfo;
use crate::cache::WatchCache;
use crate::request::RequestInfo;
use serde_json::Value;
use shoal_api::StatusError;
use std::sync::OnceLock;

pub const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";

/// The node a user is the kubelet of.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.username.strip_prefix(NODE_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// The rules of the `system:node` role, read once.
fn node_rules() -> &'static [Value] {
    static RULES: OnceLock<Vec<Value>> = OnceLock::new();
    RULES.get_or_init(|| {
        super::defaults::cluster_roles()
            .into_iter()
            .find(|r| crate::meta::name(r) == "system:node")
            .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    })
}

/// What a pod refers to, worked out once per stored version of it (kept with the cached
/// object), so a kubelet's read looks at names, not at pod specs.
#[derive(Debug, Default)]
struct PodRefs {
    node: String,
    secrets: Vec<String>,
    configmaps: Vec<String>,
    claims: Vec<String>,
    service_account: String,
}

impl PodRefs {
    fn of(pod: &Value) -> Self {
        PodRefs {
            node: str_at(pod, "/spec/nodeName").unwrap_or("").to_owned(),
            secrets: references(pod, "secrets"),
            configmaps: references(pod, "configmaps"),
            claims: references(pod, "persistentvolumeclaims"),
            service_account: references(pod, "serviceaccounts").pop().unwrap_or_default(),
        }
    }

    fn names(&self, resource: &str) -> &[String] {
        match resource {
            "secrets" => &self.secrets,
            "configmaps" => &self.configmaps,
            "persistentvolumeclaims" => &self.claims,
            "serviceaccounts" => std::slice::from_ref(&self.service_account),
            _ => &[],
        }
    }
}

/// Whether a pod of `namespace` bound to `node` refers to `name` of `resource`.
fn a_pod_on(cache: &WatchCache, namespace: &str, node: &str, resource: &str, name: &str) -> bool {
    let info = shoal_api::resources::find("", "v1", "pods").expect("pods are served");
    cache
        .resource(info)
        .list(&info.namespace_prefix(Some(namespace)), None)
        .iter()
        .filter_map(|p| p.derived(PodRefs::of))
        .any(|r| r.node == node && r.names(resource).iter().any(|n| n == name))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn items<'a>(v: &'a Value, ptr: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The names of the objects of `resource` a pod refers to.
fn references(pod: &Value, resource: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            out.push(n.to_owned());
        }
    };
    match resource {
        "secrets" | "configmaps" => {
            let (vol, field, key_ref, from) = if resource == "secrets" {
                ("secret", "/secretName", "secretKeyRef", "secretRef")
            } else {
                ("configMap", "/name", "configMapKeyRef", "configMapRef")
            };
            for v in items(pod, "/spec/volumes") {
                add(str_at(v, &format!("/{vol}{field}")));
                for s in items(v, "/projected/sources") {
                    add(str_at(s, &format!("/{vol}/name")));
                }
            }
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                for c in items(pod, &format!("/spec/{list}")) {
                    for e in items(c, "/env") {
                        add(str_at(e, &format!("/valueFrom/{key_ref}/name")));
                    }
                    for e in items(c, "/envFrom") {
                        add(str_at(e, &format!("/{from}/name")));
                    }
                }
            }
            if resource == "secrets" {
                for s in items(pod, "/spec/imagePullSecrets") {
                    add(str_at(s, "/name"));
                }
            }
        }
        "persistentvolumeclaims" => {
            for v in items(pod, "/spec/volumes") {
                add(str_at(v, "/persistentVolumeClaim/claimName"));
            }
        }
        "serviceaccounts" => add(Some(
            str_at(pod, "/spec/serviceAccountName").unwrap_or("default"),
        )),
        _ => {}
    }
    out
}

/// Whether a pod bound to `node` refers to the object `req` names.
fn related(cache: &WatchCache, node: &str, req: &RequestInfo) -> bool {
    let Some(r) = &req.resource else {
        return false;
    };
    if r.resource == "persistentvolumes" {
        // A volume is the node's when a claim of one of its pods is bound to it.
        let claims = shoal_api::resources::find("", "v1", "persistentvolumeclaims")
            .expect("claims are served");
        return cache
            .resource(claims)
            .list(&claims.namespace_prefix(None), None)
            .iter()
            .map(|c| c.value())
            .filter(|c| str_at(c, "/spec/volumeName") == Some(r.name.as_str()))
            .any(|c| {
                let ns = str_at(c, "/metadata/namespace").unwrap_or("");
                let name = crate::meta::name(c);
                a_pod_on(cache, ns, node, "persistentvolumeclaims", name)
            });
    }
    a_pod_on(cache, &r.namespace, node, &r.resource, &r.name)
}

/// The Node authorizer's decision for a kubelet's request; `None` for anyone else.
pub fn authorize(cache: &WatchCache, user: &UserInfo, req: &RequestInfo) -> Option<Decision> {
    let node = node_of(user)?;
    let Some(r) = &req.resource else {
        return Some(rules_decision(req));
    };
    let graph = match (
        r.group.as_str(),
        r.resource.as_str(),
        r.subresource.as_str(),
    ) {
        ("", "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes", "") => {
            req.verb == "get"
        }
        ("", "serviceaccounts", "token") => req.verb == "create",
        // A claim's or volume's status, as the kubelet reports a resize.
        ("", "persistentvolumeclaims" | "persistentvolumes", "status") => {
            matches!(req.verb.as_str(), "get" | "patch" | "update")
        }
        // Anything else on these is RBAC's to allow (no role bound to nodes does).
        ("", "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes", _)
        | ("", "serviceaccounts", _) => {
            return Some(Decision {
                allowed: false,
                reason: String::new(),
            });
        }
        _ => return Some(rules_decision(req)),
    };
    let allowed = graph && !r.name.is_empty() && related(cache, node, req);
    Some(Decision {
        allowed,
        reason: if allowed {
            String::new()
        } else {
            format!("no relationship found between node '{node}' and this object")
        },
    })
}

fn rules_decision(req: &RequestInfo) -> Decision {
    let allowed = node_rules().iter().any(|rule| json_rule_allows(rule, req));
    Decision {
        allowed,
        reason: String::new(),
    }
}

fn refuse(message: String) -> StatusError {
    StatusError::forbidden(message)
}

/// NodeRestriction: what a kubelet may write. `o` is the object written (the stored one for
/// a delete), `subresource` the path's.
pub fn restrict(
    user: &UserInfo,
    info: &shoal_api::ResourceInfo,
    subresource: Option<shoal_api::Subresource>,
    o: &Value,
) -> Result<(), StatusError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let name = crate::meta::name(o);
    match (info.group, info.kind) {
        ("", "Node") if name != node => Err(refuse(format!(
            "node {node:?} is not allowed to modify node {name:?}"
        ))),
        ("coordination.k8s.io", "Lease")
            if str_at(o, "/metadata/namespace") == Some("kube-node-lease") && name != node =>
        {
            Err(refuse(format!(
                "node {node:?} can only access node lease with the same name as the requesting node"
            )))
        }
        ("", "Pod") => {
            let bound = str_at(o, "/spec/nodeName").unwrap_or("");
            if bound == node {
                return Ok(());
            }
            Err(refuse(match subresource {
                Some(shoal_api::Subresource::Status) => format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                ),
                Some(shoal_api::Subresource::Eviction) => {
                    format!("node {node:?} can only evict pods with spec.nodeName set to itself")
                }
                _ => format!("node {node:?} can only modify pods with spec.nodeName set to itself"),
            }))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_refers_to_the_objects_its_volumes_env_and_pull_secrets_name() {
        let pod = json!({"spec": {
            "serviceAccountName": "robot",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "configMap": {"name": "cfg"}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"secret": {"name": "proj"}},
                    {"serviceAccountToken": {"path": "token"}}]}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [{"name": "m", "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "key", "key": "k"}}},
                {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}}]}]}});
        let mut secrets = references(&pod, "secrets");
        secrets.sort();
        assert_eq!(secrets, ["init-env", "key", "proj", "pull", "vol"]);
        let mut maps = references(&pod, "configmaps");
        maps.sort();
        assert_eq!(maps, ["cfg", "cm-key", "kube-root-ca.crt"]);
        assert_eq!(references(&pod, "persistentvolumeclaims"), ["data"]);
        assert_eq!(references(&pod, "serviceaccounts"), ["robot"]);
        assert_eq!(
            references(&json!({"spec": {}}), "serviceaccounts"),
            ["default"]
        );
    }

    #[test]
    fn only_members_of_system_nodes_are_nodes() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            username: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(node_of(&user("system:node:a", &[NODES_GROUP])), Some("a"));
        assert_eq!(node_of(&user("system:node:a", &["other"])), None);
        assert_eq!(node_of(&user("system:node:", &[NODES_GROUP])), None);
        assert_eq!(node_of(&user("alice", &[NODES_GROUP])), None);
        let refused = restrict(
            &user("system:node:a", &[NODES_GROUP]),
            shoal_api::resources::find("", "v1", "nodes").unwrap(),
            None,
            &json!({"metadata": {"name": "b"}}),
        );
        assert!(refused.is_err());
    }
}
