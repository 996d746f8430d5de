//! Authorization: RBAC (`rbac.authorization.k8s.io/v1`) as Kubernetes evaluates it, read from
//! the watch cache. A request is allowed when a rule of a role bound to its user allows it:
//! ClusterRoleBindings everywhere, RoleBindings in their namespace; `system:masters` may do
//! everything (Kubernetes' privileged-group authorizer, ahead of RBAC). Also here: the rules a
//! user holds (SelfSubjectRulesReview), the escalation check (a role or binding may grant only
//! what its author holds, unless the author has `escalate` or `bind`), and Kubernetes' wording
//! of a refusal.

pub mod defaults;
pub mod node;
pub mod review;

use crate::auth::UserInfo;
use crate::cache::WatchCache;
use crate::request::{RequestInfo, ResourceAttributes};
use serde_json::Value;
use shoal_api::{ResourceInfo, StatusError};

pub const GROUP: &str = "rbac.authorization.k8s.io";
/// The group whose members may do everything.
pub const MASTERS: &str = "system:masters";

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    crate::meta::strings(v.get(key))
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

impl Rule {
    pub fn from_json(v: &Value) -> Self {
        Rule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("verbs".into(), self.verbs.clone().into());
        let mut put = |k: &str, v: &Vec<String>| {
            if !v.is_empty() {
                o.insert(k.into(), v.clone().into());
            }
        };
        put("apiGroups", &self.api_groups);
        put("resources", &self.resources);
        put("resourceNames", &self.resource_names);
        put("nonResourceURLs", &self.non_resource_urls);
        Value::Object(o)
    }

    /// Kubernetes' `CompactString`: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let q = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(" "))
        };
        let mut parts = Vec::new();
        for (label, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("ResourceNames", &self.resource_names),
            ("NonResourceURLs", &self.non_resource_urls),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{label}:{}", q(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// `/apis/*` matches `/apis/apps`; `*` matches everything.
fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// An authorization decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

fn info(plural: &str) -> &'static ResourceInfo {
    shoal_api::resources::find(GROUP, "v1", plural).expect("RBAC kinds are served")
}

/// Whether a binding's subject is `user` (Kubernetes' `appliesToUser`); `namespace` is the
/// binding's, the default of a ServiceAccount subject's.
fn applies_to(subject: &Value, user: &UserInfo, namespace: &str) -> bool {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match subject.get("kind").and_then(Value::as_str) {
        Some("User") => user.username == name,
        Some("Group") => has(&user.groups, name),
        Some("ServiceAccount") => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn describe_subject(subject: &Value) -> String {
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match subject.get("namespace").and_then(Value::as_str) {
        Some(ns) if kind == "ServiceAccount" && !ns.is_empty() => {
            format!("{kind} \"{ns}/{name}\"")
        }
        _ => format!("{kind} \"{name}\""),
    }
}

/// The role a binding refers to (its cached object), or why there is none.
fn referenced_role(
    cache: &WatchCache,
    role_ref: &Value,
    namespace: &str,
) -> Result<std::sync::Arc<crate::cache::CachedObject>, String> {
    let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
    let (info, key_ns, what) = match kind {
        "Role" => (info("roles"), Some(namespace), "role"),
        "ClusterRole" => (info("clusterroles"), None, "clusterrole"),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    cache
        .resource(info)
        .get(&info.storage_key(key_ns, name))
        .ok_or_else(|| format!("{what}.{GROUP} \"{name}\" not found"))
}

fn rules_json(role: &Value) -> &[Value] {
    role.get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The rules of the role a binding refers to, or why there are none.
fn referenced_rules(
    cache: &WatchCache,
    role_ref: &Value,
    namespace: &str,
) -> Result<Vec<Rule>, String> {
    let role = referenced_role(cache, role_ref, namespace)?;
    Ok(rules_json(role.value())
        .iter()
        .map(Rule::from_json)
        .collect())
}

/// A binding that applies to the user, for describing what it granted.
pub struct Grant<'a> {
    binding: &'a Value,
    subject: &'a Value,
    /// The binding's namespace; empty for a ClusterRoleBinding.
    namespace: &'a str,
}

impl Grant<'_> {
    /// `ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`, as Kubernetes words it.
    fn describe(&self) -> String {
        let r = self.binding.get("roleRef").unwrap_or(&Value::Null);
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        let name = crate::meta::name(self.binding);
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {name:?} of ClusterRole {:?} to {}",
                s("name"),
                describe_subject(self.subject)
            )
        } else {
            format!(
                "RoleBinding \"{name}/{}\" of {} {:?} to {}",
                self.namespace,
                s("kind"),
                s("name"),
                describe_subject(self.subject)
            )
        }
    }
}

/// Visits the rules (as stored, JSON) of every role bound to `user` that applies in
/// `namespace` (cluster-wide bindings, then the namespace's RoleBindings), with the binding
/// that grants them, until `visit` returns `true`. Returns the errors met (a binding to a role
/// that does not exist). Nothing is copied out of the cache on the way.
fn visit_rules(
    cache: &WatchCache,
    user: &UserInfo,
    namespace: &str,
    mut visit: impl FnMut(&Grant<'_>, &[Value]) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let crbs = info("clusterrolebindings");
    let rbs = info("rolebindings");
    let cluster = cache.resource(crbs).list(&crbs.storage_prefix(), None);
    let local = if namespace.is_empty() {
        Vec::new()
    } else {
        cache
            .resource(rbs)
            .list(&rbs.namespace_prefix(Some(namespace)), None)
    };
    let bindings = cluster
        .iter()
        .map(|b| (b, ""))
        .chain(local.iter().map(|b| (b, namespace)));
    for (b, ns) in bindings {
        let b = b.value();
        let Some(subject) = b
            .get("subjects")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().find(|s| applies_to(s, user, ns)))
        else {
            continue;
        };
        let role_ref = b.get("roleRef").unwrap_or(&Value::Null);
        match referenced_role(cache, role_ref, ns) {
            Ok(role) => {
                let grant = Grant {
                    binding: b,
                    subject,
                    namespace: ns,
                };
                if visit(&grant, rules_json(role.value())) {
                    return errors;
                }
            }
            Err(e) => errors.push(e),
        }
    }
    errors
}

fn json_has(v: &Value, key: &str, want: &str) -> bool {
    v.get(key)
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(want)))
}

fn json_empty(v: &Value, key: &str) -> bool {
    v.get(key)
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
}

/// [`Rule::allows`] on a stored rule, without copying it.
fn json_rule_allows(rule: &Value, req: &RequestInfo) -> bool {
    if !(json_has(rule, "verbs", "*") || json_has(rule, "verbs", &req.verb)) {
        return false;
    }
    let Some(r) = &req.resource else {
        return rule
            .get("nonResourceURLs")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .any(|u| url_matches(u, &req.path))
            });
    };
    if !(json_has(rule, "apiGroups", "*") || json_has(rule, "apiGroups", &r.group)) {
        return false;
    }
    let resource_ok = rule
        .get("resources")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().filter_map(Value::as_str).any(|x| {
                x == "*"
                    || (r.subresource.is_empty() && x == r.resource)
                    || (!r.subresource.is_empty()
                        && (x.strip_prefix("*/") == Some(r.subresource.as_str())
                            || x.split_once('/') == Some((&r.resource, &r.subresource))))
            })
        });
    resource_ok && (json_empty(rule, "resourceNames") || json_has(rule, "resourceNames", &r.name))
}

/// Whether `user` may do what `req` asks.
pub fn authorize(cache: &WatchCache, user: &UserInfo, req: &RequestInfo) -> Decision {
    if has(&user.groups, MASTERS) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    // Kubernetes' chain: the Node authorizer, then RBAC.
    let node = node::authorize(cache, user, req);
    if let Some(d) = node.as_ref().filter(|d| d.allowed) {
        return d.clone();
    }
    let namespace = req
        .resource
        .as_ref()
        .map(|r| r.namespace.as_str())
        .unwrap_or("");
    let mut granted = None;
    let errors = visit_rules(cache, user, namespace, |grant, rules| {
        let ok = rules.iter().any(|r| json_rule_allows(r, req));
        if ok {
            granted = Some(grant.describe());
        }
        ok
    });
    match granted {
        Some(source) => Decision {
            allowed: true,
            reason: format!("RBAC: allowed by {source}"),
        },
        None => Decision {
            allowed: false,
            reason: match node {
                Some(d) if !d.reason.is_empty() => d.reason,
                _ if errors.is_empty() => String::new(),
                _ => format!("RBAC: [{}]", errors.join(", ")),
            },
        },
    }
}

/// Every rule `user` holds in `namespace` (cluster-wide ones included); `system:masters`
/// holds everything.
pub fn rules_for(cache: &WatchCache, user: &UserInfo, namespace: &str) -> (Vec<Rule>, Vec<String>) {
    let mut rules = Vec::new();
    if has(&user.groups, MASTERS) {
        rules.push(Rule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Rule::default()
        });
        rules.push(Rule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Rule::default()
        });
    }
    let errors = visit_rules(cache, user, namespace, |_, stored| {
        for r in stored.iter().map(Rule::from_json) {
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
        false
    });
    (rules, errors)
}

/// Kubernetes' wording of a refused request, as the `Status` a client gets.
pub fn forbidden(user: &UserInfo, req: &RequestInfo, reason: &str) -> StatusError {
    let mut why = match &req.resource {
        None => format!(
            "User {:?} cannot {} path {:?}",
            user.username, req.verb, req.path
        ),
        Some(r) if !r.namespace.is_empty() => format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.username,
            req.verb,
            r.combined(),
            r.group,
            r.namespace
        ),
        Some(r) => format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.username,
            req.verb,
            r.combined(),
            r.group
        ),
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    match &req.resource {
        None => StatusError::forbidden(format!("forbidden: {why}")),
        Some(r) => StatusError::forbidden_object(&r.resource, &r.group, &r.name, &why),
    }
}

/// Splits rules into one verb, group, resource and name each (Kubernetes' `BreakdownRule`).
fn breakdown(rule: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    let one = |s: &String| vec![s.clone()];
    for verb in &rule.verbs {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                if rule.resource_names.is_empty() {
                    out.push(Rule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..Rule::default()
                    });
                }
                for name in &rule.resource_names {
                    out.push(Rule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: one(name),
                        ..Rule::default()
                    });
                }
            }
        }
        for url in &rule.non_resource_urls {
            out.push(Rule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..Rule::default()
            });
        }
    }
    out
}

/// Whether `owner` grants everything the one-of-each rule `sub` does.
fn covers_one(owner: &Rule, sub: &Rule) -> bool {
    let verbs = has(&owner.verbs, "*") || sub.verbs.iter().all(|v| has(&owner.verbs, v));
    let groups =
        has(&owner.api_groups, "*") || sub.api_groups.iter().all(|g| has(&owner.api_groups, g));
    let resources = has(&owner.resources, "*")
        || sub.resources.iter().all(|r| {
            has(&owner.resources, r)
                || r.split_once('/')
                    .is_some_and(|(_, s)| has(&owner.resources, &format!("*/{s}")))
        });
    let urls = sub
        .non_resource_urls
        .iter()
        .all(|u| owner.non_resource_urls.iter().any(|o| url_matches(o, u)));
    let names = owner.resource_names.is_empty()
        || (!sub.resource_names.is_empty()
            && sub
                .resource_names
                .iter()
                .all(|n| has(&owner.resource_names, n)));
    verbs && groups && resources && urls && names
}

/// The parts of `wanted` that `owned` does not cover, compacted (verbs of the same resource
/// together) and sorted, as Kubernetes lists them.
pub fn uncovered(owned: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    let mut missing: Vec<Rule> = Vec::new();
    for sub in wanted.iter().flat_map(breakdown) {
        if owned.iter().any(|o| covers_one(o, &sub)) {
            continue;
        }
        let same = missing.iter_mut().find(|m| {
            m.api_groups == sub.api_groups
                && m.resources == sub.resources
                && m.resource_names == sub.resource_names
                && m.non_resource_urls == sub.non_resource_urls
                && m.non_resource_urls.is_empty()
        });
        match same {
            Some(m) => {
                if !m.verbs.contains(&sub.verbs[0]) {
                    m.verbs.push(sub.verbs[0].clone());
                }
            }
            None => missing.push(sub),
        }
    }
    missing.sort_by_key(Rule::compact_string);
    missing
}

/// Refuses a role or binding whose rules `user` does not hold itself (in `namespace`, or
/// cluster-wide when empty).
pub fn confirm_no_escalation(
    cache: &WatchCache,
    user: &UserInfo,
    namespace: &str,
    wanted: &[Rule],
    target: (&str, &str),
) -> Result<(), StatusError> {
    let (owned, errors) = rules_for(cache, user, namespace);
    let missing = uncovered(&owned, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut msg = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.username,
        groups.join(" "),
        missing
            .iter()
            .map(Rule::compact_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(", ")));
    }
    Err(StatusError::forbidden_object(
        target.0, GROUP, target.1, &msg,
    ))
}

fn rules_of(o: &Value) -> Vec<Rule> {
    o.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

/// The escalation check of a write to an RBAC object by `user`: a role may hold only rules
/// its author holds (or the author may `escalate` it); a binding may grant only a role whose
/// rules its author holds (or the author may `bind` it).
pub fn check_write(
    cache: &WatchCache,
    info: &ResourceInfo,
    user: &UserInfo,
    o: &Value,
) -> Result<(), StatusError> {
    if info.group != GROUP || has(&user.groups, MASTERS) {
        return Ok(());
    }
    let name = crate::meta::name(o);
    let namespace = if info.namespaced {
        o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    } else {
        ""
    };
    let may = |verb: &str, resource: &str, name: &str| {
        let req = RequestInfo {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: GROUP.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: namespace.into(),
                name: name.into(),
            }),
            path: String::new(),
        };
        authorize(cache, user, &req).allowed
    };
    match info.kind {
        "Role" | "ClusterRole" => {
            if may("escalate", info.plural, name) {
                return Ok(());
            }
            confirm_no_escalation(cache, user, namespace, &rules_of(o), (info.plural, name))
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = o.get("roleRef").unwrap_or(&Value::Null);
            let role = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
            let resource = match role_ref.get("kind").and_then(Value::as_str) {
                Some("Role") => "roles",
                _ => "clusterroles",
            };
            if may("bind", resource, role) {
                return Ok(());
            }
            let rules = referenced_rules(cache, role_ref, namespace)
                .map_err(|e| StatusError::forbidden_object(info.plural, GROUP, name, &e))?;
            confirm_no_escalation(cache, user, namespace, &rules, (info.plural, name))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    /// A stored rule, as the authorizer matches it.
    struct Stored(Value);
    impl Stored {
        fn allows(&self, req: &RequestInfo) -> bool {
            json_rule_allows(&self.0, req)
        }
    }

    fn req(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> RequestInfo {
        RequestInfo {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            }),
            path: String::new(),
        }
    }

    #[test]
    fn rules_match_as_kubernetes_matches_them() {
        let r = Stored(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        );
        assert!(r.allows(&req("get", "", "pods", "", "d", "p")));
        assert!(r.allows(&req("get", "", "pods", "log", "d", "p")));
        assert!(!r.allows(&req("get", "", "pods", "exec", "d", "p")));
        assert!(!r.allows(&req("delete", "", "pods", "", "d", "p")));
        assert!(!r.allows(&req("get", "apps", "pods", "", "d", "p")));
        let star_sub =
            Stored(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}));
        assert!(star_sub.allows(&req("update", "apps", "deployments", "scale", "d", "w")));
        assert!(!star_sub.allows(&req("update", "apps", "deployments", "", "d", "w")));
        let named = Stored(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]}),
        );
        assert!(named.allows(&req("get", "", "configmaps", "", "d", "one")));
        assert!(!named.allows(&req("get", "", "configmaps", "", "d", "two")));
        assert!(!named.allows(&req("list", "", "configmaps", "", "d", "")));
        let urls = Stored(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*", "/version"]}));
        let path = |p: &str| RequestInfo {
            verb: "get".into(),
            resource: None,
            path: p.into(),
        };
        assert!(urls.allows(&path("/apis/apps/v1")) && urls.allows(&path("/version")));
        assert!(!urls.allows(&path("/api")));
    }

    #[test]
    fn refusals_read_as_kubernetes_writes_them() {
        let alice = UserInfo {
            username: "alice".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let e = forbidden(&alice, &req("list", "", "pods", "", "default", ""), "");
        assert_eq!(
            e.message,
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let e = forbidden(
            &alice,
            &req("get", "apps", "deployments", "scale", "", "w"),
            "",
        );
        assert_eq!(
            e.message,
            r#"deployments.apps "w" is forbidden: User "alice" cannot get resource "deployments/scale" in API group "apps" at the cluster scope"#
        );
        let path = RequestInfo {
            verb: "get".into(),
            resource: None,
            path: "/metrics".into(),
        };
        assert_eq!(
            forbidden(&alice, &path, "").message,
            r#"forbidden: User "alice" cannot get path "/metrics""#
        );
    }

    #[test]
    fn coverage_finds_what_is_not_held() {
        let owned = vec![rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]}),
        )];
        let wanted = vec![rule(
            json!({"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods", "services/status"]}),
        )];
        let missing: Vec<String> = uncovered(&owned, &wanted)
            .iter()
            .map(Rule::compact_string)
            .collect();
        assert_eq!(
            missing,
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
                r#"{APIGroups:[""], Resources:["services/status"], Verbs:["delete"]}"#
            ]
        );
        let all = vec![rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
        )];
        assert!(uncovered(&all, &wanted).is_empty());
        let named_owner = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
        )];
        let any_secret = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}),
        )];
        assert_eq!(uncovered(&named_owner, &any_secret).len(), 1);
    }
}
